"""Run a training run on Flower's Simulation Engine (Ray), in-process.

One virtual SuperNode per silo. Nothing is left running afterwards: the
engine shuts Ray down when the ServerApp returns, and fedsim removes Ray's
temporary directory. No network access: telemetry, Ray usage stats and
runtime dependency installation are off, and ``FLWR_HOME`` is inside the run
directory.

Per-round overhead: Flower's in-memory grid and the engine's message loop
each poll every 100 ms, which would add ~0.2 s to every round. fedsim polls
every 5 ms instead: the grid's ``pull_interval`` is set on the Grid object,
and the engine's loop (which has no setting in Flower 1.42) is replaced by an
identical loop with a shorter wait, see :func:`_fast_engine_poll`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from fedsim.apps.config import RunConfig

POLL_S = 0.005


def quiet_env(flwr_home: Path) -> None:
    """Environment for a network-silent Flower + Ray run (set before importing flwr)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    os.environ["FLWR_HOME"] = str(flwr_home)
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _fast_engine_poll(interval: float = POLL_S) -> None:
    """Make the simulation engine move messages to its workers every ``interval`` s."""
    from flwr.server.superlink.fleet.vce import vce_api

    if getattr(vce_api.add_messages_to_queue, "_fedsim", False):
        return
    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop):
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(interval)

    add_messages_to_queue._fedsim = True  # type: ignore[attr-defined]
    add_messages_to_queue.__wrapped__ = original  # type: ignore[attr-defined]
    vce_api.add_messages_to_queue = add_messages_to_queue


def run_simulation(cfg: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
                   on_round=None) -> dict:
    """Run ``cfg`` on the Simulation Engine; returns the run summary."""
    from fedsim.topologies.networks import load_network

    cfg.validate()
    run_dir = Path(run_dir)
    n = load_network(cfg.network).n_silos
    quiet_env(run_dir / ".flwr")
    import flwr.simulation

    from fedsim.apps import server_app as sa
    from fedsim.apps.client_app import app as client_app

    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _fast_engine_poll()
    cores = os.cpu_count() or 1
    workers = cfg.workers or min(cores, 2)
    ray_tmp = tempfile.mkdtemp(prefix="fedsim-ray-")  # short: Ray's socket paths are length-limited
    result: dict = {}
    app = sa.make_server_app(cfg, run_dir, progress=progress, resume=resume, result=result,
                             on_round=on_round, pull_interval=POLL_S)
    backend_config = {
        "client_resources": {"num_cpus": cores / workers, "num_gpus": 0.0},
        "init_args": {"num_cpus": cores, "include_dashboard": False, "_temp_dir": ray_tmp,
                      "logging_level": logging.ERROR, "log_to_driver": False},
    }
    try:
        flwr.simulation.run_simulation(server_app=app, client_app=client_app, num_supernodes=n,
                                       backend_config=backend_config)
    except RuntimeError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, sa.FedsimError):
            raise cause from None
        raise
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if not result:
        raise sa.FedsimError(f"the simulation ended without completing the run; see {run_dir}")
    return result
