"""Processes fedsim starts never outlive their run, and Ray listens on loopback only.

A fast test checks the watchdog (:mod:`fedsim.guard`) on plain processes: a
parent that starts a child in a session of its own, a grandchild and a tagged
process, then is SIGKILLed. Slow tests SIGKILL a real ``fedsim run`` (Ray)
and a real ``fedsim deploy local`` (SuperLink, SuperNodes, ServerApp) mid-run
and check that nothing of theirs is left and that nothing listened on a
non-loopback address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _gone(pids, timeout: float = 8.0) -> list[int]:
    """PIDs of ``pids`` still alive (not zombies) after waiting up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in pids:
            try:
                if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_watchdog_ends_children_grandchildren_and_tagged_processes_of_a_killed_parent(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    parent = textwrap.dedent(f"""
        import subprocess, sys, time
        from fedsim.guard import Watchdog
        w = Watchdog(remove=[{str(scratch)!r}]).start()
        a = subprocess.Popen(["sleep", "300"], start_new_session=True)        # own session
        b = subprocess.Popen(["sh", "-c", "sleep 301 & wait"])                # a grandchild
        c = subprocess.Popen(["sh", "-c", "sleep 302 & exit 0"])              # orphaned at once
        c.wait()
        print(w.pid, a.pid, b.pid, flush=True)
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            env=os.environ | ENV)
    watchdog, a, b = map(int, proc.stdout.readline().split())
    time.sleep(0.6)  # a few watchdog polls
    ours = [p.pid for p in psutil.process_iter() if _tagged_with_parent_tag(p, watchdog)]
    kids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert a in kids and b in kids and len(ours) >= 4  # a, b, b's sleep, the orphaned sleep
    proc.kill()
    proc.wait()
    assert _gone(ours + kids + [watchdog]) == []
    assert not scratch.exists()


def _tagged_with_parent_tag(p: psutil.Process, watchdog: int) -> bool:
    from fedsim.guard import TAG_ENV

    try:
        tag = psutil.Process(watchdog).cmdline()[psutil.Process(watchdog).cmdline().index("--tag") + 1]
        return p.environ().get(TAG_ENV) == tag
    except (psutil.Error, ValueError):
        return False


def test_watchdog_block_end_ends_what_was_started_and_keeps_the_rest():
    from fedsim.guard import Watchdog

    before = subprocess.Popen(["sleep", "300"])
    try:
        with Watchdog() as w:
            inside = subprocess.Popen(["sleep", "300"], start_new_session=True)
            time.sleep(0.5)
            assert psutil.pid_exists(w.pid)
        assert _gone([inside.pid], timeout=5) == []
        inside.wait()
        assert before.poll() is None  # started before the block: not ours to end
    finally:
        before.kill()
        before.wait()


def _listening(pids) -> list[tuple[int, str, int]]:
    pids = set(pids)
    return [(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _loopback(ip: str) -> bool:
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if getattr(addr, "ipv4_mapped", None) is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _watchdog_of(tree: list[psutil.Process]) -> tuple[str | None, list[str]]:
    """The tag and the folders to remove of the watchdog whose tag the processes in ``tree`` carry."""
    from fedsim.guard import TAG_ENV

    tags = set()
    for p in tree:
        try:
            tags.add(p.environ().get(TAG_ENV))
        except psutil.Error:
            pass
    tags.discard(None)
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "fedsim.guard" in cmd and "--tag" in cmd and cmd[cmd.index("--tag") + 1] in tags:
            remove = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--remove"]
            return cmd[cmd.index("--tag") + 1], remove
    return None, []


def _tagged(tag: str) -> list[int]:
    from fedsim.guard import TAG_ENV

    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG_ENV) == tag and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def _kill_mid_run(cmd, ready, tmp_path, timeout: float = 300):
    """Start ``cmd``, wait until ``ready()``, record its tree and listeners, SIGKILL it alone."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr.txt", "w"),
                            env=os.environ | ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready() and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            time.sleep(0.1)
        assert ready(), "the run did not get going"
        tree = psutil.Process(proc.pid).children(recursive=True)
        listeners = _listening([p.pid for p in tree])
        tag, remove = _watchdog_of(tree)
        os.kill(proc.pid, signal.SIGKILL)  # the command only, as an OOM killer would
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return tree, listeners, tag, remove


@pytest.mark.slow
def test_killed_fedsim_run_leaves_no_ray_process_and_ray_listened_on_loopback_only(tri_network, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedsim.cli", "run", "--topology", tri_network, "--strategy", "ring",
           "--rounds", "40", "--seed", "3", "--compute-ms", "2.0", "--out", str(out), "--no-progress"]

    def ready() -> bool:
        rows = out / "rounds.csv"
        return rows.exists() and len(rows.read_text().splitlines()) >= 3

    tree, listeners, tag, remove = _kill_mid_run(cmd, ready, tmp_path)
    names = {p.pid: p.name() for p in tree if p.is_running()}
    assert any("raylet" in n for n in names.values()), names  # Ray really ran
    assert listeners, "no Ray process listened at all: nothing was checked"
    assert [x for x in listeners if not _loopback(x[1])] == [], listeners
    assert tag is not None and remove and "fedsim-ray-" in remove[0]
    assert _gone([p.pid for p in tree]) == [], names
    assert _tagged(tag) == []
    assert not Path(remove[0]).exists()
