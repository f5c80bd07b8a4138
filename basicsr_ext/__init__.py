"""basicsr_ext: TVQ&RAP and AESOP as BasicSR components.

Importing this package applies every change we make to BasicSR (the list in ``basicsr_ext.patches``: the compat
fixes for PyPI basicsr 1.4.2 on today's stack, safe option parsing, dataset checks, …), then registers every
arch, dataset, loss, metric and model of ours into BasicSR's registries. With the autoload hook installed
(``python -m basicsr_ext.autoload install``), the first ``import basicsr`` of any process imports this package.
"""
from . import patches

patches.apply_all()

from . import archs, data, losses, metrics, models  # noqa: E402,F401  (registration)
from .data.checks import DatasetError  # noqa: E402
from .models.engine import ConfigError, NonFiniteLossError  # noqa: E402
from .utils.checkpoint import CheckpointError  # noqa: E402
from .utils.image_io import ImageError  # noqa: E402
from .utils.options import OptionError  # noqa: E402

#: errors caused by the user's inputs: entry points print them as one message instead of a traceback
USER_ERRORS = (OptionError, ConfigError, CheckpointError, DatasetError, ImageError, NonFiniteLossError)

__version__ = '0.1.0'
