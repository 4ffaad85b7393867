"""``--resume`` continues exactly or refuses with one line: damaged and mismatched run folders.

A real run folder is made once (fedsim's ServerApp round loop and ClientApp,
in process) and copied for each case; then one file is damaged the way a
kill, a full disk or a user's edit would leave it.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ClientAppGrid

from fedsim.apps.config import RunConfig
from fedsim.apps.records import check_resumable
from fedsim.errors import FedsimError


def _cfg(net, task="digits", rounds=4):
    return RunConfig(network=net, strategy="fedavg", task=task, rounds=rounds, seed=2, compute_ms=2.0,
                     task_options={"lr": 0.3}, checkpoint_every=2)


@pytest.fixture(scope="module")
def finished_run(tri_network, tmp_path_factory):
    """A 4-round digits run with checkpoints after rounds 2 and 4."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedsim.apps.server_app import serve

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    try:
        run = tmp_path_factory.mktemp("resume") / "run"
        serve(ClientAppGrid(3), _cfg(tri_network), run, progress=False)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


def _refused(run, match, **kw):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(FedsimError, match=match) as err:
        check_resumable(run, **kw)
    assert "\n" not in str(err.value) and "--overwrite" in str(err.value)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched


def test_a_whole_run_folder_is_resumable(run_copy, tri_network):
    assert check_resumable(run_copy, _cfg(tri_network).key(), (3, 1898)) == 4


def test_no_checkpoint(run_copy):
    (run_copy / "checkpoint.npz").unlink()
    _refused(run_copy, "has no checkpoint.npz")


def test_truncated_checkpoint(run_copy):
    data = (run_copy / "checkpoint.npz").read_bytes()
    (run_copy / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    _refused(run_copy, "checkpoint.npz is damaged")


def test_garbage_checkpoint(run_copy):
    (run_copy / "checkpoint.npz").write_text("not a checkpoint")
    _refused(run_copy, "checkpoint.npz is damaged")


def test_rounds_csv_deleted(run_copy):
    (run_copy / "rounds.csv").unlink()
    _refused(run_copy, r"rounds.csv has 0 complete row\(s\) but the checkpoint after round 4 counts 5")


def test_rounds_csv_truncated_mid_row(run_copy):
    lines = (run_copy / "rounds.csv").read_text().splitlines()
    cut = "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 3]
    (run_copy / "rounds.csv").write_text(cut)
    _refused(run_copy, r"rounds.csv has 4 complete row\(s\)")


def test_rounds_csv_reordered(run_copy):
    lines = (run_copy / "rounds.csv").read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    (run_copy / "rounds.csv").write_text("\n".join(lines) + "\n")
    _refused(run_copy, "not 0..4 in order")


def test_checkpoint_of_another_configuration(run_copy, tri_network):
    """A digits checkpoint in a folder whose config now says cdl (a copied or edited folder)."""
    _refused(run_copy, "belongs to another run configuration", run_key=_cfg(tri_network, task="cdl").key())


def test_models_of_another_shape(run_copy, tri_network):
    _refused(run_copy, r"models of shape \[3, 1898\], this run needs \[3, 999\]",
             run_key=_cfg(tri_network).key(), models_shape=(3, 999))


def test_extending_a_run_keeps_its_key(tri_network):
    """``--resume --rounds N`` extends a run: the length is not part of what must match."""
    assert _cfg(tri_network, rounds=4).key() == _cfg(tri_network, rounds=9).key()


def _exit_code(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_cli_refuses_before_starting_anything(run_copy, capsys):
    """``fedsim run --resume`` on a damaged folder: exit 2, one line, no Ray started, no file changed."""
    from fedsim.cli import main

    (run_copy / "checkpoint.npz").write_bytes(b"\x00" * 40)
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    code = _exit_code(main, ["run", "--resume", str(run_copy), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "checkpoint.npz is damaged" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_cli_refuses_a_broken_config(run_copy, capsys):
    from fedsim.cli import main

    (run_copy / "config.json").write_text("{broken")
    code = _exit_code(main, ["run", "--resume", str(run_copy), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "config.json" in err and len(err.splitlines()) == 1


def test_resumed_run_continues_exactly(finished_run, tri_network, tmp_path):
    """Resuming after round 2 gives the same rows 3-4 as the uninterrupted run (same seed)."""
    import csv

    import numpy as np
    from flwr.supercore.task_identity import TaskIdentity

    from fedsim.apps.server_app import serve

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    half = tmp_path / "half"
    serve(ClientAppGrid(3), _cfg(tri_network, rounds=2), half, progress=False)
    serve(ClientAppGrid(3), _cfg(tri_network, rounds=4), half, progress=False, resume=True)
    full = list(csv.DictReader(open(finished_run / "rounds.csv")))
    got = list(csv.DictReader(open(half / "rounds.csv")))
    assert [r["round"] for r in got] == ["0", "1", "2", "3", "4"]
    for a, b in zip(full, got):
        for k in ("sim_cum_ms", "train_loss", "eval_metric"):
            np.testing.assert_allclose(float(b[k]), float(a[k]), rtol=1e-5, err_msg=f"round {a['round']} {k}")
    assert json.loads((half / "summary.json").read_text())["rounds_completed"] == 4
