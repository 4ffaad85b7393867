"""``fedsim run --engine mpi``: the silo loop on MPI ranks, no Flower process.

One rank per silo (``mpiexec -n N``, N = the network's silos). Rank 0 also
plays the ServerApp's part: it builds the :class:`~fedsim.apps.plan.RunPlan`,
hands every rank its part of the mixing plan, collects the ranks' records at
every sync (``--sync-every``) into the same run directory ``fedsim run``
writes (``rounds.csv``, checkpoints, ``summary.json`` with ``data_plane:
mpi``, plots), and stops the ranks if the run must stop. Every silo keeps
its own model after each sync in ``RUN/silos/`` (so ``--resume`` continues
from there; on a cluster, put the run directory on a shared file system).

For the same seed the ranks end with the same models as the Simulation
Engine and the gRPC deployment: they run the same silo loop
(:mod:`fedsim.peer.loop`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from fedsim.apps.config import RunConfig
from fedsim.errors import FedsimError

MPI_ENV_MARKERS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def under_mpiexec() -> bool:
    """Whether this process was started by an MPI launcher."""
    return any(k in os.environ for k in MPI_ENV_MARKERS)


def mpiexec() -> str:
    """The ``mpiexec`` of this environment (the ``mpich`` wheel's), else the one on PATH."""
    cand = Path(sys.executable).parent / "mpiexec"
    found = str(cand) if cand.exists() else shutil.which("mpiexec")
    if not found:
        raise FedsimError("--engine mpi needs mpiexec: pip install mpi4py mpich (or use the cluster's MPI)")
    return found


def launch(np_: int, argv: list[str]) -> int:
    """Run ``fedsim`` with ``argv`` under ``mpiexec -n np_`` on this machine; returns its exit code."""
    cmd = [mpiexec(), "-n", str(int(np_)), sys.executable, "-m", "fedsim", *argv]
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def run_mpi(cfg: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False) -> dict | None:
    """Run ``cfg`` on the MPI ranks of ``COMM_WORLD``; rank 0 returns the summary, the others ``None``."""
    from mpi4py import MPI

    from fedsim.apps.plan import RunPlan
    from fedsim.apps.records import SILO_STATE_DIR
    from fedsim.apps.server_app import TIMES_FILE, Book, _read_times, measured_cycle_ms
    from fedsim.clients import get_task
    from fedsim.io import atomic_write_text
    from fedsim.peer.loop import SiloLoop
    from fedsim.peer.mpi import MpiTransport, graph_communicator
    from fedsim.peer.silo import Silo

    torch.set_num_threads(1)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    run_dir = Path(run_dir)
    cfg.data_plane = "mpi"
    # Rank 0 plans; the others learn the outcome (or the error) from it.
    setup = None
    if rank == 0:
        try:
            plan = RunPlan.build(cfg)
            if plan.n != size:
                raise FedsimError(f"--engine mpi needs one rank per silo: {plan.net.name} has {plan.n} silos, "
                                  f"mpiexec started {size} (use -n {plan.n} or --np {plan.n})")
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.json", cfg.to_json())
            book = Book(plan, run_dir, "mpi", progress)
            if resume and book.resume() is None:
                raise FedsimError(f"cannot resume {run_dir}: it has no checkpoint")
            if book.start == 1:
                (run_dir / TIMES_FILE).unlink(missing_ok=True)
            rows = [plan.silo_rows(i, 1, cfg.rounds) for i in range(plan.n)]
            setup = {"rows": rows, "start": book.start, "size": int(plan.initial_model().size)}
        except Exception as exc:  # noqa: BLE001 - every rank must hear of it, then stop
            setup = {"error": exc}
    setup = world.bcast(setup, root=0)
    if "error" in setup:
        if rank == 0:
            raise setup["error"]
        return None
    rows = world.scatter(setup["rows"] if rank == 0 else None, root=0)
    start, model_size = setup["start"], setup["size"]
    sources = sorted({j for r in rows.values() for j, _, _ in r.inbound})
    dests = sorted({j for r in rows.values() for j in (*r.fresh_to, *r.stale_to)})
    comm = graph_communicator(world, sources, dests)

    task = get_task(cfg.task, cfg.task_options)
    silo = Silo(rank, size, cfg.seed, task)
    state_dir = run_dir / SILO_STATE_DIR / f"mpi-{cfg.key()}"
    if start > 1:
        _load(silo, state_dir, start - 1)
    transport = MpiTransport(comm, model_size)
    loop = SiloLoop(silo, rows.__getitem__, transport, cfg.local_steps, True, cfg.peer_timeout)
    k = start
    stop = False
    while k <= cfg.rounds and not stop:
        last = min(cfg.rounds, ((k - 1) // cfg.sync_interval + 1) * cfg.sync_interval)
        records = [loop.step(r) for r in range(k, last + 1)]
        loop.transport.flush(cfg.peer_timeout)
        _save(silo, state_dir, last, last - k + 1)
        gathered = world.gather({"silo": rank, "records": records, "bytes_sent": transport.bytes_sent}, root=0)
        transport.bytes_sent = 0
        if rank == 0:
            stop = _record(book, gathered, k, last)
        stop = world.bcast(stop, root=0)
        k = last + 1
    final = world.gather(loop.final(), root=0)
    comm.Free()
    if rank != 0:
        return None
    if not stop:
        book.finish({int(m["silo"]): m for m in final})
    book.checkpoint(min(k - 1, cfg.rounds), np.zeros((0, 0), np.float32))
    times = _read_times(run_dir)
    if times:
        book.extra_summary["measured_cycle_ms"] = measured_cycle_ms(times)
    summary = book.summary()
    if book.stop_reason:
        from fedsim.apps.server_app import RunStopped

        raise RunStopped(book.stop_reason)
    return summary


def _record(book, gathered: list[dict], first: int, last: int) -> bool:
    """Rank 0: write rounds ``first..last`` from every rank's records; returns whether to stop."""
    from fedsim.apps.server_app import _write_times

    reports = {g["silo"]: g for g in gathered}
    by_round = {g["silo"]: {int(r["round"]): r for r in g["records"]} for g in gathered}
    book.bytes["peer_array_bytes"] += sum(int(g["bytes_sent"]) for g in gathered)
    prev = min(r[first]["t_start"] for r in by_round.values())
    for k in range(first, last + 1):
        train = {s: {key: v for key, v in st[k].items() if isinstance(v, (int, float))} for s, st in by_round.items()}
        failed = {s: f"no model from silo(s) {sorted(st[k]['missing'])}" for s, st in by_round.items()
                  if st[k]["missing"]}
        done = max(st[k]["t_done"] for st in by_round.values())
        stop = book.add_round(k, train, failed, max(0.0, done - prev), float("nan"))
        prev = done
        if stop is not None:
            book.stop_reason = stop
            return True
    _write_times(book.dir, reports)
    book.rec.append_rounds()
    book.checkpoint(last, np.zeros((0, 0), np.float32))
    return False


def _save(silo, folder: Path, rnd: int, every: int) -> None:
    from fedsim.apps.client_app import save_local_state

    state = {"model": torch.from_numpy(silo.get_flat().copy()), "round": torch.tensor(rnd)} | silo.local_state()
    save_local_state(folder, silo.silo, rnd, every, state, prefix="peer")  # this sync's file and the last


def _load(silo, folder: Path, rnd: int) -> None:
    from fedsim.apps.client_app import load_local_state

    saved = load_local_state(folder, silo.silo, rnd + 1, prefix="peer")
    if saved is None or int(saved["round"]) != rnd:
        raise FedsimError(f"silo {silo.silo} has no model after round {rnd} in {folder} to resume from")
    silo.set_flat(saved["model"].numpy())
    silo.set_local_state({k: v for k, v in saved.items() if k not in ("model", "round")})

