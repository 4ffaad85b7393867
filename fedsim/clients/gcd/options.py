"""Options of the ``gcd`` task (typed, checked before anything is built or loaded)."""

from __future__ import annotations

from dataclasses import dataclass

from fedsim.clients.gcd.data import N_MAX
from fedsim.clients.options import TaskOptions, option
from fedsim.errors import FedsimError

GUIDANCE_MODES = ("clean", "noisy")
#: Headline metrics: name -> higher is better. The sampling ones need ``sample_eval``.
SAMPLE_METRICS = {"gmc": True, "gen_div": True, "tif": False, "bas": True, "fd_k": False}
CHEAP_METRICS = {"nce_acc": True, "x0_mse": False}


@dataclass(frozen=True)
class GCDOptions(TaskOptions):
    """See :class:`~fedsim.clients.gcd.task.GCDTask` for their meaning."""

    n_dancers: int | tuple[int, ...] = option(3, low=2, high=N_MAX)
    frames: int = option(32, low=4)
    n_train: int = option(96, low=1)
    n_test: int = option(24, low=1)
    alpha: float = option(0.5, low=0.0, low_open=True)
    lr: float = option(2e-3, low=0.0, low_open=True)
    batch_size: int = option(8, low=1)
    diffusion_steps: int = option(100, low=2)
    d_model: int = option(48, low=1)
    layers: int = option(2, low=1)
    heads: int = option(4, low=1)
    enc_d: int = option(32, low=1)
    negatives: int = option(4, low=1)
    inter_negatives: float = option(0.0, low=0.0, high=1.0)
    motion_negatives: float = option(0.5, low=0.0, high=1.0)
    nce_weight: float = option(0.01, low=0.0)
    vel_weight: float = option(1.0, low=0.0)
    sample_eval: bool = option(False)
    ddim_steps: int = option(10, low=1)
    gamma: float = option(0.0, low=0.0)
    guidance_scale: float = option(3.0, low=0.0)
    guidance: str = option("clean", choices=GUIDANCE_MODES)
    eval_samples: int = option(16, low=1)
    metric: str | None = option(None, choices=tuple(CHEAP_METRICS) + tuple(SAMPLE_METRICS))
    data_dir: str = option("")

    def __post_init__(self) -> None:
        if self.metric in SAMPLE_METRICS and not self.sample_eval:
            raise FedsimError(f"gcd metric {self.metric!r} is not available; valid: "
                             f"{', '.join(CHEAP_METRICS)} (the sampling metrics need sample_eval=true)")

    @property
    def headline(self) -> tuple[str, bool]:
        """The headline metric and whether higher is better."""
        metric = self.metric or ("fd_k" if self.sample_eval else "nce_acc")
        return metric, {**CHEAP_METRICS, **SAMPLE_METRICS}[metric]
