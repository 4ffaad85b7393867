"""A run's plan: everything fixed before the first round, built once.

:class:`RunPlan` resolves a :class:`~fedsim.apps.config.RunConfig` into the
network, its connectivity, the task and its delay profile, the schedule of
the timing topology, the simulated clock and (for decentralized strategies)
the mixing plan. The Simulation Engine's round loop, the deployment's and
the MPI engine all start from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from fedsim.apps.config import RunConfig
from fedsim.strategies import DECENTRALIZED
from fedsim.strategies.mixing import MixingPlan, SiloRound


def timing_topology(strategy: str) -> str:
    """The topology whose cycle time a strategy's rounds take."""
    return "star" if strategy in ("fedavg", "fedprox", "star") else strategy


def resolve_profile(cfg: RunConfig, task, silos: list[str] | None = None):
    """The task's delay profile: resolved once per run (the task's reference step time, a measured
    one with ``compute_ms="measure"``, or ``compute_ms`` itself), then read from the config."""
    from fedsim.topologies.delay import DelayProfile

    if cfg.profile is None:
        if cfg.compute_ms is not None and cfg.compute_ms != "measure":  # fixed: nothing to measure
            n_values = task.exchanged_values()
            prof = DelayProfile(task.name, 32.0 * n_values, float(cfg.compute_ms),
                                description=f"{task.name} task: {n_values} exchanged values, step fixed at "
                                            f"{cfg.compute_ms:g} ms")
        else:
            prof = task.profile(measure=cfg.compute_ms == "measure")
        if cfg.stragglers or cfg.compute_ms_file:  # each silo's own step time / capacities, kept in config.json
            from fedsim.topologies.stragglers import heterogeneous

            prof = heterogeneous(prof, list(silos or []), cfg.compute_ms_file, cfg.stragglers, cfg.seed)
        cfg.profile = asdict(prof)
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    return prof.with_overrides(local_steps=cfg.local_steps)


@dataclass
class RunPlan:
    """What a run is, resolved once (see the module docstring)."""

    cfg: RunConfig
    net: object
    conn: object
    task: object
    profile: object
    topology: str
    schedule: object
    clock: object
    mixing: MixingPlan | None

    @classmethod
    def build(cls, cfg: RunConfig) -> RunPlan:
        from fedsim.clients import get_task
        from fedsim.timing.simulate import simulate
        from fedsim.topologies import build_schedule, connectivity
        from fedsim.topologies.networks import load_network

        cfg.validate()
        net = load_network(cfg.network)
        conn = connectivity(net)
        task = get_task(cfg.task, cfg.task_options)
        profile = resolve_profile(cfg, task, list(net.silos))
        topo = timing_topology(cfg.strategy)
        schedule = build_schedule(topo, conn, profile, t=cfg.t, base=cfg.base, budget=cfg.budget)
        clock = simulate(schedule, conn, profile, rounds=cfg.rounds, seed=cfg.seed)
        mixing = (MixingPlan(schedule, cfg.rounds, cfg.seed, cfg.self_weight)
                  if cfg.strategy in DECENTRALIZED else None)
        return cls(cfg, net, conn, task, profile, topo, schedule, clock, mixing)

    @property
    def n(self) -> int:
        return self.net.n_silos

    def initial_model(self) -> np.ndarray:
        """The flat initial model every silo starts from."""
        from fedsim.peer.silo import flatten, initial_model

        model = initial_model(self.task, self.cfg.seed)
        return flatten(model, self.task.exchanged_keys(model))

    def train_sizes(self) -> list[int]:
        """Each silo's training-set size, from the task's own partition (what a silo may report as
        ``num-examples``: FedAvg weights by it, so a larger claim is rejected)."""
        if not hasattr(self, "_train_sizes"):
            self._train_sizes = [self.task.partition(s, self.n, self.cfg.seed).n_train for s in range(self.n)]
        return self._train_sizes

    def silo_rows(self, silo: int, first: int, last: int) -> dict[int, SiloRound]:
        """Silo ``silo``'s part of rounds ``first..last``."""
        return {k: self.mixing.silo_round(silo, k) for k in range(first, last + 1)}
