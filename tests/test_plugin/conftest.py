"""The plugin tests start fresh interpreters that rely on the autoload hook of this environment: make sure it is
installed (`make venv` / the README's install run `python -m basicsr_ext.autoload install`; this is the same
idempotent step, for a session started in an environment installed some other way)."""
import pytest


@pytest.fixture(scope='session', autouse=True)
def autoload_installed():
    from basicsr_ext import autoload
    if not autoload.is_installed():
        autoload.install()
    yield
