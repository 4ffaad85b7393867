"""Quick runs of the training benchmarks (real ``fedsim run`` processes; no timing assertions:
the figures go to benchmarks/RESULTS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("many_silos", "startup"):
        sys.modules.pop(name, None)


def test_many_silos_quick(bench_path):
    import many_silos

    [row] = many_silos.main(["--quick"])
    assert row["silos"] == 12 and row["strategy"] == "fedavg"
    assert row["round_s"] > 0 and row["peak_gb"] > 0 and row["start_s"] <= row["total_s"]


def test_many_silos_network_is_connected(bench_path, tmp_path):
    import many_silos

    from fedsim.topologies.networks import load_network

    net = load_network(str(many_silos.write_network(tmp_path / "n.gml", 40, seed=3)))
    assert net.n_silos == 40 and net.is_connected()


def test_startup_quick(bench_path):
    import startup

    out = startup.main(["--quick"])
    first, total = out["run: round 1 recorded"][0], out["run: 1-round run, exit"][0]
    assert 0 < first <= total


def test_engine_overhead_quick(tmp_path):
    """The per-round overhead benchmark end to end, tiny: its plain loop must match fedsim's records."""
    import subprocess

    out = tmp_path / "eo"
    cmd = [sys.executable, str(BENCH / "engine_overhead.py"), "--reps", "1", "--rounds", "4", "--skip", "1",
           "--strategies", "ring", "--no-breakdown", "--idle", "0", "--max-wait", "0", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "result.md").exists() and "ring" in (out / "result.md").read_text()
