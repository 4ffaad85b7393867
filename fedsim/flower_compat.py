"""Every use of Flower's internals, in one place, for the Flower versions in :data:`TESTED`.

fedsim changes nothing in Flower's files. Where Flower 1.42 has a fixed wait
or a fixed process start that no setting reaches, fedsim replaces one module
attribute or one method at run time, in its own process only. Each patch
below keeps Flower's code path (same messages, same order, same processes
and isolation) and changes only how long something waits or what a new
process has already imported. Each is applied once per process: a second
call installs no second wrapper (it changes nothing for
:func:`fast_engine_poll`; for the others it replaces the setting, e.g. the
cap or the template). Every function first calls
:func:`check_flower_version`, because a patch written against one minor
version can silently misbehave on another; ``tests/test_flower_compat.py``
checks that each target still has the shape a patch assumes.

Patches
-------
:func:`fast_engine_poll` (Simulation Engine, ``fedsim run``)
    Flower's engine loop (``vce_api.add_messages_to_queue``) and the
    in-memory grid's ``InMemoryGrid.send_and_receive`` each poll the
    in-memory LinkState every 100 ms, adding ~0.2 s to every round. The patch
    makes ``InMemoryLinkState.store_message_ins/res`` set an event and both
    loops wait on it, keeping the 100 ms poll as a fallback. Buys ~0.2 s per
    round at no CPU cost (a 5 ms poll would cost driver CPU). The engine loop
    takes every node's instructions in one pass over the LinkState
    (:func:`take_instructions`, linear in the messages; Flower's loop asks
    node by node, each ask scanning all messages: quadratic in the silos),
    and with many replies outstanding the grid pulls in batches.
:func:`cap_supernode_sleeps` (``fedsim.deploy.fastnode``)
    The SuperNode loop (``flwr.supernode.start_client_internal``) sleeps 3 s
    after a poll that found no message and 0.5 s between checks for the
    ClientApp's reply, with no setting. The patch gives that module a
    ``time`` whose ``sleep`` never exceeds a cap. Buys up to ~3.5 s per round
    phase on a LAN.
:func:`warm_supernode_subprocess` (``fedsim.deploy.fastnode``)
    The SuperNode starts ``flower-superexec`` through its module's
    ``subprocess.Popen``. The patch starts another command with the same
    arguments instead (fedsim's warm SuperExec), leaving every other process
    start alone. Together with :func:`warm_executor` this buys the seconds a
    ClientApp process spends importing, on every message.
:func:`warm_executor` (``fedsim.deploy.warmexec``)
    Flower's ``SubprocessExecutor.launch`` starts a fresh ``flwr-clientapp``
    program per message, which imports Flower, torch and the task (seconds of
    CPU per message). The patch hands the very arguments Flower would pass
    (and its output suppression) to a template that forks a warm process
    instead; other task types keep Flower's launch. ``close`` also closes the
    template.
:func:`quick_pulls` (ServerApp, SuperNodes, warm ClientApps)
    Flower retries an object that is not uploaded yet after 1 s (doubling up
    to 10 s). A message is listed as soon as it is registered and its objects
    follow in separate requests, so a fast poller hits that wait almost every
    phase. The patch binds shorter ``initial_backoff``/``backoff_cap`` into a
    module's ``pull_objects`` (or ``pull_and_inflate_object_from_tree``).
    Buys ~1 s per phase.

Accessors
---------
:func:`control_client`, :func:`http_grid_module`,
:func:`supernode_module`, :func:`clientapp_runtime_module` and
:func:`entry_point` name the other Flower internals fedsim uses, so a Flower
upgrade has one file to review.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess as _subprocess
import threading
import time as _time
import types
from collections.abc import Sequence

from fedsim import interrupt
from fedsim.errors import FedsimError

TESTED = ("1.42",)  # Flower minor versions whose internals the patches below were checked against

ENGINE_FALLBACK_S = 0.1  # the engine loop's timed poll when no wake-up comes (Flower's own interval)
PULL_CAP_S = 0.05  # longest retry wait of an early object pull once quick_pulls applies
PULL_BATCH = 32  # awaiting more replies than this, the grid lets them gather PULL_GATHER_S between pulls
PULL_GATHER_S = 0.005

# Set when the ServerApp stores an instruction / when the engine stores a reply.
_INSTRUCTION_STORED = threading.Event()
_REPLY_STORED = threading.Event()

# The template that the patched SubprocessExecutor forks ClientApps from (the latest one given).
_WARM: dict = {}


def check_flower_version() -> str:
    """Return the installed Flower version; raise if its minor version is not in :data:`TESTED`.

    Returns
    -------
    str
        ``flwr.__version__``.

    Raises
    ------
    FedsimError
        One line naming the supported and the installed version.
    """
    import flwr

    version = str(getattr(flwr, "__version__", "unknown"))
    if ".".join(version.split(".")[:2]) not in TESTED:
        supported = ", ".join(f"{v}.x" for v in TESTED)
        raise FedsimError(f"fedsim supports Flower {supported}; found {version}: install "
                          f"'flwr=={TESTED[-1]}.*' (fedsim patches Flower internals that change "
                          f"between minor versions)")
    return version


# --------------------------------------------------------------------------- Simulation Engine
def fast_engine_poll(interval: float = ENGINE_FALLBACK_S) -> None:
    """Wake the engine's dispatch loop and the grid's reply loop on new messages.

    Replaces, once per process (later calls change nothing),
    ``vce_api.add_messages_to_queue`` (the loop that moves instructions from
    the LinkState to the ClientApp workers) and
    ``InMemoryGrid.send_and_receive`` by the same loops whose waits return as
    soon as the in-memory LinkState stores an instruction or a reply. Each
    loop clears its event *before* it scans the state, so a message stored
    during a scan is never missed.

    Parameters
    ----------
    interval : float
        The engine loop's timed fallback poll (s); the grid keeps its
        ``pull_interval`` as its fallback.
    """
    check_flower_version()
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if getattr(vce_api.add_messages_to_queue, "_fedsim", False):
        return
    original = vce_api.add_messages_to_queue

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop):
        nodes = set(nodes_mapping.keys())
        while not f_stop.is_set():
            _INSTRUCTION_STORED.clear()
            taken = take_instructions(state, nodes)
            for message in taken:
                queue.put(message)
            if not taken:
                _INSTRUCTION_STORED.wait(interval)

    def notify(method, event):
        def wrapper(self, message):
            result = method(self, message)
            event.set()
            return result
        wrapper._fedsim = True  # type: ignore[attr-defined]
        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
        return wrapper

    grid_original = InMemoryGrid.send_and_receive

    def send_and_receive(self, messages, *, timeout=None):
        # InMemoryGrid.send_and_receive (Flower 1.42), waiting on the reply event
        # instead of sleeping for pull_interval, and returning on the user's Ctrl-C.
        msg_ids = set(self.push_messages(messages))
        del messages
        end_time = _time.time() + (timeout if timeout is not None else 0.0)
        ret = []
        while (timeout is None or _time.time() < end_time) and not interrupt.requested():
            _REPLY_STORED.clear()
            res_msgs = self.pull_messages(msg_ids)
            ret.extend(res_msgs)
            msg_ids.difference_update({msg.metadata.reply_to_message_id for msg in res_msgs})
            if len(msg_ids) == 0:
                break
            if _REPLY_STORED.wait(self.pull_interval) and len(msg_ids) > PULL_BATCH:
                # Each pull costs time linear in the replies still awaited: with many silos, let
                # replies gather for a moment instead of pulling once per reply (quadratic).
                _time.sleep(PULL_GATHER_S)
        return ret

    send_and_receive._fedsim = True  # type: ignore[attr-defined]
    send_and_receive.__wrapped__ = grid_original  # type: ignore[attr-defined]
    InMemoryLinkState.store_message_ins = notify(InMemoryLinkState.store_message_ins, _INSTRUCTION_STORED)
    InMemoryLinkState.store_message_res = notify(InMemoryLinkState.store_message_res, _REPLY_STORED)
    InMemoryGrid.send_and_receive = send_and_receive
    add_messages_to_queue._fedsim = True  # type: ignore[attr-defined]
    add_messages_to_queue.__wrapped__ = original  # type: ignore[attr-defined]
    vce_api.add_messages_to_queue = add_messages_to_queue


def take_instructions(state, nodes: set[int]) -> list:
    """The undelivered instructions for ``nodes`` in an in-memory LinkState, marked delivered.

    What Flower 1.42's ``InMemoryLinkState.get_message_ins(node_id, limit=1)``
    does for one node, done for all nodes in one pass over the stored
    messages: Flower's engine calls it once per node per scan, and each call
    scans every stored message, so a round of n silos cost O(n^2) (about half
    the driver's CPU at 300 silos). Flower's own validity check
    (``_check_stored_messages``: expiry, federation) runs on the messages
    taken, and they are marked delivered with the same timestamp format.
    """
    from flwr.supercore.date import now

    with state.lock:
        ids = [i for i, m in state.message_ins_store.items()
               if m.metadata.delivered_at == "" and m.metadata.dst_node_id in nodes]
    if not ids:
        return []
    state._check_stored_messages(set(ids))  # drops expired or foreign messages, as get_message_ins does
    with state.lock:
        taken = [m for i in ids if (m := state.message_ins_store.get(i)) is not None and m.metadata.delivered_at == ""]
        stamp = now().isoformat()
        for m in taken:
            m.metadata.delivered_at = stamp
    return taken


# --------------------------------------------------------------------------- SuperNode
def supernode_module() -> types.ModuleType:
    """``flwr.supernode.start_client_internal``: the SuperNode loop's module."""
    check_flower_version()
    from flwr.supernode import start_client_internal

    return start_client_internal


def _capped_time(cap_s: float) -> types.ModuleType:
    """A stand-in for the ``time`` module whose ``sleep`` never exceeds ``cap_s``.

    Parameters
    ----------
    cap_s : float
        Longest sleep (s).

    Returns
    -------
    types.ModuleType
        ``time``'s names, with ``sleep(s)`` sleeping ``min(s, cap_s)``.
    """
    mod = types.ModuleType("time")
    mod.__dict__.update({k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})

    def sleep(seconds: float) -> None:
        _time.sleep(min(float(seconds), cap_s))

    mod.sleep = sleep
    mod._fedsim = True  # type: ignore[attr-defined]
    return mod


def cap_supernode_sleeps(cap_s: float) -> None:
    """Cap the SuperNode loop's fixed sleeps (3 s idle, 0.5 s per reply check) at ``cap_s``.

    The loop's module gets a ``time`` built from the real one each call, so a
    second call replaces the cap rather than stacking stand-ins.

    Parameters
    ----------
    cap_s : float
        Longest sleep of the loop (s).
    """
    supernode_module().time = _capped_time(cap_s)


def _warm_subprocess(superexec: Sequence[str]) -> types.ModuleType:
    """A stand-in for ``subprocess`` that runs ``superexec`` where ``flower-superexec`` is started.

    Parameters
    ----------
    superexec : Sequence[str]
        The command that replaces ``flower-superexec``; Flower's arguments follow it.

    Returns
    -------
    types.ModuleType
        ``subprocess``'s names, with ``Popen`` rewriting that one command.
    """
    mod = types.ModuleType("subprocess")
    mod.__dict__.update({k: getattr(_subprocess, k) for k in dir(_subprocess) if not k.startswith("__")})

    def popen(args, *a, **kw):
        if isinstance(args, (list, tuple)) and args and os.path.basename(str(args[0])) == "flower-superexec":
            args = [*superexec, *args[1:]]
        return _subprocess.Popen(args, *a, **kw)

    mod.Popen = popen
    mod._fedsim = True  # type: ignore[attr-defined]
    return mod


def warm_supernode_subprocess(superexec: Sequence[str]) -> None:
    """Make the SuperNode start ``superexec`` where it starts ``flower-superexec``.

    Built from the real ``subprocess`` each call: a second call replaces the
    command rather than stacking stand-ins.

    Parameters
    ----------
    superexec : Sequence[str]
        The command run instead of ``flower-superexec`` (e.g. fedsim's warm
        SuperExec), followed by Flower's arguments.
    """
    supernode_module().subprocess = _warm_subprocess(tuple(superexec))


# --------------------------------------------------------------------------- object pulls
def quick_pulls(module: types.ModuleType, initial_s: float, cap_s: float = PULL_CAP_S,
                name: str = "pull_objects") -> None:
    """Make ``module``'s object pulls retry after ``initial_s`` (doubling up to ``cap_s``).

    Flower 1.42 retries an object that is not uploaded yet after 1 s
    (doubling up to 10 s). A message is listed as soon as its sender
    registered it, and its objects follow in separate requests, so a receiver
    that polls quickly often asks a moment too early and then waits a whole
    second. That happens to SuperNodes (pulling from the SuperLink), to the
    ServerApp, and to ClientApps (pulling from their SuperNode, which may
    still be downloading the message over a WAN). The object is already on
    its way, so the retries stay short (at most ``cap_s``): a doubling
    backoff would overshoot its arrival by up to the whole download time.

    ``module.<name>`` becomes a :func:`functools.partial` of the function of
    that name in ``flwr.supercore.inflatable.inflatable_utils`` (never of the
    current ``module.<name>``), so a second call replaces the backoff.

    Parameters
    ----------
    module : types.ModuleType
        A Flower module that imported ``name`` from ``inflatable_utils``, e.g.
        :func:`supernode_module`, :func:`http_grid_module`,
        :func:`clientapp_runtime_module`.
    initial_s : float
        First retry wait (s).
    cap_s : float
        Longest retry wait (s).
    name : str
        ``pull_objects`` or ``pull_and_inflate_object_from_tree``.
    """
    check_flower_version()
    from flwr.supercore.inflatable import inflatable_utils

    setattr(module, name, functools.partial(getattr(inflatable_utils, name), initial_backoff=initial_s,
                                            backoff_cap=cap_s))


def http_grid_module() -> types.ModuleType:
    """``flwr.superlink.grid.http_grid``: the ServerApp's grid in a deployment (for :func:`quick_pulls`)."""
    check_flower_version()
    from flwr.superlink.grid import http_grid

    return http_grid


def clientapp_runtime_module() -> types.ModuleType:
    """``flwr.supernode.runtime.run_clientapp``: where a ClientApp pulls its message
    (``pull_and_inflate_object_from_tree``, for :func:`quick_pulls`)."""
    check_flower_version()
    from flwr.supernode.runtime import run_clientapp

    return run_clientapp


# --------------------------------------------------------------------------- SuperExec
def _clientapp_argv(spec) -> list[str]:
    """The ``flwr-clientapp`` command line Flower 1.42's ``SubprocessExecutor.launch`` builds for ``spec``.

    Parameters
    ----------
    spec : flwr.supercore.superexec.executor.types.ExecutionSpec
        A launch request.

    Returns
    -------
    list[str]
        Program name and arguments.
    """
    from flwr.supercore.superexec.executor import subprocess_executor as se

    args = [se.TASK_TYPE_TO_COMMAND[spec.task_type], se.TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
            spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        args.append("--insecure")
    elif spec.root_certificates_path is not None:
        args.extend(["--root-certificates", spec.root_certificates_path])
    if spec.parent_pid is not None:
        args.extend(["--parent-pid", str(spec.parent_pid)])
    if spec.runtime_dependency_install:
        args.append("--allow-runtime-dependency-installation")
    return args


def warm_executor(template) -> None:
    """Route ClientApp launches of Flower's ``SubprocessExecutor`` to ``template``.

    ``launch`` of a ClientApp task calls ``template.launch(argv,
    suppress_output)`` with the arguments and the output setting Flower's own
    launch would use (it starts the program with stdout and stderr on
    ``/dev/null`` when ``spec.suppress_output``); other task types keep
    Flower's launch. ``close`` closes the template, then runs Flower's close.
    The methods are replaced once per process; a later call only swaps the
    template.

    Parameters
    ----------
    template : object
        Has ``launch(argv: list[str], suppress_output: bool)`` and ``close()``.
    """
    check_flower_version()
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import subprocess_executor as se
    from flwr.supercore.superexec.executor.types import LaunchResult

    _WARM["template"] = template
    if getattr(se.SubprocessExecutor.launch, "_fedsim", False):
        return
    original = se.SubprocessExecutor.launch
    original_close = se.SubprocessExecutor.close

    def launch(self, spec):
        if spec.task_type != TaskType.CLIENT_APP:
            return original(self, spec)
        _WARM["template"].launch(_clientapp_argv(spec), bool(spec.suppress_output))
        return LaunchResult.accepted()

    def close(self):
        _WARM["template"].close()
        original_close(self)

    launch._fedsim = close._fedsim = True  # type: ignore[attr-defined]
    launch.__wrapped__ = original  # type: ignore[attr-defined]
    close.__wrapped__ = original_close  # type: ignore[attr-defined]
    se.SubprocessExecutor.launch = launch
    se.SubprocessExecutor.close = close


# --------------------------------------------------------------------------- entry points, Control API
def entry_point(script: str):
    """The function behind Flower's console script ``script`` (e.g. ``flower-supernode``).

    Resolved through the package metadata, so it follows Flower's own
    ``[project.scripts]`` rather than a module path.

    Parameters
    ----------
    script : str
        A console script of the ``flwr`` distribution.

    Returns
    -------
    Callable[[], None]
        The entry point (reads ``sys.argv``).
    """
    check_flower_version()
    from importlib.metadata import entry_points

    for ep in entry_points(group="console_scripts", name=script):
        if ep.dist is None or ep.dist.name == "flwr":
            return ep.load()
    raise FedsimError(f"Flower has no console script {script!r}: reinstall 'flwr=={TESTED[-1]}.*'")


def control_client(address: str, ca_cert, insecure: bool, *, name: str = "fedsim-local"):
    """A Control API client for the SuperLink at ``address``: the ``flwr`` CLI's own.

    The ``flwr`` CLI keeps its credential store under ``FLWR_HOME``: set it
    before the call.

    Parameters
    ----------
    address : str
        The SuperLink's Control API ``HOST:PORT``.
    ca_cert : str or os.PathLike or None
        CA certificate of the SuperLink (ignored when ``insecure``).
    insecure : bool
        Plain HTTP instead of TLS.
    name : str
        The connection's name (as in ``FLWR_HOME/config.toml``).

    Returns
    -------
    flwr.supercore.control.control_http_client.ControlHttpClient
        Close it with ``close()``.
    """
    check_flower_version()
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection

    conn = SuperLinkConnection(name, address, str(ca_cert) if (ca_cert and not insecure) else None, insecure)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Using SuperLink ..."
        return init_http_client_from_connection(conn)


# -- the Control API (what `flwr supernode list`, `flwr ls` and `flwr stop` send) -------
def list_nodes(control) -> list[dict]:
    """Nodes a SuperLink knows: ``node_id``, ``status``, ``name``."""
    check_flower_version()
    from flwr.proto.control_pb2 import ListNodesRequest

    res = control.ListNodes(ListNodesRequest())
    return [{"node_id": n.node_id, "status": n.status, "name": n.name} for n in res.nodes_info]


def run_status(control, run_id: int):
    """The ``flwr.common.typing.Run`` of ``run_id`` (status, sub-status, bytes, ClientApp time)."""
    check_flower_version()
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest

    res = control.ListRuns(ListRunsRequest(run_id=run_id))
    return [run_from_proto(p) for p in res.run_dict.values()][0]


def stop_run(control, run_id: int) -> bool:
    """Ask the SuperLink to stop a run."""
    check_flower_version()
    from flwr.proto.control_pb2 import StopRunRequest

    return bool(control.StopRun(StopRunRequest(run_id=run_id)).success)
