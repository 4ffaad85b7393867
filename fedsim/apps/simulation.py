"""Run a training run on Flower's Simulation Engine (Ray), in-process.

One virtual SuperNode per silo. Nothing is left running afterwards: the
engine shuts Ray down when the ServerApp returns, and fedsim removes Ray's
temporary directory. No network access: telemetry, Ray usage stats and
runtime dependency installation are off, and ``FLWR_HOME`` is inside the run
directory.

Per-round overhead: Flower's in-memory grid and the engine's message loop
each poll every 100 ms, which would add ~0.2 s to every round. fedsim makes
both loops wake up as soon as there is work instead, see
:func:`_fast_engine_poll`: storing an instruction in the in-memory LinkState
wakes the engine's loop that hands instructions to the ClientApp workers, and
storing a reply wakes the grid's ``send_and_receive``. Both loops keep
Flower's timed poll (every 100 ms) as a fallback, so the messages, their
order and the results are those of the unpatched loops; only the waiting
between them is shorter. (fedsim used to poll both every 5 ms: that waited
~2.5 ms per loop per round on average and spent driver CPU scanning the
LinkState that the ClientApp actors need on a small machine.)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

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


ENGINE_FALLBACK_S = 0.1  # the engine loop's timed poll when no wake-up comes (Flower's own interval)

# Set when the ServerApp stores an instruction / when the engine stores a reply.
_INSTRUCTION_STORED = threading.Event()
_REPLY_STORED = threading.Event()


def _fast_engine_poll(interval: float = ENGINE_FALLBACK_S) -> None:
    """Wake the engine's dispatch loop and the grid's reply loop on new messages.

    Replaces, once per process, ``vce_api.add_messages_to_queue`` (the loop that
    moves instructions from the LinkState to the ClientApp workers) and
    ``InMemoryGrid.send_and_receive`` by the same loops whose waits return as
    soon as the in-memory LinkState stores an instruction or a reply. Each
    loop clears its event *before* it scans the state, so a message stored
    during a scan is never missed; ``interval`` (engine) and the grid's
    ``pull_interval`` remain as timed fallbacks.
    """
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if getattr(vce_api.add_messages_to_queue, "_fedsim", False):
        return
    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop):
        while not f_stop.is_set():
            _INSTRUCTION_STORED.clear()
            found = False
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
                    found = True
            if not found:  # (a node may hold more than the one message taken per scan)
                _INSTRUCTION_STORED.wait(interval)

    def notify(method, event):
        def wrapper(self, message):
            result = method(self, message)
            event.set()
            return result
        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
        return wrapper

    grid_original = InMemoryGrid.send_and_receive

    def send_and_receive(self, messages, *, timeout=None):
        # InMemoryGrid.send_and_receive (Flower 1.42), waiting on the reply event
        # instead of sleeping for pull_interval.
        msg_ids = set(self.push_messages(messages))
        del messages
        end_time = time.time() + (timeout if timeout is not None else 0.0)
        ret = []
        while timeout is None or time.time() < end_time:
            _REPLY_STORED.clear()
            res_msgs = self.pull_messages(msg_ids)
            ret.extend(res_msgs)
            msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in res_msgs})
            if len(msg_ids) == 0:
                break
            _REPLY_STORED.wait(self.pull_interval)
        return ret

    send_and_receive.__wrapped__ = grid_original  # type: ignore[attr-defined]
    InMemoryLinkState.store_message_ins = notify(InMemoryLinkState.store_message_ins, _INSTRUCTION_STORED)
    InMemoryLinkState.store_message_res = notify(InMemoryLinkState.store_message_res, _REPLY_STORED)
    InMemoryGrid.send_and_receive = send_and_receive
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
                             on_round=on_round)
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
