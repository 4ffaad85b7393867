"""CFOR task: losses, MCC and its thresholds, retrieval and MAP@k on hand-checked cases,
the synthetic generator, the DeepFashion-style loader, learning, and a Ray run."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.clients.cfor.data import generate, load_deepfashion, silo_generator
from fedsim.clients.cfor.metrics import (
    attribute_map_at_k,
    attribute_metrics,
    average_precision_at_k,
    confusion_counts,
    map_at_k,
    mcc,
    mcc_thresholds,
    rarest,
    relevance,
)
from fedsim.clients.cfor.model import CFORNet, CFOROutput, cfor_loss, multitask_bce, stage_loss
from fedsim.clients.cfor.ontology import AttributeGroup, Ontology, load_ontology, predict_stages
from fedsim.clients.cfor.retrieval import Features, OntologyIndex, make_index
from fedsim.clients.cfor.task import CFORTask
from fedsim.errors import FedsimError

TOY = Ontology("toy", ("up", "down"), (("a", "b"), ("c",)),
               (AttributeGroup("g1", ("x", "y")), AttributeGroup("g2", ("z",))))


def _softplus(z: float) -> float:
    return math.log1p(math.exp(z))


# ------------------------------------------------------------------ losses
def test_multitask_bce_by_hand():
    z = torch.tensor([[2.0, -1.0, 0.0], [0.5, 1.0, -3.0]])
    y = torch.tensor([[1, 0, 1], [0, 0, 0]])
    # BCE(σ(z), 1) = softplus(−z); BCE(σ(z), 0) = softplus(z)
    g1 = (_softplus(-2) + _softplus(-1) + _softplus(0.5) + _softplus(1)) / 4
    g2 = (_softplus(0) + _softplus(-3)) / 2
    got = multitask_bce(z, y, [slice(0, 2), slice(2, 3)])
    assert float(got) == pytest.approx(g1 + g2, rel=1e-6)
    # one group over all attributes is the plain mean BCE (a different number)
    one = multitask_bce(z, y, [slice(0, 3)])
    assert float(one) == pytest.approx((4 * g1 + 2 * g2) / 6, rel=1e-6)


def test_stage_loss_by_hand():
    region_logits = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    cat_up = torch.tensor([[3.0, 1.0], [0.0, 0.0], [1.0, 1.0]])  # region "up": categories a, b
    cat_down = torch.tensor([[5.0], [7.0], [1.0]])  # region "down": one category (CE = 0)
    region = torch.tensor([0, 1, 0])
    local = torch.tensor([1, 0, 0])
    ce_region = (_softplus(-1) + _softplus(-2) + math.log(2)) / 3  # CE of 2 classes = softplus(other − own)
    ce_cat = (_softplus(3 - 1) + math.log(2)) / 3  # samples 0 and 2 use head "up"; divided by N = 3
    got = stage_loss(region_logits, [cat_up, cat_down], region, local)
    assert float(got) == pytest.approx(ce_region + ce_cat, rel=1e-6)


def test_cfor_loss_maps_global_categories_to_region_heads():
    # category 2 ("c") is the first category of region 1: it must hit head 1, class 0
    out = CFOROutput(torch.zeros(1, 4), torch.tensor([[0.0, 0.0]]),
                     [torch.tensor([[9.0, -9.0]]), torch.tensor([[0.0]])], torch.zeros(1, 3))
    y = torch.tensor([[1, 2, 1, 0, 1]])
    expect = math.log(2) + 0.0 + 2 * math.log(2)  # region CE + category CE (one class) + two groups of log 2
    assert float(cfor_loss(out, y, TOY)) == pytest.approx(expect, rel=1e-6)


def test_predict_stages_coarse_to_fine():
    # sample 0: region 0 then the best of head 0 (b); sample 1: region 1 although head 0 is confident
    out = CFOROutput(torch.zeros(2, 4), torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
                     [torch.tensor([[0.0, 1.0], [9.0, 0.0]]), torch.tensor([[0.0], [0.0]])], torch.zeros(2, 3))
    region, category = predict_stages(out, TOY)
    assert region.tolist() == [0, 1] and category.tolist() == [1, 2]


def test_head_layouts_have_matched_hidden_units():
    outs = {}
    for layout in ("local", "single", "single_task"):
        net = CFORNet(2, [2, 1], [6, 6, 5, 5, 5, 5], width=4, feature_dim=8, head_hidden=16, layout=layout)
        hidden = sum(b[0].out_features for b in net.attributes)
        outs[layout] = (len(net.attributes), hidden, net(torch.zeros(3, 3, 32, 32)).attributes.shape)
    assert outs["local"] == (6, 96, (3, 32))
    assert outs["single"] == (1, 96, (3, 32))
    assert outs["single_task"] == (32, 32 * 3, (3, 32))  # round(16·6/32) = 3 per attribute
    with pytest.raises(FedsimError, match="valid: local, single, single_task"):
        CFORNet(2, [2, 1], [3], layout="shared")


# ------------------------------------------------------------------ MCC
def test_confusion_counts_and_mcc_by_hand():
    t = np.array([[1, 1], [1, 0], [0, 0], [0, 1], [1, 0]])
    p = np.array([[1, 1], [0, 0], [0, 1], [1, 1], [1, 0]])
    tp, fp, fn, tn = confusion_counts(t, p)
    assert (tp.tolist(), fp.tolist(), fn.tolist(), tn.tolist()) == ([2, 2], [1, 1], [1, 0], [1, 2])
    # column 0: (2·1 − 1·1)/sqrt(3·3·2·2) = 1/6; column 1: (2·2 − 1·0)/sqrt(3·2·3·2) = 4/6
    np.testing.assert_allclose(mcc(tp, fp, fn, tn), [1 / 6, 4 / 6])
    assert float(mcc(6, 2, 1, 11)) == pytest.approx(64 / math.sqrt(8 * 7 * 13 * 12))
    assert float(mcc(5, 0, 0, 5)) == 1.0 and float(mcc(0, 5, 5, 0)) == -1.0
    assert float(mcc(0, 0, 3, 7)) == 0.0  # nothing predicted: defined as 0


def test_mcc_threshold_on_toy_imbalanced_case():
    # 2 positives (0.30, 0.42) among 10. By hand, predicting p >= t:
    #   t in (0.25, 0.30]: TP 2 FP 3 FN 0 TN 5 -> MCC = 10/sqrt(5·2·8·5) = 0.5   (the best)
    #   t in (0.38, 0.42]: TP 1 FP 1 FN 1 TN 7 -> 6/16 = 0.375
    #   t = 0.5:           TP 0 FP 1 FN 2 TN 7 -> −2/12
    # the grid values in (0.25, 0.30] are 0.26, 0.28, 0.30; the tie rule picks 0.30.
    p = np.array([0.30, 0.42, 0.05, 0.10, 0.12, 0.20, 0.25, 0.33, 0.38, 0.60])
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    probs = np.stack([p, p], 1)
    truth = np.stack([y, np.zeros_like(y)], 1)  # column 1 has no positives: keeps 0.5
    thr = mcc_thresholds(probs, truth)
    assert thr.tolist() == [0.30, 0.5]
    m_best, m_half = attribute_metrics(probs, truth, thr), attribute_metrics(probs, truth, 0.5)
    assert m_best["mcc"][0] == pytest.approx(0.5) and m_half["mcc"][0] == pytest.approx(-2 / 12)
    assert m_best["recall"][0] == 1.0 and m_half["recall"][0] == 0.0
    assert m_best["precision"][0] == pytest.approx(2 / 5)
    assert np.isnan(m_best["recall"][1])


def test_attribute_metrics_precision_conventions_and_rarest():
    probs = np.array([[0.9, 0.1, 0.1], [0.2, 0.1, 0.8], [0.7, 0.1, 0.1]])
    truth = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    m = attribute_metrics(probs, truth, 0.5)
    assert m["precision"][0] == 0.5 and m["recall"][0] == 1.0
    assert m["precision"][1] == 0.0 and m["recall"][1] == 0.0  # positives exist, none predicted
    assert m["precision"][2] == 0.0 and np.isnan(m["recall"][2])  # predicted, none true
    assert rarest(np.array([0.5, 0.02, 0.3, 0.01, 0.2]), 0.4).tolist() == [3, 1]


# ------------------------------------------------------------------ retrieval metrics
def test_map_at_k_by_hand():
    rel = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    n_rel = np.array([2, 3, 0])
    ap = average_precision_at_k(rel, n_rel)
    # q0: AP@1 = 1, AP@2 = 1/2, AP@3 = (1 + 2/3)/2, AP@4 = same sum / min(4, 2)
    np.testing.assert_allclose(ap[0], [1, 0.5, 5 / 6, 5 / 6])
    # q1: P@2 = 1/2 at the only hit: AP@2 = 0.5/2, AP@3 = 0.5/3, AP@4 = 0.5/3
    np.testing.assert_allclose(ap[1], [0, 0.25, 0.5 / 3, 0.5 / 3])
    assert np.isnan(ap[2]).all()
    np.testing.assert_allclose(map_at_k(rel, n_rel), (ap[0] + ap[1]) / 2)  # q2 (nothing relevant) left out


def test_attribute_map_at_k_by_hand():
    # one query with attributes {0, 2}; results {0}, {2}, {0, 2}; the database has
    # 2 items with attribute 0 and 2 with attribute 2.
    #   attribute 0: rel 1 0 1, R = 2: AP@1 = 1, AP@2 = 1/2, AP@3 = (1 + 2/3)/2 = 5/6
    #   attribute 2: rel 0 1 1, R = 2: AP@1 = 0, AP@2 = (1/2)/2, AP@3 = (1/2 + 2/3)/2 = 7/12
    q = np.array([[1, 0, 1]])
    r = np.array([[[1, 0, 0], [0, 0, 1], [1, 0, 1]]])
    db = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(attribute_map_at_k(q, r, db), [0.5, 0.375, (5 / 6 + 7 / 12) / 2])
    # a missing third result counts as not relevant
    got = attribute_map_at_k(q, r, db, found=np.array([[True, True, False]]))
    np.testing.assert_allclose(got[2], (1 / 2 + 1 / 4) / 2)


def test_relevance_modes():
    q = np.array([[1, 1, 0, 0]])
    r = np.array([[[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]]])
    assert relevance(q, r, "contains").tolist() == [[True, True, False, False]]
    assert relevance(q, r, "equal").tolist() == [[False, True, False, False]]
    # Jaccard: 2/3, 1, 1/2, 0
    assert relevance(q, r, "jaccard", tau=0.6).tolist() == [[True, True, False, False]]
    assert relevance(q, r, "jaccard", tau=0.5).tolist() == [[True, True, True, False]]
    assert relevance(q, r[0], "contains").tolist() == [[True, True, False, False]]  # against a database
    with pytest.raises(FedsimError, match="valid: contains, equal, jaccard"):
        relevance(q, r, "overlap")


# ------------------------------------------------------------------ indexes
def _brute(db: np.ndarray, q: np.ndarray, k: int):
    d = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(2)
    idx = np.argsort(d, 1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


def test_flat_index_matches_brute_force():
    import faiss

    rng = np.random.default_rng(0)
    db = rng.normal(size=(500, 16)).astype(np.float32)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    index = make_index(db, "flat", use_gpu=False)
    assert isinstance(index.cpu, faiss.IndexFlatL2)
    d, i = index.search(q, 10)
    d_ref, i_ref = _brute(db, q, 10)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_allclose(d, d_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(index.reconstruct_batch(np.array([3, 7])), db[[3, 7]])
    d, i = make_index(db[:3], "flat", use_gpu=False).search(q[:1], 5)  # more than stored: padded with -1
    assert i[0, :3].tolist() == _brute(db[:3], q[:1], 3)[1][0].tolist()
    assert i[0, 3:].tolist() == [-1, -1] and (d[0, 3:] > 1e30).all()
    with pytest.raises(FedsimError, match="valid: auto, faiss"):
        make_index(db, "flat", backend="numpy")


def test_ivfpq_recall_sanity():
    faiss = pytest.importorskip("faiss")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # k-means training oversubscribes a shared machine otherwise
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(50, 32)) * 3
    db = (centers[rng.integers(0, 50, 4000)] + rng.normal(size=(4000, 32))).astype(np.float32)
    q = (centers[rng.integers(0, 50, 100)] + rng.normal(size=(100, 32))).astype(np.float32)
    index = make_index(db, "ivfpq", nprobe=16)
    assert isinstance(index.cpu, faiss.IndexIVFPQ) and index.cpu.code_size == 8  # 8 bytes vs 128 stored
    _, i = index.search(q, 10)
    _, i_ref = _brute(db, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i, i_ref)])
    small = make_index(db[:300], "ivfpq")  # too small to compress: stays exact
    faiss.omp_set_num_threads(threads)
    assert recall > 0.5, recall  # a random 10 of 4000 would give ~0.0025
    assert isinstance(small.cpu, faiss.IndexFlatL2)


def _toy_db():
    # leaves: category 0 (ids 0-2), category 1 (id 3), category 2 (ids 4-5); regions: 0,1 -> "up", 2 -> "down"
    f = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [1, 0], [1, 0], [0, 1]], np.float32)
    attrs = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    cat = np.array([0, 0, 0, 1, 2, 2])
    region = np.array([TOY.category_region[c] for c in cat])
    return Features(f, region, cat, attrs, attrs)


def _query(f, region, category, attrs):
    a = np.array([attrs], np.float32)
    return Features(np.array([f], np.float32), np.array([region]), np.array([category]), a, a)


def test_coarse_to_fine_filter_and_ranking():
    index = OntologyIndex(TOY, _toy_db(), ids=np.arange(10, 16), use_gpu=False)
    assert sorted(index.leaves) == [0, 1, 2] and index.leaves[2].region == "down"
    q = _query([0.8, 0.6], 0, 0, [1, 0, 0])
    # category filter: only leaf 0 (ids 10-12), although ids 13 and 14 share q's attributes.
    # global order: 11 (d = 0), 12 (0.08), 10 (0.4); the attribute distance (2 for 11, 0 for
    # the others) moves 11 last: scores (λ = 1) 0.08, 0.4, 2.0.
    res = index.search(q, 3, global_weight=1.0)
    assert res.ids.tolist() == [[12, 10, 11]]
    np.testing.assert_allclose(res.global_dist[0], [0.08, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(res.scores[0], [0.08, 0.4, 2.0], atol=1e-6)
    # with λ = 10 the global distance of 10 (10·0.4 = 4) outweighs 11's attribute distance (2)
    assert index.search(q, 3, global_weight=10.0).ids.tolist() == [[12, 11, 10]]
    # without the attribute stage: the global order
    assert index.search(q, 3, use_attributes=False).ids.tolist() == [[11, 12, 10]]
    # leaf 1 holds one item: for k = 2 the search widens to region "up" (leaves 0 and 1), never "down"
    res = index.search(_query([1, 0], 0, 1, [1, 0, 0]), 2, expand=False)
    assert set(res.ids[0]) <= {10, 11, 12, 13} and res.ids[0, 0] in (10, 13)
    assert index.candidate_leaves(0, 1, 2) == (0, 1) and index.candidate_leaves(1, 2, 2) == (2,)
    assert index.candidate_leaves(1, 2, 5) == (0, 1, 2)  # region "down" too small: everything
    res = index.search(_query([1, 0], 1, 2, [1, 0, 0]), 6, level="none", expand=False)
    assert sorted(res.ids[0].tolist()) == list(range(10, 16))
    with pytest.raises(FedsimError, match="valid: category, region, none"):
        index.search(q, 2, level="leaf")


def test_query_expansion_with_m_equal_k_only_reorders():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(60, 4)).astype(np.float32)
    attrs = (rng.random((60, 3)) < 0.4).astype(np.float32)
    db = Features(f, np.zeros(60, int), np.zeros(60, int), attrs, attrs)
    index = OntologyIndex(TOY, db, use_gpu=False)
    q = Features(f[:5] + 0.1, np.zeros(5, int), np.zeros(5, int), attrs[:5], attrs[:5])
    plain = index.search(q, 8, m=8, global_weight=1.0)
    qe = index.search(q, 8, m=8, global_weight=1.0, expand=True, expand_k=8)
    for a, b in zip(plain.ids, qe.ids):
        assert sorted(a) == sorted(b)
    # the expanded score of the first result, by hand: mean of the query and its top-8
    # (the attribute vector defaults to the 0/1 attributes here)
    i0 = plain.ids[0]
    fq = np.vstack([q.feature[0], f[i0]]).mean(0)
    aq = np.vstack([q.attributes[0], attrs[i0]]).mean(0)
    s = ((attrs[i0] - aq) ** 2).sum(1) + ((f[i0] - fq) ** 2).sum(1)
    assert qe.ids[0, 0] == i0[np.argmin(s)] and qe.scores[0, 0] == pytest.approx(s.min(), rel=1e-5)


def test_index_save_load_roundtrip(tmp_path):
    index = OntologyIndex(TOY, _toy_db(), use_gpu=False)
    root = index.save(tmp_path / "db")
    assert (root / "up" / "a" / "items.npz").exists() and (root / "down" / "c" / "index.faiss").exists()
    back = OntologyIndex.load(root)
    q = _query([0.8, 0.6], 0, 0, [1, 0, 0])
    assert back.search(q, 3).ids.tolist() == index.search(q, 3).ids.tolist()
    np.testing.assert_array_equal(back.leaves[0].attributes, index.leaves[0].attributes)


# ------------------------------------------------------------------ ontology and data
def test_packaged_ontology_and_json_roundtrip(tmp_path):
    onto = load_ontology()
    assert [g.name for g in onto.groups] == ["color", "texture", "fabric", "shape", "part", "style"]
    assert onto.leaf(onto.category_names.index("skirt")) == ("bottom", "skirt")
    p = tmp_path / "o.json"
    p.write_text(json.dumps(onto.to_dict()))
    assert load_ontology(p) == onto
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[region]]\nname = "top"\n')
    with pytest.raises(FedsimError, match="not a CFOR ontology"):
        load_ontology(bad)
    with pytest.raises(FedsimError, match="cannot read ontology file"):
        load_ontology(tmp_path / "missing.toml")


def test_generator_is_seeded_long_tailed_and_non_iid():
    onto = load_ontology()
    x1, y1 = generate(onto, 50, np.random.default_rng(5))
    x2, y2 = generate(onto, 50, np.random.default_rng(5))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.dtype == np.float32 and 0 <= x1.min() and x1.max() <= 1
    _, y = generate(onto, 1500, np.random.default_rng(6))
    freq = y[:, 2:].mean(0)
    for g, sl in zip(onto.groups, onto.group_slices):
        f = freq[sl]
        assert f[0] > f[-1]  # the priors are sorted from common to rare in every group
        assert f[-1] < 0.1
    assert (y[:, 2:][:, onto.group_slices[1]].sum(1) == 1).all()  # texture: exactly one
    wide, slim = onto.attribute_names.index("wide"), onto.attribute_names.index("slim")
    assert not (y[:, 2 + wide] & y[:, 2 + slim]).any()
    # two silos: different category and attribute priors
    _, cat0, pri0, _ = silo_generator(onto, 0, 3, 0, 0.5, 10.0)
    _, cat1, pri1, _ = silo_generator(onto, 1, 3, 0, 0.5, 10.0)
    assert np.abs(cat0 - cat1).sum() > 0.2 and np.abs(pri0[1] - pri1[1]).sum() > 0.05


def _fixture(root: Path) -> None:
    from PIL import Image

    (root / "Anno").mkdir(parents=True)
    (root / "Eval").mkdir()
    (root / "img").mkdir()
    (root / "Anno" / "list_category_cloth.txt").write_text(
        "3\ncategory_name  category_type\nMaxi_Dress 3\nBlouse 1\nJeans 2\n")
    (root / "Anno" / "list_attr_cloth.txt").write_text(
        "4\nattribute_name  attribute_type\nfloral print 1\ndenim 2\na-line skirt 3\nv-neck 4\n")
    imgs = [f"img/im{i}.jpg" for i in range(6)]
    cats = [2, 3, 1, 2, 3, 1]
    attrs = ["1 -1 -1 1", "-1 1 1 -1", "1 1 -1 -1", "-1 -1 1 1", "-1 -1 -1 -1", "1 -1 1 -1"]
    (root / "Anno" / "list_category_img.txt").write_text(
        "6\nimage_name  category_label\n" + "".join(f"{n} {c}\n" for n, c in zip(imgs, cats)))
    (root / "Anno" / "list_attr_img.txt").write_text(
        "6\nimage_name  attribute_labels\n" + "".join(f"{n} {a}\n" for n, a in zip(imgs, attrs)))
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "6\nimage_name  evaluation_status\n" + "".join(f"{n} {s}\n" for n, s in zip(
            imgs, ["train", "train", "train", "val", "test", "train"])))
    for i, n in enumerate(imgs):
        Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(root / n)


def test_deepfashion_loader_on_fixture(tmp_path):
    _fixture(tmp_path)
    ann = load_deepfashion(tmp_path)
    onto = ann.ontology
    assert onto.regions == ("top", "bottom", "body")
    assert onto.categories == (("Blouse",), ("Jeans",), ("Maxi_Dress",))
    assert [g.name for g in onto.groups] == ["texture", "fabric", "shape", "part"]
    assert onto.attribute_names == ("floral print", "denim", "a-line skirt", "v-neck")
    # im0: category 2 in the file (Blouse) -> region top (0), global category 0
    assert ann.labels[0].tolist() == [0, 0, 1, 0, 0, 1]
    assert ann.labels[1].tolist() == [1, 1, 0, 1, 1, 0]  # Jeans
    assert ann.labels[2].tolist() == [2, 2, 1, 1, 0, 0]  # Maxi_Dress
    assert ann.split.tolist() == ["train", "train", "train", "val", "test", "train"]
    task = CFORTask({"deepfashion_root": str(tmp_path), "image_size": 8})
    d = task.partition(0, 1, seed=0)
    assert d.x_train.shape == (4, 3, 8, 8) and d.x_val.shape[0] == 1 and d.x_test.shape[0] == 1
    assert float(d.x_test[0, 0, 0, 0]) == pytest.approx(160 / 255)  # im4, value 4·40
    torch.manual_seed(0)
    assert task.model()(d.x_train).attributes.shape == (4, 4)
    (tmp_path / "Anno" / "list_attr_cloth.txt").write_text("1\nattribute_name attribute_type\nfoo 9\n")
    from fedsim.clients.cfor.data import _deepfashion

    _deepfashion.cache_clear()
    with pytest.raises(FedsimError, match="unknown attribute type"):
        load_deepfashion(tmp_path)


# ------------------------------------------------------------------ learning
SMALL = {"samples_per_silo": 160, "width": 8, "feature_dim": 16, "head_hidden": 8, "lr": 0.01}


def test_few_steps_reduce_loss():
    torch.set_num_threads(1)
    task = CFORTask(SMALL)
    data = task.partition(0, 2, seed=0)
    torch.manual_seed(0)
    model = task.model()
    with torch.no_grad():
        before = float(cfor_loss(model(data.x_train), data.y_train, task.ontology))
    task.train(model, data, 40, torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = float(cfor_loss(model(data.x_train), data.y_train, task.ontology))
    assert after < before - 0.3, (before, after)


def test_evaluate_reports_metrics_and_partition_is_fixed():
    task = CFORTask(SMALL)
    a, b = task.partition(1, 3, seed=4), task.partition(1, 3, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_val, b.y_val)
    assert (a.n_train, len(a.y_val), len(a.y_test)) == (88, 32, 40)
    assert not torch.equal(task.partition(2, 3, seed=4).x_train[:5], a.x_train[:5])
    torch.manual_seed(0)
    m = task.evaluate(task.model(), a)
    for key in ("loss", "mcc", "mcc_05", "recall", "recall_05", "precision", "rare_recall",
                "rare_recall_05", "region_acc", "category_acc", "map10", "n"):
        assert key in m
    assert m["n"] == 40 and -1 <= m["mcc"] <= 1 and 0 <= m["map10"] <= 1
    with pytest.raises(FedsimError, match="valid: local, single, single_task"):
        CFORTask({"layout": "mtl"})


def test_extract_features_for_retrieval():
    from fedsim.clients.cfor.retrieval import extract

    task = CFORTask(SMALL)
    data = task.partition(0, 1, seed=2)
    torch.manual_seed(0)
    model = task.model()
    thr = np.full(task.ontology.n_attributes, 0.45)
    soft = extract(task, model, data.x_test[:7], thr)
    hard = extract(task, model, data.x_test[:7], thr, attributes="binary")
    np.testing.assert_allclose(np.linalg.norm(soft.feature, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(soft.attributes, soft.probs >= 0.45)
    assert soft.vector is soft.probs and hard.vector is hard.attributes
    assert (np.array(task.ontology.category_region)[soft.category] == soft.region).all()  # coarse to fine
    with pytest.raises(FedsimError, match="valid: soft, binary"):
        extract(task, model, data.x_test[:2], thr, attributes="logits")


def test_registered_task():
    from fedsim.clients import TASKS, get_task

    assert TASKS["cfor"] == "fedsim.clients.cfor.task:CFORTask"
    assert get_task("cfor").metric == "mcc"


# ------------------------------------------------------------------ Ray integration
@pytest.mark.slow
def test_two_rounds_three_silos_on_ray_then_retrieve(tmp_path, tri_network):
    import csv

    from fedsim.apps.config import RunConfig
    from fedsim.apps.simulation import run_simulation

    run_dir = tmp_path / "run"
    cfg = RunConfig(network=tri_network, strategy="fedavg", task="cfor", rounds=2, local_steps=5, seed=1,
                    compute_ms=3.0, checkpoint_every=1, task_options=dict(SMALL))
    summary = run_simulation(cfg, run_dir, progress=False)
    assert summary["rounds_completed"] == 2 and summary["metric"] == "mcc"
    with open(run_dir / "rounds.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert all(-1 <= float(r["eval_metric"]) <= 1 for r in rows)
    assert float(rows[-1]["eval_loss"]) < float(rows[0]["eval_loss"])

    from fedsim.clients.cfor.run import load_run, retrieve

    run = load_run(run_dir)
    with np.load(run_dir / "checkpoint.npz") as z:
        assert z["models"].shape[0] == 3
    assert len(run.database) == sum(run.task.partition(s, 3, 1).n_train for s in range(3))
    res = retrieve(run_dir, run.parts[0].x_test[:2], k=5)
    assert res.ids.shape == (2, 5) and (res.ids >= 0).all() and (res.ids < len(run.database)).all()
    # every result lies in the leaves the coarse stage allows for the query's predicted category
    from fedsim.clients.cfor.run import _cached_index

    index = _cached_index(str(run_dir.resolve()), "flat")
    for qi in range(2):
        allowed = index.candidate_leaves(int(res.query.region[qi]), int(res.query.category[qi]), 5)
        assert set(run.database.category[res.ids[qi]].tolist()) <= set(allowed)

    from fedsim.cli import retrieve as retrieve_cli

    parser = argparse.ArgumentParser()
    retrieve_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["retrieve", str(run_dir), "--silo", "1", "--item", "2", "-k", "3", "--json"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert args.func(args) == 0
    out = json.loads(buf.getvalue())
    assert len(out) == 1 and len(out[0]["results"]) == 3 and "truth" in out[0]
    args = parser.parse_args(["retrieve", str(run_dir), "--silo", "7"])
    with pytest.raises(FedsimError, match="--silo must be in 0..2"):
        args.func(args)
