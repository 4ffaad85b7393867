"""The task interface every local learning task implements.

A task owns its typed options, its model, its per-silo data partition, one
round of local training and evaluation, and its delay profile. The ClientApp
and the ServerApp only talk to tasks through this interface, so a new task is
one package (``options``, ``data``, ``model``, ``task``) plus one registry line
in :mod:`fedsim.clients`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from fedsim.clients.options import TaskOptions, check_silos, parse
from fedsim.errors import FedsimError
from fedsim.topologies.delay import DelayProfile


@dataclass
class SiloData:
    """One silo's fixed data partition (tensors on CPU)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])


class Task(ABC):
    """A local learning task.

    Subclasses set :attr:`name`, :attr:`Options` (a frozen dataclass of their
    options, see :mod:`fedsim.clients.options`) and :attr:`metric` (the
    headline evaluation metric, e.g. ``"accuracy"``) and implement the
    abstract methods. ``config`` (option name -> value, as typed by a user) is
    parsed into :attr:`options`; :attr:`config` keeps the keys the user gave.
    """

    name: str = ""
    metric: str = "accuracy"
    higher_is_better: bool = True
    Options: type[TaskOptions] = TaskOptions

    def __init__(self, config: dict | TaskOptions | None = None) -> None:
        if isinstance(config, TaskOptions):
            self.options = config
            defaults = type(config)()
            self.config = {k: v for k, v in config.as_dict().items() if getattr(defaults, k) != v}
        else:
            self.config = dict(config or {})
            self.options = parse(self.Options, self.config, self.name)

    def check_silos(self, n_silos: int) -> None:
        """Refuse (one line) a silo count these options cannot serve."""
        check_silos(self.name, self.options, n_silos)

    # -- model ---------------------------------------------------------------
    @abstractmethod
    def model(self) -> torch.nn.Module:
        """A freshly initialised model (the caller seeds torch)."""

    def exchanged_keys(self, model: torch.nn.Module) -> list[str]:
        """State-dict keys that leave the silo (default: all of them)."""
        return list(model.state_dict().keys())

    # -- data ----------------------------------------------------------------
    @abstractmethod
    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        """Silo ``silo``'s partition; fixed for a run (depends only on the arguments)."""

    # -- learning ------------------------------------------------------------
    @abstractmethod
    def train(self, model: torch.nn.Module, data: SiloData, steps: int, generator: torch.Generator,
              prox_mu: float = 0.0, anchor: list[torch.Tensor] | None = None) -> dict[str, float]:
        """Run ``steps`` local steps in place; return training metrics (``loss``).

        With ``prox_mu > 0`` the FedProx term ``mu/2 * ||w - anchor||^2`` is added,
        ``anchor`` being the received parameters.
        """

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, data: SiloData) -> dict[str, float]:
        """Metrics on the silo's test split (``loss`` and :attr:`metric`)."""

    # -- delay profile ---------------------------------------------------------
    #: CPU time (ms) of one local step with the default options, measured once (see REFERENCE_HARDWARE):
    #: the simulated clock's compute time unless a run asks to measure (``--compute-ms measure``).
    reference_step_ms: float | None = None
    #: Options that change neither the model nor the cost of a step.
    CLOCK_NEUTRAL_OPTIONS = frozenset({"lr", "alpha", "label_shift", "style_shift", "beta", "kl_temperature"})

    def exchanged_values(self) -> int:
        """Number of float32 values a silo exchanges per round."""
        torch.manual_seed(0)
        model = self.model()
        keys = set(self.exchanged_keys(model))
        return sum(v.numel() for k, v in model.state_dict().items() if k in keys)

    def profile(self, steps: int = 5, measure: bool = False) -> DelayProfile:
        """Delay profile: the real exchanged size and the compute time of one local step.

        The compute time is :attr:`reference_step_ms`, a fixed number, so that
        the simulated clock is the same on every machine and under any load —
        unless ``measure`` is set, the task has no reference, or its options
        change the model or the step (then it is measured: the median CPU
        time of ``steps`` local steps on this machine with one thread).

        Examples
        --------
        >>> from fedsim.clients import get_task
        >>> p = get_task("digits").profile()
        >>> p.compute_ms == get_task("digits").reference_step_ms, p.model_bits
        (True, 60736.0)
        """
        n_values = self.exchanged_values()
        neutral = set(self.config) <= self.CLOCK_NEUTRAL_OPTIONS
        if not measure and neutral and self.reference_step_ms is not None:
            return DelayProfile(self.name, 32.0 * n_values, float(self.reference_step_ms),
                                description=f"{self.name} task: {n_values} exchanged values, reference step "
                                            f"{self.reference_step_ms:g} ms ({REFERENCE_HARDWARE})")
        return DelayProfile(self.name, 32.0 * n_values, self.measure_step_ms(steps),
                            description=f"{self.name} task: {n_values} exchanged values, step measured on this "
                                        f"machine")

    def measure_step_ms(self, steps: int = 5) -> float:
        """Median CPU time (ms) of one local step on this machine, one thread (thread CPU time,
        so a busy machine inflates it less than wall time)."""
        torch.manual_seed(0)
        model = self.model()
        data = self.partition(0, 1, seed=0)
        gen = torch.Generator().manual_seed(0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.train(model, data, 1, gen)  # warm-up
            times = []
            for _ in range(steps):
                t0 = time.thread_time()
                self.train(model, data, 1, gen)
                times.append((time.thread_time() - t0) * 1e3)
        finally:
            torch.set_num_threads(threads)
        return float(np.median(times))


REFERENCE_HARDWARE = "measured once on a 2-core AMD EPYC VM, torch 2.13 CPU, one thread"


def prox_term(model: torch.nn.Module, anchor: list[torch.Tensor] | None, mu: float) -> torch.Tensor:
    """``mu/2 * Σ ||w - w_anchor||²`` over the model's parameters (0 if unused)."""
    if not mu or anchor is None:
        return torch.zeros(())
    return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))


class PlainSGD:
    """SGD without momentum or weight decay: ``w -= lr * grad``.

    The arithmetic of ``torch.optim.SGD(params, lr)`` on CPU (its single-tensor
    path, bit for bit), without what every ``torch.optim`` optimizer does on
    its first step: import ``torch._dynamo``, 1.2 s of CPU in every process
    that trains (each ClientApp actor of a simulation pays it once).
    """

    def __init__(self, params, lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


def minibatch_steps(model: torch.nn.Module, data: SiloData, steps: int, generator: torch.Generator,
                    optimizer: torch.optim.Optimizer, batch_size: int, loss_fn=None,
                    prox_mu: float = 0.0, anchor: list[torch.Tensor] | None = None, *,
                    batch_loss=None, prox_model: torch.nn.Module | None = None,
                    clip_grad_norm: float | None = None) -> dict[str, float]:
    """``steps`` optimizer steps on random minibatches of the silo's training split.

    Each step draws ``batch_size`` indices from ``generator`` (so a run repeats
    for a seed) and minimises the task objective plus the FedProx term
    ``prox_mu/2·||w - anchor||²`` over ``prox_model``'s parameters (default:
    the whole model). The objective is ``loss_fn(model(x), y)``, or, for a task
    whose step needs more than one forward pass or more random draws,
    ``batch_loss(idx) -> (objective, logs)`` (its draws come from
    ``generator`` after the indices, in the same order every run). With
    ``clip_grad_norm`` the gradient norm is clipped before the step.

    Returns the mean over the steps of each logged value: ``loss`` is the
    objective without the proximal term unless ``logs`` names its own ``loss``.
    """
    if (loss_fn is None) == (batch_loss is None):
        raise TypeError("give exactly one of loss_fn and batch_loss")
    if batch_loss is None:
        def batch_loss(idx):
            return loss_fn(model(data.x_train[idx]), data.y_train[idx]), {}
    bs = min(batch_size, data.n_train)
    prox_model = model if prox_model is None else prox_model
    model.train()
    logs: dict[str, list[float]] = {}
    for _ in range(steps):
        idx = torch.randint(0, data.n_train, (bs,), generator=generator)
        objective, parts = batch_loss(idx)
        optimizer.zero_grad()
        (objective + prox_term(prox_model, anchor, prox_mu)).backward()
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        step = {"loss": float(objective.detach()), **parts}
        for k, v in step.items():
            logs.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in logs.items()} if logs else {"loss": float("nan")}


def dirichlet_partition(labels: np.ndarray, n_silos: int, alpha: float, seed: int,
                        min_size: int = 4) -> list[np.ndarray]:
    """Split sample indices over silos with a Dirichlet(α) label skew.

    For each class, its samples are divided among silos with proportions drawn
    from Dir(α); small α gives each silo few classes. Redraws (up to 100 times)
    until every silo has at least ``min_size`` samples; if no draw does (many
    silos), the last draw is repaired: a silo short of ``min_size`` takes
    samples, drawn at random, from the largest silo until it has enough. Any
    ``n_silos <= len(labels) // min_size`` is served; more raise
    :class:`~fedsim.errors.FedsimError`.

    Examples
    --------
    >>> parts = dirichlet_partition(np.repeat(np.arange(3), 20), 4, alpha=0.5, seed=0)
    >>> sorted(int(i) for p in parts for i in p) == list(range(60))
    True
    >>> parts = dirichlet_partition(np.repeat(np.arange(3), 20), 15, alpha=0.5, seed=0)
    >>> min(len(p) for p in parts)
    4
    """
    if n_silos * min_size > len(labels):
        raise FedsimError(f"{len(labels)} samples can serve at most {len(labels) // min_size} silos with "
                          f"min_size={min_size}, got {n_silos} silos")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(100):
        draws, sizes = [], np.zeros(n_silos, np.int64)
        for m in members:
            idx = rng.permutation(m)
            cuts = (np.cumsum(rng.dirichlet(np.full(n_silos, alpha))) * len(idx)).astype(int)[:-1]
            draws.append((idx, cuts))
            sizes += np.diff(np.concatenate([[0], cuts, [len(idx)]]))
        if sizes.min() >= min_size:
            break
    parts: list[list[int]] = [[] for _ in range(n_silos)]
    for idx, cuts in draws:
        for silo, chunk in enumerate(np.split(idx, cuts)):
            parts[silo].extend(chunk.tolist())
    if sizes.min() < min_size:
        sizes = np.array([len(p) for p in parts])
        for silo in np.flatnonzero(sizes < min_size):
            while len(parts[silo]) < min_size:
                donor = int(np.argmax([len(p) for p in parts]))
                parts[silo].append(parts[donor].pop(int(rng.integers(len(parts[donor])))))
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]

