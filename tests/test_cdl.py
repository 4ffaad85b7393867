"""Tests of the CDL task: model sizes, the loss, the local step, the data, the exchange.

Expected numbers are computed by hand in the comments (parameter counts of the
ResNet-8 layers, Bernoulli KL values and gradients, pixel values of the
fixture images, road geometry).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fedsim.clients import get_task
from fedsim.clients.cdl.data import (
    load_steering_folder,
    render_roads,
    silo_sizes,
    silo_steering,
    synthetic_silo,
    to_float,
)
from fedsim.clients.cdl.model import CDLNet, ResNet8, bernoulli_kl, cdl_loss
from fedsim.clients.cdl.task import CDLTask
from fedsim.errors import FedsimError

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75
SMALL = {"n_per_silo": 48}

# Small branch (widths 8/8/16/32, 64×64): stem 5·5·1·8+8 = 208; block 8→8: BN 2·8 + conv 8·8·9+8
# + BN 2·8 + conv 584 + shortcut 8·8+8 = 1,272; block 8→16: 16+1,168+32+2,320+144 = 3,680;
# block 16→32: 32+4,640+64+9,248+544 = 14,528; head 32·2·2+1 = 129 -> 19,817.
SMALL_PARAMS = 19_817
# BN running mean + var: 2·(8+8 + 8+16 + 16+32) = 176 exchanged buffer values.
SMALL_EXCHANGED = SMALL_PARAMS + 176
# Paper branch (32/32/64/128, 200×200 -> 7×7): 832 + 19,680 + 57,728 + 230,144 + 6,273.
PAPER_PARAMS = 314_657
PAPER_EXCHANGED = PAPER_PARAMS + 2 * (32 + 32 + 32 + 64 + 64 + 128)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- model ----------------------------------------------------------------------
def test_branch_sizes_match_hand_counts():
    assert sum(p.numel() for p in ResNet8(64, (8, 8, 16, 32)).parameters()) == SMALL_PARAMS
    assert sum(p.numel() for p in ResNet8(200, (32, 32, 64, 128)).parameters()) == PAPER_PARAMS
    siamese = CDLNet(64, (8, 8, 16, 32))
    assert sum(p.numel() for p in siamese.parameters()) == 2 * SMALL_PARAMS


def test_output_shapes_small_and_paper():
    small = get_task("cdl").model().eval()
    assert small(torch.zeros(3, 1, 64, 64)).shape == (3,)
    paper = get_task("cdl", {"size": "paper"}).model().eval()
    assert paper.backbone.n_features == 128 * 7 * 7
    assert paper(torch.zeros(1, 1, 200, 200)).shape == (1,)


def test_exchanged_keys_are_the_backbone_only():
    task = get_task("cdl")
    model = task.model()
    keys = task.exchanged_keys(model)
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert not any("num_batches_tracked" in k for k in keys)
    sd = model.state_dict()
    assert sum(sd[k].numel() for k in keys) == SMALL_EXCHANGED
    paper = get_task("cdl", {"size": "paper"})
    pm = paper.model()
    assert sum(pm.state_dict()[k].numel() for k in paper.exchanged_keys(pm)) == PAPER_EXCHANGED
    base = get_task("cdl", {"variant": "resnet8"})
    bm = base.model()
    assert base.exchanged_keys(bm) == keys  # same backbone layout: comparable under any strategy
    assert not any(k.startswith("sub") for k in bm.state_dict())


def test_profile_counts_only_the_backbone():
    prof = CDLTask(SMALL).profile(steps=2)
    assert prof.model_bits == 32.0 * SMALL_EXCHANGED
    assert prof.compute_ms > 0


# -- loss -----------------------------------------------------------------------
def test_bernoulli_kl_hand_values():
    # KL(0.5‖0.75) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.143841
    # KL(0.75‖0.5) = 0.75 ln(1.5) + 0.25 ln(0.5) = 0.130812 (asymmetric)
    assert float(bernoulli_kl(torch.tensor([0.0]), torch.tensor([LN3]))) == pytest.approx(0.143841, abs=1e-6)
    assert float(bernoulli_kl(torch.tensor([LN3]), torch.tensor([0.0]))) == pytest.approx(0.130812, abs=1e-6)
    assert float(bernoulli_kl(torch.tensor([0.3, -2.0]), torch.tensor([0.3, -2.0]))) == 0.0


def test_cdl_loss_value_and_gradient_routing():
    b = torch.tensor([0.0, LN3], requires_grad=True)
    s = torch.tensor([LN3, LN3], requires_grad=True)
    y = torch.tensor([0.5, 0.5])
    obj, parts = cdl_loss(b, s, y, beta=0.25)
    # L1 = (0.5 + (ln3 - 0.5)) / 2 = 0.549306; cd+ = KL(0.5‖0.75)/2 = 0.0719205;
    # cd- = KL(0.75‖0.5)/2 = 0.065406; L = 0.549306 + 0.25·0.0719205 + 0.75·0.065406 = 0.616341
    assert parts["l1"] == pytest.approx(0.549306, abs=1e-6)
    assert parts["cd_plus"] == pytest.approx(0.0719205, abs=1e-6)
    assert parts["cd_minus"] == pytest.approx(0.065406, abs=1e-6)
    assert float(obj.detach()) == pytest.approx(0.616341, abs=1e-6)
    obj.backward()
    # dKL(σ(u)‖σ(v))/du = σ(u)(1-σ(u))(u - v).
    # backbone: d L1 = sign(b - y)/2 = [-0.5, 0.5]; β·cd+: 0.25·0.25·(0 - ln3)/2 = -0.0343316 on b0.
    np.testing.assert_allclose(b.grad.numpy(), [-0.5343316, 0.5], atol=1e-6)
    # sub: only (1-β)·cd-: 0.75·0.1875·ln3/2 = 0.0772463 on s0; L1 and cd+ send it nothing.
    np.testing.assert_allclose(s.grad.numpy(), [0.0772463, 0.0], atol=1e-6)


def test_kl_temperature_divides_the_logits():
    # τ = 2: H(b‖s) with b = 0, s = 2·ln3 compares σ(0) = 0.5 with σ(ln3) = 0.75 -> 0.143841.
    b, s, y = torch.tensor([0.0]), torch.tensor([2 * LN3]), torch.tensor([0.0])
    _, parts = cdl_loss(b, s, y, beta=0.5, temperature=2.0)
    assert parts["cd_plus"] == pytest.approx(0.143841, abs=1e-6)
    assert parts["cd_minus"] == pytest.approx(0.130812, abs=1e-6)


# -- local training -----------------------------------------------------------------
def _silo(task: CDLTask, silo: int = 0):
    return task.partition(silo, 3, seed=1)


def _frozen(task: CDLTask) -> CDLTask:
    """The task with an optimiser that computes gradients but moves nothing (lr 0 is refused as an option)."""
    task._optimizer = lambda model: torch.optim.SGD(model.parameters(), lr=0.0)
    return task


def test_sub_network_starts_as_a_copy_and_is_not_recopied():
    task = _frozen(CDLTask(SMALL))
    torch.manual_seed(0)
    model = task.model()
    data = _silo(task)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert not torch.equal(model.sub.stem.weight, model.backbone.stem.weight)  # two random inits
    out = task.train(model, data, 1, torch.Generator().manual_seed(0))
    # Right after the copy the branches agree on every sample (same weights, same dropout mask).
    assert out["cd_plus"] == 0.0 and out["cd_minus"] == 0.0
    assert float(model.sub_ready) == 1.0
    for (k, v), (_, w) in zip(model.sub.named_parameters(), model.backbone.named_parameters()):
        assert torch.equal(v, w) and torch.equal(w, before[k]), k
    # A new backbone arrives: the sub-network keeps its own weights (no second copy).
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.5)
    task.train(model, data, 1, torch.Generator().manual_seed(1))
    assert torch.equal(model.sub.stem.weight, before["stem.weight"])


def test_beta_zero_backbone_follows_the_resnet8_baseline():
    """With β = 0 the backbone's objective is L1 alone: it must move exactly as the baseline."""
    cdl, base = CDLTask(SMALL | {"beta": 0.0}), CDLTask(SMALL | {"variant": "resnet8"})
    torch.manual_seed(0)
    m_cdl = cdl.model()
    m_base = base.model()
    m_base.backbone.load_state_dict(m_cdl.backbone.state_dict())
    data = _silo(cdl)
    cdl.train(m_cdl, data, 3, torch.Generator().manual_seed(5))
    base.train(m_base, data, 3, torch.Generator().manual_seed(5))
    for (k, v), w in zip(m_cdl.backbone.named_parameters(), m_base.backbone.parameters()):
        torch.testing.assert_close(v, w, rtol=1e-6, atol=1e-7, msg=k)


def test_beta_one_freezes_the_sub_network():
    """With β = 1 the sub-network's term has weight 0, so only the backbone moves."""
    task = CDLTask(SMALL | {"beta": 1.0, "weight_decay": 0.0})
    torch.manual_seed(0)
    model = task.model()
    model.ensure_sub()
    sub0 = [p.clone() for p in model.sub.parameters()]
    bb0 = [p.clone() for p in model.backbone.parameters()]
    task.train(model, _silo(task), 3, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(sub0, model.sub.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(bb0, model.backbone.parameters()))


def test_fedprox_term_acts_on_the_backbone_only():
    task = _frozen(CDLTask(SMALL | {"beta": 1.0, "weight_decay": 0.0}))
    torch.manual_seed(0)
    model = task.model()
    anchor = [p.detach().clone() + 1.0 for p in model.parameters()]  # far from every weight
    task.train(model, _silo(task), 1, torch.Generator().manual_seed(0), prox_mu=0.1, anchor=anchor)
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.sub.parameters())
    # d/dw of mu/2 (w - (w+1))² = -mu: every backbone weight gets it (plus its L1 gradient).
    assert float(model.backbone.head.bias.grad) != 0.0


@pytest.mark.parametrize("variant", ["cdl", "resnet8"])
def test_local_steps_reduce_the_loss(variant):
    torch.manual_seed(0)
    task = CDLTask({"variant": variant, "n_per_silo": 160, "lr": 3e-3})
    model = task.model()
    data = _silo(task, 2)
    before = task.evaluate(model, data)
    task.train(model, data, 40, torch.Generator().manual_seed(0))
    after = task.evaluate(model, data)
    assert after["loss"] < 0.8 * before["loss"]
    assert after["rmse"] < before["rmse"]


def test_evaluate_hand_metrics():
    task = CDLTask(SMALL)
    model = task.model()
    with torch.no_grad():  # a constant predictor: output = head bias = 0.1
        for p in model.backbone.head.parameters():
            p.zero_()
        model.backbone.head.bias.fill_(0.1)
    x = torch.zeros(4, 1, 64, 64, dtype=torch.uint8)
    y = torch.tensor([0.1, 0.3, -0.1, 0.5])
    from fedsim.clients.base import SiloData

    m = task.evaluate(model, SiloData(x, y, x, y))
    # errors 0, -0.2, 0.2, -0.4: MSE = (0.04+0.04+0.16)/4 = 0.06, MAE = 0.8/4 = 0.2
    assert m["mse"] == pytest.approx(0.06, abs=1e-7)
    assert m["rmse"] == pytest.approx(math.sqrt(0.06), abs=1e-7)
    assert m["mae"] == pytest.approx(0.2, abs=1e-7) and m["loss"] == m["mae"]
    assert m["n"] == 4.0


# -- synthetic data ---------------------------------------------------------------------
def _flat_style(n: int, **kw) -> dict[str, np.ndarray]:
    # Grey levels chosen so that level·255 is an integer: road 51, off-road 153, sky 204, lines 255.
    st = {"road": 0.2, "offroad": 0.6, "sky": 0.8, "line": 1.0, "texture": 0.0, "coarse": 0.5,
          "gain": 1.0, "shadow": 0.0, "noise": 0.0, "horizon": 0.35, "width": 0.5, "edges": 0.0,
          "dash": 1.0} | kw
    return {k: np.full(n, v, float) for k, v in st.items()}


def test_road_geometry_offset_and_bend():
    size = 64
    o = np.array([0.0, 0.4, -0.4, 0.0, 0.0])
    steer = np.array([0.0, -0.12, 0.12, 0.6, -0.6])  # κ = steer + 0.3·o = 0, 0, 0, 0.6, -0.6
    img = render_roads(steer, o, _flat_style(5), size, np.random.default_rng(0)).astype(int)

    def centre(row: np.ndarray) -> float:
        return float(np.flatnonzero(row != 153).mean())  # road and lane-mark pixels

    # Bottom row: horizon h = 64·(0.35 ± 0.03) in [20.5, 24.3], z = (63-h)/(64-h) ≈ 0.976,
    # hw = 64·0.5·(0.04 + 0.46·z) ≈ 15.6 px; centre 32 - o·hw = 32, 25.74, 38.26. The road is
    # the integer columns within hw of the centre: 17..47 (mean 32), 11..41 (26), 23..53 (38).
    assert centre(img[0, -1]) == pytest.approx(32.0, abs=0.6)
    assert centre(img[1, -1]) == pytest.approx(32.0 - 0.4 * 15.65, abs=0.6)
    assert centre(img[2, -1]) == pytest.approx(32.0 + 0.4 * 15.65, abs=0.6)
    assert (img[0, -1] == 51).sum() >= 31 - 5  # road pixels (all but a lane dash) between 17 and 47
    # Row 30: z = (30-h)/(64-h) in [0.13, 0.22]; bend 0.45·64·κ·(1-z)² = ±(10.5..13.1) px
    # towards the turn, road half-width 32·(0.04 + 0.46·z) ≈ 3.2..4.5 px.
    assert 32 + 9 < centre(img[3, 30]) < 32 + 14.5
    assert 32 - 14.5 < centre(img[4, 30]) < 32 - 9
    assert (img[0, 0] == 204).all()  # top row of the sky: 0.8 - 0.2·0/h


def test_synthetic_silos_are_deterministic_and_non_iid():
    x1, y1 = synthetic_silo(1, 3, seed=4, n_images=300, size=32)
    x2, y2 = synthetic_silo(1, 3, seed=4, n_images=300, size=32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert x1.shape == (300, 1, 32, 32) and x1.dtype == np.uint8
    assert y1.min() >= -1 and y1.max() <= 1
    dist = silo_steering(3, seed=4)
    ys = [synthetic_silo(s, 3, seed=4, n_images=400, size=16)[1] for s in range(3)]
    for s in range(3):
        kind, c, sp = dist["kind"][s], dist["centre"][s], dist["spread"][s]
        if kind == 0:  # turn-biased: mean ≈ centre
            assert abs(ys[s].mean() - c) < 4 * sp / 20 + 0.01
        elif kind == 1:  # mostly straight: small spread around 0
            assert abs(ys[s].mean()) < 0.02 and ys[s].std() < 0.1
        else:  # bimodal ±m: |y| ≈ m
            assert abs(np.abs(ys[s]).mean() - c) < 0.05
    # label_shift = 0: every silo draws from the same pooled mixture.
    iid = [synthetic_silo(s, 3, seed=4, n_images=2000, size=8, label_shift=0.0)[1] for s in range(3)]
    assert max(abs(a.mean() - b.mean()) for a in iid for b in iid) < 0.05
    assert max(abs(y.mean() - ys[0].mean()) for y in ys) > 0.1  # while the shifted silos differ


def test_partition_sizes_split_and_determinism():
    task = CDLTask()
    sizes = silo_sizes(3, seed=2, total=38_586, scale=0.05)  # mean 643.1 per silo
    assert np.all((sizes >= 0.6 * 643.1 - 1) & (sizes <= 1.4 * 643.1 + 1))
    d = task.partition(1, 3, seed=2)
    assert d.n_train + len(d.y_test) == sizes[1]
    assert len(d.y_test) == round(0.2 * sizes[1])
    d2 = task.partition(1, 3, seed=2)
    assert torch.equal(d.x_train, d2.x_train) and torch.equal(d.y_test, d2.y_test)
    assert d.x_train.dtype == torch.uint8 and d.x_train.shape[1:] == (1, 64, 64)


def test_to_float_scale():
    assert to_float(torch.tensor([0, 90, 255], dtype=torch.uint8)).tolist() == pytest.approx(
        [-1.0, 90 / 127.5 - 1, 1.0])


# -- real folders -----------------------------------------------------------------
def _write_folder(root, rows, header=True, name="driving_log.csv", images=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "IMG").mkdir(exist_ok=True)
    for fname, arr in (images or {}).items():
        Image.fromarray(arr).save(root / "IMG" / fname)
    lines = (["center,left,right,steering,throttle,brake,speed"] if header else []) + rows
    (root / name).write_text("\n".join(lines) + "\n")


def test_udacity_folder_loader(tmp_path):
    grey = np.full((6, 8, 3), 90, np.uint8)                  # RGB grey 90 -> L = 90
    bars = np.zeros((6, 12), np.uint8)
    bars[:, 3:9] = 200                                        # centre 6×6 crop is all 200
    _write_folder(tmp_path / "a", [
        "IMG/g.png, IMG/x.png, IMG/y.png, 0.25, 0, 0, 10",
        "/some/other/machine/IMG/b.png, x, y, -0.7, 0, 0, 10",  # absolute path recorded elsewhere
    ], images={"g.png": grey, "b.png": bars})
    x, y = load_steering_folder(tmp_path / "a", image_size=4)
    assert x.shape == (2, 1, 4, 4) and x.dtype == np.uint8
    assert (x[0] == 90).all() and (x[1] == 200).all()
    np.testing.assert_allclose(y, [0.25, -0.7])
    _, y2 = load_steering_folder(tmp_path / "a", image_size=4, steering_scale=2.0)
    np.testing.assert_allclose(y2, [0.5, -1.0])  # -1.4 clipped to -1
    # Two-column file without a header: path, steering.
    _write_folder(tmp_path / "b", ["IMG/g.png,0.1", "IMG/g.png,-0.2"], header=False, name="labels.csv",
                  images={"g.png": grey})
    np.testing.assert_allclose(load_steering_folder(tmp_path / "b", 4)[1], [0.1, -0.2])
    _write_folder(tmp_path / "c", ["IMG/missing.png,1,2,0.1"], header=False)
    with pytest.raises(FedsimError, match="missing.png"):
        load_steering_folder(tmp_path / "c", 4)
    with pytest.raises(FedsimError, match="no steering CSV"):
        load_steering_folder(tmp_path / "nothing", 4)


def test_folder_partitions(tmp_path):
    grey = np.full((4, 4), 50, np.uint8)
    for j, steer in enumerate([0.1, 0.2, 0.3]):  # one sub-folder per vehicle
        _write_folder(tmp_path / "fleet" / f"car{j}", [f"IMG/g.png,0,0,{steer},0,0,0"] * 5,
                      header=False, images={"g.png": grey})
    task = CDLTask({"data": str(tmp_path / "fleet"), "image_size": 8, "test_fraction": 0.4})
    for s, steer in enumerate([0.1, 0.2, 0.3]):
        d = task.partition(s, 3, seed=0)
        assert d.n_train == 3 and len(d.y_test) == 2
        assert torch.allclose(torch.cat([d.y_train, d.y_test]), torch.tensor(steer))
    # Pooled and sorted by steering (label_shift 1): 2 silos over 12 images, 6 lowest to silo 0.
    _write_folder(tmp_path / "pool", [f"IMG/g.png,0,0,{v / 10},0,0,0" for v in range(12)], header=False,
                  images={"g.png": grey})
    task = CDLTask({"data": str(tmp_path / "pool"), "image_size": 8})
    d0, d1 = task.partition(0, 2, seed=0), task.partition(1, 2, seed=0)
    assert float(torch.cat([d0.y_train, d0.y_test]).max()) == pytest.approx(0.5)
    assert float(torch.cat([d1.y_train, d1.y_test]).min()) == pytest.approx(0.6)


def test_bad_config_messages():
    with pytest.raises(FedsimError, match="unknown cdl variant 'siamese'; valid: cdl, resnet8"):
        CDLTask({"variant": "siamese"})
    with pytest.raises(FedsimError, match="beta must be in"):
        CDLTask({"beta": 1.5})
    with pytest.raises(FedsimError, match="kl_temperature must be > 0"):
        CDLTask({"kl_temperature": 0})
    with pytest.raises(FedsimError, match="does not exist"):
        CDLTask({"data": "/no/such/folder"}).partition(0, 2, 0)


# -- the exchange through the ClientApp --------------------------------------------------------
def _message(flat: np.ndarray, options: dict, rnd: int):
    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

    cfg = ConfigRecord({"task": "cdl", "task-options": json.dumps(options, sort_keys=True), "seed": 0,
                        "n-silos": 3, "local-steps": 2, "evaluate": True, "round": rnd, "silo": 1})
    meta = Metadata(run_id=1, message_id=f"m{rnd}", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                    group_id="", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(RecordDict({"arrays": ArrayRecord([flat]), "config": cfg}), metadata=meta)


def test_client_app_never_sends_the_sub_network():
    from flwr.app import Context, RecordDict

    from fedsim.apps import client_app as ca

    options = SMALL
    task = get_task("cdl", options)
    torch.manual_seed(0)
    model = task.model()
    keys = task.exchanged_keys(model)
    sent = ca.flatten(model, keys)
    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    reply = ca.train(_message(sent, options, 1), ctx)
    back = reply.content["arrays"].to_numpy_ndarrays()
    assert len(back) == 1 and back[0].size == SMALL_EXCHANGED
    local = ctx.state["local-1"].to_torch_state_dict()
    assert {k.split(".")[0] for k in local} == {"sub", "sub_ready", "backbone"}
    assert all(k.startswith("sub") or k.endswith("num_batches_tracked") for k in local)
    stem = local["sub.stem.weight"].reshape(-1).numpy()  # 200 values
    windows = np.lib.stride_tricks.sliding_window_view(back[0], stem.size)
    assert not (windows == stem).all(axis=1).any()  # the sub-network's weights are nowhere in the reply
    # Round 2: a very different backbone arrives; the sub-network continues from its own state.
    sub1 = local["sub.head.weight"].clone()
    reply2 = ca.train(_message(back[0] + 1.0, options, 2), ctx)
    local2 = ctx.state["local-1"].to_torch_state_dict()
    assert float((local2["sub.head.weight"] - sub1).abs().max()) < 2.5e-3  # 2 Adam steps move a weight by ≈ lr each
    assert float(reply2.content["metrics"]["train_cd_plus"]) > 0  # it now differs from the backbone


# -- the real Ray-backed simulation -------------------------------------------------------------
@pytest.mark.slow
def test_two_rounds_of_cdl_on_ray(tmp_path, tri_network):
    """2 rounds on 3 silos: only the backbone travels, and the sub-network persists on each silo."""
    import csv

    from fedsim.apps.config import RunConfig
    from fedsim.apps.simulation import run_simulation

    net = tri_network
    cfg = RunConfig(network=str(net), strategy="ring", task="cdl", rounds=2, seed=3, compute_ms=2.0,
                    task_options={"n_per_silo": 40})
    trace: dict[int, dict[int, dict]] = {}
    widths: list[int] = []

    def on_round(k, outcome, strategy):
        trace[k] = {s: dict(m) for s, m in outcome.train.items()}
        widths.append(int(np.asarray(strategy.models).shape[1]))

    summary = run_simulation(cfg, tmp_path / "run", progress=False, on_round=on_round)
    assert summary["rounds_completed"] == 2 and summary["metric"] == "rmse"
    assert widths and set(widths) == {SMALL_EXCHANGED}  # every silo's model is the backbone alone
    assert json.loads((tmp_path / "run" / "config.json").read_text())["profile"]["model_bits"] == \
        32.0 * SMALL_EXCHANGED
    for s in range(3):
        # Round 1: the sub-network is a fresh copy of the received backbone, so the branches agree.
        assert trace[1][s]["train_cd_plus"] == 0.0 and trace[1][s]["train_cd_minus"] == 0.0
        # Round 2: the backbone was mixed with a neighbour's, the sub-network was not (it stayed in
        # the node's state), so they now differ. Were it re-copied or exchanged, this would be 0.
        assert trace[2][s]["train_cd_plus"] > 0.0
    with open(tmp_path / "run" / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert all(0 < float(r["eval_metric"]) < 2 for r in rows)
    assert all(float(trace[3][s]["eval_n"]) == 8.0 for s in range(3))  # 20 % of 40 images


# -- the silo's own copy of its sub-network, for resumed runs ------------------------------------
def test_local_state_is_kept_back_to_the_previous_checkpoint(tmp_path):
    from fedsim.apps.client_app import load_local_state, save_local_state

    folder = tmp_path / "run-key"
    assert load_local_state(folder, 0, 10) is None  # nothing kept yet (and no folder)

    def upto(last):
        for rnd in range(1, last + 1):  # the server checkpoints every 2 rounds
            save_local_state(folder, 0, rnd, 2, {"w": torch.full((3,), float(rnd))})
            save_local_state(folder, 1, rnd, 2, {"w": torch.full((3,), -float(rnd))})
        return sorted(int(f.stem.split("-")[-1]) for f in folder.glob("silo-0-*.pt"))

    # After round 6: round 5 (a failure in round 6 checkpoints 5), 6, and 4 (the server's
    # checkpoint 6 may not be written yet).
    assert upto(6) == [4, 5, 6]
    assert load_local_state(folder, 0, 6)["w"].tolist() == [5.0] * 3  # resumed after a failure in round 6
    assert load_local_state(folder, 0, 5)["w"].tolist() == [4.0] * 3  # the server's checkpoint lagged
    assert upto(7) == [6, 7]
    assert load_local_state(folder, 0, 7)["w"].tolist() == [6.0] * 3  # resumed from checkpoint 6
    assert load_local_state(folder, 1, 8)["w"].tolist() == [-7.0] * 3  # each silo its own; end of run
    assert load_local_state(folder, 0, 6) is None  # nothing older is left
    save_local_state(None, 0, 8, 2, {"w": torch.zeros(1)})  # no folder: nothing kept, no error
    assert not (folder / "silo-0-round-8.pt").exists()


@pytest.mark.slow
def test_resumed_cdl_run_continues_with_the_sub_networks(tmp_path, tri_network):
    """Interrupted after round 2 and resumed: the same rounds as an uninterrupted run, because each
    silo reloads the sub-network it kept at the checkpoint instead of re-copying the backbone."""
    import csv

    from fedsim.apps.config import RunConfig
    from fedsim.apps.simulation import run_simulation

    def rows(run):
        with open(run / "rounds.csv") as fh:
            return list(csv.DictReader(fh))

    cfg = RunConfig(network=str(tri_network), strategy="ring", task="cdl", rounds=4, seed=3, compute_ms=2.0,
                    task_options={"n_per_silo": 40}, checkpoint_every=3)
    run_simulation(cfg, tmp_path / "full", progress=False)
    part = RunConfig(**{**cfg.__dict__, "rounds": 2})
    run_simulation(part, tmp_path / "part", progress=False)  # stands for a run stopped after round 2
    kept = sorted(f.name for f in (tmp_path / "part" / "silos" / cfg.key()).iterdir())
    assert kept == [f"silo-{s}-round-{r}.pt" for s in range(3) for r in (1, 2)]  # end-of-run checkpoint: 2
    resumed = RunConfig.from_file(tmp_path / "part" / "config.json")
    resumed.rounds = 4
    run_simulation(resumed, tmp_path / "part", progress=False, resume=True)
    a, b = rows(tmp_path / "full"), rows(tmp_path / "part")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        for col in ("round", "train_loss", "eval_loss", "eval_metric", "consensus"):
            assert ra[col] == rb[col], (ra["round"], col, ra[col], rb[col])
