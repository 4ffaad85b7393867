"""CDL data: seeded synthetic road scenes per silo and Udacity-style steering folders."""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.errors import FedsimError


#: Steering = curvature - OFFSET_GAIN * lateral offset (drive back to the lane centre).
OFFSET_GAIN = 0.3


# ---------------------------------------------------------------------------
# data: procedural road scenes
# ---------------------------------------------------------------------------
STYLE_KEYS = ("road", "offroad", "sky", "line", "texture", "coarse", "gain", "shadow", "noise",
              "horizon", "width", "edges", "dash")


def silo_styles(n_silos: int, seed: int) -> dict[str, np.ndarray]:
    """Per-silo look: one value per silo for each of :data:`STYLE_KEYS`.

    Grey levels in [0, 1] of road / off-road / sky / lane marks, texture
    amplitude and coarseness, illumination gain and left-right shadow,
    sensor noise σ, horizon row (fraction of the height), road width factor,
    edge lines on/off, dash frequency of the centre line.
    """
    rng = np.random.default_rng([seed, 101])
    u = lambda lo, hi: rng.uniform(lo, hi, n_silos)  # noqa: E731
    return {"road": u(0.2, 0.5), "offroad": u(0.45, 0.8), "sky": u(0.65, 1.0), "line": u(0.8, 1.0),
            "texture": u(0.05, 0.25), "coarse": u(0.0, 1.0), "gain": u(0.6, 1.2),
            "shadow": u(-0.3, 0.3), "noise": u(0.01, 0.08), "horizon": u(0.3, 0.45),
            "width": u(0.8, 1.2), "edges": (rng.random(n_silos) < 0.5).astype(float),
            "dash": u(0.5, 1.5)}


def silo_steering(n_silos: int, seed: int) -> dict[str, np.ndarray]:
    """Per-silo steering distribution: ``kind`` 0 turn-biased N(μ, σ), 1 mostly
    straight N(0, σ), 2 bimodal ±m + N(0, σ); kinds cycle over a seeded order.

    Examples
    --------
    >>> sorted(silo_steering(3, seed=0)["kind"].tolist())
    [0, 1, 2]
    """
    rng = np.random.default_rng([seed, 202])
    kind = rng.permutation(n_silos) % 3
    sign = np.where(rng.random(n_silos) < 0.5, -1.0, 1.0)
    centre = np.where(kind == 0, sign * rng.uniform(0.2, 0.5, n_silos),
                      np.where(kind == 2, rng.uniform(0.3, 0.6, n_silos), 0.0))
    spread = np.where(kind == 0, rng.uniform(0.1, 0.2, n_silos),
                      np.where(kind == 1, rng.uniform(0.04, 0.08, n_silos), rng.uniform(0.08, 0.15, n_silos)))
    return {"kind": kind, "centre": centre, "spread": spread}


def _draw_steering(dist: dict[str, np.ndarray], who: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind, c, s = dist["kind"][who], dist["centre"][who], dist["spread"][who]
    sign = np.where((kind == 2) & (rng.random(len(who)) < 0.5), -1.0, 1.0)
    return np.clip(sign * c + s * rng.standard_normal(len(who)), -1.0, 1.0)


def render_roads(steering: np.ndarray, offset: np.ndarray, style: dict[str, np.ndarray], size: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Render grayscale road scenes, one per row of the inputs, as uint8 ``(N, size, size)``.

    Row ``r`` below the horizon ``h`` has depth ``z = (r - h)/(size - h)`` (1 at the
    bottom). The road's half-width is ``hw(z) = size·width·(0.04 + 0.46·z)`` and its
    centre ``xc(z) = size/2 - o·hw(z) + 0.45·size·κ·(1-z)²`` with curvature
    ``κ = steering + 0.3·o``: the offset moves the road sideways in perspective,
    the curvature bends its far end. ``style`` holds one value per image for
    each of :data:`STYLE_KEYS`.

    Examples
    --------
    >>> st = {k: np.repeat(v[:1], 2) for k, v in silo_styles(1, seed=0).items()}
    >>> img = render_roads(np.array([-0.5, 0.5]), np.zeros(2), st, 32, np.random.default_rng(0))
    >>> img.shape, img.dtype.name
    ((2, 32, 32), 'uint8')
    """
    n = len(steering)
    out = np.empty((n, size, size), np.uint8)
    rows = np.arange(size, dtype=np.float32)[None, :, None]
    cols = np.arange(size, dtype=np.float32)[None, None, :]
    chunk = max(1, 2**22 // (size * size))  # bounded memory at the paper's 200×200
    for a in range(0, n, chunk):
        sl = slice(a, min(n, a + chunk))
        m = sl.stop - sl.start
        st = {k: np.asarray(v[sl], np.float32)[:, None, None] for k, v in style.items()}
        kappa = (steering[sl] + OFFSET_GAIN * offset[sl]).astype(np.float32)[:, None, None]
        off = offset[sl].astype(np.float32)[:, None, None]
        hor = (st["horizon"] + rng.uniform(-0.03, 0.03, (m, 1, 1))) * size
        z = np.clip((rows - hor) / (size - hor), 1e-3, 1.0)
        hw = size * st["width"] * (0.04 + 0.46 * z)
        xc = size / 2 - off * hw + 0.45 * size * kappa * (1 - z) ** 2
        d = np.abs(cols - xc) / hw  # lateral position in road half-widths
        # Texture: a coarse and a fine random field, mixed per style.
        tex = _noise_field(m, size, 4, rng) * st["coarse"] + _noise_field(m, size, 16, rng) * (1 - st["coarse"])
        img = np.where(d < 1.0, st["road"] + 0.3 * st["texture"] * tex, st["offroad"] + st["texture"] * tex)
        dash = np.sin(2 * np.pi * st["dash"] * 4.0 / z + rng.uniform(0, 2 * np.pi, (m, 1, 1))) > 0
        centre_line = (d < 0.06 + 0.5 / np.maximum(hw, 1.0)) & dash
        edge_line = (st["edges"] > 0.5) & (d > 0.9) & (d < 1.0)
        img = np.where(centre_line | edge_line, st["line"], img)
        sky = rows < hor
        img = np.where(sky, st["sky"] - 0.2 * rows / np.maximum(hor, 1.0), img)
        img = img * st["gain"] * (1 + st["shadow"] * (cols / size - 0.5))
        img = img + st["noise"] * rng.standard_normal((m, size, size)).astype(np.float32)
        out[sl] = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    return out


def _noise_field(n: int, size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [-1, 1]: ``cells×cells`` uniform noise, bilinearly upsampled."""
    g = torch.from_numpy(rng.uniform(-1, 1, (n, 1, cells, cells)).astype(np.float32))
    return F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def synthetic_silo(silo: int, n_silos: int, seed: int, n_images: int, size: int,
                   label_shift: float = 1.0, style_shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Silo ``silo``'s images (uint8 ``(N, 1, size, size)``) and steering labels (float32).

    Each image takes the silo's own steering distribution with probability
    ``label_shift`` (else that of a uniformly drawn silo), and likewise its own
    look with probability ``style_shift``: 0 gives IID silos, 1 fully
    silo-specific ones.
    """
    rng = np.random.default_rng([seed, silo, 303])
    own = np.full(n_images, silo)
    who_label = np.where(rng.random(n_images) < label_shift, own, rng.integers(0, n_silos, n_images))
    who_style = np.where(rng.random(n_images) < style_shift, own, rng.integers(0, n_silos, n_images))
    y = _draw_steering(silo_steering(n_silos, seed), who_label, rng)
    offset = np.clip(0.25 * rng.standard_normal(n_images), -0.5, 0.5)
    styles = silo_styles(n_silos, seed)
    x = render_roads(y, offset, {k: v[who_style] for k, v in styles.items()}, size, rng)
    return x[:, None], y.astype(np.float32)


def silo_sizes(n_silos: int, seed: int, total: int, scale: float, minimum: int = 20) -> np.ndarray:
    """Images per silo: ``total·scale/n_silos`` times U(0.6, 1.4), at least ``minimum``.

    Examples
    --------
    >>> s = silo_sizes(11, seed=0, total=38_586, scale=0.05)
    >>> bool(s.min() >= 0.6 * 175 - 1 and s.max() <= 1.4 * 176)
    True
    """
    rng = np.random.default_rng([seed, 404])
    mean = total * scale / n_silos
    return np.maximum(minimum, np.round(mean * rng.uniform(0.6, 1.4, n_silos))).astype(int)


# ---------------------------------------------------------------------------
# data: real Udacity-style folders
# ---------------------------------------------------------------------------
_PATH_COLUMNS = ("center", "filename", "image", "path", "frame", "file")
_STEER_COLUMNS = ("steering", "angle", "steering_angle", "steer")
_CSV_NAMES = ("driving_log.csv", "interpolated.csv", "steering.csv", "labels.csv")


def _find_csv(folder: Path) -> Path | None:
    for name in _CSV_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.csv"))
    return found[0] if found else None


def load_steering_folder(folder: str | Path, image_size: int, steering_scale: float = 1.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Read a Udacity-style folder: a CSV of image path + steering, and the images.

    The CSV is ``driving_log.csv``, ``interpolated.csv``, ``steering.csv``,
    ``labels.csv`` or else the first ``*.csv``. With a header, the image column
    is the first of ``center filename image path frame file`` and the
    steering column the first of ``steering angle steering_angle steer``;
    without one, column 0 is the image and column 3 (the simulator's
    ``driving_log.csv``: center, left, right, steering, ...) or, for two or
    three columns, column 1 the steering. Image paths are taken relative to the
    folder; absolute paths that do not exist (logs recorded elsewhere) fall
    back to ``folder/IMG/<name>`` then ``folder/<name>``. Each image is read
    as grayscale, centre-cropped to a square and resized to ``image_size``;
    labels are ``steering·steering_scale`` clipped to [-1, 1].

    Returns uint8 images ``(N, 1, S, S)`` and float32 labels ``(N,)``.
    """
    from PIL import Image

    folder = Path(folder)
    path = _find_csv(folder) if folder.is_dir() else None
    if path is None:
        raise FedsimError(f"no steering CSV in {folder} (expected one of {', '.join(_CSV_NAMES)} or *.csv)")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise FedsimError(f"{path} is empty")
    head = [c.strip().lower() for c in rows[0]]
    has_header = any(c in head for c in _PATH_COLUMNS) and any(c in head for c in _STEER_COLUMNS)
    if has_header:
        ip = next(head.index(c) for c in _PATH_COLUMNS if c in head)
        sp = next(head.index(c) for c in _STEER_COLUMNS if c in head)
        rows = rows[1:]
    else:
        ip, sp = 0, (3 if len(rows[0]) >= 4 else 1)
    images, labels = [], []
    for line, r in enumerate(rows, start=2 if has_header else 1):
        try:
            steer = float(r[sp])
        except (IndexError, ValueError):
            raise FedsimError(f"{path}: row {line} has no numeric steering in column {sp}") from None
        img_path = _resolve(folder, r[ip].strip())
        if img_path is None:
            raise FedsimError(f"{path}: image {r[ip].strip()!r} not found under {folder}")
        with Image.open(img_path) as im:
            g = im.convert("L")
            side = min(g.size)
            left, top = (g.size[0] - side) // 2, (g.size[1] - side) // 2
            g = g.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(g, np.uint8))
        labels.append(np.clip(steer * steering_scale, -1.0, 1.0))
    if not images:
        raise FedsimError(f"{path} lists no images")
    return np.stack(images)[:, None], np.asarray(labels, np.float32)


def _resolve(folder: Path, name: str) -> Path | None:
    p = Path(name.replace("\\", "/"))
    for cand in (p if p.is_absolute() else folder / p, folder / "IMG" / p.name, folder / p.name):
        if cand.is_file():
            return cand
    return None


@lru_cache(maxsize=4)
def _folder_silos(root: str, image_size: int, steering_scale: float) -> tuple:
    """Per-folder data: one entry per sub-folder holding a CSV, or the root alone."""
    base = Path(root)
    if not base.is_dir():
        raise FedsimError(f"data folder {root!r} does not exist (use 'synthetic' or a folder with a steering CSV)")
    subs = [d for d in sorted(base.iterdir()) if d.is_dir() and _find_csv(d) is not None]
    return tuple(load_steering_folder(d, image_size, steering_scale) for d in (subs or [base]))


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float in [-1, 1]: ``x/127.5 - 1`` (float input passes through).

    Examples
    --------
    >>> to_float(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
    [-1.0, 1.0]
    """
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float()
