"""The Python API: fedsim.cycle_times, fedsim.run, fedsim.load_run (and fedsim cycle-time --out built on it)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import fedsim
from fedsim.cli import main
from fedsim.errors import FedsimError


def test_import_fedsim_stays_light():
    """``import fedsim`` loads no numpy, pandas, torch, Flower or Ray; the API loads on first use."""
    code = ("import sys, fedsim; heavy = [m for m in ('numpy', 'pandas', 'torch', 'flwr', 'ray') if m in sys.modules]; "
            "print(heavy); fedsim.cycle_times; print('pandas' in sys.modules or 'fedsim.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "True"
    with pytest.raises(AttributeError):
        fedsim.no_such_name  # noqa: B018


def test_cycle_times_is_the_simulator_for_every_cell():
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity, get_profile
    from fedsim.topologies.networks import load_network

    df = fedsim.cycle_times(["gaia", "nws"], "star,ring", ["femnist", "sent140"])
    assert list(df.columns) == ["topology", "strategy", "profile", "cycle_time_ms", "silos", "detail"]
    assert len(df) == 8
    assert str(df["cycle_time_ms"].dtype) == "float64" and str(df["silos"].dtype) == "int64"
    for row in df.itertuples():
        conn, prof = connectivity(load_network(row.topology)), get_profile(row.profile)
        assert row.cycle_time_ms == pytest.approx(simulate(build_schedule(row.strategy, conn, prof), conn, prof).value)
        assert row.silos == conn.n
    cell = df[(df.topology == "gaia") & (df.strategy == "ring") & (df.profile == "femnist")]
    assert cell["cycle_time_ms"].item() == pytest.approx(57.2, abs=0.1)  # the published Table 3 value
    assert df[df.strategy == "star"]["detail"].str.startswith("server=").all()


def test_cycle_times_options_change_the_profile():
    from fedsim.topologies.delay import get_profile

    base = fedsim.cycle_times("gaia", "ring", "femnist")["cycle_time_ms"].item()
    two = fedsim.cycle_times("gaia", "ring", "femnist", local_steps=2)["cycle_time_ms"].item()
    assert two == pytest.approx(base + get_profile("femnist").compute_ms)  # one more step on the ring's cycle
    obj = fedsim.cycle_times("gaia", "ring", get_profile("femnist", local_steps=2))
    assert obj["cycle_time_ms"].item() == pytest.approx(two) and obj["profile"].item() == "femnist"


@pytest.mark.parametrize("kwargs,needle", [
    ({"topologies": "atlantis"}, "'atlantis'"),
    ({"strategies": "ring,hypercube"}, "unknown strategy 'hypercube'; valid: star, ring"),
    ({"profiles": "mnist"}, "unknown profile 'mnist'; valid: synthetic, shakespeare, femnist"),
    ({"core_bps": 0}, "core_bps must be a positive number"),
    ({"local_steps": 0}, "local_steps must be an integer >= 1"),
    ({"workers": 0}, "workers must be an integer >= 1"),
    ({"strategies": ""}, "no strategy given"),
])
def test_cycle_times_refuses_bad_input_in_one_line(kwargs, needle):
    args = {"topologies": "gaia", "strategies": "ring", "profiles": "femnist", **kwargs}
    with pytest.raises(FedsimError) as exc:
        fedsim.cycle_times(**args)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def _run_folder(path, rows: str, summary: dict | None = None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"strategy": "ring", "task": "digits", "rounds": 3}))
    (path / "rounds.csv").write_text(rows)
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_load_run_types_and_missing_cells(tmp_path):
    rows = ("round,sim_round_ms,sim_cum_ms,wall_s,train_loss,eval_loss,eval_metric,eval_metric_pooled,consensus,"
            "failed,accuracy_s0\n"
            "0,0,0,0,nan,2.3,0.1,0.1,0,,0.1\n"
            "1,40,40,1.5,2.2,2.1,0.3,0.31,0.01,2:boom,\n"
            "2,40,80,0.5,2.0,1.9,0.45,0.46,0.02,,0.5\n"
            "3,40,1")  # a row cut short by a kill mid-append
    r = fedsim.load_run(_run_folder(tmp_path / "run", rows, {"metric": "accuracy"}))
    assert r.rounds["round"].tolist() == [0, 1, 2]
    assert str(r.rounds["round"].dtype) == "int64"
    assert all(str(r.rounds[c].dtype) == "float64" for c in ("sim_cum_ms", "eval_metric", "accuracy_s0"))
    assert np.isnan(r.rounds["train_loss"].iloc[0]) and np.isnan(r.rounds["accuracy_s0"].iloc[1])
    assert r.rounds["failed"].isna().tolist() == [True, False, True] and r.rounds["failed"].iloc[1] == "2:boom"
    assert r.rounds["sim_cum_ms"].tolist() == [0.0, 40.0, 80.0]
    assert r.config["strategy"] == "ring" and r.summary == {"metric": "accuracy"} and r.metric == "accuracy"


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FedsimError, match="no config.json there"):
        fedsim.load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FedsimError, match="no rounds.csv there"):
        fedsim.load_run(tmp_path)


def test_run_refuses_bad_input_before_training(tmp_path):
    with pytest.raises(FedsimError, match="unknown option 'local_step'; valid: .*local_steps"):
        fedsim.run("gaia", "ring", "digits", rounds=2, out=tmp_path / "a", local_step=2)
    with pytest.raises(FedsimError, match="unknown strategy 'hypercube'"):
        fedsim.run("gaia", "hypercube", "digits", rounds=2, out=tmp_path / "b")
    with pytest.raises(FedsimError, match="'atlantis'"):
        fedsim.run("atlantis", "ring", "digits", rounds=2, out=tmp_path / "c")
    _run_folder(tmp_path / "d", "round\n0\n")
    with pytest.raises(FedsimError, match="already holds a run"):
        fedsim.run("gaia", "ring", "digits", rounds=2, out=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing written for the refused runs


@pytest.mark.slow
def test_run_trains_like_fedsim_run(tmp_path):
    """fedsim.run writes the run folder of fedsim run and returns it read back; the CLI on the same
    arguments trains the same numbers."""
    res = fedsim.run("gaia", "ring", "digits", rounds=2, seed=1, out=tmp_path / "api", local_steps=2, workers=1)
    assert res.dir == tmp_path / "api"
    assert res.rounds["round"].tolist() == [0, 1, 2]
    assert res.config["strategy"] == "ring" and res.config["local_steps"] == 2 and res.config["seed"] == 1
    assert res.summary["rounds_completed"] == 2
    cycle = res.summary["simulated_cycle_time_ms"]
    assert res.rounds["sim_cum_ms"].tolist() == pytest.approx([0.0, cycle, 2 * cycle], rel=1e-5)
    assert (tmp_path / "api" / "summary.json").exists()
    code = main(["run", "--topology", "gaia", "--strategy", "ring", "--task", "digits", "--rounds", "2", "--seed", "1",
                 "--local-steps", "2", "--workers", "1", "--no-progress", "--out", str(tmp_path / "cli")])
    assert code == 0
    cli = fedsim.load_run(tmp_path / "cli")
    assert cli.rounds["eval_metric"].tolist() == pytest.approx(res.rounds["eval_metric"].tolist())


# ------------------------------------------------------------ fedsim cycle-time --out
def test_cycle_time_out_markdown_is_the_printed_table(capsys, tmp_path):
    out = tmp_path / "t.md"
    code = main(["cycle-time", "--topologies", "gaia", "--strategies", "ring,mst", "--profiles", "femnist",
                 "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    table = out.read_text().strip()
    assert table.splitlines()[0] == "| profile | network | ring | mst |"
    assert table in printed


def test_cycle_time_out_parquet(capsys, tmp_path):
    import importlib.util

    out = tmp_path / "t.parquet"
    code = main(["cycle-time", "--topologies", "gaia", "--strategies", "ring", "--profiles", "femnist",
                 "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2
        assert err.strip() == ("fedsim: error: --out " + str(out) + ": .parquet needs pyarrow (pip install pyarrow); "
                               "accepted suffixes without it: .csv, .md")
        assert not out.exists()
    else:
        import pandas as pd

        assert code == 0
        df = pd.read_parquet(out)
        assert df["cycle_time_ms"].item() == pytest.approx(57.2, abs=0.1)


def test_cycle_time_out_refuses_other_suffixes(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["cycle-time", "--topologies", "gaia", "--strategies", "ring", "--no-progress",
              "--out", str(tmp_path / "t.txt")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert ".csv" in err and ".md" in err and ".parquet" in err
    assert not (tmp_path / "t.txt").exists()
