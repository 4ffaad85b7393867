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


def _tagged(tag: str, timeout: float = 10.0) -> list[int]:
    """Live processes carrying the run's tag, after waiting up to ``timeout`` s for them to end
    (the watchdog ends what was started last, e.g. a ClientApp launched just before the kill, after
    its grace period)."""
    from fedsim.guard import TAG_ENV

    deadline = time.monotonic() + timeout
    while True:
        out = []
        for p in psutil.process_iter():
            try:
                if p.environ().get(TAG_ENV) == tag and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p.pid)
            except psutil.Error:
                pass
        if not out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


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


def _rounds(out: Path) -> list[int]:
    rows = out / "rounds.csv"
    if not rows.exists():
        return []
    import csv

    return [int(r["round"]) for r in csv.DictReader(rows.read_text().splitlines())]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_stopped_deploy_local_leaves_nothing_running_and_says_how_it_ended(tri_network, tmp_path, how):
    """``fedsim deploy local`` killed (only it, as an OOM killer would) or Ctrl-C'd (SIGINT to its process
    group, as a terminal sends it) mid-run: no SuperLink, gateway, SuperNode, SuperExec or ServerApp
    stays, every round that ended is in rounds.csv, and serverapp.json gives the true outcome."""
    from fedsim.deploy.status import read

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedsim.cli", "deploy", "local", "--topology", tri_network, "--strategy",
           "ring", "--rounds", "60", "--seed", "3", "--compute-ms", "2.0", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=os.environ | ENV, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(_rounds(out)) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        assert len(_rounds(out)) >= 3, "the run did not get going"
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = {p.pid: " ".join(p.cmdline()[:3]) for p in tree}
        listeners = _listening(list(names))
        tag, _ = _watchdog_of(tree)
        done_before = len(_rounds(out))
        if how == "SIGKILL":
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            t0 = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            err = proc.communicate(timeout=30)[1]
            took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert any("flower-superlink" in c for c in names.values()), names
    assert any("fedsim.deploy.gateway" in c for c in names.values()), names
    assert sum("fastnode" in c or "flower-supernode" in c for c in names.values()) == 3, names
    assert any("flwr-serverapp" in c or "serverapp" in c for c in names.values()), names
    assert listeners and [x for x in listeners if not _loopback(x[1])] == [], listeners
    assert _gone(list(names)) == [], {p: names[p] for p in _gone(list(names), 0)}
    assert tag is not None and _tagged(tag) == []
    rounds = _rounds(out)
    assert rounds == list(range(len(rounds))) and len(rounds) >= done_before  # every ended round kept
    if how == "SIGINT":
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err, err[-3000:]
        print(f"deploy local: Ctrl-C to exit {took:.2f} s")
        assert read(out / "deploy" / "serverapp.json")["status"] == "stopped"
    else:
        deadline = time.monotonic() + 10  # the watchdog writes it after ending the processes
        while read(out / "deploy" / "serverapp.json").get("status") == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        rec = read(out / "deploy" / "serverapp.json")
        assert rec["status"] == "crashed" and "killed" in rec["message"], rec


class _Run:
    def __init__(self, status: str, sub_status: str, details: str = "") -> None:
        from types import SimpleNamespace

        self.status = SimpleNamespace(status=status, sub_status=sub_status, details=details)
        self.bytes_sent = self.bytes_recv = 0
        self.clientapp_runtime = 0.0


def _client_for(tmp_path, run_status, alive=None):
    from fedsim.deploy.local import SuperLinkClient

    client = SuperLinkClient("127.0.0.1:1", insecure=True, verbose=False)
    client.run_status = run_status
    if alive is not None:
        client.alive = alive
    (tmp_path / "deploy").mkdir(parents=True, exist_ok=True)
    (tmp_path / "deploy" / "serverapp.json").write_text('{"status": "running", "min_silos": null}')
    return client


def test_serverapp_json_says_crashed_when_the_superlink_dies(tmp_path):
    from fedsim.deploy.status import read
    from fedsim.errors import FedsimError

    def superlink_gone():
        raise FedsimError("the SuperLink exited during the run:\nlog tail")

    client = _client_for(tmp_path, lambda run_id: pytest.fail("no status asked of a dead SuperLink"),
                         superlink_gone)
    with pytest.raises(FedsimError, match="SuperLink exited"):
        client.follow(1, tmp_path, rounds=3, timeout=5)
    rec = read(tmp_path / "deploy" / "serverapp.json")
    assert rec["status"] == "crashed" and rec["message"] == "the SuperLink exited during the run:"


@pytest.mark.parametrize("sub_status, expected", [("failed", "crashed"), ("stopped", "stopped"),
                                                  ("completed", "crashed")])
def test_serverapp_json_settled_when_the_serverapp_ended_without_a_word(tmp_path, sub_status, expected):
    from fedsim.deploy.status import read

    client = _client_for(tmp_path, lambda run_id: _Run("finished", sub_status, "exit code 137"))
    outcome = client.follow(1, tmp_path, rounds=3, timeout=5)
    assert outcome["serverapp"]["status"] == read(tmp_path / "deploy" / "serverapp.json")["status"] == expected


def test_serverapp_json_keeps_the_outcome_the_serverapp_recorded(tmp_path):
    from fedsim.deploy.status import read

    client = _client_for(tmp_path, lambda run_id: _Run("finished", "completed"))
    (tmp_path / "deploy" / "serverapp.json").write_text('{"status": "completed", "summary": {}}')
    assert client.follow(1, tmp_path, rounds=3, timeout=5)["serverapp"]["status"] == "completed"
    assert read(tmp_path / "deploy" / "serverapp.json") == {"status": "completed", "summary": {}}


@pytest.mark.slow
def test_deploy_superlink_runs_the_superlink_on_loopback_and_the_gateway_outside(tmp_path):
    """`fedsim deploy superlink`: the SuperLink's own port on 127.0.0.1, the gateway on --host; both
    end when the command is Ctrl-C'd (exit 130), and when it is killed (the watchdog)."""
    from fedsim.deploy import certs
    from fedsim.deploy.procs import listening_port

    certs.generate_certificates(tmp_path / "certs")
    for how in ("SIGINT", "SIGKILL"):
        fleet = listening_port()
        control = listening_port(taken={fleet})
        cmd = [sys.executable, "-m", "fedsim.cli", "deploy", "superlink", "--certs", str(tmp_path / "certs"),
               "--host", "0.0.0.0", "--port", str(fleet), "--control-port", str(control),
               "--flwr-home", str(tmp_path / "home")]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=os.environ | ENV, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            listen: list = []
            while time.monotonic() < deadline and proc.poll() is None:
                tree = psutil.Process(proc.pid).children(recursive=True)
                listen = _listening([p.pid for p in tree])
                if {port for _, _, port in listen} >= {fleet, control}:
                    break
                time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            by_port = {port: ip for _, ip, port in listen}
            assert _loopback(by_port[control]) and not _loopback(by_port[fleet]), listen
            tree = psutil.Process(proc.pid).children(recursive=True)
            if how == "SIGINT":
                os.killpg(proc.pid, signal.SIGINT)
                _, err = proc.communicate(timeout=30)
                assert proc.returncode == 130, err[-2000:]
                assert "serves the Fleet API only" in err
            else:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert _gone([p.pid for p in tree]) == [], how
