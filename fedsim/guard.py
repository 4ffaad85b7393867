"""Local processes that nobody else can reach and that never outlive their run.

Two pieces, used by every place that starts helper processes (the Simulation
Engine's Ray in :mod:`fedsim.apps.simulation`, the sweep's Ray in
:mod:`fedsim.timing.sweep`, the local deployment in :mod:`fedsim.deploy.local`):

* :func:`ray_local_init_args` / :func:`loopback_ray`: Ray on 127.0.0.1 only,
  without a dashboard. Ray replaces a ``_node_ip_address`` of ``127.0.0.1``
  by the machine's outward address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
  is ``0`` (Ray's switch for a single-machine, loopback-only Ray); with it,
  GCS, raylet, object manager, workers and the agents all bind 127.0.0.1.
* :class:`Watchdog`: a small process (``python -m fedsim.guard``) in a
  session of its own that watches the process that started it. While that
  parent lives it records, every 0.2 s, the parent's descendants that appeared
  since it started (with their start times, so a reused PID is never taken
  for one of them); every process started meanwhile also inherits the
  environment variable ``FEDSIM_GUARD=<tag>``. When the parent dies (even by
  SIGKILL: the watchdog notices the end of its stdin pipe or the parent's
  PID going away) or the parent leaves the ``with`` block, the watchdog sends
  SIGTERM to every recorded or tagged process that is still alive, SIGKILL
  after 1.5 s, removes the folders it was given (Ray's temporary folder),
  runs the commands it was given for a parent's death (the local deployment
  records that its run crashed) and exits. Nothing is matched by name.

PR_SET_PDEATHSIG was not enough: it reaches only direct children, and Ray's
agents and Flower's SuperExec are grandchildren, some in sessions of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence

import psutil

TAG_ENV = "FEDSIM_GUARD"
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
GRACE_S = 1.5
POLL_S = 0.2


def loopback_ray() -> None:
    """Make a Ray started by this process bind 127.0.0.1 only (call before ``ray.init``)."""
    os.environ[RAY_LOOPBACK_ENV] = "0"
    mod = sys.modules.get("ray._private.ray_constants")
    if mod is not None:  # ray was imported before the variable was set: its constant is read at import
        mod.ENABLE_RAY_CLUSTER = False


def cluster_ray() -> None:
    """Undo :func:`loopback_ray` before joining an existing (multi-node) Ray cluster: Ray refuses to
    join one while its loopback-only switch is on."""
    os.environ.pop(RAY_LOOPBACK_ENV, None)
    mod = sys.modules.get("ray._private.ray_constants")
    if mod is not None:
        mod.ENABLE_RAY_CLUSTER = True


def ray_local_init_args(**extra) -> dict:
    """``ray.init`` keyword arguments of a private, loopback-only Ray without a dashboard.

    Examples
    --------
    >>> a = ray_local_init_args(num_cpus=2)
    >>> a["_node_ip_address"], a["include_dashboard"], a["num_cpus"]
    ('127.0.0.1', False, 2)
    """
    loopback_ray()
    return {"_node_ip_address": "127.0.0.1", "include_dashboard": False} | extra


class Watchdog:
    """Ends every process started while it is active when its parent ends (or the block ends).

    Parameters
    ----------
    remove : sequence of path
        Folders to delete once the processes are gone (e.g. Ray's temporary folder).
    after_death : sequence of argv lists
        Commands the watchdog runs after the cleanup when the parent died (not
        when the block ended), e.g. one that records that the run crashed.

    Examples
    --------
    >>> with Watchdog() as w:  # doctest: +SKIP
    ...     subprocess.Popen(["sleep", "100"])   # killed when the block ends or this process dies
    """

    def __init__(self, remove: Sequence[str | os.PathLike] = (),
                 after_death: Sequence[Sequence[str]] = ()) -> None:
        self.remove = [str(p) for p in remove]
        self.after_death = [list(map(str, c)) for c in after_death]
        self.tag = uuid.uuid4().hex
        self.proc: subprocess.Popen | None = None
        self._old_tag: str | None = None

    def start(self) -> Watchdog:
        me = psutil.Process()
        cmd = [sys.executable, "-m", "fedsim.guard", "--parent", str(me.pid),
               "--parent-start", repr(me.create_time()), "--tag", self.tag]
        for d in self.remove:
            cmd += ["--remove", d]
        for c in self.after_death:
            cmd += ["--after-death", json.dumps(c)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        # the watchdog says "ready" once it has recorded what existed before it (not ours)
        if select.select([self.proc.stdout], [], [], 30)[0]:
            self.proc.stdout.readline()
        self._old_tag = os.environ.get(TAG_ENV)
        os.environ[TAG_ENV] = self.tag
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 15) -> None:
        """End what was started meanwhile, now; wait for the watchdog to finish."""
        if self.proc is None:
            return
        if self._old_tag is None:
            os.environ.pop(TAG_ENV, None)
        else:
            os.environ[TAG_ENV] = self._old_tag
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the watchdog process ----------------------------------------------------------------------
def _same(proc: psutil.Process, started: float) -> bool:
    try:
        return proc.is_running() and abs(proc.create_time() - started) < 0.01 \
            and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _live(proc: psutil.Process) -> bool:
    """Still the same process (``is_running`` compares start times) and not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _tagged(tag: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG_ENV) == tag and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def end_processes(procs: Sequence[psutil.Process], grace: float = GRACE_S) -> list[int]:
    """SIGTERM ``procs`` (and their descendants), SIGKILL what is left after ``grace`` s; returns PIDs."""
    everyone: dict[int, psutil.Process] = {}
    for p in procs:
        try:
            everyone[p.pid] = p
            for c in p.children(recursive=True):
                everyone[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    everyone.pop(os.getpid(), None)
    everyone = {pid: p for pid, p in everyone.items() if _live(p)}  # a zombie cannot be ended, only reaped
    for p in everyone.values():
        try:
            p.send_signal(signal.SIGTERM)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(list(everyone.values()), timeout=grace)
    for p in alive:
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=5)
    return sorted(everyone)


def _watch(parent_pid: int, parent_start: float, tag: str, remove: Sequence[str],
           after_death: Sequence[Sequence[str]] = ()) -> None:
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):  # only the parent's end stops us
        signal.signal(s, signal.SIG_IGN)
    me = os.getpid()
    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        parent = None
    before: set[int] = set()
    if parent is not None and _same(parent, parent_start):
        before = {c.pid for c in parent.children(recursive=True)}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    seen: dict[int, psutil.Process] = {}
    stdin = sys.stdin.buffer
    stopped = False
    while parent is not None and _same(parent, parent_start):
        try:
            for c in parent.children(recursive=True):
                if c.pid != me and c.pid not in before and c.pid not in seen:
                    c.create_time()  # cached by psutil: identifies this process from now on
                    seen[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        ready, _, _ = select.select([stdin], [], [], POLL_S)
        if ready:
            stopped = stdin.readline().strip() == b"stop"  # or end of file: the parent is gone
            break
    victims = [p for p in seen.values() if _live(p)]
    known = {p.pid for p in victims}
    victims += [p for p in _tagged(tag) if p.pid not in known and p.pid not in (me, parent_pid)]
    end_processes(victims)
    for d in remove:
        shutil.rmtree(d, ignore_errors=True)
    if not stopped:
        for cmd in after_death:
            subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60, check=False)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fedsim.guard", description=__doc__.splitlines()[0])
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--parent-start", type=float, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--remove", action="append", default=[])
    ap.add_argument("--after-death", action="append", default=[], type=json.loads)
    a = ap.parse_args(argv)
    _watch(a.parent, a.parent_start, a.tag, a.remove, a.after_death)


if __name__ == "__main__":
    main()
