"""Options of the ``cdl`` task (typed, checked before anything is built or loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.clients.options import TaskOptions, option
from fedsim.errors import FedsimError

#: Branch sizes: the published DroNet branch and the CPU version.
SIZES: dict[str, dict] = {
    "small": {"image_size": 64, "widths": (8, 8, 16, 32)},
    "paper": {"image_size": 200, "widths": (32, 32, 64, 128)},
}
VARIANTS = ("cdl", "resnet8")
#: Published image counts of the three driving datasets (all silos together).
DATASET_TOTALS: dict[str, int] = {"udacity": 38_586, "gazebo": 66_806, "carla": 73_235}


@dataclass(frozen=True)
class CDLOptions(TaskOptions):
    """See :class:`~fedsim.clients.cdl.task.CDLTask` for their meaning."""

    variant: str = option("cdl", choices=VARIANTS)
    size: str = option("small", choices=tuple(SIZES))
    image_size: int | None = option(None, low=8)
    widths: tuple[int, ...] | None = option(None, low=1)
    dropout: float = option(0.5, low=0.0, high=1.0, high_open=True)
    beta: float = option(0.5, low=0.0, high=1.0)
    kl_temperature: float = option(1.0, low=0.0, low_open=True)
    optimizer: str = option("adam", choices=("adam", "sgd"))
    lr: float = option(1e-3, low=0.0, low_open=True)
    weight_decay: float = option(1e-5, low=0.0)
    momentum: float = option(0.0, low=0.0, high=1.0, high_open=True)
    batch_size: int = option(32, low=1)
    data: str = option("synthetic")
    dataset: str = option("udacity", choices=tuple(DATASET_TOTALS))
    scale: float = option(0.05, low=0.0, low_open=True)
    n_per_silo: int | None = option(None, low=2)
    label_shift: float = option(1.0, low=0.0, high=1.0)
    style_shift: float = option(1.0, low=0.0, high=1.0)
    test_fraction: float = option(0.2, low=0.0, high=1.0, low_open=True, high_open=True)
    steering_scale: float = option(1.0)

    def __post_init__(self) -> None:
        if self.widths is not None and len(self.widths) != 4:
            raise FedsimError(f"cdl option widths needs 4 positive integers, got {list(self.widths)}")

    @property
    def resolved_image_size(self) -> int:
        return self.image_size if self.image_size is not None else SIZES[self.size]["image_size"]

    @property
    def resolved_widths(self) -> tuple[int, ...]:
        return self.widths if self.widths is not None else SIZES[self.size]["widths"]
