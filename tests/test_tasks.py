"""The task registry: typed options, silo limits, explicit delay profiles, the shared step loop,
and the GCD folder loader."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import fedsim.clients as clients
from fedsim.clients import TASKS, check_silos, get_task, parse_options
from fedsim.clients.base import dirichlet_partition, minibatch_steps
from fedsim.errors import FedsimError

# one option per task whose value changes what the task does, a bad value for it, and the reason
GOOD = {"digits": ("lr", "0.25", 0.25), "cdl": ("beta", 0.3, 0.3), "gcd": ("frames", "16", 16),
        "cfor": ("layout", "single", "single"), "sac": ("sac", "false", False)}
BAD = {"digits": ("lr", 0, "must be > 0"), "cdl": ("kl_temperature", "-1", "must be > 0"),
       "gcd": ("inter_negatives", 1.5, r"must be in \[0, 1\]"),
       "cfor": ("test_fraction", 1.0, r"must be in \(0, 1\)"), "sac": ("k", "three", "expects an integer")}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_unknown_option_is_refused_with_the_accepted_ones(name):
    with pytest.raises(FedsimError, match=rf"unknown {name} option 'colour'; valid: .*\blr\b") as err:
        parse_options(name, {"colour": "red"})
    assert "\n" not in str(err.value)
    with pytest.raises(FedsimError, match=f"unknown {name} option"):
        get_task(name, {"colour": "red"})


@pytest.mark.parametrize("name", sorted(TASKS))
def test_bad_values_are_refused(name):
    key, value, why = BAD[name]
    with pytest.raises(FedsimError, match=f"{name} option {key} {why}"):
        parse_options(name, {key: value})
    for bad in ("nan", "inf", float("inf"), "-inf"):
        with pytest.raises(FedsimError, match="lr must be a finite number"):
            parse_options(name, {"lr": bad})
    with pytest.raises(FedsimError, match="lr must be > 0, got -0.1"):
        parse_options(name, {"lr": -0.1})
    with pytest.raises(FedsimError, match="batch_size expects an integer, got True"):
        parse_options(name, {"batch_size": True})


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_good_value_round_trips(name):
    key, text, value = GOOD[name]
    opts = parse_options(name, {key: text})
    assert getattr(opts, key) == value
    default = getattr(parse_options(name, {}), key)
    assert default != value  # the option really changes something
    task = get_task(name, {key: text})
    assert getattr(task.options, key) == value and task.config == {key: text}
    # the parsed options themselves build the same task (e.g. from a resolved config)
    assert get_task(name, opts).options == opts


def test_option_types():
    assert parse_options("cdl", {"widths": "4,4,8,8"}).widths == (4, 4, 8, 8)
    assert parse_options("cdl", {"widths": [4, 4, 8, 8], "n_per_silo": "null"}).n_per_silo is None
    with pytest.raises(FedsimError, match="cdl option widths needs 4 positive integers"):
        parse_options("cdl", {"widths": [4, 4, 8]})
    with pytest.raises(FedsimError, match="cdl option widths must be >= 1, got 0"):
        parse_options("cdl", {"widths": [4, 0, 8, 8]})
    assert parse_options("gcd", {"n_dancers": [2, 4]}).n_dancers == (2, 4)
    assert parse_options("gcd", {"n_dancers": 3.0}).n_dancers == 3
    with pytest.raises(FedsimError, match=r"gcd option n_dancers must be in \[2, 6\], got 9"):
        parse_options("gcd", {"n_dancers": [2, 9]})
    with pytest.raises(FedsimError, match="unknown cfor layout 'tree'; valid: local, single, single_task"):
        parse_options("cfor", {"layout": "tree"})
    with pytest.raises(FedsimError, match="sac option grayscale expects true or false, got 'maybe'"):
        parse_options("sac", {"grayscale": "maybe"})
    with pytest.raises(FedsimError, match="unknown task 'mnist'; valid: digits"):
        parse_options("mnist", {})


def test_options_are_checked_without_torch_or_data():
    code = ("import sys, fedsim.clients as c\n"
            "for n in c.TASKS: c.parse_options(n, {'lr': '0.5'}); c.check_silos(n, {}, 3)\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'faiss') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


# -- silos -------------------------------------------------------------------------------
def test_digits_serves_many_silos_and_refuses_past_its_limit():
    from sklearn.datasets import load_digits

    y = load_digits().target
    for n in (120, 449):
        parts = dirichlet_partition(y, n, alpha=0.5, seed=3, min_size=4)
        sizes = [len(p) for p in parts]
        assert min(sizes) >= 4
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))  # each image once
    check_silos("digits", {}, 449)
    with pytest.raises(FedsimError, match="digits can serve at most 449 silos with min_size=4, got 450"):
        check_silos("digits", {}, 450)
    with pytest.raises(FedsimError, match="at most 224 silos with min_size=8"):
        check_silos("digits", {"min_size": 8}, 300)
    task = get_task("digits")
    data = task.partition(448, 449, seed=0)
    assert data.n_train >= 1 and len(data.y_test) >= 1
    with pytest.raises(FedsimError, match="at most 449 silos"):
        task.partition(0, 500, seed=0)
    check_silos("cdl", {}, 5000)  # synthetic per-silo data: no fixed limit
    with pytest.raises(FedsimError, match="sac can serve at most 449 silos"):
        check_silos("sac", {}, 450)


def test_small_split_is_unchanged_when_a_draw_fits():
    # the repair only runs when no draw gives every silo min_size samples
    y = np.repeat(np.arange(10), 30)
    rng = np.random.default_rng(5)
    expected = [[] for _ in range(4)]
    for c in np.unique(y):  # the first draw, by hand
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(4, 0.5))) * len(idx)).astype(int)[:-1]
        for s, chunk in enumerate(np.split(idx, cuts)):
            expected[s].extend(chunk.tolist())
    assert min(len(e) for e in expected) >= 4
    parts = dirichlet_partition(y, 4, alpha=0.5, seed=5)
    assert [p.tolist() for p in parts] == [sorted(e) for e in expected]


# -- delay profiles ------------------------------------------------------------------------
def test_task_profiles_are_resolved_explicitly():
    import fedsim.topologies.delay as delay

    assert not hasattr(delay, "register_profile")
    with pytest.raises(FedsimError, match="unknown profile 'cdl'"):
        delay.get_profile("cdl")  # the topologies room knows no tasks
    assert clients.profile_names()[:5] == list(delay.PUBLISHED_PROFILES)
    assert set(TASKS) <= set(clients.profile_names())
    p = clients.task_profile("digits")
    assert p.compute_ms == get_task("digits").reference_step_ms and p.model_bits == 32.0 * 1898
    assert clients.get_profile("digits", local_steps=3).tc == pytest.approx(3 * p.compute_ms)
    assert clients.get_profile("femnist") == delay.get_profile("femnist")
    with pytest.raises(FedsimError, match="unknown profile 'mnist'; valid: synthetic.*digits"):
        clients.get_profile("mnist")


# -- the shared step loop ----------------------------------------------------------------------
def test_batch_loss_closure_equals_the_plain_loss():
    task = get_task("digits")
    data = task.partition(0, 3, seed=0)
    models = []
    for closure in (False, True):
        torch.manual_seed(0)
        model = task.model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(4)
        if closure:
            def batch_loss(idx, model=model):
                return torch.nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]), {"k": 1.0}
            out = minibatch_steps(model, data, 4, gen, opt, 16, batch_loss=batch_loss)
            assert out["k"] == 1.0
        else:
            out = minibatch_steps(model, data, 4, gen, opt, 16, torch.nn.functional.cross_entropy)
        models.append((out["loss"], [p.detach().clone() for p in model.parameters()]))
    assert models[0][0] == models[1][0]
    assert all(torch.equal(a, b) for a, b in zip(models[0][1], models[1][1]))
    with pytest.raises(TypeError, match="exactly one"):
        minibatch_steps(task.model(), data, 1, torch.Generator(), opt, 4)


@pytest.mark.parametrize("name,options", [("cdl", {"n_per_silo": 48}), ("sac", {}),
                                          ("gcd", {"frames": 16, "n_train": 8, "n_test": 4, "d_model": 16,
                                                   "layers": 1, "heads": 2, "enc_d": 8})])
def test_every_task_repeats_for_a_seed(name, options):
    task = get_task(name, options)
    data = task.partition(0, 2, seed=1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = task.model()
        out = task.train(model, data, 2, torch.Generator().manual_seed(7))
        runs.append((out, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0] and np.isfinite(runs[0][0]["loss"])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


# -- GCD folders --------------------------------------------------------------------------------
def _write_sequences(root, counts=(3, 3, 2, 3, 3), frames=40):
    from fedsim.clients.gcd.data import make_groups

    for j, n in enumerate(counts):
        motion, music, _ = make_groups(1, n, frames, np.random.default_rng(j))
        d = root / f"seq{j:02d}"
        d.mkdir(parents=True)
        np.save(d / "music.npy", music[0])
        np.save(d / "motion.npy", motion[0])


def test_gcd_reads_aioz_style_folders(tmp_path):
    _write_sequences(tmp_path)
    opts = {"data_dir": str(tmp_path), "frames": 8, "d_model": 16, "layers": 1, "heads": 2, "enc_d": 8,
            "n_train": 100, "n_test": 25}
    task = get_task("gcd", opts)
    # silo 0: sequences 0, 2, 4 with 3, 2, 3 dancers -> keeps the ten 3-dancer windows of 8 frames
    d0 = task.partition(0, 2, seed=0)
    assert tuple(d0.x_train.shape[1:]) == (3, 8, 12) and tuple(d0.y_train.shape[1:]) == (8, 10)
    assert len(d0.x_train) + len(d0.x_test) == 2 * 40 // 8 and len(d0.x_test) == 2  # 25 / (100 + 25) held out
    d1 = task.partition(1, 2, seed=0)  # sequences 1 and 3
    assert len(d1.x_train) + len(d1.x_test) == 10 and len(d1.x_test) == 2
    capped = get_task("gcd", opts | {"n_train": 3, "n_test": 1}).partition(1, 2, seed=0)
    assert (len(capped.x_train), len(capped.x_test)) == (3, 1)
    first = np.load(tmp_path / "seq01" / "motion.npy")[:, :8]
    both = torch.cat([d1.x_train, d1.x_test]).numpy()
    assert any(np.array_equal(w, first) for w in both)  # windows are the files' frames, unchanged
    torch.manual_seed(0)
    out = task.train(task.model(), d1, 2, torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"])
    assert np.isfinite(task.evaluate(task.model(), d1)["loss"])


def test_gcd_folder_errors(tmp_path):
    def opts(path, **kw):
        return {"data_dir": str(path), "frames": 8, **kw}

    with pytest.raises(FedsimError, match="is not a folder"):
        get_task("gcd", opts(tmp_path / "missing"))
    with pytest.raises(FedsimError, match="has no sequence folders"):
        get_task("gcd", opts(tmp_path))
    _write_sequences(tmp_path / "ok", counts=(3,))
    with pytest.raises(FedsimError, match="1 sequences; 2 silos need one each"):
        get_task("gcd", opts(tmp_path / "ok")).partition(0, 2, seed=0)
    with pytest.raises(FedsimError, match="shorter than frames=64"):
        get_task("gcd", opts(tmp_path / "ok", frames=64)).partition(0, 1, seed=0)
    bad = tmp_path / "bad"
    _write_sequences(bad, counts=(3,))
    (bad / "seq00" / "motion.npy").unlink()
    with pytest.raises(FedsimError, match="has no motion.npy"):
        get_task("gcd", opts(bad))
    np.save(bad / "seq00" / "motion.npy", np.zeros((3, 40, 7), np.float32))
    with pytest.raises(FedsimError, match=r"motion.npy has shape \(3, 40, 7\); expected \(dancers, frames, 12\)"):
        get_task("gcd", opts(bad))
    np.save(bad / "seq00" / "motion.npy", np.zeros((3, 30, 12), np.float32))
    with pytest.raises(FedsimError, match="motion.npy has 30 frames but music.npy 40"):
        get_task("gcd", opts(bad))
    (bad / "seq00" / "music.npy").write_text("not an array")
    with pytest.raises(FedsimError, match="cannot read .*music.npy"):
        get_task("gcd", opts(bad))


def test_digits_data_is_scikit_learns():
    """The digits are read from scikit-learn's own data file without importing sklearn.datasets."""
    from sklearn.datasets import load_digits

    from fedsim.clients.digits import data

    data.load.cache_clear()
    x, y = data.load()
    ref = load_digits()
    np.testing.assert_array_equal(x[:, 0] * 16.0, ref.images)
    np.testing.assert_array_equal(y, ref.target)


def test_digits_training_imports_neither_sklearn_datasets_nor_dynamo():
    """What a ClientApp actor pays on its first round: no sklearn.datasets, no torch._dynamo (~2.4 s CPU)."""
    code = ("import sys, torch\n"
            "from fedsim.clients import get_task\n"
            "t = get_task('digits'); torch.manual_seed(0); m = t.model()\n"
            "t.train(m, t.partition(0, 3, 0), 2, torch.Generator().manual_seed(0))\n"
            "print(sorted(k for k in ('sklearn.datasets', 'torch._dynamo') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_plain_sgd_is_torch_sgd_bit_for_bit():
    import torch

    from fedsim.clients.base import PlainSGD

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    start = a[0].weight.detach().clone()
    opts = (torch.optim.SGD(a.parameters(), lr=0.37), PlainSGD(b.parameters(), lr=0.37))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    for _ in range(5):
        for model, opt in zip((a, b), opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a[0].weight, start)  # it did train
