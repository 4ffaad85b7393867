"""Bad input to every ``fedsim`` command: exit code 2, one line on stderr, no traceback, nothing left behind.

Each case runs ``fedsim.cli.main`` in-process in an empty working folder (a few
prepared files and folders), with every way of starting a process or a
simulation replaced by a trap that fails the test: a bad input must be refused
before anything starts. The folder tree is compared before and after. A few
cases go through the real entry point (``python -m fedsim``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.cli import build_parser, main
from fedsim.cli import common

LINE = re.compile(r"^fedsim( [a-z-]+)*: error: \S")


class Started(AssertionError):
    """A bad input got as far as starting something."""


def _trap(*_a, **_k):
    raise Started("a process or simulation was started for a bad input")


def _write_run(folder: Path, metric: str | None, rounds: int = 3, checkpoint: bool = False) -> None:
    folder.mkdir(parents=True)
    with open(folder / "rounds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["round", "sim_cum_ms", "eval_loss", "eval_metric"])
        for k in range(rounds + 1):
            w.writerow([k, 100.0 * k, 1.0 / (k + 1), 0.1 * k])
    (folder / "config.json").write_text(json.dumps({"network": "gaia", "strategy": "ring", "task": "digits",
                                                    "rounds": rounds}))
    if metric:
        (folder / "summary.json").write_text(json.dumps({"metric": metric}))
    if checkpoint:
        (folder / "checkpoint.npz").write_bytes(b"")


@pytest.fixture
def work(tmp_path, monkeypatch):
    """An empty working folder with the files the cases name; every process start is a trap."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "exists.png").write_bytes(b"png")
    (tmp_path / "exists.csv").write_text("a\n")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "adir").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "ca.crt").write_text("not a certificate")
    _write_run(tmp_path / "oldrun", "accuracy")  # a run without a checkpoint
    _write_run(tmp_path / "ckrun", "accuracy", checkpoint=True)  # one with a checkpoint
    _write_run(tmp_path / "acc" / "r", "accuracy")
    _write_run(tmp_path / "err" / "r", "rmse")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "rounds.csv").write_text("hello,world\n1,2\n")
    (tmp_path / "headeronly").mkdir()
    (tmp_path / "headeronly" / "rounds.csv").write_text("round,sim_cum_ms,eval_metric\n")
    monkeypatch.setattr(subprocess, "run", _trap)
    monkeypatch.setattr(subprocess, "Popen", _trap)
    monkeypatch.setattr(os, "execvpe", _trap)
    try:
        from fedsim.deploy import gateway

        real = gateway.superlink_main

        def superlink_main(*a, **k):  # --dry-run only prints
            return real(*a, **k) if k.get("dry_run") else _trap()

        monkeypatch.setattr(gateway, "superlink_main", superlink_main)
    except (ImportError, AttributeError):
        pass
    for target in ("fedsim.apps.simulation.run_simulation", "fedsim.deploy.local.run_local",
                   "fedsim.apps.mpi.launch"):
        try:
            monkeypatch.setattr(target, _trap)
        except (ImportError, AttributeError):  # a module that cannot load here cannot start anything either
            pass
    return tmp_path


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), None if p.is_dir() else p.stat().st_size,
                                       p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


T = ["topology", "--topology", "gaia", "--strategy", "ring"]
TM = ["topology", "--topology", "gaia", "--strategy", "multigraph"]
C = ["cycle-time", "--networks", "gaia", "--strategies", "ring", "--no-progress"]
R = ["run", "--topology", "gaia", "--rounds", "2", "--no-progress"]
SN = ["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--topology", "gaia", "--insecure", "--dry-run"]
DR = ["deploy", "run", "--superlink", "127.0.0.1:9093", "--insecure", "--topology", "gaia", "--dry-run"]
DL = ["deploy", "local", "--insecure"]
SL = ["deploy", "superlink", "--dry-run"]
PROC = "/proc/fedsim-nope"

# (argv, what the one line must mention)
CASES = [
    # the command itself
    (["bogus"], "invalid choice"),
    ([], "required"),
    (["--bogus"], "required"),
    (["networks", "--x"], "unrecognized"),
    (["networks", "extra"], "unrecognized"),
    # topology
    (T + ["--t", "0"], "--t"),
    (T + ["--t", "abc"], "--t"),
    (T + ["--budget", "0"], "--budget"),
    (T + ["--budget", "1.5"], "--budget"),
    (T + ["--budget", "nan"], "--budget"),
    (T + ["--seed", "-1"], "--seed"),
    (T + ["--seed", str(2**32)], "--seed"),
    (T + ["--seed", "1.5"], "--seed"),
    (T + ["--rounds", "0"], "--rounds"),
    (T + ["--core-bps", "1e-300"], "--core-bps"),
    (T + ["--upload-bps", "inf"], "--upload-bps"),
    (T + ["--download-bps=-1"], "--download-bps"),
    (T + ["--local-steps", "0"], "--local-steps"),
    (T + ["--local-ms", "nan"], "--local-ms"),
    (T + ["--round-trips", "0"], "--round-trips"),
    (T + ["--profile", "nope"], "profile"),
    (T + ["--plot", f"{PROC}/map.png"], "cannot write"),
    (T + ["--plot", "map.txt"], ".png"),
    (T + ["--plot", "folder.png"], "folder"),
    (T + ["--plot", "exists.png"], "--overwrite"),
    (T + ["--plot", "afile/map.png"], "not a folder"),
    (TM + ["--state", "99"], "--state"),
    (TM + ["--state", "-1"], "--state"),
    (["topology", "--topology", "gaia", "--strategy", "nope"], "nope"),
    (["topology", "--topology", "atlantis", "--strategy", "ring"], "atlantis"),
    (["topology", "--topology", "missing.gml", "--strategy", "ring"], "missing.gml"),
    (TM + ["--base", "nope"], "nope"),
    (["topology", "--topology", "gaia"], "--strategy"),
    (["topology", "--strategy", "ring"], "--topology"),
    # cycle-time
    (C + ["--workers", "0"], "--workers"),
    (C + ["--workers", "x"], "--workers"),
    (C + ["--out", "table.txt"], ".csv"),
    (C + ["--out", "exists.csv"], "--overwrite"),
    (C + ["--out", f"{PROC}/t.csv"], "cannot write"),
    (C + ["--out", "folder.csv"], "folder"),
    (C + ["--profiles", "nope"], "nope"),
    (C + ["--profiles", ","], "profile"),
    (["cycle-time", "--networks", "atlantis", "--strategies", "ring", "--no-progress"], "atlantis"),
    (["cycle-time", "--networks", "gaia", "--strategies", "hypercube", "--no-progress"], "hypercube"),
    (C + ["--core-bps", "0"], "--core-bps"),
    (C + ["--core-bps", "1e-300"], "--core-bps"),
    (C + ["--profiles", "digits", "--core-bps", "1e-300"], "--core-bps"),
    (C + ["--upload-bps", "1e-9"], "--upload-bps"),
    (C + ["--budget", "2"], "--budget"),
    (C + ["--seed", "-5"], "--seed"),
    (C + ["--t", "0"], "--t"),
    (C + ["--local-steps=-1"], "--local-steps"),
    # run: numbers
    (R + ["--alpha=-1"], "--alpha"),
    (R + ["--alpha", "0"], "--alpha"),
    (R + ["--alpha", "nan"], "--alpha"),
    (R + ["--alpha", "inf"], "--alpha"),
    (R + ["--lr", "nan"], "--lr"),
    (R + ["--lr", "0"], "--lr"),
    (R + ["--lr=-0.1"], "--lr"),
    (R + ["--mu", "nan"], "--mu"),
    (R + ["--mu=-1"], "--mu"),
    (R + ["--rounds", "0"], "--rounds"),
    (R + ["--rounds", "2.5"], "--rounds"),
    (R + ["--local-steps", "0"], "--local-steps"),
    (R + ["--seed=-1"], "--seed"),
    (R + ["--seed", str(2**32)], "--seed"),
    (R + ["--t", "0"], "--t"),
    (R + ["--budget", "0"], "--budget"),
    (R + ["--checkpoint-every", "0"], "--checkpoint-every"),
    (R + ["--compute-ms=-5"], "--compute-ms"),
    (R + ["--compute-ms", "nan"], "--compute-ms"),
    (R + ["--compute-ms", "fast"], "--compute-ms"),
    (R + ["--sync-every", "0"], "--sync-every"),
    (R + ["--peer-timeout", "0"], "--peer-timeout"),
    (R + ["--peer-timeout", "inf"], "--peer-timeout"),
    (R + ["--workers=-1"], "--workers"),
    (R + ["--workers", "1000"], "--workers"),
    (R + ["--silos", "3", "--workers", "4"], "--workers"),
    (R + ["--max-failed-rounds", "0"], "--max-failed-rounds"),
    (R + ["--round-timeout", "0"], "--round-timeout"),
    (R + ["--round-timeout", "nan"], "--round-timeout"),
    # run: faults, silos, names
    (R + ["--inject-fault", "99:1"], "silo"),
    (R + ["--inject-fault", "1:3"], "round"),
    (R + ["--inject-fault", "1:0"], "round"),
    (R + ["--inject-fault", "abc"], "SILO:ROUND"),
    (R + ["--inject-fault", "1:2:3"], "SILO:ROUND"),
    (R + ["--silos", "0"], "--silos"),
    (R + ["--silos", "1"], "--silos"),
    (R + ["--silos", "12"], "--silos"),
    (R + ["--silos", "3", "--inject-fault", "3:1"], "silo"),
    (R + ["--strategy", "nope"], "nope"),
    (R + ["--task", "nope"], "nope"),
    (R + ["--base", "nope"], "nope"),
    (R + ["--data-plane", "nope"], "--data-plane"),
    (R + ["--data-plane", "grpc", "--strategy", "fedavg"], "grpc"),
    (R + ["--engine", "nope"], "--engine"),
    (R + ["--engine", "mpi", "--np", "0"], "--np"),
    (R + ["--engine", "mpi", "--strategy", "fedavg", "--np", "3"], "decentralized"),
    (R + ["--task-option", "foo=1"], "foo"),
    (R + ["--task-option", "lr=nan"], "lr"),
    (R + ["--task-option", "alpha=-1"], "alpha"),
    (R + ["--task-option", "min_size=1000"], "silos"),
    (R + ["--task-option", "novalue"], "KEY=VALUE"),
    (R + ["--task-option", "=1"], "KEY=VALUE"),
    # run: folders
    (R + ["--out", f"{PROC}/run"], "cannot write"),
    (R + ["--out", "afile"], "afile"),
    (R + ["--out", "oldrun"], "--overwrite"),
    (["run", "--resume", "empty"], "config.json"),
    (["run", "--resume", "oldrun"], "--overwrite"),
    (["run", "--resume", "missing"], "missing"),
    (["run", "--resume", "oldrun", "--overwrite"], "--overwrite"),
    (["run", "--resume", "ckrun", "--alpha", "0.5"], "--alpha"),
    (["run", "--resume", "ckrun", "--strategy", "ring", "--seed", "3"], "--strategy, --seed"),
    (["run", "--resume", "ckrun", "--topology", "nws"], "--topology"),
    (["run", "--topology", "atlantis"], "atlantis"),
    (["run", "--rounds", "2"], "--topology"),
    (R + ["--network", "nws"], "--network"),
    # compare
    (["compare", "missing"], "missing"),
    (["compare", "afile"], "afile"),
    (["compare", "adir"], "rounds.csv"),
    (["compare", "acc/r", "--out", "out.txt"], ".png"),
    (["compare", "acc/r", "--out", "exists.png"], "--overwrite"),
    (["compare", "acc/r", "--out", f"{PROC}/c.png"], "cannot write"),
    (["compare", "acc/r", "--out", "folder.png"], "folder"),
    (["compare", "acc/r", "err/r"], "--mixed-metrics"),
    (["compare", "acc/r", "acc/r"], "twice"),
    (["compare", "acc/r", "--x", "nope"], "--x"),
    (["compare"], "runs"),
    (["compare", "garbage"], "rounds"),
    (["compare", "headeronly"], "rounds"),
    # retrieve
    (["retrieve", "missing"], "missing"),
    (["retrieve", "adir", "-k", "0"], "-k"),
    (["retrieve", "adir", "--index", "nope"], "--index"),
    (["retrieve", "adir", "--level", "nope"], "--level"),
    (["retrieve", "adir", "--silo", "x"], "--silo"),
    # advise (its own checks)
    (["advise", "--topology", "gaia", "--from-runs", "missing"], "missing"),
    (["advise", "--topology", "gaia", "--pilot-rounds", "0"], "--pilot-rounds"),
    (["advise", "--topology", "gaia", "--strategies", "ring,ring", "--pilot-rounds", "2"], "twice"),
    (["advise", "--topology", "gaia", "--plot", "x.txt", "--from-runs", "acc/r"], "--plot"),
    (["advise", "--topology", "gaia", "--out", "x.png", "--from-runs", "acc/r"], "--out"),
    # deploy certs / keys
    (["deploy", "certs"], "--out"),
    (["deploy", "certs", "--out", "c", "--days", "0"], "--days"),
    (["deploy", "certs", "--out", "c", "--days", "x"], "--days"),
    (["deploy", "certs", "--out", "afile"], "afile"),
    (["deploy", "certs", "--out", f"{PROC}/c"], "cannot write"),
    (["deploy", "certs", "--out", "c", "--hosts", ","], "--hosts"),
    (["deploy", "certs", "--out", "c", "--topology", "atlantis"], "atlantis"),
    (["deploy", "keys", "--out", "k"], "--nodes"),
    (["deploy", "keys", "--out", "k", "--nodes", "0"], "--nodes"),
    (["deploy", "keys", "--out", "k", "--topology", "atlantis"], "atlantis"),
    (["deploy", "keys", "--out", "afile", "--nodes", "2"], "afile"),
    (["deploy"], "required"),
    (["deploy", "nope"], "invalid choice"),
    # deploy superlink
    (SL + ["--insecure", "--port", "70000"], "--port"),
    (SL + ["--insecure", "--port", "0"], "--port"),
    (SL + ["--insecure", "--port", "x"], "--port"),
    (SL + ["--certs", "missing"], "--certs"),
    (SL + ["--ssl-ca-certfile", "missing.crt"], "--ssl-ca-certfile"),
    (SL, "TLS"),
    (SL + ["--insecure", "--superexec-poll", "0"], "--superexec-poll"),
    (SL + ["--insecure", "--database", "adir"], "folder"),
    (SL + ["--insecure", "--flwr-home", "afile"], "afile"),
    # deploy supernode
    (SN + ["--silo", "99"], "99"),
    (SN + ["--silo", "Atlantis"], "Atlantis"),
    (["deploy", "supernode", "--superlink", "nope", "--topology", "gaia", "--silo", "0", "--insecure"], "--superlink"),
    (["deploy", "supernode", "--superlink", "h:70000", "--topology", "gaia", "--silo", "0", "--insecure"],
     "--superlink"),
    (SN + ["--silo", "0", "--port", "0"], "--port"),
    (SN + ["--silo", "0", "--peer-port", "70000"], "--peer-port"),
    (SN + ["--silo", "0", "--peer-address", "nope"], "--peer-address"),
    (SN + ["--silo", "0", "--peer-listen", "h:0"], "--peer-listen"),
    (SN + ["--silo", "0", "--task", "nope"], "nope"),
    (SN + ["--silo", "0", "--node-poll", "0"], "--node-poll"),
    (["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--topology", "gaia", "--silo", "0", "--key",
      "missing.key"], "--key"),
    (SN, "--silo"),
    (["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--topology", "gaia", "--silo", "0"], "--key"),
    (["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--topology", "gaia", "--silo", "0", "--no-auth",
      "--root-certificates", "ca.crt"], "--peer-cert"),
    (["deploy", "supernode", "--superlink", "127.0.0.1:9092", "--topology", "atlantis", "--silo", "0",
      "--insecure"], "atlantis"),
    # deploy run
    (DR + ["--alpha=-1"], "--alpha"),
    (DR + ["--rounds", "0"], "--rounds"),
    (DR + ["--poll", "0"], "--poll"),
    (DR + ["--timeout", "nan"], "--timeout"),
    (DR + ["--pull-backoff=-1"], "--pull-backoff"),
    (DR + ["--min-silos", "99"], "--min-silos"),
    (DR + ["--max-failed-rounds", "0"], "--max-failed-rounds"),
    (DR + ["--out", "afile"], "afile"),
    (DR + ["--out", "oldrun"], "--overwrite"),
    (DR + ["--task-option", "foo=1"], "foo"),
    (DR + ["--strategy", "nope"], "nope"),
    (["deploy", "run", "--superlink", "127.0.0.1:9093", "--topology", "gaia", "--root-certificates",
      "missing.crt"], "--root-certificates"),
    (["deploy", "run", "--superlink", "127.0.0.1:9093", "--topology", "gaia"], "--root-certificates"),
    (["deploy", "run", "--superlink", "x", "--insecure", "--topology", "gaia"], "--superlink"),
    (["deploy", "run", "--superlink", "127.0.0.1:9093", "--insecure", "--resume", "oldrun"], "--overwrite"),
    (["deploy", "run", "--superlink", "127.0.0.1:9093", "--insecure", "--dry-run"], "--topology"),
    # deploy local
    (DL + ["--silos", "0"], "--silos"),
    (DL + ["--silos", "1"], "--silos"),
    (DL + ["--silos", "12"], "--silos"),
    (DL + ["--silos", "3", "--alpha=-1"], "--alpha"),
    (DL + ["--lr", "nan"], "--lr"),
    (DL + ["--topology", "atlantis"], "atlantis"),
    (DL + ["--silos", "3", "--min-silos", "5"], "--min-silos"),
    (DL + ["--out", "oldrun"], "--overwrite"),
    (DL + ["--out", "afile"], "afile"),
    (DL + ["--speed", "nope"], "--speed"),
    (DL + ["--silos", "3", "--task-option", "foo=1"], "foo"),
    (DL + ["--silos", "3", "--strategy", "nope"], "nope"),
    (DL + ["--silos", "3", "--task-option", "min_size=1000"], "silos"),
    (DL + ["--silos", "3", "--rounds", "0"], "--rounds"),
    (DL + ["--round-timeout=-1"], "--round-timeout"),
    (DL + ["--resume", "oldrun"], "--overwrite"),
    (DL + ["--resume", "ckrun", "--task", "cdl"], "--task"),
    (["deploy", "run", "--superlink", "127.0.0.1:9093", "--insecure", "--resume", "ckrun", "--mu", "0.1"], "--mu"),
]


def _id(argv: list[str]) -> str:
    return " ".join(argv)[:90] or "(nothing)"


@pytest.mark.parametrize("argv,needle", CASES, ids=[_id(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(work, capsys, argv, needle):
    before = tree(work)
    code = call(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert code == 2, (code, out, err)
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert LINE.match(lines[0]), lines[0]
    assert needle in lines[0], (needle, lines[0])
    assert tree(work) == before, "a bad input left files behind"


def test_there_are_enough_cases_over_every_command():
    assert len(CASES) >= 120
    words = {a[0] if a[0] != "deploy" else " ".join(a[:2]) for a, _ in CASES if a}
    for cmd in ("networks", "topology", "cycle-time", "run", "compare", "retrieve", "advise", "deploy certs",
                "deploy keys", "deploy superlink", "deploy supernode", "deploy run", "deploy local"):
        assert cmd in words, cmd


# ----------------------------------------------------------------- the boundaries: just inside is accepted
@pytest.mark.parametrize("check,text,value", [
    (common.positive_float, "1e-3", 1e-3), (common.positive_float, "5e-324", 5e-324),
    (common.nonneg_float, "0", 0.0), (common.fraction, "1", 1.0),
    (common.port, "1", 1), (common.port, "65535", 65535),
    (common.seed, "0", 0), (common.seed, str(2**32 - 1), 2**32 - 1),
    (common.int_in(2), "2", 2),
])
def test_values_just_inside_the_range_are_accepted(check, text, value):
    assert check(text) == value


@pytest.mark.parametrize("check,text", [
    (common.positive_float, "0"), (common.positive_float, "-inf"), (common.nonneg_float, "-1e-9"),
    (common.fraction, "1.0000001"), (common.port, "65536"), (common.seed, str(2**32)), (common.int_in(2), "1"),
])
def test_values_just_outside_the_range_are_refused(check, text):
    with pytest.raises(argparse.ArgumentTypeError):
        check(text)


def test_small_alpha_and_lr_reach_the_task_options():
    args = build_parser().parse_args(["run", "--topology", "gaia", "--alpha", "1e-3", "--lr", "1e-4",
                                      "--mu", "0", "--seed", str(2**32 - 1)])
    cfg = common.training_config(args, "gaia")
    assert cfg.task_options == {"alpha": 1e-3, "lr": 1e-4} and cfg.mu == 0 and cfg.seed == 2**32 - 1


def test_topology_accepts_the_largest_seed_and_budget_one(capsys):
    code = call(["topology", "--topology", "gaia", "--strategy", "matcha", "--budget", "1", "--seed",
                 str(2**32 - 1), "--rounds", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cycle time" in out


def test_superlink_accepts_port_65535(work, capsys):
    code = call(["deploy", "superlink", "--insecure", "--dry-run", "--port", "65535"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert ":65535" in out


def test_existing_plot_is_replaced_with_overwrite(work, capsys):
    code = call(T + ["--plot", "exists.png", "--overwrite"])
    assert code == 0, capsys.readouterr().err
    assert (work / "exists.png").stat().st_size > 100


def test_deploy_run_resolves_a_relative_ca_before_submitting(work, capsys, monkeypatch):
    """The docs' own example passes a relative --root-certificates: the connection written for flwr run
    names the absolute file."""
    seen = {}

    def write_connection(home, name, superlink, root_cert=None, insecure=False):
        seen["root_cert"] = root_cert
        raise Started("stop here")

    monkeypatch.setattr("fedsim.deploy.appdir.write_connection", write_connection)
    with pytest.raises(Started):
        main(["deploy", "run", "--superlink", "127.0.0.1:9093", "--topology", "gaia", "--root-certificates",
              "ca.crt", "--rounds", "2"])
    assert Path(seen["root_cert"]).is_absolute() and Path(seen["root_cert"]) == work / "ca.crt"


# ----------------------------------------------------------------- the real entry point
@pytest.mark.parametrize("argv,needle", [
    (["run", "--topology", "gaia", "--alpha", "nan"], "--alpha"),
    (["deploy", "superlink", "--port", "70000"], "--port"),
    (["deploy", "local", "--silos", "0"], "--silos"),
    (["compare", "missing"], "missing"),
    (["topology", "--topology", "gaia", "--strategy", "ring", "--plot", f"{PROC}/map.png"], "cannot write"),
])
def test_the_installed_command_gives_one_line(tmp_path, argv, needle):
    before = tree(tmp_path)
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", RAY_USAGE_STATS_ENABLED="0")
    res = subprocess.run([sys.executable, "-m", "fedsim", *argv], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and LINE.match(lines[0]) and needle in lines[0], res.stderr
    assert tree(tmp_path) == before
