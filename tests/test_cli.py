"""The ``fedsim`` command line: user mistakes, atomic output, smoke runs."""

from __future__ import annotations

import csv
import os
import re

import pytest

from fedsim.cli import main
from fedsim.io import atomic_write_text
from fedsim.topologies import TOPOLOGIES
from fedsim.topologies.networks import BUILTIN_NETWORKS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own checks (types, choices) exit
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert re.match(r"fedsim( [a-z-]+)*: error: ", lines[0]), lines[0]
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------- bad names
@pytest.mark.parametrize("argv", [
    ("topology", "--topology", "atlantis", "--strategy", "ring"),
    ("cycle-time", "--networks", "gaia,atlantis", "--strategies", "ring", "--no-progress"),
])
def test_unknown_network_lists_the_valid_names(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    line = one_error_line(err)
    assert "'atlantis'" in line
    for name in BUILTIN_NETWORKS:
        assert name in line
    assert "zoo:NAME" in line and ".gml" in line


@pytest.mark.parametrize("argv", [
    ("topology", "--topology", "gaia", "--strategy", "hypercube"),
    ("cycle-time", "--networks", "gaia", "--strategies", "ring,hypercube", "--no-progress"),
])
def test_unknown_topology_lists_the_valid_names(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    line = one_error_line(err)
    assert "'hypercube'" in line
    for name in TOPOLOGIES:
        assert name in line


@pytest.mark.parametrize("argv", [
    ("topology", "--topology", "gaia", "--strategy", "ring", "--profile", "mnist"),
    ("cycle-time", "--networks", "gaia", "--strategies", "ring", "--profiles", "mnist", "--no-progress"),
])
def test_unknown_profile_lists_the_valid_names(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    line = one_error_line(err)
    assert "'mnist'" in line
    for name in ("femnist", "inaturalist", "sent140"):
        assert name in line


def test_unknown_multigraph_base(capsys):
    code, _, err = run(capsys, "topology", "--topology", "gaia", "--strategy", "multigraph", "--base", "tree")
    assert code == 2
    assert "ring" in one_error_line(err)


# -------------------------------------------------------------- bad numbers
@pytest.mark.parametrize("flag,value", [
    ("--core-bps", "0"), ("--core-bps", "-1e9"), ("--upload-bps", "0"),
    ("--upload-bps", "-5"), ("--download-bps", "0"), ("--core-bps", "nan"),
])
@pytest.mark.parametrize("command", ["topology", "cycle-time"])
def test_non_positive_capacities_are_refused(capsys, command, flag, value):
    argv = (["topology", "--topology", "gaia", "--strategy", "ring"] if command == "topology"
            else ["cycle-time", "--networks", "gaia", "--strategies", "ring", "--no-progress"])
    code, out, err = run(capsys, *argv, f"{flag}={value}")  # "=": argparse takes "-1e9" for a flag
    assert code == 2
    line = one_error_line(err)
    assert flag in line and "positive" in line
    assert out == ""  # nothing computed


@pytest.mark.parametrize("extra,needle", [
    (("--t", "0"), "--t: must be an integer >= 1"),
    (("--t", "-3"), "--t: must be an integer >= 1"),
    (("--local-steps", "0"), "--local-steps: must be an integer >= 1"),
])
@pytest.mark.parametrize("command", ["topology", "cycle-time"])
def test_bad_integers_are_refused(capsys, command, extra, needle):
    argv = (["topology", "--topology", "gaia", "--strategy", "multigraph"] if command == "topology"
            else ["cycle-time", "--networks", "gaia", "--strategies", "multigraph", "--no-progress"])
    code, _, err = run(capsys, *argv, *extra)
    assert code == 2
    assert needle in one_error_line(err)


@pytest.mark.parametrize("topology,low", [("multigraph", 1), ("ring", 1), ("matcha", 2)])
def test_bad_round_counts_are_refused(capsys, topology, low):
    code, _, err = run(capsys, "topology", "--topology", "gaia", "--strategy", topology,
                       "--rounds", str(low - 1))
    assert code == 2
    assert re.search(f"rounds:? must be an integer >= {low}", one_error_line(err))


def test_bad_worker_count_is_refused(capsys):
    code, _, err = run(capsys, "cycle-time", "--networks", "gaia", "--workers", "0", "--no-progress")
    assert code == 2
    assert "--workers" in one_error_line(err)


# ------------------------------------------------------------------ bad files
def test_gml_without_distances_or_coordinates(capsys, tmp_path):
    path = tmp_path / "nodist.gml"
    path.write_text('graph [\n  node [ id 0 label "A" ]\n  node [ id 1 label "B" ]\n'
                    '  edge [ source 0 target 1 ]\n]\n')
    code, _, err = run(capsys, "topology", "--topology", str(path), "--strategy", "ring")
    assert code == 2
    line = one_error_line(err)
    assert str(path) in line
    assert "distance" in line and "Latitude" in line


def test_disconnected_gml(capsys, tmp_path):
    path = tmp_path / "split.gml"
    path.write_text('graph [\n'
                    '  node [ id 0 label "A" ]\n  node [ id 1 label "B" ]\n'
                    '  node [ id 2 label "C" ]\n  node [ id 3 label "D" ]\n'
                    '  edge [ source 0 target 1 distance 10 ]\n'
                    '  edge [ source 2 target 3 distance 10 ]\n]\n')
    for argv in (("topology", "--topology", str(path), "--strategy", "ring"),
                 ("cycle-time", "--networks", str(path), "--strategies", "ring", "--no-progress")):
        code, _, err = run(capsys, *argv)
        assert code == 2
        line = one_error_line(err)
        assert str(path) in line and "disconnected" in line


def test_missing_gml(capsys, tmp_path):
    path = tmp_path / "absent.gml"
    code, _, err = run(capsys, "topology", "--topology", str(path), "--strategy", "ring")
    assert code == 2
    assert str(path) in one_error_line(err) and "not found" in err


# ------------------------------------------------------------- atomic output
def test_out_is_written_atomically(capsys, tmp_path):
    out = tmp_path / "cells.csv"
    code, _, _ = run(capsys, "cycle-time", "--networks", "gaia", "--strategies", "ring",
                     "--profiles", "femnist", "--out", str(out), "--no-progress")
    assert code == 0
    before = out.read_bytes()
    assert before.startswith(b"network,profile,topology,cycle_time_ms")
    # a failing command aimed at the same file leaves it as it was
    code, _, err = run(capsys, "cycle-time", "--networks", "atlantis", "--strategies", "ring",
                       "--out", str(out), "--no-progress")
    assert code == 2
    one_error_line(err)
    code, _, err = run(capsys, "cycle-time", "--networks", "gaia", "--strategies", "ring",
                       "--core-bps", "0", "--out", str(out), "--no-progress")
    assert code == 2
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv"]  # no temp files left


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "result.csv"
    atomic_write_text(path, "old,complete\n")

    class Interrupted(Exception):
        pass

    from fedsim.io import atomic_write

    def half_then_fail(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write("new,half-writ")
        raise Interrupted

    with pytest.raises(Interrupted):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old,complete\n"
    assert os.listdir(tmp_path) == ["result.csv"]


# ---------------------------------------------------------------- smoke runs
def test_networks_lists_the_builtin_networks(capsys):
    code, out, err = run(capsys, "networks")
    assert code == 0 and err == ""
    for name in BUILTIN_NETWORKS:
        assert f"\n{name} " in out
    assert "amazon_us" in out  # an alias


def test_topology_with_plot(capsys, tmp_path):
    png = tmp_path / "map.png"
    code, out, err = run(capsys, "topology", "--topology", "gaia", "--strategy", "multigraph",
                         "--plot", str(png))
    assert code == 0, err
    assert png.exists() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cycle time:" in out and "s_max" in out


def test_cycle_time_sweep_to_csv(capsys, tmp_path):
    out = tmp_path / "x.csv"
    code, stdout, err = run(capsys, "cycle-time", "--networks", "gaia,nws", "--strategies", "ring,mst",
                            "--profiles", "femnist", "--out", str(out), "--no-progress")
    assert code == 0, err
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    cells = {(r["network"], r["topology"]): float(r["cycle_time_ms"]) for r in rows}
    assert set(cells) == {("gaia", "ring"), ("gaia", "mst"), ("nws", "ring"), ("nws", "mst")}
    assert all(r["profile"] == "femnist" for r in rows)
    # published (MultigraphFL Table 3): gaia RING 57.2, MST 77.2; AWS-NA RING 20.3, MST 28.7
    assert cells[("gaia", "ring")] == pytest.approx(57.2, abs=0.1)
    assert cells[("gaia", "mst")] == pytest.approx(77.2, rel=0.01)
    assert cells[("nws", "ring")] == pytest.approx(20.3, rel=0.01)
    assert cells[("nws", "mst")] == pytest.approx(28.7, rel=0.01)
    assert "| femnist | gaia |" in stdout


# --------------------------------------------------------------- calibration to a deployment
def test_calibration_flags_give_the_calibrated_star_time(capsys):
    from fedsim.timing.calibration import deployment_profile
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity, get_profile
    from fedsim.topologies.networks import load_network

    conn = connectivity(load_network("gaia"))
    cal = deployment_profile(get_profile("femnist"), 900.0, 4.5)
    expected = simulate(build_schedule("star", conn, cal), conn, cal).value
    code, out, _ = run(capsys, "topology", "--topology", "gaia", "--strategy", "star", "--local-ms", "900",
                       "--round-trips", "4.5")
    assert code == 0 and f"cycle time: {expected:.2f} ms" in out
    code, out, _ = run(capsys, "cycle-time", "--networks", "gaia", "--strategies", "star", "--profiles", "femnist",
                       "--local-ms", "900", "--round-trips", "4.5", "--no-progress")
    assert code == 0 and f"| femnist | gaia | {expected:.1f} |" in out
    plain = run(capsys, "cycle-time", "--networks", "gaia", "--strategies", "star", "--profiles", "femnist",
                "--no-progress")[1]
    assert "| femnist | gaia | 289.8 |" in plain  # without the flags: the published value


@pytest.mark.parametrize("flag,value", [("--local-ms", "0"), ("--round-trips", "-2"), ("--round-trips", "nan")])
def test_bad_calibration_is_refused(capsys, flag, value):
    code, _, err = run(capsys, "topology", "--topology", "gaia", "--strategy", "star", f"{flag}={value}")
    assert code == 2 and flag in one_error_line(err) and "positive number" in err


def test_deploy_resume_needs_a_run_directory(capsys, tmp_path):
    args = ("deploy", "run", "--superlink", "127.0.0.1:9093", "--insecure")
    code, _, err = run(capsys, *args, "--resume", str(tmp_path))
    assert code == 2 and "no config.json" in err.strip().splitlines()[-1]
    code, _, err = run(capsys, *args)
    assert code == 2 and "--topology" in err.strip().splitlines()[-1] and "--resume" in err


def test_one_vocabulary_topology_is_the_network(capsys):
    """--topology names the network in every command; the old use (--topology ring) gets a pointer."""
    code, out, _ = run(capsys, "topology", "--topology", "gaia", "--strategy", "ring")
    assert code == 0 and "network gaia: 11 silos" in out and "strategy ring" in out
    code, out2, _ = run(capsys, "topology", "--network", "gaia", "--strategy", "ring")  # the alias
    assert code == 0 and out2 == out
    code, _, err = run(capsys, "topology", "--network", "gaia", "--topology", "ring")
    assert code == 2 and "--topology is the network (e.g. gaia); 'ring' is a wiring: use --strategy ring" in err
    code, _, err = run(capsys, "cycle-time", "--topologies", "star,ring", "--no-progress")
    assert code == 2 and "use --strategy" in err and "--strategies" in err


def test_mpi_engine_refuses_hub_strategies_before_starting(capsys, tmp_path):
    code, _, err = run(capsys, "run", "--engine", "mpi", "--np", "3", "--topology", "gaia", "--strategy", "fedavg",
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "--engine mpi runs decentralized strategies" in err and not (tmp_path / "r").exists()
    code, _, err = run(capsys, "run", "--engine", "mpi", "--topology", "gaia", "--strategy", "ring",
                       "--out", str(tmp_path / "r"))
    assert code == 2 and "--engine mpi needs --np N" in err


# ------------------------------------------------------------------ progress bar
def test_progress_bar_ends_on_the_final_rounds_metric_under_its_full_name(tmp_path, capsys):
    from types import SimpleNamespace

    from fedsim.apps.config import RunConfig
    from fedsim.apps.server_app import Book

    plan = SimpleNamespace(cfg=RunConfig(rounds=2), n=2, task=SimpleNamespace(metric="rmse"),
                           net=SimpleNamespace(name="gaia"), clock=SimpleNamespace(round_ms=[10.0, 20.0]))
    book = Book(plan, tmp_path, "hub", progress=True)

    def replies(loss, rmse):  # each silo's train metrics with the evaluation of the model the round started from
        return {s: {"train_loss": loss, "eval_loss": 1.0, "eval_rmse": v} for s, v in enumerate(rmse)}

    book.add_round(1, replies(0.9, (0.8, 0.6)), {}, 0.1, 0.0)  # closes round 0: mean rmse 0.7
    assert book.bar.postfix.startswith("rmse=0.7000 (round 0)")
    book.add_round(2, replies(0.5, (0.5, 0.3)), {}, 0.1, 0.0)  # closes round 1: 0.4
    assert book.bar.postfix.startswith("rmse=0.4000 (round 1)")
    book.finish({s: {"eval_loss": 0.2, "eval_rmse": v} for s, v in enumerate((0.1, 0.2))})
    assert book.bar.postfix.startswith("rmse=0.1500 (round 2)")
    assert book.rec.rows[-1]["eval_metric"] == pytest.approx(0.15)  # what the summary reports
    book.bar.close()


# ------------------------------------------------------------------ help, version, names
def _parsers(parser):
    """Every parser below ``parser`` (commands and deploy steps), with itself."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_has_help():
    import argparse

    from fedsim.cli import build_parser

    missing = [f"{p.prog} {'/'.join(a.option_strings) or a.dest}" for p in _parsers(build_parser())
               for a in p._actions if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    assert missing == []


def test_the_names_in_help_are_the_registries():
    from fedsim.cli import common
    from fedsim.clients import TASKS, profile_names
    from fedsim.strategies import STRATEGIES
    from fedsim.topologies import MULTIGRAPH_BASES
    from fedsim.topologies.delay import PUBLISHED_PROFILES

    assert common.TASK_NAMES == tuple(TASKS)
    assert common.STRATEGY_NAMES == tuple(STRATEGIES)
    assert common.WIRING_NAMES == tuple(TOPOLOGIES)
    assert common.NETWORK_NAMES == tuple(BUILTIN_NETWORKS)
    assert set(common.BASE_NAMES) == set(MULTIGRAPH_BASES)
    assert common.PUBLISHED_PROFILE_NAMES == tuple(PUBLISHED_PROFILES)
    assert list(common.PROFILE_NAMES) == profile_names()


@pytest.mark.parametrize("argv,registry", [
    (["run"], "tasks"), (["run"], "strategies"), (["run"], "networks"), (["topology"], "profiles"),
    (["topology"], "networks"), (["cycle-time"], "profiles"), (["deploy", "local"], "tasks"),
])
def test_help_lists_every_choice(capsys, argv, registry):
    from fedsim.clients import TASKS, profile_names
    from fedsim.strategies import STRATEGIES

    names = {"tasks": list(TASKS), "strategies": list(STRATEGIES), "networks": list(BUILTIN_NETWORKS),
             "profiles": profile_names()}[registry]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", text), (registry, name)


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedsim {version('fedsim')}"


def test_help_imports_no_heavy_module():
    """``fedsim --help`` (and a command's --help) loads neither numpy nor networkx, torch, Flower or Ray."""
    import subprocess
    import sys

    code = ("import sys\nfrom fedsim.cli import main\n"
            "for argv in (['--help'], ['deploy', '--help'], ['compare', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('numpy', 'networkx', 'torch', 'flwr', 'ray', 'matplotlib', 'pandas') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ fedprox warning
@pytest.mark.parametrize("strategy,steps,warned", [("fedprox", 1, True), ("fedprox", 2, False), ("fedavg", 1, False)])
def test_fedprox_with_one_local_step_warns_once(capsys, strategy, steps, warned):
    from fedsim.cli import build_parser
    from fedsim.cli.common import training_config

    args = build_parser().parse_args(["run", "--topology", "gaia", "--strategy", strategy, "--local-steps",
                                      str(steps)])
    training_config(args, "gaia")
    training_config(args, "gaia")  # deploy local checks twice: still one warning
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == (1 if warned else 0)
    if warned:
        assert "warning" in lines[0] and "fedavg" in lines[0] and "--local-steps" in lines[0]


# ------------------------------------------------------------------ compare
def _run_dir(folder, metric, values):
    folder.mkdir(parents=True)
    rows = ["round,sim_cum_ms,eval_loss,eval_metric"] + [f"{k},{100 * k},{v},{v}" for k, v in enumerate(values)]
    (folder / "rounds.csv").write_text("\n".join(rows) + "\n")
    (folder / "summary.json").write_text(f'{{"metric": "{metric}"}}')
    return str(folder)


@pytest.fixture
def figures(monkeypatch):
    """The figures fedsim.plots would save, kept instead of written."""
    import fedsim.plots as plots

    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: kept.append(fig))
    return kept


@pytest.mark.parametrize("metric,best", [("rmse", 0.2), ("fd_k", 0.2), ("loss", 0.2), ("accuracy", 0.9)])
def test_compare_knows_the_direction_and_name_of_a_metric(tmp_path, capsys, figures, metric, best):
    a = _run_dir(tmp_path / "a", metric, [0.9, 0.2, 0.5])
    code, out, _ = run(capsys, "compare", a, "--out", str(tmp_path / "c.png"))
    assert code == 0
    assert f"best {best:.4f}" in out and f"final {metric} 0.5000" in out
    assert figures[0].axes[0].get_ylabel() == f"mean test {metric}"


def test_compare_refuses_mixed_metrics_unless_asked(tmp_path, capsys, figures):
    a = _run_dir(tmp_path / "a", "accuracy", [0.1, 0.5])
    b = _run_dir(tmp_path / "b", "rmse", [0.9, 0.4])
    code, _, err = run(capsys, "compare", a, b, "--out", str(tmp_path / "c.png"))
    assert code == 2 and "--mixed-metrics" in one_error_line(err) and not figures
    code, _, _ = run(capsys, "compare", a, b, "--out", str(tmp_path / "c.png"), "--mixed-metrics")
    assert code == 0
    labels = [line.get_label() for line in figures[0].axes[0].lines]
    assert labels == ["a (accuracy)", "b (rmse)"]
    assert "accuracy" in figures[0].axes[0].get_ylabel() and "rmse" in figures[0].axes[0].get_ylabel()


def test_compare_labels_same_named_folders_by_their_parents(tmp_path, capsys, figures):
    a = _run_dir(tmp_path / "exp1" / "run", "accuracy", [0.1, 0.5])
    b = _run_dir(tmp_path / "exp2" / "run", "accuracy", [0.2, 0.6])
    code, out, _ = run(capsys, "compare", a, b, "--out", str(tmp_path / "c.png"))
    assert code == 0
    assert [line.get_label() for line in figures[0].axes[0].lines] == ["exp1/run", "exp2/run"]


@pytest.mark.parametrize("rounds,marked", [(5, True), (30, True), (31, False), (200, False)])
def test_short_runs_get_markers(tmp_path, capsys, figures, rounds, marked):
    a = _run_dir(tmp_path / "a", "accuracy", [0.5] * (rounds + 1))
    code, _, _ = run(capsys, "compare", a, "--out", str(tmp_path / "c.png"))
    assert code == 0
    assert (figures[0].axes[0].lines[0].get_marker() not in (None, "None", "")) == marked


@pytest.mark.parametrize("field,value,needle", [
    ("mu", float("nan"), "--mu"), ("mu", -0.1, "--mu"), ("seed", -1, "--seed"), ("seed", 2**32, "--seed"),
    ("base", "hypercube", "base"), ("budget", 1.5, "--budget"), ("budget", float("nan"), "--budget"),
    ("peer_timeout", float("inf"), "--peer-timeout"), ("rounds", 0, "--rounds"),
])
def test_run_config_refuses_what_the_cli_refuses(field, value, needle):
    """The Python API gets the same checks as the command line."""
    from fedsim.apps.config import RunConfig
    from fedsim.errors import FedsimError

    with pytest.raises(FedsimError, match=re.escape(needle)):
        RunConfig(**{field: value}).validate()
    RunConfig(**{field: RunConfig.__dataclass_fields__[field].default}).validate()


@pytest.mark.parametrize("argv", [["run"], ["deploy", "run", "--superlink", "h:1"], ["deploy", "local"]])
def test_the_flags_resume_refuses_default_as_the_parser_does(argv):
    """--resume refuses a run-defining flag given with a value other than its default: the table of
    defaults it compares with is the parser's."""
    from fedsim.cli import build_parser
    from fedsim.cli.common import RESUME_FIXED

    args = vars(build_parser().parse_args(argv))
    for name, default in RESUME_FIXED.items():
        if name in args:
            assert args[name] == default, name
