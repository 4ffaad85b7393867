"""Integration tests: real Flower Simulation Engine runs on Ray.

A 3-silo network (two nearby silos and one far away, so that the multigraph
has weak arcs and isolated silos) keeps the runs short. Each test checks what
every silo *received* through two linear fingerprints of its model
(``received_sum`` / ``received_signed``): mixing is linear, so the
fingerprints of silo i's mixture must equal the mixture, with weights built
here by hand from the schedule, of the fingerprints of the models the silos
sent back the round before.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedsim.apps.config import RunConfig
from fedsim.apps.simulation import run_simulation
from fedsim.topologies import build_schedule, connectivity
from fedsim.topologies.delay import DelayProfile
from fedsim.topologies.networks import load_network

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def net_path(tri_network) -> str:
    return tri_network


def _run(net_path: str, run_dir: Path, strategy: str, rounds: int, **kw):
    kw.setdefault("compute_ms", 2.0)  # a fixed step time: independent runs share one clock
    cfg = RunConfig(network=net_path, strategy=strategy, task="digits", rounds=rounds, seed=3,
                    checkpoint_every=1, **kw)
    trace: dict[int, dict[int, dict]] = {}

    def on_round(k, outcome, strategy_obj):
        trace[k] = {s: dict(m) for s, m in outcome.train.items()}

    summary = run_simulation(cfg, run_dir, progress=False, on_round=on_round)
    return cfg, summary, trace


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "rounds.csv") as fh:
        return list(csv.DictReader(fh))


def _fingerprints(trace, k: int, prefix: str) -> np.ndarray:
    return np.array([[trace[k][s][f"{prefix}_sum"], trace[k][s][f"{prefix}_signed"]] for s in range(3)])


def _check_received(trace, k: int, w: np.ndarray, stale: np.ndarray | None = None) -> None:
    """Silos received W applied to last round's trained (or, where stale, received) models."""
    trained = _fingerprints(trace, k - 1, "trained")
    received_before = _fingerprints(trace, k - 1, "received")
    if stale is None:
        stale = np.zeros_like(w, dtype=bool)
    expected = np.where(stale, 0, w) @ trained + np.where(stale, w, 0) @ received_before
    got = _fingerprints(trace, k, "received")
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-3)


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine great-circle distance (the underlay's km when the GML gives none)."""
    (la1, lo1), (la2, lo2) = (np.radians(a), np.radians(b))
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * 6371.0088 * np.arcsin(np.sqrt(h)))


PARIS, BRUSSELS, MONTREAL = (48.86, 2.35), (50.85, 4.35), (45.50, -73.57)  # the 3-silo network of conftest


def _hand_cycle_ms(cfg: RunConfig, run_dir: Path, topology: str) -> float:
    """The cycle time of the 3-silo network, derived by hand from the delay model (SPEC-timing §3-4).

    Every underlay path is its direct link (the triangle inequality holds), so
    h = 1, A = C_core and l(i, j) = 0.0085 km + 4 ms. An arc costs
    d = Tc + l + max(out·M/C_up, in·M/C_dn, M/A), and with 10 Gbps access and
    a 1 Gbps core the core term M/A wins for degrees <= 2.
    ring: the tour 0 -> 2 -> 1 -> 0 is one 3-cycle: tau = (d02 + d21 + d10) / 3.
    star: every load centrality is 0 (no shortest path has an inner node), so
    silo 0 (Paris) is the server: 2 (max_i l(0, i) + M/A) + Tc.
    """
    prof = json.loads((run_dir / "config.json").read_text())["profile"]
    tc, m_over_a = prof["compute_ms"] * cfg.local_steps, prof["model_bits"] / 1e9 * 1e3
    lat = {(0, 1): 0.0085 * _km(PARIS, BRUSSELS) + 4, (1, 2): 0.0085 * _km(BRUSSELS, MONTREAL) + 4,
           (0, 2): 0.0085 * _km(PARIS, MONTREAL) + 4}
    if topology == "ring":
        return sum(tc + lat[e] + m_over_a for e in lat) / 3
    assert topology == "star"
    return 2 * (max(lat[(0, 1)], lat[(0, 2)]) + m_over_a) + tc


def _check_clock(cfg: RunConfig, run_dir: Path, topology: str) -> None:
    """Every round of a static overlay takes its cycle time (derived by hand), and the clock adds them up."""
    expect = _hand_cycle_ms(cfg, run_dir, topology)
    rows = _rows(run_dir)[1:]
    got = np.array([float(r["sim_round_ms"]) for r in rows])
    np.testing.assert_allclose(got, expect, rtol=1e-5)  # rounds.csv keeps 6 significant digits
    np.testing.assert_allclose(float(rows[-1]["sim_cum_ms"]), expect * cfg.rounds, rtol=1e-5)


def _check_learning(run_dir: Path) -> None:
    rows = _rows(run_dir)
    assert float(rows[-1]["eval_loss"]) < float(rows[0]["eval_loss"])
    assert float(rows[-1]["train_loss"]) < float(rows[1]["train_loss"]) + 0.05


def test_fedavg_on_ray(net_path, tmp_path):
    cfg, summary, trace = _run(net_path, tmp_path / "fa", "fedavg", 3, task_options={"lr": 0.3})
    n_ex = np.array([trace[1][s]["num-examples"] for s in range(3)])
    w = np.tile(n_ex / n_ex.sum(), (3, 1))  # every silo gets the sample-weighted average
    for k in (2, 3, 4):
        _check_received(trace, k, w)
    _check_clock(cfg, tmp_path / "fa", "star")
    _check_learning(tmp_path / "fa")
    assert summary["rounds_completed"] == 3


def test_ring_on_ray(net_path, tmp_path):
    cfg, _, trace = _run(net_path, tmp_path / "ring", "ring", 3, task_options={"lr": 0.3})
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    sched = build_schedule("ring", connectivity(load_network(net_path)), prof)
    w = 0.5 * np.eye(3)
    for u, v in sched.arcs.tolist():  # v averages itself and the silo that sends to it
        w[v, u] += 0.5
    for k in (2, 3, 4):
        _check_received(trace, k, w)
    _check_clock(cfg, tmp_path / "ring", "ring")
    _check_learning(tmp_path / "ring")


def test_matcha_on_ray(net_path, tmp_path):
    cfg, _, trace = _run(net_path, tmp_path / "m", "matcha", 3, task_options={"lr": 0.3})
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    sched = build_schedule("matcha", connectivity(load_network(net_path)), prof)
    present, _ = sched.round_masks(cfg.rounds, cfg.seed)
    for k in (2, 3, 4):
        lap = np.zeros((3, 3))
        for (u, v), on in zip(sched.arcs.tolist(), present[k - 2]):
            if on:  # each edge is two arcs: add half a Laplacian per arc
                lap[u, u] += 0.5
                lap[v, v] += 0.5
                lap[u, v] -= 0.5
                lap[v, u] -= 0.5
        _check_received(trace, k, np.eye(3) - sched.alpha * lap)
    # MATCHA's and the multigraph's per-round times are checked against the published table (test_table3).


def test_multigraph_on_ray(net_path, tmp_path):
    cfg, _, trace = _run(net_path, tmp_path / "mg", "multigraph", 6, task_options={"lr": 0.3})
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    sched = build_schedule("multigraph", connectivity(load_network(net_path)), prof, t=5)
    assert sched.n_states > 1, "the test network must give the multigraph weak arcs"
    saw_isolated = saw_stale = False
    for k in range(2, 8):
        state = k - 2  # mixing after round k-1 uses state k-2
        strong = (state % sched.multiplicity) == 0
        was = ((state - 1) % sched.multiplicity) == 0 if state > 0 else np.ones_like(strong)
        w = np.zeros((3, 3))
        stale = np.zeros((3, 3), dtype=bool)
        for i in range(3):
            senders = [(u, a) for a, (u, v) in enumerate(sched.arcs.tolist()) if v == i and strong[a]]
            if not senders:
                w[i, i] = 1.0  # isolated: keeps its own model
                saw_isolated = True
                continue
            w[i, i] = 0.7
            for u, a in senders:
                w[i, u] += 0.3 / len(senders)
                if not was[a]:
                    stale[i, u] = True
                    saw_stale = True
        _check_received(trace, k, w, stale)
    assert saw_isolated and saw_stale  # the arcs 0->2 and 2->1 come back strong after 4 weak states


def test_resume_matches_uninterrupted(net_path, tmp_path):
    full = tmp_path / "full"
    _run(net_path, full, "ring", 4)
    part = tmp_path / "part"
    _run(net_path, part, "ring", 2)  # stands for a run interrupted after round 2
    cfg = RunConfig.from_file(part / "config.json")
    cfg.rounds = 4
    run_simulation(cfg, part, progress=False, resume=True)
    a, b = _rows(full), _rows(part)
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        for col in ("round", "sim_round_ms", "sim_cum_ms", "train_loss", "eval_loss", "eval_metric",
                    "consensus"):
            assert ra[col] == rb[col], (col, ra[col], rb[col])


@pytest.fixture(scope="module")
def ring12(net_path, tmp_path_factory) -> Path:
    """An uninterrupted 12-round ring run, the reference of the interrupted ones."""
    ref = tmp_path_factory.mktemp("ring12")
    _run(net_path, ref, "ring", 12)
    return ref


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_run_resumes(net_path, tmp_path, ring12, how):
    """Stop a real `fedsim run` process mid-run — killed, or Ctrl-C to its process group as a terminal
    sends it — resume it, and compare with an uninterrupted run. Ctrl-C ends the run within seconds,
    with its completed rounds and a checkpoint on disk, and leaves no Ray process behind."""
    import os
    import signal
    import time

    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "fedsim.cli", "run", "--topology", net_path, "--strategy", "ring",
           "--rounds", "12", "--seed", "3", "--checkpoint-every", "1", "--compute-ms", "2.0", "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (out / "rounds.csv").exists() and len(_rows(out)) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, getattr(signal, how))
        t0 = time.time()
        err = proc.communicate(timeout=60)[1]
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done = len(_rows(out))
    assert 3 <= done < 13, f"the run was not interrupted mid-way ({done} rows)"
    if how == "SIGINT":
        assert proc.returncode == 130 and "fedsim: interrupted" in err and "Traceback" not in err, err[-2000:]
        assert took < 20, f"Ctrl-C took {took:.1f} s to end the run"
        with np.load(out / "checkpoint.npz") as z:  # every completed round is on disk and resumable
            assert json.loads(str(z["meta"]))["round"] == done  # rows 0..done-1 + the pending one
        import psutil

        left = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
        assert left == []
    rc = subprocess.run([sys.executable, "-m", "fedsim.cli", "run", "--resume", str(out), "--no-progress"],
                        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    a, b = _rows(ring12), _rows(out)
    assert len(a) == len(b) == 13
    for ra, rb in zip(a, b):
        assert (ra["eval_metric"], ra["train_loss"], ra["sim_cum_ms"]) == (rb["eval_metric"], rb["train_loss"], rb["sim_cum_ms"])


def test_failing_client_stops_run_and_keeps_rounds(net_path, tmp_path):
    out = tmp_path / "fail"
    from fedsim.apps.server_app import RunStopped

    cfg = RunConfig(network=net_path, strategy="ring", rounds=5, seed=3, checkpoint_every=1,
                    inject_fault="1:3")
    with pytest.raises(RunStopped, match="round 3.*silo\\(s\\) \\[1\\]"):
        run_simulation(cfg, out, progress=False)
    rows = _rows(out)
    assert [int(r["round"]) for r in rows] == [0, 1, 2]  # every completed round kept
    failures = json.loads((out / "failures.json").read_text())
    assert failures[0]["round"] == 3 and "injected fault" in failures[0]["silos"]["1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] and summary["rounds_completed"] == 2


def test_failure_tolerated_is_recorded(net_path, tmp_path):
    out = tmp_path / "tol"
    cfg = RunConfig(network=net_path, strategy="ring", rounds=3, seed=3, inject_fault="0:2",
                    max_failed_rounds=2)
    run_simulation(cfg, out, progress=False)
    rows = _rows(out)
    assert rows[2]["failed"] == "0" and rows[1]["failed"] == "" and len(rows) == 4


def test_no_processes_left(net_path, tmp_path):
    import time

    import psutil

    _run(net_path, tmp_path / "x", "fedavg", 1)
    deadline = time.time() + 15  # actor processes linger as zombies for a moment
    while time.time() < deadline:
        live = [p for p in psutil.Process().children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not live:
            break
        time.sleep(0.5)
    assert not live, [p.cmdline() for p in live]
