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

__version__ = '0.1.0'
