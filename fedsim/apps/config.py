"""The resolved configuration of a training run (written to ``config.json``)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fedsim.errors import FedsimError, check_int_at_least, check_positive, unknown_name


DATA_PLANES = ("auto", "hub", "inproc", "grpc", "mpi")


@dataclass
class RunConfig:
    """Everything that defines a run; every random choice flows from ``seed``.

    Attributes
    ----------
    network : str
        Built-in network, ``zoo:NAME`` or a GML path; fixes the silo count.
    strategy : str
        ``fedavg fedprox star ring mst dmbst matcha matcha_plus multigraph``.
    task : str
        Local task name (``digits`` ...).
    rounds, local_steps, seed : int
    t, base, budget : multigraph and MATCHA design parameters.
    mu : float
        FedProx proximal weight.
    self_weight : float
        Multigraph self weight (0.7 in the published runs).
    task_options : dict
        Task-specific options (e.g. ``{"alpha": 0.5, "lr": 0.05}``).
    max_failed_rounds : int
        Stop after this many rounds with a failed silo (default 1: the first).
    checkpoint_every : int
        Rounds between checkpoints of the silo models (resume points).
    round_timeout : float or None
        Seconds to wait for replies in a round (None: wait for all).
    workers : int
        Parallel ClientApp actors in simulation (0: one per core).
    stragglers, compute_ms_file : str or None
        Heterogeneous silos in the simulated clock (``"lognormal:SIGMA"``,
        drawn with ``seed``; a per-silo CSV): see
        :mod:`fedsim.topologies.stragglers`. The resolved per-silo values are
        kept in ``profile``.
    ray_address : str or None
        ``HOST:PORT`` or ``"auto"``: run the Simulation Engine on that existing
        Ray cluster (one ClientApp actor per cluster CPU) instead of starting a
        private Ray on this machine.
    compute_ms : float, "measure" or None
        Compute time of one local step for the simulated clock. None: the
        task's fixed reference step time (the same clock on every machine);
        ``"measure"``: measure the step on this machine once per run.
    inject_fault : str or None
        ``"SILO:ROUND"``: that silo's ClientApp raises in that round (to
        exercise failure handling).
    profile : dict or None
        The task's delay profile, measured once and stored so that a resumed
        run uses the same simulated clock.
    data_plane : str
        How models travel: ``auto`` (decentralized strategies peer to peer in
        a deployment, ``inproc`` in simulation; FedAvg/FedProx/STAR through
        the hub), ``hub``, ``grpc``; ``mpi`` is set by ``--engine mpi``.
    sync_every : int or None
        Peer data plane: rounds the silos run between meetings with the
        ServerApp (records, checkpoint); ``None``: ``checkpoint_every``.
    peer_timeout : float
        Peer data plane: seconds a silo waits for an in-neighbour's model
        before it counts that silo lost and mixes without it.
    """

    network: str = "gaia"
    strategy: str = "multigraph"
    task: str = "digits"
    rounds: int = 20
    local_steps: int = 1
    seed: int = 0
    t: int = 5
    base: str = "ring"
    budget: float = 0.5
    mu: float = 0.01
    self_weight: float = 0.7
    task_options: dict = field(default_factory=dict)
    max_failed_rounds: int = 1
    checkpoint_every: int = 10
    round_timeout: float | None = None
    workers: int = 0
    compute_ms: float | str | None = None
    inject_fault: str | None = None
    profile: dict | None = None
    data_plane: str = "auto"
    sync_every: int | None = None
    peer_timeout: float = 60.0
    ray_address: str | None = None
    stragglers: str | None = None
    compute_ms_file: str | None = None

    def validate(self) -> RunConfig:
        from fedsim.clients import TASKS
        from fedsim.strategies import DECENTRALIZED, STRATEGIES

        if self.strategy not in STRATEGIES:
            raise unknown_name("strategy", self.strategy, STRATEGIES)
        if self.task not in TASKS:
            raise unknown_name("task", self.task, TASKS)
        check_int_at_least("--rounds", self.rounds, 1)
        check_int_at_least("--local-steps", self.local_steps, 1)
        check_int_at_least("--t", self.t, 1)
        check_int_at_least("--max-failed-rounds", self.max_failed_rounds, 1)
        check_int_at_least("--checkpoint-every", self.checkpoint_every, 1)
        check_int_at_least("--workers", self.workers, 0)
        check_positive("--budget", self.budget)
        if not 0 <= self.self_weight <= 1:
            raise FedsimError(f"self weight must be in [0, 1], got {self.self_weight}")
        if isinstance(self.mu, bool) or not isinstance(self.mu, (int, float)) or not (
                math.isfinite(self.mu) and self.mu >= 0):
            raise FedsimError(f"--mu must be a finite number >= 0, got {self.mu!r}")
        check_int_at_least("--seed", self.seed, 0)
        if self.seed > 2**32 - 1:
            raise FedsimError(f"--seed must be an integer in 0..{2**32 - 1} (numpy's seed range), got {self.seed}")
        from fedsim.topologies import MULTIGRAPH_BASES

        if self.base not in MULTIGRAPH_BASES:
            raise unknown_name("multigraph base", self.base, MULTIGRAPH_BASES)
        if self.budget > 1:
            raise FedsimError(f"--budget (MATCHA communication budget) must be in (0, 1], got {self.budget}")
        if self.compute_ms is not None and self.compute_ms != "measure":
            if isinstance(self.compute_ms, str):
                raise FedsimError(f"--compute-ms expects a number of ms or 'measure', got {self.compute_ms!r}")
            check_positive("--compute-ms", self.compute_ms)
        if self.stragglers is not None:
            from fedsim.topologies.stragglers import parse_stragglers

            parse_stragglers(self.stragglers)
        if self.inject_fault is not None:
            parts = str(self.inject_fault).split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise FedsimError(f"--inject-fault expects SILO:ROUND, got {self.inject_fault!r}")
        if self.round_timeout is not None:
            check_positive("--round-timeout", self.round_timeout)
        if self.data_plane not in DATA_PLANES:
            raise unknown_name("data plane", self.data_plane, DATA_PLANES)
        if self.data_plane in ("grpc", "mpi") and self.strategy not in DECENTRALIZED:
            raise FedsimError(f"--data-plane {self.data_plane} carries decentralized strategies "
                              f"({', '.join(DECENTRALIZED)}); {self.strategy} goes through the hub")
        if self.sync_every is not None:
            check_int_at_least("--sync-every", self.sync_every, 1)
        check_positive("--peer-timeout", self.peer_timeout)
        return self

    @property
    def sync_interval(self) -> int:
        """Rounds between the peer data plane's meetings with the ServerApp."""
        return self.sync_every or self.checkpoint_every

    def resolved_plane(self, deployed: bool) -> str:
        """The data plane this run uses (``auto`` resolved for simulation or deployment)."""
        from fedsim.strategies import DECENTRALIZED

        if self.data_plane != "auto":
            return self.data_plane
        if self.strategy not in DECENTRALIZED:
            return "hub"
        return "grpc" if deployed else "inproc"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def key(self) -> str:
        """A short hash of what defines the run's training (not its length or execution settings)."""
        data = asdict(self)
        for name in ("rounds", "workers", "round_timeout", "max_failed_rounds", "checkpoint_every", "profile",
                     "inject_fault", "data_plane", "sync_every", "peer_timeout", "ray_address"):
            del data[name]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def of_run(cls, run_dir: Path) -> RunConfig:
        """The configuration of the run in ``run_dir`` (to resume it)."""
        path = Path(run_dir) / "config.json"
        if not path.exists():
            raise FedsimError(f"cannot resume {run_dir}: no config.json there (not a fedsim run directory)")
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise FedsimError(f"cannot read run config {path}: {exc}") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
