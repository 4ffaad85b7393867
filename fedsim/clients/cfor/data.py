"""CFOR data: the seeded garment generator with per-silo priors, and DeepFashion-style attribute files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedsim.clients.base import SiloData
from fedsim.clients.cfor.ontology import AttributeGroup, Ontology
from fedsim.errors import FedsimError


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
    >>> from fedsim.clients.cfor.ontology import load_ontology
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
