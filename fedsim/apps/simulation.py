"""Run a training run on Flower's Simulation Engine (Ray), in-process.

One virtual SuperNode per silo. Ray listens on 127.0.0.1 only and has no
dashboard (:func:`fedsim.guard.ray_local_init_args`). Nothing is left running
afterwards, even when this process is killed: the engine shuts Ray down when
the ServerApp returns, and a watchdog (:class:`fedsim.guard.Watchdog`) ends
whatever of Ray's session is still alive (its agents outlive ``ray.shutdown``
and a SIGKILL of the driver) and removes Ray's temporary directory. No network access: telemetry, Ray usage stats and
runtime dependency installation are off, and ``FLWR_HOME`` is inside the run
directory.

Per-round overhead: Flower's in-memory grid and the engine's message loop
each poll every 100 ms, which would add ~0.2 s to every round. fedsim makes
both loops wake up as soon as there is work instead, see
:func:`fedsim.flower_compat.fast_engine_poll`: storing an instruction in the
in-memory LinkState wakes the engine's loop that hands instructions to the
ClientApp workers, and storing a reply wakes the grid's ``send_and_receive``.
Both loops keep Flower's timed poll (every 100 ms) as a fallback, so the
messages, their order and the results are those of the unpatched loops; only
the waiting between them is shorter. (fedsim used to poll both every 5 ms:
that waited ~2.5 ms per loop per round on average and spent driver CPU
scanning the LinkState that the ClientApp actors need on a small machine.)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from fedsim import flower_compat, guard
from fedsim import interrupt
from fedsim.apps.config import RunConfig


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


# fedsim's own patch of the engine's polling loops (kept under this name for the engine benchmark).
_fast_engine_poll = flower_compat.fast_engine_poll


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
    flower_compat.fast_engine_poll()
    cores = os.cpu_count() or 1
    workers = cfg.workers or min(cores, 2)
    ray_tmp = tempfile.mkdtemp(prefix="fedsim-ray-")  # short: Ray's socket paths are length-limited
    result: dict = {}
    app = sa.make_server_app(cfg, run_dir, progress=progress, resume=resume, result=result,
                             on_round=on_round)
    if cfg.ray_address:  # an existing cluster: one ClientApp actor per cluster CPU, its own processes
        guard.cluster_ray()
        backend_config = {"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
                          "init_args": {"address": cfg.ray_address, "logging_level": logging.ERROR,
                                        "log_to_driver": False}}
    else:
        backend_config = {
            "client_resources": {"num_cpus": cores / workers, "num_gpus": 0.0},
            "init_args": guard.ray_local_init_args(num_cpus=cores, _temp_dir=ray_tmp,
                                                   logging_level=logging.ERROR, log_to_driver=False),
        }
    interrupt.reset()
    watchdog = guard.Watchdog(remove=[ray_tmp]).start()
    try:
        flwr.simulation.run_simulation(server_app=app, client_app=client_app, num_supernodes=n,
                                       backend_config=backend_config)
    except KeyboardInterrupt:
        interrupt.request()  # the round loop (another thread) checkpoints and ends at the next round
        raise
    except RuntimeError as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, sa.FedsimError):
            raise cause from None
        raise
    finally:
        watchdog.stop()  # ends what Ray left running (its agents) and removes its folder
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if interrupt.requested():
        raise KeyboardInterrupt
    if not result:
        raise sa.FedsimError(f"the simulation ended without completing the run; see {run_dir}")
    return result
