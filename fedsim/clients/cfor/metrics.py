"""CFOR metrics: MCC, precision and recall per attribute, MCC thresholds, retrieval MAP@k."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import matthews_corrcoef, multilabel_confusion_matrix, precision_recall_fscore_support

from fedsim.clients.cfor.retrieval import RELEVANCE_MODES, Features, OntologyIndex, extract
from fedsim.errors import FedsimError


# =============================================================== MCC and metrics
def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-column TP, FP, FN, TN of boolean ``(N, A)`` arrays (each shape ``(A,)``),
    from :func:`sklearn.metrics.multilabel_confusion_matrix`.

    Examples
    --------
    >>> [c.tolist() for c in confusion_counts([[1, 0], [1, 1], [0, 0]], [[1, 1], [0, 1], [0, 0]])]
    [[1, 1], [0, 1], [1, 0], [1, 1]]
    """
    t = np.asarray(y_true, bool).astype(np.int8)
    p = np.asarray(y_pred, bool).astype(np.int8)
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    cm = multilabel_confusion_matrix(t, p, labels=np.arange(t.shape[1]))  # (A, 2, 2): [[TN, FP], [FN, TP]]
    return cm[:, 1, 1], cm[:, 0, 1], cm[:, 1, 0], cm[:, 0, 0]


def mcc(tp, fp, fn, tn) -> np.ndarray:
    """Matthews correlation coefficient from confusion counts (elementwise).

    ``MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``, 0 where the
    denominator is 0 (a constant prediction or a constant truth).

    Examples
    --------
    >>> round(float(mcc(6, 2, 1, 11)), 4)  # (6·11 − 2·1) / sqrt(8·7·13·12) = 64 / 93.466
    0.6847
    >>> float(mcc(0, 0, 3, 17))
    0.0
    """
    tp, fp, fn, tn = (np.asarray(v, np.float64) for v in (tp, fp, fn, tn))
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1.0), 0.0)


DEFAULT_GRID = np.round(np.linspace(0.02, 0.98, 49), 10)


def mcc_thresholds(probs: np.ndarray, y_true: np.ndarray, grid: Sequence[float] | None = None) -> np.ndarray:
    """Per-attribute decision thresholds that maximise MCC on a validation split.

    For attribute ``j`` the prediction is ``p_ij >= t``; the threshold is
    ``argmax_{t ∈ grid} MCC_j(t)``, ties broken towards the grid value closest to
    0.5 (so an attribute without evidence, e.g. no positives, keeps 0.5). The
    default grid is 0.02, 0.04, …, 0.98.

    Examples
    --------
    Five validation samples, one positive (p = 0.3): any t in (0.2, 0.3] keeps it
    and drops every negative (MCC = 1); 0.3 is the grid value nearest 0.5.

    >>> p = np.array([[0.1], [0.2], [0.3], [0.05], [0.15]])
    >>> y = np.array([[0], [0], [1], [0], [0]])
    >>> mcc_thresholds(p, y, grid=[0.1, 0.2, 0.3, 0.4, 0.5]).tolist()
    [0.3]
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y_true, bool)
    g = DEFAULT_GRID if grid is None else np.asarray(grid, np.float64)
    scores = np.empty((g.size, probs.shape[1]))
    for i, t in enumerate(g):
        scores[i] = mcc(*confusion_counts(y, probs >= t))
    best = scores.max(0)
    # among the maximisers (up to float noise), the threshold closest to 0.5
    cand = np.where(scores >= best - 1e-12, np.abs(g - 0.5)[:, None], np.inf)
    return g[cand.argmin(0)]


def attribute_metrics(probs: np.ndarray, y_true: np.ndarray, thresholds: float | np.ndarray = 0.5
                      ) -> dict[str, np.ndarray]:
    """Per-attribute recall, precision and MCC at the given thresholds (scikit-learn's
    :func:`~sklearn.metrics.precision_recall_fscore_support` and
    :func:`~sklearn.metrics.matthews_corrcoef`).

    ``recall = TP/(TP+FN)`` (NaN without positives); ``precision = TP/(TP+FP)``,
    0 when nothing is predicted positive but positives exist, NaN when neither;
    ``mcc`` 0 where undefined (a constant prediction or a constant truth).

    Examples
    --------
    >>> m = attribute_metrics(np.array([[0.9, 0.1], [0.2, 0.2], [0.7, 0.4]]), np.array([[1, 0], [1, 0], [0, 0]]))
    >>> m["recall"].tolist(), m["precision"].tolist(), m["mcc"].tolist()
    ([0.5, nan], [0.5, nan], [-0.5, 0.0])
    """
    y = np.asarray(y_true, bool).astype(np.int8)
    pred = (np.asarray(probs) >= np.asarray(thresholds)).astype(np.int8)
    if y.shape[0] == 0:
        nan = np.full(y.shape[1], np.nan)
        return {"recall": nan, "precision": nan.copy(), "mcc": np.zeros(y.shape[1])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision / recall are NaN by design
        precision, recall, _, _ = precision_recall_fscore_support(y, pred, average=None, zero_division=np.nan,
                                                                  labels=np.arange(y.shape[1]))
        has_pos = y.any(0)
        precision = np.where(~pred.any(0) & has_pos, 0.0, precision)
        mccs = np.array([matthews_corrcoef(y[:, j], pred[:, j]) for j in range(y.shape[1])], np.float64)
    return {"recall": np.asarray(recall, np.float64), "precision": np.asarray(precision, np.float64),
            "mcc": mccs}


def rarest(frequency: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``ceil(fraction·A)`` attributes with the lowest frequency (stable order)."""
    k = max(1, math.ceil(fraction * len(frequency)))
    return np.argsort(np.asarray(frequency), kind="stable")[:k]


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


# =============================================================== evaluation
def relevance(query_attrs: np.ndarray, result_attrs: np.ndarray, mode: str = "contains",
              tau: float = 0.5) -> np.ndarray:
    """Whether each result matches its query's ground-truth attributes.

    ``query_attrs`` ``(Q, A)`` 0/1, ``result_attrs`` ``(Q, K, A)`` (or ``(N, A)``,
    compared with every query: ``(Q, N)``). ``mode``: ``"contains"`` — the
    result has every attribute of the query; ``"equal"`` — same attribute set;
    ``"jaccard"`` — ``|a_q ∩ a_i| / |a_q ∪ a_i| >= tau``.

    Examples
    --------
    >>> q = np.array([[1, 1, 0]])
    >>> r = np.array([[[1, 1, 1], [1, 0, 0], [1, 1, 0]]])
    >>> relevance(q, r).tolist(), relevance(q, r, "equal").tolist()
    ([[True, False, True]], [[False, False, True]])
    """
    if mode not in RELEVANCE_MODES:
        raise FedsimError(f"unknown relevance mode {mode!r}; valid: {', '.join(RELEVANCE_MODES)}")
    q = np.asarray(query_attrs, bool)
    r = np.asarray(result_attrs, bool)
    if r.ndim == 2:  # every query against one database: (Q, N) via matrix products
        qi, ri = q.astype(np.int32), r.astype(np.int32)
        inter = qi @ ri.T
        nq, nr = qi.sum(1)[:, None], ri.sum(1)[None, :]
    else:
        inter = (q[:, None, :] & r).sum(2)
        nq, nr = q.sum(1)[:, None], r.sum(2)
    if mode == "contains":
        return inter == nq
    if mode == "equal":
        return (inter == nq) & (nr == nq)
    union = nq + nr - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0) >= tau


def average_precision_at_k(rel: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """AP@k for every k = 1…K: ``(1/min(k, R_q)) Σ_{i≤k} P@i · rel_i``, ``P@i = (1/i) Σ_{j≤i} rel_j``.

    ``rel`` ``(Q, K)``: relevance of the ranked results; ``n_relevant`` ``(Q,)``:
    ``R_q``, relevant items in the whole database. Returns ``(Q, K)`` (NaN where
    ``R_q = 0``).

    Examples
    --------
    Ranks 1 and 3 relevant, R = 2: AP@1 = 1, AP@2 = 1/2, AP@3 = (1 + 2/3)/2.

    >>> average_precision_at_k(np.array([[1, 0, 1]]), np.array([2])).round(4).tolist()
    [[1.0, 0.5, 0.8333]]
    """
    rel = np.asarray(rel, np.float64)
    ranks = np.arange(1, rel.shape[1] + 1)
    prec = np.cumsum(rel, 1) / ranks
    num = np.cumsum(prec * rel, 1)
    r = np.asarray(n_relevant, np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, num / np.minimum(ranks[None], r), np.nan)


def map_at_k(rel: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """MAP@k, k = 1…K: the mean of :func:`average_precision_at_k` over queries with R_q > 0."""
    ap = average_precision_at_k(rel, n_relevant)
    keep = np.asarray(n_relevant) > 0
    return ap[keep].mean(0) if keep.any() else np.full(rel.shape[1], np.nan)


def attribute_map_at_k(query_attrs: np.ndarray, result_attrs: np.ndarray, db_attrs: np.ndarray,
                       found: np.ndarray | None = None) -> np.ndarray:
    """MAP@k, k = 1…K, averaged over attributes (attribute match, as in the write-up).

    For every query q and every attribute j that q has (ground truth), the
    ranked results are relevant where they have j too; AP@k is
    :func:`average_precision_at_k` with ``R =`` the database items having j.
    ``MAP@k = mean_j mean_{q has j} AP@k(q, j)`` over attributes with ≥ 1 query.
    ``result_attrs`` ``(Q, K, A)``; ``found`` ``(Q, K)`` marks real results.

    Examples
    --------
    Query 0 has attributes {0, 1}, query 1 has {1}; results of q0: {0}, {0, 1};
    of q1: {0}, {1}. Attribute 0: AP = 1, 1; attribute 1: AP@1 = 0, AP@2 = (1/2)/2.

    >>> q = np.array([[1, 1], [0, 1]])
    >>> r = np.array([[[1, 0], [1, 1]], [[1, 0], [0, 1]]])
    >>> attribute_map_at_k(q, r, db_attrs=np.array([[1, 1], [1, 1], [1, 0]])).tolist()
    [0.5, 0.625]
    """
    q = np.asarray(query_attrs, bool)
    r = np.asarray(result_attrs, bool)
    if found is not None:
        r = r & np.asarray(found, bool)[:, :, None]
    n_db = np.asarray(db_attrs, bool).sum(0)
    qs, js = np.nonzero(q)
    ap = average_precision_at_k(r[qs, :, js], n_db[js])
    per_attr = [ap[js == j].mean(0) for j in np.unique(js) if n_db[j] > 0]
    return np.mean(per_attr, 0) if per_attr else np.full(r.shape[1], np.nan)


MAP_MODES = ("attribute",) + RELEVANCE_MODES


def retrieval_map(index: OntologyIndex, query: Features, query_attrs: np.ndarray, db_attrs: np.ndarray,
                  k: int = 30, mode: str = "attribute", tau: float = 0.5, **search_kw) -> np.ndarray:
    """MAP@1…k of a search against ground-truth attributes.

    ``mode="attribute"``: :func:`attribute_map_at_k`; otherwise one relevance
    per result (:func:`relevance` with that mode) and :func:`map_at_k`.
    ``db_attrs`` are the ground-truth attributes indexed by database id.
    """
    if mode not in MAP_MODES:
        raise FedsimError(f"unknown MAP mode {mode!r}; valid: {', '.join(MAP_MODES)}")
    res = index.search(query, k, **search_kw)
    return map_of(res.ids, query_attrs, db_attrs, mode, tau)


def map_of(ids: np.ndarray, query_attrs: np.ndarray, db_attrs: np.ndarray, mode: str = "attribute",
           tau: float = 0.5) -> np.ndarray:
    """MAP@1…K of ranked database ids ``(Q, K)`` (``-1`` = no result); see :func:`retrieval_map`."""
    db_attrs = np.asarray(db_attrs)
    found = ids >= 0
    results = db_attrs[np.where(found, ids, 0)]
    if mode == "attribute":
        return attribute_map_at_k(query_attrs, results, db_attrs, found)
    rel = relevance(query_attrs, results, mode, tau) & found
    return map_at_k(rel, relevance(query_attrs, db_attrs, mode, tau).sum(1))


def evaluate_retrieval(task: Any, model, x_db, y_db, x_q, y_q, k: int = 30,
                       thresholds: np.ndarray | float = 0.5, kind: str = "flat", backend: str = "auto",
                       **search_kw) -> np.ndarray:
    """MAP@1…k of the trained models: index ``x_db``, query with ``x_q``.

    Labels ``y = [region, category, attributes…]``; relevance as in :func:`retrieval_map`.
    """
    db = extract(task, model, x_db, thresholds)
    q = extract(task, model, x_q, thresholds)
    index = OntologyIndex(task.ontology, db, kind=kind, backend=backend, use_gpu=False)
    return retrieval_map(index, q, np.asarray(y_q[:, 2:]), np.asarray(y_db[:, 2:]), k, **search_kw)
