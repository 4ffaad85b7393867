"""CFOR: ontology-driven local multitask attribute learning with MCC thresholds.

A small, CPU-trainable version of the coarse-to-fine object retrieval (CFOR)
learning stack:

- **Object ontology as data** (:class:`Ontology`, loaded from a TOML or JSON
  file, default ``fedsim/clients/data/cfor_ontology.toml``): regions →
  categories → attribute groups (color, texture, fabric, shape, part, style).
- **One classification model per ontology stage** over a shared convolutional
  backbone: a region classifier and one category classifier per region
  (trained only on that region's samples), predicted coarse to fine.
- **Local multitask attribute learning**: one multitask head per attribute
  group (its own hidden layer shared by the group's attributes, then one
  sigmoid output per attribute), binary cross-entropy per group. The layout
  is an option (``"local"``, ``"single"`` = one head for all attributes,
  ``"single_task"`` = one head per attribute) so the three can be compared.
- **Imbalanced-data solver**: per-attribute decision thresholds chosen to
  maximise the Matthews correlation coefficient (MCC) on a validation split;
  the model and the loss are unchanged (:func:`mcc_thresholds`).
- **Data**: a seeded generator of composited garment images whose category,
  color, texture, fabric, shape, parts and style are known attributes with
  long-tailed frequencies, and per-silo category and attribute priors
  (non-IID); or DeepFashion-style attribute files (:func:`load_deepfashion`).

Retrieval (faiss indexes per ontology leaf, coarse-to-fine search, query
expansion, MAP@k) lives in :mod:`fedsim.clients.cfor_retrieval`.

Labels are stored as one int64 tensor per split, ``y[:, 0]`` the region,
``y[:, 1]`` the category (global index, ontology order) and ``y[:, 2:]`` the
0/1 attribute vector (ontology order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from fedsim.clients.base import SiloData, Task, dirichlet_partition, minibatch_steps
from fedsim.clients.cfor_ontology import (  # noqa: F401 - the ontology is part of the task's public face
    DEFAULT_ONTOLOGY,
    AttributeGroup,
    Ontology,
    load_ontology,
    predict_stages,
)
from fedsim.clients.cfor_retrieval import evaluate_retrieval
from fedsim.errors import FedsimError


def multitask_bce(logits: torch.Tensor, targets: torch.Tensor, groups: Sequence[slice]) -> torch.Tensor:
    """Local multitask loss: the sum over attribute groups of each group's mean BCE.

    ``L = Σ_g (1 / (N·|g|)) Σ_i Σ_{j∈g} −[y_ij log σ(z_ij) + (1−y_ij) log(1−σ(z_ij))]``

    Examples
    --------
    >>> z = torch.zeros(2, 3)  # σ(0) = 1/2: every term is log 2
    >>> round(float(multitask_bce(z, torch.ones(2, 3), [slice(0, 1), slice(1, 3)])), 6)  # 2·log 2
    1.386294
    """
    t = targets.to(logits.dtype)
    return sum(nn.functional.binary_cross_entropy_with_logits(logits[:, g], t[:, g]) for g in groups)


def stage_loss(region_logits: torch.Tensor, category_logits: Sequence[torch.Tensor],
               region: torch.Tensor, category_local: torch.Tensor) -> torch.Tensor:
    """Loss of the ontology's classification stages.

    ``L = CE(region) + (1/N) Σ_r Σ_{i: r_i = r} CE(category_logits[r]_i, c_i)``: every
    sample trains the region classifier and the category classifier of its own
    region (``c_i`` is the category's index within that region).
    """
    loss = nn.functional.cross_entropy(region_logits, region)
    n = region.shape[0]
    for r, logits in enumerate(category_logits):
        m = region == r
        if m.any():
            loss = loss + nn.functional.cross_entropy(logits[m], category_local[m], reduction="sum") / n
    return loss


# =============================================================== MCC and metrics
def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-column TP, FP, FN, TN of boolean ``(N, A)`` arrays (each shape ``(A,)``)."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (t & p).sum(0)
    fp = (~t & p).sum(0)
    fn = (t & ~p).sum(0)
    tn = (~t & ~p).sum(0)
    return tp, fp, fn, tn


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
    """Per-attribute recall, precision and MCC at the given thresholds.

    ``recall = TP/(TP+FN)`` (NaN without positives); ``precision = TP/(TP+FP)``,
    0 when nothing is predicted positive but positives exist, NaN when neither;
    ``mcc`` as in :func:`mcc`.
    """
    pred = np.asarray(probs) >= np.asarray(thresholds)
    tp, fp, fn, tn = (c.astype(np.float64) for c in confusion_counts(y_true, pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.where(tp + fn > 0, 0.0, np.nan))
    return {"recall": recall, "precision": precision, "mcc": mcc(tp, fp, fn, tn)}


def rarest(frequency: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``ceil(fraction·A)`` attributes with the lowest frequency (stable order)."""
    k = max(1, math.ceil(fraction * len(frequency)))
    return np.argsort(np.asarray(frequency), kind="stable")[:k]


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


# =============================================================== model
class CFOROutput(NamedTuple):
    feature: torch.Tensor  # (N, D) global feature (backbone, after global max pooling)
    region: torch.Tensor  # (N, R) region logits
    category: list[torch.Tensor]  # per region: (N, C_r) category logits within that region
    attributes: torch.Tensor  # (N, A) attribute logits, ontology order


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class CFORNet(nn.Module):
    """Shared CNN backbone + ontology stage classifiers + attribute heads.

    Backbone: three conv3×3 blocks (3→w→2w→D channels), each conv → GroupNorm
    (4 groups; no running statistics, so nothing silo-specific is averaged) →
    ReLU, with 2×2 max pooling after the first two, then global **max**
    pooling: the global feature (D values). Max pooling keeps small local
    evidence (a belt, a zip, buttons) that average pooling dilutes.
    Stage classifiers: ``region`` (D→R) and ``category[r]`` (D→C_r) per region.
    Attribute heads, ``layout``:

    - ``"local"``: one head per attribute group, Linear(D→h) → ReLU → Linear(h→|g|);
    - ``"single"``: one head for all attributes with ``h·G`` hidden units;
    - ``"single_task"``: one head per attribute with ``max(2, round(h·G/A))``
      hidden units,

    so the three layouts have about the same number of hidden units.
    """

    def __init__(self, n_regions: int, categories_per_region: Sequence[int], group_sizes: Sequence[int],
                 width: int = 16, feature_dim: int = 64, head_hidden: int = 16, layout: str = "local") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise FedsimError(f"unknown head layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        self.layout = layout
        norm = lambda c: nn.GroupNorm(math.gcd(4, c), c)  # noqa: E731
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), norm(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), norm(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, feature_dim, 3, padding=1), norm(feature_dim), nn.ReLU(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.region = nn.Linear(feature_dim, n_regions)
        self.category = nn.ModuleList(nn.Linear(feature_dim, c) for c in categories_per_region)
        n_groups, n_attr = len(group_sizes), int(sum(group_sizes))
        if layout == "local":
            blocks = [_mlp(feature_dim, head_hidden, s) for s in group_sizes]
        elif layout == "single":
            blocks = [_mlp(feature_dim, head_hidden * n_groups, n_attr)]
        else:
            h = max(2, round(head_hidden * n_groups / n_attr))
            blocks = [_mlp(feature_dim, h, 1) for _ in range(n_attr)]
        self.attributes = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> CFOROutput:
        f = self.backbone(x)
        attrs = torch.cat([b(f) for b in self.attributes], dim=1)
        return CFOROutput(f, self.region(f), [c(f) for c in self.category], attrs)


LAYOUTS = ("local", "single", "single_task")


def cfor_loss(out: CFOROutput, y: torch.Tensor, onto: Ontology) -> torch.Tensor:
    """``stage_loss + multitask_bce`` for labels ``y = [region, category, attributes…]``."""
    offsets = torch.tensor(onto.category_offsets)
    region, category = y[:, 0], y[:, 1]
    return (stage_loss(out.region, out.category, region, category - offsets[region])
            + multitask_bce(out.attributes, y[:, 2:], onto.group_slices))


# =============================================================== synthetic images
_COLORS = {"black": (0.10, 0.10, 0.10), "white": (0.95, 0.95, 0.95), "blue": (0.15, 0.30, 0.85),
           "red": (0.85, 0.15, 0.15), "green": (0.15, 0.65, 0.20), "yellow": (0.95, 0.85, 0.15)}


def _box(au, v, u0, u1, v0, v1):
    return (au >= u0) & (au <= u1) & (v >= v0) & (v <= v1)


def _tee(au, u, v):
    return (_box(au, v, 0, .42, -.7, .85) | _box(au, v, 0, .8, -.7, -.38)) & (u ** 2 + (v + .72) ** 2 > .16 ** 2)


def _tank(au, u, v):
    body = _box(au, v, 0, .4, -.4, .85) & ((u / .2) ** 2 + ((v + .4) / .22) ** 2 > 1)
    return body | _box(au, v, .18, .3, -.85, -.4)


def _coat(au, u, v):
    return (_box(au, v, 0, .48, -.8, .92) | _box(au, v, .48, .78, -.8, .45)) & (u ** 2 + (v + .82) ** 2 > .14 ** 2)


def _trousers(au, u, v):
    return _box(au, v, 0, .45, -.9, -.62) | ((au >= .09) & (au <= .45 + .05 * (v + .62)) & (v >= -.62) & (v <= .92))


def _skirt(au, u, v):
    return (v >= -.8) & (v <= .6) & (au <= .33 + .32 * (v + .8) / 1.4)


def _shorts(au, u, v):
    return _box(au, v, 0, .47, -.8, -.5) | _box(au, v, .09, .5, -.5, .15)


def _dress(au, u, v):
    return _box(au, v, 0, .3, -.85, -.25) | ((v >= -.25) & (v <= .92) & (au <= .3 + .38 * (v + .25) / 1.17))


def _jumpsuit(au, u, v):
    return _box(au, v, 0, .4, -.85, 0) | _box(au, v, 0, .68, -.85, -.55) | _box(au, v, .08, .4, 0, .92)


# category -> (silhouette, waist v, top v) in canonical garment coordinates u, v ∈ [-1, 1]
_GARMENTS = {"tee": (_tee, .45, -.7), "tank": (_tank, .45, -.42), "coat": (_coat, .3, -.8),
             "trousers": (_trousers, -.76, -.9), "skirt": (_skirt, -.7, -.8), "shorts": (_shorts, -.66, -.8),
             "dress": (_dress, -.25, -.85), "jumpsuit": (_jumpsuit, 0.0, -.85)}
_DRAWABLE = set(_COLORS) | {"solid", "striped", "dotted", "plaid", "gradient", "zigzag", "cotton", "denim",
                            "knit", "leather", "sheer", "long", "wide", "slim", "cropped", "asymmetric",
                            "belt", "pocket", "buttons", "collar", "zip", "outlined", "shadow", "tilted",
                            "faded", "speckled"}


def check_drawable(onto: Ontology) -> None:
    """Raise if the synthetic renderer cannot draw some category or attribute of ``onto``."""
    bad_c = [c for c in onto.category_names if c not in _GARMENTS]
    bad_a = [a for a in onto.attribute_names if a not in _DRAWABLE]
    if bad_c or bad_a:
        raise FedsimError(f"the synthetic generator cannot draw {bad_c + bad_a}; drawable categories: "
                          f"{', '.join(_GARMENTS)}; attributes: {', '.join(sorted(_DRAWABLE))}")
    if not all(g.prior for g in onto.groups):
        raise FedsimError("the synthetic generator needs a prior for every attribute group")


def silo_priors(onto: Ontology, rng: np.random.Generator, concentration: float) -> list[np.ndarray]:
    """Per-silo attribute priors around the ontology's long-tailed priors (non-IID).

    ``draw = "one"`` groups: ``p_silo ~ Dirichlet(κ·p)``; ``draw = "any"``: each
    ``p_silo,j ~ Beta(κ·p_j, κ·(1−p_j))``; ``κ = concentration`` (∞ = the global prior).
    """
    out = []
    for g in onto.groups:
        p = np.asarray(g.prior, np.float64)
        if not np.isfinite(concentration):
            out.append(p.copy())
        elif g.draw == "one":
            out.append(rng.dirichlet(concentration * p / p.sum()))
        else:
            out.append(rng.beta(concentration * p, concentration * (1 - p)))
    return out


def sample_attributes(onto: Ontology, priors: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``(n, A)`` 0/1 attributes group by group from ``priors``."""
    y = np.zeros((n, onto.n_attributes), np.int64)
    for g, sl, p in zip(onto.groups, onto.group_slices, priors):
        k = sl.stop - sl.start
        if g.draw == "one":
            p = np.asarray(p, np.float64) / np.sum(p)
            first = rng.choice(k, size=n, p=p)
            y[np.arange(n), sl.start + first] = 1
            if g.extra > 0:  # a second, distinct attribute of the group
                more = np.flatnonzero(rng.random(n) < g.extra)
                for i in more:
                    q = p.copy()
                    q[first[i]] = 0.0
                    if q.sum() > 0:
                        y[i, sl.start + rng.choice(k, p=q / q.sum())] = 1
        else:
            y[:, sl] = rng.random((n, k)) < np.asarray(p)[None, :]
        for a, b in g.exclusive:
            ia, ib = onto.attribute_names.index(a), onto.attribute_names.index(b)
            y[y[:, ia] == 1, ib] = 0
    return y


def render(onto: Ontology, category: np.ndarray, attrs: np.ndarray, rng: np.random.Generator,
           size: int = 32, background: Sequence[float] = (0.62, 0.62, 0.62)) -> np.ndarray:
    """Composite garment images (``(n, 3, size, size)`` float32 in [0, 1]).

    Each garment is drawn in canonical coordinates (u, v) ∈ [-1, 1]² and mapped
    to the image by a per-image affine transform: scale (``long`` stretches v,
    ``wide``/``slim`` stretch/shrink u), rotation (±15–25° if ``tilted``, else
    ±4°) and a small shift. The silhouette is the category's; ``cropped`` cuts
    the lower part, ``asymmetric`` a diagonal corner. Colors fill the garment
    through the texture pattern (a second color, or a shade of the first; two
    colors on a solid texture are color-blocked halves); the fabric modulates it
    (denim: diagonal twill, knit: vertical ribs, leather: specular highlight,
    sheer: 45 % opacity); parts are drawn on top (belt at the category's waist,
    pocket patch, button column, collar triangle, zip line); style acts on the
    composite (dark outline, drop shadow, washed-out colors, speckles). Gaussian
    pixel noise (σ = 0.03) on everything.
    """
    n = len(category)
    idx = {a: i for i, a in enumerate(onto.attribute_names)}

    def has(name: str) -> np.ndarray:
        return attrs[:, idx[name]].astype(bool) if name in idx else np.zeros(n, bool)

    # -- pixel grid -> canonical coordinates (inverse affine per image)
    xs = (np.arange(size) + 0.5) / size * 2 - 1
    gy, gx = np.meshgrid(xs, xs, indexing="ij")
    sx = 0.75 * rng.uniform(0.92, 1.04, n) * np.where(has("wide"), 1.3, np.where(has("slim"), 0.72, 1.0))
    sy = 0.75 * rng.uniform(0.92, 1.04, n) * np.where(has("long"), 1.22, 0.9)
    ang = np.where(has("tilted"), rng.choice([-1, 1], n) * rng.uniform(15, 25, n), rng.uniform(-4, 4, n))
    ang = np.deg2rad(ang)
    tx, ty = rng.uniform(-0.06, 0.06, n), rng.uniform(-0.06, 0.06, n)
    dx, dy = gx[None] - tx[:, None, None], gy[None] - ty[:, None, None]
    c, s = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    u = (c * dx + s * dy) / sx[:, None, None]
    v = (-s * dx + c * dy) / sy[:, None, None]
    au = np.abs(u)

    mask = np.zeros((n, size, size), bool)
    waist, top = np.zeros(n), np.zeros(n)
    for k, name in enumerate(onto.category_names):
        sel = np.flatnonzero(category == k)
        if sel.size:
            fn, waist[sel], top[sel] = _GARMENTS[name]
            mask[sel] = fn(au[sel], u[sel], v[sel])
    mask &= ~(has("cropped")[:, None, None] & (v > 0.2))
    mask &= ~(has("asymmetric")[:, None, None] & (v > 0.35 - 0.7 * u))
    waist_, top_ = waist[:, None, None], top[:, None, None]

    # -- colors: first (and second) color of each image
    color_names = [a for a in onto.attribute_names if a in _COLORS]
    col_idx = np.array([idx[a] for a in color_names])
    palette = np.array([_COLORS[a] for a in color_names])
    ranks = np.where(attrs[:, col_idx] > 0, rng.random((n, len(col_idx))), np.inf)
    order = np.argsort(ranks, 1)
    n_col = (attrs[:, col_idx] > 0).sum(1)
    c1 = np.where((n_col >= 1)[:, None], palette[order[:, 0]], 0.5)
    c2 = np.where((n_col >= 2)[:, None], palette[order[:, 1 if len(col_idx) > 1 else 0]], 0.45 * c1 + 0.25)

    # -- texture: t ∈ [0, 1] mixes c1 (t = 0) and c2 (t = 1)
    frac = lambda a, p: np.mod(a, p) / p  # noqa: E731
    t = np.where(n_col[:, None, None] >= 2, (u > 0).astype(float), 0.0)  # color-blocked solid
    patterns = {
        "striped": lambda: (frac(v, 0.4) < 0.5).astype(float),
        "dotted": lambda: ((np.mod(u, .5) - .25) ** 2 + (np.mod(v, .5) - .25) ** 2 < .15 ** 2).astype(float),
        "plaid": lambda: ((frac(u, .4) < .5) ^ (frac(v, .4) < .5)).astype(float),
        "gradient": lambda: np.clip((v + 1) / 2, 0, 1),
        "zigzag": lambda: (frac(v + 0.3 * np.abs(frac(u, .4) - .5), .4) < .5).astype(float),
    }
    for name, fn in patterns.items():
        sel = has(name)
        if sel.any():
            t[sel] = fn()[sel]
    rgb = (1 - t[:, None]) * c1[:, :, None, None] + t[:, None] * c2[:, :, None, None]

    # -- fabric
    rgb *= np.where((has("denim")[:, None, None] & (frac(u + v, .25) < .5)), 0.7, 1.0)[:, None]
    rgb *= np.where((has("knit")[:, None, None] & (frac(u, .18) < .5)), 0.7, 1.0)[:, None]
    shine = np.exp(-((u + .2) ** 2 + (v + .3) ** 2) / .06) * has("leather")[:, None, None]
    rgb = rgb * np.where(has("leather"), 0.8, 1.0)[:, None, None, None] + 0.45 * shine[:, None]

    # -- parts (contrast color: dark on light garments, light on dark ones)
    lum = (c1 @ np.array([0.3, 0.59, 0.11]))[:, None, None, None]
    contrast = np.where(lum > 0.55, 0.08, 0.95) * np.ones((1, 3, 1, 1))

    def paint(where: np.ndarray, color) -> None:
        nonlocal rgb
        rgb = np.where(where[:, None], color, rgb)

    paint(has("belt")[:, None, None] & (np.abs(v - waist_) < .08), np.array([.3, .17, .05])[None, :, None, None])
    pocket = (np.abs(u - .22) < .15) & (np.abs(v - (top_ + .45)) < .15)
    paint(has("pocket")[:, None, None] & pocket, 0.2 + 0.6 * (1 - c1[:, :, None, None]))
    buttons = (u ** 2 + np.minimum.reduce([(v - top_ - d) ** 2 for d in (.2, .45, .7)]) < .1 ** 2)
    paint(has("buttons")[:, None, None] & buttons, contrast)
    collar = (v >= top_) & (v <= top_ + .28) & (au <= .3 - (v - top_))
    paint(has("collar")[:, None, None] & collar, contrast)
    paint(has("zip")[:, None, None] & (au < .05) & (v >= top_) & (v <= top_ + .9),
          np.array([.72, .72, .78])[None, :, None, None])
    faded = has("faded")[:, None, None, None]
    rgb = np.where(faded, 0.4 * rgb + 0.6 * 0.88, rgb)

    # -- composite on the background (with a vertical light gradient)
    bg = np.asarray(background, np.float64)[None, :, None, None] + rng.uniform(-.04, .04, (n, 3, 1, 1))
    bg = bg + 0.05 * gy[None, None]
    img = np.broadcast_to(bg, (n, 3, size, size)).copy()
    shadow = np.zeros_like(mask)
    shadow[:, 2:, 2:] = mask[:, :-2, :-2]
    shadow &= ~mask & has("shadow")[:, None, None]
    img = np.where(shadow[:, None], img * 0.45, img)
    alpha = np.where(has("sheer"), 0.45, 1.0)[:, None, None, None] * mask[:, None]
    img = (1 - alpha) * img + alpha * rgb

    # -- style on the composite
    inner = mask.copy()
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[:, :, 1:] &= mask[:, :, :-1]
    inner[:, :, :-1] &= mask[:, :, 1:]
    inner[:, [0, -1]] = False
    inner[:, :, [0, -1]] = False
    outline = mask & ~inner & has("outlined")[:, None, None]
    img = np.where(outline[:, None], 0.03, img)
    speck = mask & has("speckled")[:, None, None] & (rng.random(mask.shape) < 0.18)
    img = np.where(speck[:, None], rng.random(mask.shape)[:, None], img)
    img = img + rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def generate(onto: Ontology, n: int, rng: np.random.Generator, category_p: np.ndarray | None = None,
             priors: Sequence[np.ndarray] | None = None, size: int = 32,
             background: Sequence[float] = (0.62, 0.62, 0.62), chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images and their labels ``[region, category, attributes…]``.

    Categories are drawn from ``category_p`` (default uniform), attributes from
    ``priors`` (default: the ontology's priors). Rendered in chunks to bound memory.

    Examples
    --------
    >>> onto = load_ontology()
    >>> x, y = generate(onto, 4, np.random.default_rng(0))
    >>> x.shape, y.shape, bool(((y[:, 2:] == 0) | (y[:, 2:] == 1)).all())
    ((4, 3, 32, 32), (4, 34), True)
    """
    check_drawable(onto)
    p = np.full(onto.n_categories, 1 / onto.n_categories) if category_p is None else np.asarray(category_p)
    priors = [np.asarray(g.prior) for g in onto.groups] if priors is None else priors
    cat = rng.choice(onto.n_categories, size=n, p=p / p.sum())
    attrs = sample_attributes(onto, priors, n, rng)
    x = np.empty((n, 3, size, size), np.float32)
    for a in range(0, n, chunk):
        x[a:a + chunk] = render(onto, cat[a:a + chunk], attrs[a:a + chunk], rng, size, background)
    region = np.asarray(onto.category_region)[cat]
    return x, np.concatenate([region[:, None], cat[:, None], attrs], 1).astype(np.int64)


def silo_generator(onto: Ontology, silo: int, n_silos: int, seed: int, alpha: float,
                   concentration: float) -> tuple[np.random.Generator, np.ndarray, list[np.ndarray], np.ndarray]:
    """The non-IID setting of one silo: its RNG, category prior ~ Dirichlet(α·1),
    attribute priors (:func:`silo_priors`) and background color."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, silo, n_silos, 0xCF0]))
    cat_p = rng.dirichlet(np.full(onto.n_categories, alpha)) if np.isfinite(alpha) else \
        np.full(onto.n_categories, 1 / onto.n_categories)
    cat_p = 0.9 * cat_p + 0.1 / onto.n_categories  # every category stays possible
    priors = silo_priors(onto, rng, concentration)
    background = 0.62 + rng.uniform(-0.07, 0.07, 3)
    return rng, cat_p, priors, background


# =============================================================== DeepFashion-style files
DEEPFASHION_REGIONS = {1: "top", 2: "bottom", 3: "body"}  # category_type in list_category_cloth.txt
DEEPFASHION_GROUPS = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}  # attribute_type


@dataclass
class DeepFashionAnnotations:
    """Annotations of a DeepFashion "Category and Attribute Prediction" folder."""

    root: Path
    ontology: Ontology
    images: list[str]  # relative paths, as in the files
    labels: np.ndarray  # (N, 2 + A) int64: region, category, attributes (ontology order)
    split: np.ndarray  # (N,) "train" / "val" / "test" ("train" when no partition file)


def _find(root: Path, name: str, required: bool = True) -> Path | None:
    for sub in ("", "Anno", "Anno_coarse", "Eval", "anno", "eval"):
        p = root / sub / name
        if p.exists():
            return p
    if required:
        raise FedsimError(f"{root}: no {name} (looked in ., Anno/, Anno_coarse/, Eval/)")
    return None


def _rows(path: Path) -> list[list[str]]:
    """Rows of a DeepFashion list file: line 1 = count, line 2 = column names."""
    lines = [ln.split() for ln in path.read_text().splitlines()]
    try:
        count = int(lines[0][0])
    except (IndexError, ValueError):
        raise FedsimError(f"{path}: first line must be the number of rows") from None
    rows = [ln for ln in lines[2:] if ln]
    if len(rows) != count:
        raise FedsimError(f"{path}: header says {count} rows, found {len(rows)}")
    return rows


def load_deepfashion(root: str | Path) -> DeepFashionAnnotations:
    """Read DeepFashion-style category/attribute list files into an ontology + labels.

    Files (in ``root``, ``root/Anno`` or ``root/Eval``): ``list_category_cloth.txt``
    (``name type``, type 1 upper → region ``top``, 2 lower → ``bottom``, 3 full →
    ``body``), ``list_category_img.txt`` (``image category`` 1-based),
    ``list_attr_cloth.txt`` (``name… type``: names may contain spaces; type 1–5 =
    texture, fabric, shape, part, style), ``list_attr_img.txt`` (``image v1 … vA``,
    1 = present, −1/0 = absent) and optionally ``list_eval_partition.txt``
    (``image train|val|test``). The ontology is built from the files: regions in
    type order, categories in file order, attribute groups in type order.
    """
    root = Path(root)
    if not root.is_dir():
        raise FedsimError(f"DeepFashion root {root} is not a directory")
    cats = [(" ".join(r[:-1]), int(r[-1])) for r in _rows(_find(root, "list_category_cloth.txt"))]
    attrs = [(" ".join(r[:-1]), int(r[-1])) for r in _rows(_find(root, "list_attr_cloth.txt"))]
    for kind, items, valid in (("category", cats, DEEPFASHION_REGIONS), ("attribute", attrs, DEEPFASHION_GROUPS)):
        bad = sorted({t for _, t in items if t not in valid})
        if bad:
            raise FedsimError(f"{root}: unknown {kind} type(s) {bad}; valid: {sorted(valid)}")
    regions = [t for t in sorted(DEEPFASHION_REGIONS) if any(ct == t for _, ct in cats)]
    cat_order = [i for t in regions for i, (_, ct) in enumerate(cats) if ct == t]
    groups = [t for t in sorted(DEEPFASHION_GROUPS) if any(at == t for _, at in attrs)]
    attr_order = [i for t in groups for i, (_, at) in enumerate(attrs) if at == t]
    onto = Ontology("deepfashion", tuple(DEEPFASHION_REGIONS[t] for t in regions),
                    tuple(tuple(n for n, ct in cats if ct == t) for t in regions),
                    tuple(AttributeGroup(DEEPFASHION_GROUPS[t], tuple(n for n, at in attrs if at == t))
                          for t in groups))
    cat_new = np.empty(len(cats), np.int64)
    cat_new[cat_order] = np.arange(len(cats))
    cat_img = {r[0]: int(r[1]) for r in _rows(_find(root, "list_category_img.txt"))}
    attr_rows = _rows(_find(root, "list_attr_img.txt"))
    images, labels = [], []
    for r in attr_rows:
        if len(r) != len(attrs) + 1:
            raise FedsimError(f"{root}: image {r[0]} has {len(r) - 1} attribute values, expected {len(attrs)}")
        if r[0] not in cat_img:
            raise FedsimError(f"{root}: image {r[0]} has attributes but no category")
        c = int(cat_new[cat_img[r[0]] - 1])
        a = (np.array(r[1:], np.int64) == 1)[attr_order]
        images.append(r[0])
        labels.append(np.concatenate([[onto.category_region[c], c], a]))
    part = _find(root, "list_eval_partition.txt", required=False)
    split_of = {r[0]: r[1] for r in _rows(part)} if part else {}
    split = np.array([split_of.get(im, "train") for im in images])
    return DeepFashionAnnotations(root, onto, images, np.array(labels, np.int64).reshape(len(images), -1), split)


def load_images(root: str | Path, names: Sequence[str], size: int) -> np.ndarray:
    """Images as ``(n, 3, size, size)`` float32 in [0, 1] (RGB, bilinear resize; needs Pillow)."""
    from PIL import Image

    out = np.empty((len(names), 3, size, size), np.float32)
    for i, name in enumerate(names):
        try:
            with Image.open(Path(root) / name) as im:
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.float32)
        except OSError as exc:
            raise FedsimError(f"cannot read image {Path(root) / name}: {exc}") from None
        out[i] = arr.transpose(2, 0, 1) / 255.0
    return out


@lru_cache(maxsize=2)
def _deepfashion(root: str) -> DeepFashionAnnotations:
    return load_deepfashion(root)


# =============================================================== task
@dataclass
class CFORSiloData(SiloData):
    """A silo's train / validation / test splits (validation picks MCC thresholds)."""

    x_val: torch.Tensor
    y_val: torch.Tensor


class CFORTask(Task):
    """Ontology-driven attribute multitask learning with MCC thresholds.

    Config keys (defaults): ``ontology`` (packaged TOML), ``deepfashion_root``
    (None: synthetic images), ``samples_per_silo`` (600; with DeepFashion a cap,
    0 = all), ``test_fraction`` (0.25), ``val_fraction`` (0.2), ``alpha``
    (Dirichlet category skew, 0.5), ``attr_concentration`` (κ of the per-silo
    attribute priors, 10), ``image_size`` (32), ``lr`` (Adam, 0.003),
    ``batch_size`` (32), ``width`` (16), ``feature_dim`` (64), ``head_hidden``
    (16), ``layout`` (``local``), ``rare_fraction`` (0.4).

    :meth:`evaluate` picks per-attribute MCC thresholds on the silo's
    validation split with the received model, then reports on the test split:
    ``mcc``, ``recall``, ``precision`` (means over attributes at the MCC
    thresholds), the same at 0.5 (``*_05``), ``rare_recall`` / ``rare_recall_05``
    (mean recall over the rarest ``rare_fraction`` of attributes by training
    frequency), ``region_acc`` and ``category_acc`` (coarse-to-fine), ``map10``
    (retrieval MAP@10 of test queries against the silo's training images, see
    :mod:`fedsim.clients.cfor_retrieval`), ``loss`` and ``n``. Headline: ``mcc``.
    """

    name = "cfor"
    reference_step_ms = 18.7  # CPU ms of one local step, default options (see Task.profile)
    metric = "mcc"
    higher_is_better = True

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        self.ontology = self._load_ontology()
        layout = self._cfg("layout", "local")
        if layout not in LAYOUTS:
            raise FedsimError(f"unknown cfor layout {layout!r}; valid: {', '.join(LAYOUTS)}")

    def _cfg(self, key: str, default):
        v = self.config.get(key, default)
        return v if v is None or default is None else type(default)(v)

    def _load_ontology(self) -> Ontology:
        root = self.config.get("deepfashion_root")
        if root:
            return _deepfashion(str(root)).ontology
        onto = load_ontology(self.config.get("ontology"))
        check_drawable(onto)
        return onto

    # -- model --------------------------------------------------------------
    def model(self) -> CFORNet:
        o = self.ontology
        return CFORNet(o.n_regions, [len(c) for c in o.categories], [len(g.attributes) for g in o.groups],
                       width=self._cfg("width", 16), feature_dim=self._cfg("feature_dim", 64),
                       head_hidden=self._cfg("head_hidden", 16), layout=self._cfg("layout", "local"))

    # -- data -----------------------------------------------------------------
    def _split(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> CFORSiloData:
        n = len(y)
        idx = rng.permutation(n)
        n_test = max(1, int(round(n * self._cfg("test_fraction", 0.25))))
        n_val = max(1, int(round(n * self._cfg("val_fraction", 0.2))))
        te, va, tr = idx[:n_test], idx[n_test:n_test + n_val], idx[n_test + n_val:]
        t = torch.from_numpy
        return CFORSiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]), t(x[va]), t(y[va]))

    def partition(self, silo: int, n_silos: int, seed: int) -> CFORSiloData:
        if not 0 <= silo < n_silos:
            raise FedsimError(f"silo must be in 0..{n_silos - 1}, got {silo}")
        root = self.config.get("deepfashion_root")
        if root:
            return self._deepfashion_partition(str(root), silo, n_silos, seed)
        n = self._cfg("samples_per_silo", 600)
        if n < 10:
            raise FedsimError(f"cfor samples_per_silo must be >= 10, got {n}")
        rng, cat_p, priors, bg = silo_generator(self.ontology, silo, n_silos, seed, self._cfg("alpha", 0.5),
                                                self._cfg("attr_concentration", 10.0))
        x, y = generate(self.ontology, n, rng, cat_p, priors, self._cfg("image_size", 32), bg)
        return self._split(x, y, rng)

    def _deepfashion_partition(self, root: str, silo: int, n_silos: int, seed: int) -> CFORSiloData:
        ann = _deepfashion(root)
        parts = dirichlet_partition(ann.labels[:, 1], n_silos, self._cfg("alpha", 0.5), seed, min_size=1)
        idx = parts[silo]
        cap = self._cfg("samples_per_silo", 600)
        rng = np.random.default_rng(np.random.SeedSequence([seed, silo, n_silos, 0xDF]))
        if cap and len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        x = load_images(ann.root, [ann.images[i] for i in idx], self._cfg("image_size", 32))
        y, split = ann.labels[idx], ann.split[idx]
        if not ((split == "val").any() and (split == "test").any() and (split == "train").any()):
            return self._split(x, y, rng)  # no usable partition file: random split
        t = torch.from_numpy
        sel = {s: np.flatnonzero(split == s) for s in ("train", "val", "test")}
        return CFORSiloData(t(x[sel["train"]]), t(y[sel["train"]]), t(x[sel["test"]]), t(y[sel["test"]]),
                            t(x[sel["val"]]), t(y[sel["val"]]))

    # -- learning -------------------------------------------------------------
    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = torch.optim.Adam(model.parameters(), lr=self._cfg("lr", 0.003))
        return minibatch_steps(model, data, steps, generator, opt, self._cfg("batch_size", 32),
                               lambda out, y: cfor_loss(out, y, self.ontology), prox_mu, anchor)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> tuple[CFOROutput, np.ndarray]:
        """Model outputs for ``x`` (in batches) and the attribute probabilities σ(z)."""
        model.eval()
        outs = [model(x[a:a + batch_size]) for a in range(0, len(x), batch_size)]
        out = CFOROutput(torch.cat([o.feature for o in outs]), torch.cat([o.region for o in outs]),
                         [torch.cat([o.category[r] for o in outs]) for r in range(len(outs[0].category))],
                         torch.cat([o.attributes for o in outs]))
        return out, torch.sigmoid(out.attributes).numpy()

    def thresholds(self, model: nn.Module, data: CFORSiloData) -> np.ndarray:
        """MCC-optimal per-attribute thresholds on the validation split."""
        _, p = self.predict(model, data.x_val)
        return mcc_thresholds(p, data.y_val[:, 2:].numpy())

    @torch.no_grad()
    def evaluate(self, model, data):
        onto = self.ontology
        thr = self.thresholds(model, data)
        out, p = self.predict(model, data.x_test)
        y = data.y_test[:, 2:].numpy()
        loss = float(cfor_loss(out, data.y_test, onto))
        region, category = predict_stages(out, onto)
        m_mcc, m_half = attribute_metrics(p, y, thr), attribute_metrics(p, y, 0.5)
        rare = rarest(data.y_train[:, 2:].float().mean(0).numpy(), self._cfg("rare_fraction", 0.4))
        res = {"loss": loss, "mcc": _nanmean(m_mcc["mcc"]), "mcc_05": _nanmean(m_half["mcc"]),
               "recall": _nanmean(m_mcc["recall"]), "recall_05": _nanmean(m_half["recall"]),
               "precision": _nanmean(m_mcc["precision"]), "precision_05": _nanmean(m_half["precision"]),
               "rare_recall": _nanmean(m_mcc["recall"][rare]), "rare_recall_05": _nanmean(m_half["recall"][rare]),
               "region_acc": float((region == data.y_test[:, 0]).float().mean()),
               "category_acc": float((category == data.y_test[:, 1]).float().mean())}
        res["map10"] = float(evaluate_retrieval(self, model, data.x_train, data.y_train, data.x_test,
                                                data.y_test, k=10, thresholds=thr)[-1])
        res["n"] = float(len(data.y_test))
        return res
