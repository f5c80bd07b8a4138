"""Metrics registered into BasicSR's METRIC_REGISTRY (explicit imports, as in BasicSR)."""
from .pyiqa_metric import calculate_pyiqa, pyiqa, resolve_metric_better  # noqa: F401,E402  (type: pyiqa)
from .fidelity_metric import calculate_ae_psnr, calculate_lr_psnr  # noqa: F401,E402
