"""Sweeps of cycle times over networks × topologies × profiles.

Sequential by default; with ``workers > 1`` configurations run in parallel as
Ray tasks (one per network and profile, so each worker builds a network's
connectivity graph and MATCHA decomposition once).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from typing import Iterable

from tqdm import tqdm

from fedsim.io import atomic_write_text


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines one cell of a sweep but the topology list."""

    network: str
    profile: str
    overrides: tuple[tuple[str, float], ...] = ()
    t: int = 5
    budget: float = 0.5
    seed: int = 0
    resolved: object | None = None  # a DelayProfile already resolved by the caller
    stragglers: str | None = None  # heterogeneous silos (fedsim.topologies.stragglers), drawn with ``seed``
    compute_file: str | None = None


@dataclass(frozen=True)
class SweepRow:
    network: str
    profile: str
    topology: str
    cycle_time_ms: float
    silos: int
    detail: str


def run_config(config: SweepConfig, topologies: tuple[str, ...]) -> list[SweepRow]:
    """Cycle times of ``topologies`` for one network and profile."""
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, check_size, connectivity, get_profile
    from fedsim.topologies.networks import load_network
    from fedsim.topologies.overlays.matcha import small_blas

    net = load_network(config.network)
    for topo in topologies:  # refuse a too-large network before any work
        check_size(topo, net.n_silos)
    conn = connectivity(net)
    prof = config.resolved or get_profile(config.profile, **dict(config.overrides))
    if config.stragglers or config.compute_file:
        from fedsim.topologies.stragglers import heterogeneous

        prof = heterogeneous(prof, list(net.silos), config.compute_file, config.stragglers, config.seed)
    rows = []
    for topo in topologies:
        with small_blas(conn.n):  # small matrices: BLAS threads only cost time
            sched = build_schedule(topo, conn, prof, t=config.t, budget=config.budget)
            ct = simulate(sched, conn, prof, seed=config.seed)
        detail = ""
        if sched.topology == "multigraph":
            detail = f"t={config.t}, s_max={sched.n_states}"
        elif sched.server is not None:
            detail = f"server={net.silos[sched.server]}"
        elif sched.is_random:
            detail = f"{len(sched.probabilities)} matchings"
        rows.append(SweepRow(config.network, config.profile, topo, ct.value, conn.n, detail))
    return rows


def run_sweep(
    configs: Iterable[SweepConfig],
    topologies: tuple[str, ...],
    workers: int = 1,
    progress: bool = True,
    ray_address: str | None = None,
) -> list[SweepRow]:
    """Run every configuration; rows come back in configuration order.

    ``workers > 1`` starts a local Ray instance with that many CPUs, runs one
    task per configuration, and shuts Ray down before returning.
    ``ray_address`` (``HOST:PORT`` or ``"auto"``) runs the tasks on that
    existing Ray cluster instead, whatever ``workers`` says.
    """
    configs = list(configs)
    bar = tqdm(total=len(configs) * len(topologies), desc="cycle times", unit="cell",
               disable=not progress, leave=False)
    try:
        if ray_address:
            return _run_ray(configs, topologies, workers, bar, ray_address)
        if workers <= 1:
            out = []
            for cfg in configs:
                rows = run_config(cfg, topologies)
                out.append(rows)
                bar.update(len(rows))
            return [r for rows in out for r in rows]
        return _run_ray(configs, topologies, workers, bar)
    finally:
        bar.close()


def _run_ray(configs, topologies, workers, bar, address: str | None = None) -> list[SweepRow]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    watchdog = None
    if started and address:  # an existing cluster: connect only (its processes are not ours to end)
        from fedsim.guard import cluster_ray

        cluster_ray()
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    elif started:  # loopback-only Ray, no dashboard; the watchdog ends its processes if we die
        from fedsim.guard import Watchdog, ray_local_init_args

        watchdog = Watchdog().start()
        ray.init(**ray_local_init_args(num_cpus=workers, log_to_driver=False, configure_logging=False))
    try:
        task = ray.remote(num_cpus=1)(run_config)
        refs = [task.remote(cfg, topologies) for cfg in configs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[list[SweepRow] | None] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[index[ref]] = ray.get(ref)
                bar.update(len(topologies))
        return [r for rows in results for r in rows]
    finally:
        if started:
            ray.shutdown()
        if watchdog is not None:
            watchdog.stop()


def rows_to_csv(rows: list[SweepRow]) -> str:
    buf = io.StringIO()
    fields = list(asdict(rows[0]).keys()) if rows else list(SweepRow.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        d = asdict(r)
        d["cycle_time_ms"] = f"{r.cycle_time_ms:.4f}"
        w.writerow(d)
    return buf.getvalue()


def write_csv(path: str, rows: list[SweepRow]) -> None:
    """Write rows as CSV atomically."""
    atomic_write_text(path, rows_to_csv(rows))


def markdown_table(rows: list[SweepRow], topologies: tuple[str, ...]) -> str:
    """One line per (profile, network), one column per topology (ms)."""
    head = "| profile | network | " + " | ".join(topologies) + " |"
    sep = "|---|---|" + "---:|" * len(topologies)
    lines = [head, sep]
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        cells.setdefault((r.profile, r.network), {})[r.topology] = r.cycle_time_ms
    for (prof, net), vals in cells.items():
        lines.append(f"| {prof} | {net} | " + " | ".join(f"{vals[t]:.1f}" for t in topologies) + " |")
    return "\n".join(lines)
