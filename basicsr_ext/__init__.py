"""basicsr_ext: TVQ&RAP and AESOP as BasicSR components.

Importing this package applies the compatibility patches for PyPI basicsr 1.4.2 (see ``compat``), routes
BasicSR's option parsing through the safe YAML loader, and registers every arch, dataset, loss, metric and
model of ours into BasicSR's registries.
"""
from . import compat

compat.apply()

from .utils import options as _options  # noqa: E402

_options.install()

from .models import engine as _engine  # noqa: E402

_engine.install_resumable_sampler()

from . import archs, data, losses, metrics, models  # noqa: E402,F401
from .data import checks as _dataset_checks  # noqa: E402

_dataset_checks.install()  # dataset options checked at build time

from .data.checks import DatasetError  # noqa: E402
from .models.engine import ConfigError, NonFiniteLossError  # noqa: E402
from .utils.checkpoint import CheckpointError  # noqa: E402
from .utils.image_io import ImageError  # noqa: E402
from .utils.options import OptionError  # noqa: E402

#: errors caused by the user's inputs: entry points print them as one message instead of a traceback
USER_ERRORS = (OptionError, ConfigError, CheckpointError, DatasetError, ImageError, NonFiniteLossError)

__version__ = '0.1.0'
