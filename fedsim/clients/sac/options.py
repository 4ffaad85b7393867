"""Options of the ``sac`` task (typed, checked before anything is built or loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.clients.options import TaskOptions, option
from fedsim.errors import FedsimError

DATASETS = ("digits", "fine", "cub")
#: Images of scikit-learn's digits; classes of the procedural fine-grained set.
_DIGITS_IMAGES, _FINE_CLASSES = 1_797, 12
#: The fewest images the Dirichlet split gives a silo.
MIN_SILO_IMAGES = 4


@dataclass(frozen=True)
class SACOptions(TaskOptions):
    """See the :mod:`fedsim.clients.sac.task` docstring for their meaning."""

    dataset: str = option("digits", choices=DATASETS)
    data_dir: str = option("")
    sac: bool = option(True)
    k: int = option(3, low=1)
    sac_alpha: float = option(0.5, low=0.0, high=1.0)
    sac_weight: float = option(1.0, low=0.0)
    drop_weight: float = option(0.5, low=0.0, high=1.0)
    drop_threshold: float = option(0.5, low=0.0, high=1.0)
    embed_dim: int = option(16, low=1)
    name_dim: int = option(32, low=1)
    joint_dim: int = option(32, low=1)
    rank: int = option(32, low=1)
    hash_buckets: int = option(256, low=1)
    width: int = option(16, low=1)
    feat_dim: int = option(32, low=1)
    grid: int = option(4, low=1)
    visual_dim: int = option(64, low=1)
    residual: bool = option(True)
    alpha: float = option(0.5, low=0.0, low_open=True)
    optimizer: str = option("sgd", choices=("sgd", "adam"))
    lr: float = option(0.05, low=0.0, low_open=True)
    momentum: float = option(0.9, low=0.0, high=1.0, high_open=True)
    batch_size: int = option(32, low=1)
    test_fraction: float = option(0.2, low=0.0, high=1.0, low_open=True, high_open=True)
    image_size: int = option(32, low=1)
    grayscale: bool = option(False)
    n_per_class: int = option(150, low=1)
    data_seed: int = option(0)

    def __post_init__(self) -> None:
        if self.dataset == "cub" and not self.data_dir:
            raise FedsimError("sac dataset 'cub' needs data_dir=PATH (a CUB-style folder)")

    def max_silos(self) -> int | None:
        if self.dataset == "digits":
            return _DIGITS_IMAGES // MIN_SILO_IMAGES
        if self.dataset == "fine":
            return self.n_per_class * _FINE_CLASSES // MIN_SILO_IMAGES
        return None
