"""The SAC task: shapes, the attention softmax, the joint embedding, the probability
mix, the dropping module, the class-name encoder, the data (digits, fine-grained
generator, CUB-style folders), learning, and 2 real Ray-backed rounds."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedsim.clients import get_task
from fedsim.clients.sac.data import FINE_CLASSES, load_cub, make_fine
from fedsim.clients.sac.metrics import mix_probabilities
from fedsim.clients.sac.model import (
    SACNet,
    SACOutput,
    couple_attention,
    drop_most_attended,
    encode_names,
    hash_token,
    name_tokens,
)
from fedsim.clients.sac.task import SACTask
from fedsim.errors import FedsimError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"width": 4, "feat_dim": 6, "grid": 2, "visual_dim": 8, "embed_dim": 4, "name_dim": 5,
        "joint_dim": 7, "rank": 3, "hash_buckets": 16}


def _tiny_net(sac: bool = True, k: int = 2) -> SACNet:
    torch.manual_seed(0)
    return SACNet(["plain ring", "upper dot ring", "lower dot ring", "plain box"], 1, sac=sac, k=k, **TINY)


# ----------------------------------------------------------------- shapes
def test_forward_shapes_with_and_without_sac():
    x = torch.randn(5, 1, 8, 8)
    out = _tiny_net()(x)
    assert out.logits1.shape == (5, 4) and out.logits2.shape == (5, 4)
    assert out.attention.shape == (5, 2 * 2, 2)  # (B, f = grid², k)
    assert out.topk.shape == (5, 2)
    # the candidates are the first classifier's k best classes
    assert torch.equal(out.topk[:, 0], out.logits1.argmax(1))
    base = _tiny_net(sac=False)(x)
    assert base.logits1.shape == (5, 4) and base.logits2 is None and base.attention is None
    torch.manual_seed(0)
    literal = SACNet(["a", "b", "c"], 1, k=2, residual=False, **TINY)  # fine classifier on J alone
    assert literal.classifier2.in_features == TINY["joint_dim"] and literal(x).logits2.shape == (5, 3)
    assert _tiny_net().classifier2.in_features == TINY["visual_dim"]  # on ReLU(V + Q·J)


def test_joint_embedding_shapes_and_any_input_size():
    net = _tiny_net()
    feat, names = torch.randn(3, 4, 6), torch.randn(3, 2, 5)
    m, j = net.joint(feat, names)
    assert m.shape == (3, 4, 2) and j.shape == (3, 7)
    for size in (8, 16, 13):  # the adaptive pools give the same grid for any size
        assert net(torch.randn(2, 1, size, size)).attention.shape == (2, 4, 2)


def test_grid_pool_matches_adaptive_max_pool():
    from fedsim.clients.sac.model import GridPool

    for size, target in ((16, 8), (8, 4), (8, 8), (13, 4), (32, 8)):
        x = torch.randn(2, 3, size, size)
        assert torch.equal(GridPool(target)(x), nn.functional.adaptive_max_pool2d(x, target))


def test_attention_softmax_sums_to_one_over_cell_class_couples():
    # hand-computed: exp(0), exp(ln 3), exp(0), exp(0) over 6
    m = couple_attention(torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]]))
    np.testing.assert_allclose(m[0].numpy(), [[1 / 6, 1 / 2], [1 / 6, 1 / 6]], rtol=1e-6)
    out = _tiny_net(k=3)(torch.randn(4, 1, 8, 8))
    sums = out.attention.sum(dim=(1, 2))
    np.testing.assert_allclose(sums.detach().numpy(), np.ones(4), rtol=1e-6)
    # one softmax over all couples, not one per class: per-class sums differ from 1
    assert not torch.allclose(out.attention.sum(1), torch.ones(4, 3))


def test_joint_embedding_by_hand():
    """d_f = d_e = rank = d_j = 2 with identity maps: J = tanh(1)² tanh(2) [1, 1].

    LN([2, 0]) = [1, -1], LN([0, 3]) = [-1, 1], LN([5, 1]) = [1, -1]; the scores
    F̂_i·Ê_1 are 2 and -2, so M = softmax([2, -2]); the couple products are
    ±tanh(1)² [1, 1], and M_1 - M_2 = tanh(2).
    """
    net = SACNet(["a", "b"], 1, k=1, feat_dim=2, name_dim=2, rank=2, joint_dim=2, grid=1)
    with torch.no_grad():
        for lin in (net.att, net.proj_f, net.proj_e, net.proj_j):
            lin.weight.copy_(torch.eye(2))
            if lin.bias is not None:
                lin.bias.zero_()
    feat = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    names = torch.tensor([[[5.0, 1.0]]])
    m, j = net.joint(feat, names)
    e2, em2 = math.exp(2), math.exp(-2)
    np.testing.assert_allclose(m[0, :, 0].detach().numpy(), [e2 / (e2 + em2), em2 / (e2 + em2)], rtol=1e-4)
    want = math.tanh(1) ** 2 * math.tanh(2)
    np.testing.assert_allclose(j[0].detach().numpy(), [want, want], rtol=1e-4)


# ----------------------------------------------------------------- mixing and metrics
class _Fixed(nn.Module):
    """A model that returns fixed logits (to check the metrics by hand)."""

    def __init__(self, z1, z2) -> None:
        super().__init__()
        self.z1, self.z2 = z1, z2

    def forward(self, x):
        return SACOutput(self.z1, self.z2)


def test_alpha_mixing_by_hand():
    z1 = torch.tensor([[0.0, math.log(3.0)]])  # P1 = [0.25, 0.75]
    z2 = torch.tensor([[math.log(4.0), 0.0]])  # P2 = [0.8, 0.2]
    p = mix_probabilities(z1, z2, 0.25)
    np.testing.assert_allclose(p.numpy(), [[0.25 * 0.25 + 0.75 * 0.8, 0.25 * 0.75 + 0.75 * 0.2]], rtol=1e-6)
    np.testing.assert_allclose(mix_probabilities(z1, z2, 1.0).numpy(), [[0.25, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(mix_probabilities(z1, None, 0.25).numpy(), [[0.25, 0.75]], rtol=1e-6)


def test_evaluate_metrics_by_hand():
    # sample 0: P = [0.6625, 0.3375, 0] (coarse says 1, mix says 0); sample 1: P = [0.1, 0.2, 0.7]
    z1 = torch.tensor([[0.0, math.log(3.0), -1e9], [0.0, 0.0, math.log(8.0)]])
    z2 = torch.tensor([[math.log(4.0), 0.0, -1e9], [-1e9, math.log(1 / 3), 0.0]])
    # sample 1: P1 = [0.1, 0.1, 0.8], P2 = [0, 0.25, 0.75] -> α = 0.25: [0.025, 0.2125, 0.7875]
    from fedsim.clients.base import SiloData

    data = SiloData(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), torch.zeros(2, 1, 2, 2),
                    torch.tensor([0, 1]))
    out = SACTask({"sac_alpha": 0.25, "k": 2}).evaluate(_Fixed(z1, z2), data)
    assert out["accuracy"] == pytest.approx(0.5)  # sample 0 right (0.6625), sample 1 wrong (class 2)
    assert out["topk_accuracy"] == pytest.approx(1.0)  # class 1 is second in sample 1
    assert out["accuracy_coarse"] == pytest.approx(0.0)
    assert out["loss"] == pytest.approx(-(math.log(0.6625) + math.log(0.2125)) / 2, rel=1e-5)
    assert out["n"] == 2.0


# ----------------------------------------------------------------- dropping
def test_dropping_zeroes_the_most_attended_region():
    x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    # 2×2 grid of cells (row-major); cell 1 (top right) holds most attention
    m = torch.tensor([[[0.05, 0.05], [0.30, 0.40], [0.05, 0.05], [0.05, 0.05]]])
    out = drop_most_attended(x, m, (2, 2), threshold=0.5)
    want = x.clone()
    want[0, 0, :2, 2:] = 0.0
    assert torch.equal(out, want)
    # a lower threshold also drops cells at >= θ·max: θ = 0.1 drops all four here
    assert torch.equal(drop_most_attended(x, m, (2, 2), threshold=0.1), torch.zeros_like(x))
    # per image: the second image drops its own top cell (bottom left)
    x2 = torch.ones(2, 1, 4, 4)
    m2 = torch.stack([m[0], torch.tensor([[0.1, 0.0], [0.1, 0.0], [0.7, 0.0], [0.1, 0.0]])])
    out2 = drop_most_attended(x2, m2, (2, 2), threshold=0.9)
    assert out2[0, 0, :2, 2:].sum() == 0 and out2[0].sum() == 12
    assert out2[1, 0, 2:, :2].sum() == 0 and out2[1].sum() == 12


# ----------------------------------------------------------------- class names
def test_name_tokens_and_hashing():
    assert name_tokens("001.Black_footed_Albatross") == ["black", "footed", "albatross"]
    assert name_tokens("Upper dot  ring") == ["upper", "dot", "ring"]
    assert hash_token("dot", 256) == 1 + zlib.crc32(b"dot") % 255
    ids, lengths = encode_names(["upper dot ring", "lower dot ring", "a b c d e f"], 256)
    assert lengths.tolist() == [3, 3, 4]  # trimmed to 4 words
    assert ids[0, 1] == ids[1, 1] and ids[0, 2] == ids[1, 2] and ids[0, 0] != ids[1, 0]
    assert ids[0, 3] == 0  # zero padding


def test_class_embedding_is_the_gru_state_after_the_last_token():
    net = _tiny_net()
    e = net.class_embeddings()
    ids, lengths = encode_names(["plain ring", "upper dot ring", "lower dot ring", "plain box"], 16)
    for c in range(4):
        seq = net.token_embedding(ids[c:c + 1, :lengths[c]])
        _, h = net.name_gru(seq)  # no padding at all
        torch.testing.assert_close(e[c], h[0, 0])


def test_state_dict_holds_only_float_parameters():
    net = _tiny_net()
    sd = net.state_dict()
    assert all(v.is_floating_point() for v in sd.values())
    assert "name_ids" not in sd and "name_lengths" not in sd  # derived from the names, never exchanged
    base = _tiny_net(sac=False).state_dict()
    assert set(base) < set(sd) and all(k.startswith(("backbone", "visual", "classifier1")) for k in base)


# ----------------------------------------------------------------- data
def test_fine_generator_is_deterministic_and_the_detail_is_real():
    a, b = make_fine(20, seed=3), make_fine(20, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, make_fine(20, seed=4).x)
    assert a.x.shape == (240, 1, 16, 16) and np.bincount(a.y).tolist() == [20] * 12
    assert a.names == FINE_CLASSES and len(set(FINE_CLASSES)) == 12
    # "upper dot" classes are brighter than "plain" ones in the upper inner region, "lower dot" below
    big = make_fine(80, seed=0)
    upper, lower = big.x[:, 0, 4:8, 6:10].mean((1, 2)), big.x[:, 0, 8:12, 6:10].mean((1, 2))
    detail = big.y % 3
    assert upper[detail == 1].mean() > upper[detail == 0].mean() + 0.05
    assert lower[detail == 2].mean() > lower[detail == 0].mean() + 0.05


def test_partition_is_disjoint_deterministic_and_standardised():
    task = SACTask({"dataset": "fine", "n_per_class": 20})
    parts = [task.partition(s, 3, seed=1) for s in range(3)]
    again = SACTask({"dataset": "fine", "n_per_class": 20}).partition(1, 3, seed=1)
    assert torch.equal(parts[1].x_train, again.x_train) and torch.equal(parts[1].y_test, again.y_test)
    total = sum(p.n_train + len(p.y_test) for p in parts)
    assert total == 240
    pool = task.pool()
    assert abs(float(pool.x.mean())) < 1e-4 and abs(float(pool.x.std()) - 1) < 1e-3
    rows = {tuple(np.round(r.numpy().ravel()[:12], 5)) for p in parts for r in (*p.x_train, *p.x_test)}
    assert len(rows) == 240  # no image in two places
    digits = SACTask({"dataset": "digits"}).partition(0, 2, seed=0)
    assert digits.x_train.shape[1:] == (1, 8, 8) and int(digits.y_train.max()) <= 9


def _write_cub(root: Path, split: bool) -> None:
    from PIL import Image

    classes = ["001.Red_Winged_Blackbird", "002.Green_Jay"]
    colours = [(255, 0, 0), (0, 255, 0)]
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    images, labels, splits = [], [], []
    img_id = 0
    for c, (name, colour) in enumerate(zip(classes, colours)):
        (root / "images" / name).mkdir(parents=True)
        for j in range(6):
            img_id += 1
            rel = f"{name}/{name.split('.')[1]}_{j}.png"
            Image.new("RGB", (20 + j, 12), colour).save(root / "images" / rel)
            images.append(f"{img_id} {rel}\n")
            labels.append(f"{img_id} {c + 1}\n")
            splits.append(f"{img_id} {int(j < 4)}\n")
    (root / "images.txt").write_text("".join(images))
    (root / "image_class_labels.txt").write_text("".join(labels))
    if split:
        (root / "train_test_split.txt").write_text("".join(splits))


def test_cub_loader_on_a_fixture(tmp_path):
    _write_cub(tmp_path, split=True)
    pool = load_cub(tmp_path, image_size=8)
    assert pool.x.shape == (12, 3, 8, 8) and pool.y.tolist() == [0] * 6 + [1] * 6
    np.testing.assert_allclose(pool.x[0, :, 3, 3], [1.0, 0.0, 0.0])  # red, resized
    np.testing.assert_allclose(pool.x[7, :, 3, 3], [0.0, 1.0, 0.0])  # green
    assert pool.is_train.tolist() == [True] * 4 + [False] * 2 + [True] * 4 + [False] * 2
    assert name_tokens(pool.names[1]) == ["green", "jay"]
    task = get_task("sac", {"dataset": "cub", "data_dir": str(tmp_path), "image_size": 8, "alpha": 100.0})
    d = task.partition(0, 1, seed=0)
    assert d.n_train == 8 and len(d.y_test) == 4  # the official split decides
    out = task.evaluate(task.model(), d)
    assert 0 <= out["accuracy"] <= out["topk_accuracy"] <= 1 and out["n"] == 4


def test_cub_loader_without_split_and_errors(tmp_path):
    _write_cub(tmp_path, split=False)
    assert load_cub(tmp_path, image_size=4, grayscale=True).x.shape == (12, 1, 4, 4)
    task = SACTask({"dataset": "cub", "data_dir": str(tmp_path), "image_size": 4, "test_fraction": 0.25})
    d = task.partition(0, 1, seed=0)
    assert d.n_train == 9 and len(d.y_test) == 3
    (tmp_path / "images.txt").unlink()
    with pytest.raises(FedsimError, match="no images.txt"):
        load_cub(tmp_path)
    with pytest.raises(FedsimError, match="does not exist"):
        load_cub(tmp_path / "missing")
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(FedsimError, match="no classes.txt"):
        SACTask({"dataset": "cub", "data_dir": str(tmp_path)}).model()


def test_config_errors():
    with pytest.raises(FedsimError, match="unknown sac option.*valid:"):
        SACTask({"topk": 3})
    with pytest.raises(FedsimError, match="unknown sac dataset 'cifar'; valid: digits, fine, cub"):
        SACTask({"dataset": "cifar"})
    with pytest.raises(FedsimError, match="needs data_dir"):
        SACTask({"dataset": "cub"})
    with pytest.raises(FedsimError, match="sac_alpha"):
        SACTask({"sac_alpha": 1.5})
    with pytest.raises(FedsimError, match="expects true or false"):
        SACTask({"sac": "maybe"})
    with pytest.raises(FedsimError, match="sac option k expects an integer"):
        SACTask({"k": "three"})
    assert SACTask({"sac": "false"}).model().sac is False


# ----------------------------------------------------------------- learning
@pytest.mark.parametrize("sac", [True, False])
def test_local_steps_reduce_the_loss(sac):
    task = SACTask({"dataset": "fine", "n_per_class": 20, "sac": sac, "lr": 0.05})
    data = task.partition(0, 1, seed=0)
    torch.manual_seed(0)
    model = task.model()

    def train_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(task.loss(model(data.x_train), data.y_train))

    before = train_loss()
    task.train(model, data, 20, torch.Generator().manual_seed(0))
    assert train_loss() < before - 0.1


def test_training_is_deterministic_for_a_generator_seed():
    """Same model, data and generator seed: bit-identical parameters (resume relies on it)."""
    task = SACTask({"dataset": "fine", "n_per_class": 10})
    data = task.partition(0, 1, seed=0)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = task.model()
        task.train(model, data, 3, torch.Generator().manual_seed(7))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_dropping_changes_the_update():
    """With ω > 0 the erased images enter the loss (a different update than ω = 0)."""
    data = SACTask({"dataset": "fine", "n_per_class": 10}).partition(0, 1, seed=0)
    states = []
    for omega in (0.0, 0.5):
        task = SACTask({"dataset": "fine", "n_per_class": 10, "drop_weight": omega})
        torch.manual_seed(0)
        model = task.model()
        task.train(model, data, 1, torch.Generator().manual_seed(0))
        states.append(model.state_dict()["backbone.0.weight"].clone())
    assert not torch.allclose(states[0], states[1])


def test_profile_counts_the_exchanged_values():
    task = get_task("sac", {"sac": False})
    prof = task.profile(steps=2)
    n_values = sum(v.numel() for v in task.model().state_dict().values())
    assert prof.model_bits == 32 * n_values and prof.compute_ms > 0
    with_sac = get_task("sac").profile(steps=2)
    assert with_sac.model_bits > prof.model_bits


# ----------------------------------------------------------------- integration
@pytest.mark.slow
def test_two_rounds_of_sac_on_ray(tmp_path, tri_network):
    import csv
    import json

    from fedsim.apps.config import RunConfig
    from fedsim.apps.simulation import run_simulation

    net = tri_network
    options = {"dataset": "fine", "n_per_class": 30, "lr": 0.05}
    cfg = RunConfig(network=str(net), strategy="fedavg", task="sac", rounds=2, local_steps=3, seed=3,
                    compute_ms=2.0, task_options=options)
    trace: dict[int, dict[int, dict]] = {}

    def on_round(k, outcome, _strategy):
        trace[k] = {s: dict(m) for s, m in outcome.train.items()}

    summary = run_simulation(cfg, tmp_path / "run", progress=False, on_round=on_round)
    assert summary["rounds_completed"] == 2 and summary["task"] == "sac"
    rows = list(csv.DictReader(open(tmp_path / "run" / "rounds.csv")))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    for k in (1, 2, 3):  # k = 3: the final evaluation
        assert sorted(trace[k]) == [0, 1, 2]
        for m in trace[k].values():
            assert 0 <= m["eval_accuracy"] <= m["eval_topk_accuracy"] <= 1 and m["eval_n"] > 0
    # FedAvg: every silo receives the sample-weighted mean of what the silos sent
    n_ex = np.array([trace[1][s]["num-examples"] for s in range(3)])
    sent = np.array([[trace[1][s]["trained_sum"], trace[1][s]["trained_signed"]] for s in range(3)])
    got = np.array([[trace[2][s]["received_sum"], trace[2][s]["received_signed"]] for s in range(3)])
    np.testing.assert_allclose(got, np.tile(n_ex / n_ex.sum() @ sent, (3, 1)), rtol=2e-4, atol=2e-3)
    # the clock used the SAC model's real size: every parameter is exchanged
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["profile"]
    torch.manual_seed(0)
    n_values = sum(v.numel() for v in get_task("sac", options).model().state_dict().values())
    assert stored["model_bits"] == 32 * n_values
