"""Statistics containers (placeholder on the keras branch: H6 moves them here from torch/stats.py)."""

from neuroprune.torch.stats import AxisStats, Statistics  # noqa: F401
