"""SAC data: digits, the procedural fine-grained shapes, CUB-style folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError


DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FINE_SHAPES = ("ring", "box", "diamond", "triangle")
FINE_DETAILS = ("plain", "upper dot", "lower dot")
FINE_CLASSES = tuple(f"{d} {s}" for s in FINE_SHAPES for d in FINE_DETAILS)


# ----------------------------------------------------------------- data
@dataclass
class Pool:
    """All images of a dataset: ``x (N, C, H, W)`` float32, labels ``y (N,)``,
    class names, and the official train flag (``cub`` with a split file)."""

    x: np.ndarray
    y: np.ndarray
    names: tuple[str, ...]
    is_train: np.ndarray | None = None


def _outline(shape: str, t: int) -> np.ndarray:
    """``t`` points on a unit-size outline, ``(t, 2)`` as (x, y), y pointing down."""
    s = np.linspace(0.0, 1.0, t, endpoint=False)
    if shape == "ring":
        a = 2 * np.pi * s
        return np.stack([np.cos(a), np.sin(a)], 1)
    corners = {"box": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
               "diamond": [(0, -1.05), (1.05, 0), (0, 1.05), (-1.05, 0)],
               "triangle": [(0, -1.0), (0.95, 0.75), (-0.95, 0.75)]}[shape]
    c = np.array(corners + corners[:1], float)
    seg = s * (len(c) - 1)
    i = np.minimum(seg.astype(int), len(c) - 2)
    w = (seg - i)[:, None]
    return c[i] * (1 - w) + c[i + 1] * w


def make_fine(n_per_class: int = 150, size: int = 16, seed: int = 0) -> Pool:
    """The fine-grained glyph set: 12 classes = 4 shapes × 3 details.

    Per image: centre jitter U(−2, 2) px, radius U(0.27, 0.36)·size, rotation
    U(−15°, 15°), stroke 0.9–1.4 px, contrast U(0.6, 1). The detail is a
    Gaussian dot (σ 0.8 px) at ±0.45·radius above / below the centre, in the
    shape's frame; with probability 0.3 a stray dot of the same kind lands
    anywhere on the canvas; Gaussian pixel noise σ 0.1. Pixel values are
    raw (not standardised; :meth:`SACTask.pool` does that).

    Examples
    --------
    >>> p = make_fine(2, seed=1)
    >>> p.x.shape, p.names[:3], np.bincount(p.y).tolist() == [2] * 12
    ((24, 1, 16, 16), ('plain ring', 'upper dot ring', 'lower dot ring'), True)
    """
    rng = np.random.default_rng(seed)
    n_cls = len(FINE_CLASSES)
    y = np.repeat(np.arange(n_cls), n_per_class)
    n = len(y)
    centre = size / 2 + rng.uniform(-2, 2, (n, 2))
    radius = rng.uniform(0.27, 0.36, n) * size
    th = np.deg2rad(rng.uniform(-15, 15, n))
    stroke = rng.uniform(0.9, 1.4, n)
    contrast = rng.uniform(0.6, 1.0, n)
    stray = np.where(rng.random(n) < 0.3, 1.0, 0.0)
    stray_at = rng.uniform(1.5, size - 1.5, (n, 2))
    noise = rng.normal(0, 0.1, (n, size * size))
    rot = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(float) + 0.5
    pix = np.stack([xx.ravel(), yy.ravel()], 1)  # (S², 2) pixel centres
    shape_of = y // len(FINE_DETAILS)
    sign = np.array([0.0, -1.0, 1.0])[y % len(FINE_DETAILS)]  # detail: none / upper / lower
    dot_at = centre + np.einsum("nab,nb->na", rot, np.stack([np.zeros(n), sign * 0.45 * radius], 1))
    x = np.empty((n, size * size))
    for s_idx, shape in enumerate(FINE_SHAPES):
        unit = _outline(shape, 96)
        for chunk in np.array_split(np.flatnonzero(shape_of == s_idx), max(1, n_per_class // 64)):
            pts = np.einsum("nab,tb->nta", rot[chunk], unit) * radius[chunk, None, None] + centre[chunk, None]
            dx = pix[None, :, None, 0] - pts[:, None, :, 0]  # (c, S², 96); no reduce over a size-2 axis
            dy = pix[None, :, None, 1] - pts[:, None, :, 1]
            d = np.sqrt((dx * dx + dy * dy).min(2))  # (c, S²) distance to the outline
            x[chunk] = np.clip(1.0 - d / stroke[chunk, None], 0.0, 1.0)

    def blob(at):  # Gaussian dot, sigma 0.8 px
        d2 = (pix[None, :, 0] - at[:, None, 0]) ** 2 + (pix[None, :, 1] - at[:, None, 1]) ** 2
        return np.exp(-d2 / (2 * 0.8 ** 2))

    x = np.maximum(x, blob(dot_at) * np.abs(sign)[:, None])
    x = np.maximum(x, blob(stray_at) * stray[:, None])
    x = x * contrast[:, None] + noise
    return Pool(x.reshape(n, 1, size, size).astype(np.float32), y.astype(np.int64), FINE_CLASSES)


def _read_table(path: Path, n_cols: int) -> list[list[str]]:
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_cols - 1)
        if len(parts) != n_cols:
            raise FedsimError(f"{path}:{line_no}: expected {n_cols} fields, got {line!r}")
        rows.append(parts)
    return rows


def cub_classes(root: str | Path) -> tuple[str, ...]:
    """Class names of a CUB-style folder, in ``classes.txt`` id order."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise FedsimError(f"CUB-style folder {root} has no classes.txt (needs images/, images.txt, "
                          "classes.txt, image_class_labels.txt)")
    rows = sorted(_read_table(path, 2), key=lambda r: int(r[0]))
    return tuple(r[1].strip() for r in rows)


def load_cub(root: str | Path, image_size: int = 32, grayscale: bool = False) -> Pool:
    """Load a CUB-200-2011-style folder (layout in the module docstring).

    Class ids in the files are 1-based (as in CUB); labels become 0-based in
    ``classes.txt`` id order. Images are converted to RGB (or L) and resized
    to ``image_size × image_size`` (bilinear).
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise FedsimError(f"CUB-style folder {root} does not exist")
    for name in ("images.txt", "image_class_labels.txt"):
        if not (root / name).is_file():
            raise FedsimError(f"CUB-style folder {root} has no {name} (needs images/, images.txt, "
                              "classes.txt, image_class_labels.txt)")
    names = cub_classes(root)
    class_ids = sorted(int(r[0]) for r in _read_table(root / "classes.txt", 2))
    label_of_class = {cid: i for i, cid in enumerate(class_ids)}
    paths = {int(i): p.strip() for i, p in _read_table(root / "images.txt", 2)}
    labels = {int(i): int(c) for i, c in _read_table(root / "image_class_labels.txt", 2)}
    split_path = root / "train_test_split.txt"
    split = {int(i): int(t) for i, t in _read_table(split_path, 2)} if split_path.is_file() else None
    xs, ys, train = [], [], []
    for img_id in sorted(paths):
        if img_id not in labels or labels[img_id] not in label_of_class:
            raise FedsimError(f"image {img_id} ({paths[img_id]}) has no valid class in image_class_labels.txt")
        file = root / "images" / paths[img_id]
        try:
            with Image.open(file) as im:
                im = im.convert("L" if grayscale else "RGB").resize((image_size, image_size),
                                                                     Image.Resampling.BILINEAR)
                arr = np.asarray(im, np.float32) / 255.0
        except OSError as exc:
            raise FedsimError(f"cannot read image {file}: {exc}") from None
        xs.append(arr[None] if grayscale else arr.transpose(2, 0, 1))
        ys.append(label_of_class[labels[img_id]])
        if split is not None:
            train.append(bool(split.get(img_id, 1)))
    if not xs:
        raise FedsimError(f"CUB-style folder {root} lists no images in images.txt")
    return Pool(np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), names,
                np.asarray(train, bool) if split is not None else None)
