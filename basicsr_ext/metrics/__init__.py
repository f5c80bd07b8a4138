"""Metrics registered into BasicSR's METRIC_REGISTRY (explicit imports, as in BasicSR)."""
