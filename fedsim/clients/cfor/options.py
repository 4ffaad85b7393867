"""Options of the ``cfor`` task (typed, checked before anything is built or loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.clients.options import TaskOptions, option
from fedsim.errors import FedsimError

LAYOUTS = ("local", "single", "single_task")


@dataclass(frozen=True)
class CFOROptions(TaskOptions):
    """See :class:`~fedsim.clients.cfor.task.CFORTask` for their meaning."""

    ontology: str | None = option(None)
    deepfashion_root: str | None = option(None)
    samples_per_silo: int = option(600, low=0)
    test_fraction: float = option(0.25, low=0.0, high=1.0, low_open=True, high_open=True)
    val_fraction: float = option(0.2, low=0.0, high=1.0, low_open=True, high_open=True)
    alpha: float = option(0.5, low=0.0, low_open=True)
    attr_concentration: float = option(10.0, low=0.0, low_open=True)
    image_size: int = option(32, low=8)
    lr: float = option(0.003, low=0.0, low_open=True)
    batch_size: int = option(32, low=1)
    width: int = option(16, low=1)
    feature_dim: int = option(64, low=1)
    head_hidden: int = option(16, low=1)
    layout: str = option("local", choices=LAYOUTS)
    rare_fraction: float = option(0.4, low=0.0, high=1.0, low_open=True)

    def __post_init__(self) -> None:
        if not self.deepfashion_root and self.samples_per_silo < 10:
            raise FedsimError(f"cfor samples_per_silo must be >= 10 with synthetic data, got {self.samples_per_silo}")
