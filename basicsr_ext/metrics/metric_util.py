"""What a validation loop needs to know about a registered metric, whichever file registered it."""
from __future__ import annotations

from typing import Any, Mapping

from basicsr.utils.registry import METRIC_REGISTRY


def metric_needs_lq(metric_opt: Mapping[str, Any]) -> bool:
    """Whether the metric registered under ``metric_opt['type']`` wants the LR input as ``img_lq``: its function
    carries ``needs_lq = True`` (e.g. ``calculate_lr_psnr``). Validation (``basicsr_ext.models.engine``) and
    ``scripts/eval/benchmark.py --lq`` pass it to those metrics only."""
    try:
        return bool(getattr(METRIC_REGISTRY.get(metric_opt.get('type')), 'needs_lq', False))
    except KeyError:
        return False
