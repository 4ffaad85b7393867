"""The topology advisor: ranking from cycle times and metric curves, bad input, fedsim advise end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsim import advise
from fedsim.cli import main
from fedsim.errors import FedsimError

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ pure functions, hand-made curves
def test_rank_multiplies_cycle_time_by_rounds_to_target():
    # a: 10 ms/round, reaches 0.5 at round 6 -> 60 ms; b: 25 ms, round 2 -> 50 ms; c: 5 ms, round 9 -> 45 ms
    curves = {"a": (range(7), [0, .1, .2, .3, .4, .45, .5]),
              "b": (range(3), [0, .3, .6]),
              "c": (range(10), [0, .05, .1, .15, .2, .25, .3, .35, .4, .55])}
    t = advise.rank({"a": 10.0, "b": 25.0, "c": 5.0}, curves, 0.5)
    assert t["strategy"].tolist() == ["c", "b", "a"]
    assert t["rounds_to_target"].tolist() == [9, 2, 6]
    assert t["time_to_target_ms"].tolist() == [45, 50, 60]
    assert t["rank"].tolist() == [1, 2, 3]
    assert set(t["method"]) == {"observed"}


def test_ties_share_a_rank():
    t = advise.rank({"a": 10.0, "b": 20.0, "c": 5.0},
                    {"a": ([0, 1, 2], [0, .2, .5]), "b": ([0, 1], [0, .9]), "c": ([0, 1, 2, 3, 4, 5], [0] * 5 + [.5])},
                    0.5)
    # a: 2 x 10 = 20, b: 1 x 20 = 20, c: 5 x 5 = 25
    assert dict(zip(t["strategy"], t["rank"])) == {"a": 1, "b": 1, "c": 3}


def test_extrapolation_on_a_log_round_curve():
    # m(k) = 0.1 + 0.2 ln(1 + k): m = 0.7 at ln(1+k) = 3, k = e^3 - 1 = 19.09 -> round 20
    k = np.arange(4)
    v = 0.1 + 0.2 * np.log1p(k)
    rounds, method = advise.rounds_to_target(k, v, 0.7)
    assert (rounds, method) == (20.0, "extrapolated")
    # lower is better (a loss): m(k) = 2 - 0.5 ln(1 + k) reaches 0.5 at ln(1+k) = 3 -> round 20
    rounds, method = advise.rounds_to_target(k, 2 - 0.5 * np.log1p(k), 0.5, higher_is_better=False)
    assert (rounds, method) == (20.0, "extrapolated")


def test_unreachable_target_is_not_reached_in_the_table():
    curves = {"flat": ([0, 1, 2], [.3, .3, .3]), "worse": ([0, 1, 2], [.3, .2, .1]),
              "far": ([0, 1], [0.0, 1e-6]), "ok": ([0, 1, 2], [.3, .6, .9])}
    t = advise.rank({"flat": 1.0, "worse": 1.0, "far": 1.0, "ok": 50.0}, curves, 0.8)
    assert t["strategy"].iloc[0] == "ok" and t["rank"].iloc[0] == 1
    rest = t.iloc[1:]
    assert set(rest["method"]) == {"not reached"}
    assert rest["rank"].isna().all() and rest["time_to_target_ms"].isna().all()
    text = advise.text_table(t, "accuracy")
    assert sum("not reached" in line for line in text.splitlines()) == 3
    assert text.splitlines()[1].split()[:2] == ["1", "ok"]


def test_parse_target():
    t = advise.parse_target("accuracy=0.8", "accuracy")
    assert (t.column, t.value, t.higher_is_better) == ("eval_metric", 0.8, True)
    t = advise.parse_target("loss=1.5", "rmse", higher_is_better=False)
    assert (t.column, t.higher_is_better) == ("eval_loss", False)
    assert advise.parse_target("rmse=0.2", "rmse", higher_is_better=False).reached(0.1)


@pytest.mark.parametrize("text,needle", [
    ("f1=0.5", "unknown metric 'f1' for this task; valid: accuracy, pooled, loss"),
    ("accuracy", "expects METRIC=VALUE"),
    ("accuracy=high", "expects a number, got 'high'"),
    ("accuracy=nan", "expects a finite number"),
])
def test_parse_target_refuses_bad_input_in_one_line(text, needle):
    with pytest.raises(FedsimError) as exc:
        advise.parse_target(text, "accuracy")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_kendall_tau():
    assert advise.kendall_tau("abcd", "abcd") == 1.0
    assert advise.kendall_tau("abcd", "dcba") == -1.0
    assert advise.kendall_tau("abcd", "bacd") == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair


# ------------------------------------------------------------------ fedsim advise --from-runs (no Ray)
def _fake_run(path: Path, strategy: str, metric: list[float]) -> Path:
    from fedsim.topologies.delay import get_profile

    path.mkdir(parents=True)
    cfg = {"network": "gaia", "strategy": strategy, "task": "digits", "local_steps": 1, "t": 5, "budget": 0.5,
           "seed": 0, "profile": asdict(get_profile("femnist"))}
    (path / "config.json").write_text(json.dumps(cfg))
    lines = ["round,sim_round_ms,sim_cum_ms,eval_loss,eval_metric,eval_metric_pooled,failed"]
    lines += [f"{k},1,{k},{1 - m},{m},{m}," for k, m in enumerate(metric)]
    (path / "rounds.csv").write_text("\n".join(lines) + "\n")
    return path


def test_advise_from_runs_ranks_by_time_to_target(capsys, tmp_path):
    # Published femnist cycle times on Gaia: STAR 289.8 ms, RING 57.2 ms, MST 77.2 ms.
    # star reaches 0.6 at round 2 (580 ms), ring at round 4 (229 ms), mst never (flat) -> ring, star, mst.
    runs = [_fake_run(tmp_path / "star", "star", [.1, .4, .6, .7, .8]),
            _fake_run(tmp_path / "ring", "ring", [.1, .2, .3, .5, .6]),
            _fake_run(tmp_path / "mst", "mst", [.1, .1, .1, .1, .1])]
    out, png = tmp_path / "t.csv", tmp_path / "advise.png"
    code = main(["advise", "--topology", "gaia", "--task", "digits", "--target", "accuracy=0.6",
                 "--from-runs", *map(str, runs), "--out", str(out), "--plot", str(png)])
    stdout = capsys.readouterr().out
    assert code == 0
    t = pd.read_csv(out)
    assert t["strategy"].tolist() == ["ring", "star", "mst"]
    assert t["rounds_to_target"].tolist()[:2] == [4, 2] and math.isnan(t["rounds_to_target"].iloc[2])
    assert t["cycle_ms"].round(1).tolist() == [57.2, 289.8, 77.2]
    assert t["rank"].tolist()[:2] == [1, 2] and math.isnan(t["rank"].iloc[2])
    assert "target accuracy >= 0.6" in stdout and "not reached" in stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # loss is lower-is-better: loss = 1 - accuracy, so loss <= 0.4 is the same ranking
    code = main(["advise", "--topology", "gaia", "--target", "loss=0.4", "--from-runs", *map(str, runs),
                 "--out", str(out), "--no-progress"])
    assert code == 0 and pd.read_csv(out)["strategy"].tolist() == ["ring", "star", "mst"]


@pytest.mark.parametrize("extra,needle", [
    (("--target", "f1=0.5"), "unknown metric 'f1' for this task; valid: accuracy, pooled, loss"),
    (("--strategies", "ring,hypercube"), "unknown strategy 'hypercube'"),
    (("--task", "mnist"), "unknown task 'mnist'"),
    (("--plot", "p.txt"), "accepted suffixes: .png, .pdf, .svg"),
    (("--pilot-rounds", "0"), "--pilot-rounds must be an integer >= 1"),
])
def test_advise_refuses_bad_input_before_any_pilot(capsys, tmp_path, extra, needle):
    code = main(["advise", "--topology", "gaia", "--pilot-dir", str(tmp_path / "p"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "p").exists()


def test_advise_from_runs_refuses_two_runs_of_one_strategy(capsys, tmp_path):
    a = _fake_run(tmp_path / "a", "ring", [.1, .5])
    b = _fake_run(tmp_path / "b", "ring", [.1, .6])
    code = main(["advise", "--topology", "gaia", "--from-runs", str(a), str(b)])
    assert code == 2 and "both runs of strategy ring" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end with real pilots (Ray)
@pytest.mark.slow
def test_advise_with_tiny_pilots(capsys, tmp_path):
    from fedsim import api

    out = tmp_path / "t.csv"
    code = main(["advise", "--topology", "gaia", "--task", "digits", "--strategies", "fedavg,ring",
                 "--pilot-rounds", "2", "--pilot-dir", str(tmp_path / "pilots"), "--workers", "1",
                 "--target", "accuracy=0.99", "--out", str(out), "--plot", str(tmp_path / "a.png")])
    stdout = capsys.readouterr().out
    assert code == 0
    t = pd.read_csv(out)
    assert sorted(t["strategy"]) == ["fedavg", "ring"]
    for s in ("fedavg", "ring"):  # the advisor's cycle time is the pilot's own simulated clock
        pilot = api.load_run(tmp_path / "pilots" / s)
        assert pilot.rounds["round"].tolist() == [0, 1, 2]
        cycle = t.set_index("strategy").loc[s, "cycle_ms"]
        assert cycle == pytest.approx(pilot.summary["simulated_cycle_time_ms"])
        assert t.set_index("strategy").loc[s, "pilot_rounds"] == 2
    assert "fedavg" in stdout and "ring" in stdout and (tmp_path / "a.png").exists()


@pytest.mark.slow
def test_advisor_benchmark_quick_mode(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "advisor.py"), "--quick",
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Kendall tau-b = " in proc.stdout
    assert "| fedavg |" in proc.stdout and "| ring |" in proc.stdout
