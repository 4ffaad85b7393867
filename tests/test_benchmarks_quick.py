"""Quick runs of the time-simulator benchmarks (no timing assertions: the figures go to RESULTS.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture()
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    for name in ("scale", "timing_speed", "machine"):
        sys.modules.pop(name, None)


def test_scale_quick(bench_path, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("FEDSIM_CACHE_DIR", str(tmp_path))
    import scale

    assert scale.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for strategy in scale.STRATEGIES:
        assert f"| {strategy} |" in out
    net = scale.geometric_network(50, seed=1)
    assert net.n_silos == 50 and net.is_connected()


def test_scale_fit_exponent(bench_path):
    import scale

    # time = 2 N^2.5 exactly: the fit returns 2.5.
    rows = [{"network": f"geo:{n}", "silos": n, "strategy": "ring", "wall_s": 2 * n**2.5}
            for n in (200, 500, 1000)]
    assert scale.fit_exponent(rows, "ring") == pytest.approx(2.5)


@pytest.mark.slow
def test_timing_speed_quick(bench_path, capsys):
    import timing_speed

    assert timing_speed.main(["--quick"]) == 0
    assert "Table 3, cold process" in capsys.readouterr().out


def test_stragglers_quick(bench_path, capsys):
    sys.modules.pop("stragglers", None)
    import stragglers

    out = stragglers.main(["--quick"])
    slow, calm = out["gaia"][1.0], out["gaia"][0.0]
    assert set(slow.index) == set(stragglers.STRATEGIES)
    # star, ring and MATCHA wait for every straggler; the multigraph may isolate them (its clock can even drop)
    assert (slow[["star", "ring", "matcha"]] > calm[["star", "ring", "matcha"]]).all()
    assert "| multigraph |" in capsys.readouterr().out
