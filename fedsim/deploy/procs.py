"""Processes a deployment starts, and their teardown by PID.

Every command runs in its own session (``start_new_session``), so its process
group holds it and the children it forks in that group. Flower's SuperLink
starts its SuperExec in a *new* session, so a process group is not enough:
before stopping, :meth:`ProcessSet.stop` snapshots each process's whole tree
(parent links, read with ``psutil``) and signals every PID in it: SIGTERM, a grace
period, then SIGKILL for what is left. Nothing is matched by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


def descendants(pid: int) -> list[int]:
    """PIDs of all live descendants of ``pid`` (children first)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    return [k.pid for k in kids]


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening_port(host: str = "127.0.0.1", low: int = 10000, high: int = 20000, taken=()) -> int:
    """A free port below Linux's ephemeral range (32768-60999), for a server that binds it later.

    A port from :func:`free_port` is ephemeral: between now and the bind, any outgoing connection of
    this machine may take it. Ports in ``[low, high)`` are never handed out that way.
    """
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}..{high - 1} on {host}")


def processes_with_env(key: str, value: str) -> list[int]:
    """Live PIDs whose environment holds ``key=value`` (finds strays of one deployment)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(key) == value and is_alive(proc.pid):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class ProcessSet:
    """Named processes started by a deployment, each logging to ``log_dir/NAME.log``."""

    def __init__(self, log_dir: str | os.PathLike | None) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None  # None: only adopted processes
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.known: set[int] = set()  # every PID seen in a tree of ours

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> subprocess.Popen:
        if name in self.procs and self.procs[name].poll() is None:
            raise RuntimeError(f"process {name} is already running")
        full_env = dict(os.environ)
        full_env.update(env or {})
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        try:
            proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                    cwd=cwd, start_new_session=True, stdin=subprocess.DEVNULL)
        finally:
            log.close()  # the child holds its own descriptor
        self.procs[name] = proc
        self.known.add(proc.pid)
        return proc

    def adopt(self, name: str, proc: subprocess.Popen) -> subprocess.Popen:
        """Look after a process started elsewhere (in a session of its own) as ``name``."""
        self.procs[name] = proc
        self.known.add(proc.pid)
        return proc

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def tail(self, name: str, n: int = 20) -> str:
        try:
            lines = self.log(name).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def pids(self, name: str) -> list[int]:
        """The process ``name`` and its live descendants."""
        p = self.procs.get(name)
        if p is None:
            return []
        tree = [p.pid] + descendants(p.pid)
        self.known.update(tree)
        return [x for x in tree if is_alive(x)]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> list[int]:
        """Signal ``name``'s whole tree (used to simulate a crash); returns the PIDs signalled."""
        tree = self.pids(name)
        _signal_all(tree, sig, pgid=self.procs[name].pid)
        self.procs[name].wait(timeout=10)
        return tree

    def stop(self, names: Sequence[str] | None = None, grace: float = 3.0) -> None:
        """SIGTERM each tree, wait up to ``grace`` s, SIGKILL what is left, reap."""
        names = list(self.procs) if names is None else list(names)
        trees = {n: self.pids(n) for n in names}
        for n in names:
            _signal_all(trees[n], signal.SIGTERM, pgid=self.procs[n].pid)
        deadline = time.monotonic() + grace
        everyone = [p for t in trees.values() for p in t]
        while time.monotonic() < deadline and any(is_alive(p) for p in everyone):
            for n in names:
                self.procs[n].poll()  # reap our direct children as they exit
            time.sleep(0.05)
        # Children started during the grace period belong to the trees as well.
        for n in names:
            extra = [p for p in descendants(self.procs[n].pid) if p not in trees[n]]
            trees[n] += extra
            self.known.update(extra)
        for n in names:
            _signal_all([p for p in trees[n] if is_alive(p)], signal.SIGKILL, pgid=self.procs[n].pid)
        for n in names:
            try:
                self.procs[n].wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5.0  # SIGKILLed processes vanish once the kernel reaps them
        while time.monotonic() < deadline and any(is_alive(p) for t in trees.values() for p in t):
            time.sleep(0.05)

    def leftovers(self) -> list[int]:
        """PIDs of ours that are still alive (should be empty after :meth:`stop`)."""
        return sorted(p for p in self.known if is_alive(p))

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_all(pids: Sequence[int], sig: int, pgid: int | None = None) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass
