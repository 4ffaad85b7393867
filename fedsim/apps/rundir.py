"""A new run's folder: every check before anything is written, then the folder prepared.

``fedsim run`` and :func:`fedsim.run` both start here, so a run started from
the command line or from Python is refused for the same reasons, in the same
words, and gets the same folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedsim.apps.config import RunConfig
from fedsim.errors import FedsimError

RUN_FILES = ("rounds.csv", "checkpoint.npz", "summary.json", "failures.json")  # what --overwrite replaces
RUN_MARKERS = ("rounds.csv", "checkpoint.npz", "config.json", "summary.json")  # a folder with one holds a run


def holds_run(run_dir) -> bool:
    """Whether ``run_dir`` already holds (part of) a run."""
    return any((Path(run_dir) / name).exists() for name in RUN_MARKERS)


def check_silos(net, n: int | None) -> None:
    """``--silos N``: 2..the network's silo count, and the network has the coordinates it needs."""
    if not n:
        return
    if not 2 <= n <= net.n_silos:
        raise FedsimError(f"--silos must be within 2..{net.n_silos} (network {net.name}), got {n}")
    if any(c is None for c in (net.coords or [None])[:n]):
        raise FedsimError(f"--silos needs silo coordinates; network {net.name} has none")


def check_fault(spec: str | None, n_silos: int, rounds: int) -> None:
    """``--inject-fault SILO:ROUND`` names a silo and a round the run has."""
    if spec is None:
        return
    parts = str(spec).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise FedsimError(f"--inject-fault expects SILO:ROUND (integers), got {spec!r}")
    silo, rnd = (int(p) for p in parts)
    if silo >= n_silos:
        raise FedsimError(f"--inject-fault {spec}: silo must be in 0..{n_silos - 1}, got {silo}")
    if not 1 <= rnd <= rounds:
        raise FedsimError(f"--inject-fault {spec}: round must be in 1..{rounds}, got {rnd}")


def check_task_options(task: str, options: dict, n_silos: int | None = None) -> dict:
    """The task's own check of its options and, with ``n_silos``, of the silo count it can serve."""
    import fedsim.clients as clients

    clients.parse_options(task, dict(options))
    if n_silos is not None:
        clients.check_silos(task, dict(options), n_silos)
    return options


def check_out_dir(path: Path) -> None:
    """An output folder: not an existing file, and a writable folder above it."""
    if path.exists() and not path.is_dir():
        raise FedsimError(f"{path} is a file; give a folder for the run")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FedsimError(f"{path}: {parent} is not a folder")
    import tempfile

    try:  # os.access says yes to root everywhere (even /proc): try it, leaving nothing behind
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise FedsimError(f"{path}: cannot write in {parent}") from None


def new_run(cfg: RunConfig, out: str | Path | None = None, overwrite: bool = False, silos: int | None = None,
            workers: int = 0) -> tuple[RunConfig, Path]:
    """``(cfg, run_dir)`` of a new run: everything checked, then the folder prepared.

    ``out`` defaults to ``runs/NETWORK[-SILOS]-STRATEGY-TASK-sSEED``; a folder
    that already holds a run is refused unless ``overwrite`` (which then
    removes that run's records). ``silos``: the first N silos of the network,
    fully connected (a GML written into the run folder becomes the network).
    """
    from fedsim.apps.records import SILO_STATE_DIR
    from fedsim.topologies.networks import first_silos_gml, load_network

    net = load_network(cfg.network)  # fail on a bad network before anything is written
    check_silos(net, silos)
    n = silos or net.n_silos
    stem = Path(cfg.network).stem.replace(":", "-") + (f"-{silos}" if silos else "")
    run_dir = Path(out) if out is not None else Path(f"runs/{stem}-{cfg.strategy}-{cfg.task}-s{cfg.seed}")
    check_out_dir(run_dir)
    cfg.validate()
    check_fault(cfg.inject_fault, n, cfg.rounds)
    if workers > n:  # more ClientApp actors than silos only cost memory
        raise FedsimError(f"--workers must be within 0..{n} (one actor per silo at most), got {workers}")
    check_task_options(cfg.task, cfg.task_options, n)
    if holds_run(run_dir) and not overwrite:
        raise FedsimError(f"{run_dir} already holds a run; use --resume {run_dir}, another --out, or --overwrite")
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / SILO_STATE_DIR, ignore_errors=True)  # the silos' own kept parameters
    if silos:
        cfg.network = first_silos_gml(cfg.network, silos, run_dir)
    return cfg, run_dir
