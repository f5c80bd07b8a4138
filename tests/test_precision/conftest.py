"""Fixtures of the precision tests: the quickstart TVQ&RAP trained in memory once per session."""
import pytest


@pytest.fixture(scope='session')
def trained_tvqrap(tmp_path_factory):
    """``(network_g options, state dict)`` of the quickstart TVQ&RAP after a short in-memory training of its three
    stages (tokenizer, stage II, RAP: ``scripting.QUICK_TVQRAP_ITERS`` iterations, the option files' recipes, seed
    0, photos other than the held-out chelsea and coffee); ~1 min of one CPU core."""
    from basicsr_ext.scripting import train_quickstart_tvqrap
    return train_quickstart_tvqrap(str(tmp_path_factory.mktemp('quick_tvqrap')))
