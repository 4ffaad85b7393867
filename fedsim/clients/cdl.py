"""CDL: federated steering regression with a contrastive divergence loss.

Each silo trains a Siamese pair of DroNet-style ResNet-8 branches on grayscale
road images: a **backbone**, which is exchanged and mixed with the other silos
like any model, and a **sub-network**, which never leaves the silo and acts as
a memory of what the silo itself learned. Inference uses the backbone only.

Model
-----
A ResNet-8 branch (DroNet) is a 5×5/2 convolution, a 3×3/2 max-pool, three
pre-activation residual blocks (BN-ReLU-3×3/2 conv, BN-ReLU-3×3 conv, plus a
1×1/2 projection shortcut), then ReLU → dropout(0.5) → linear → one steering
value. ``size="paper"`` is the published branch (1×200×200 input, widths
32/32/64/128, 314,657 parameters); ``size="small"`` (default) is the CPU
version (1×64×64, widths 8/8/16/32, 19,817 parameters). Unlike the released
code, the two branches do not share the stem: the write-up describes two
distinct networks, and a fully separate sub-network is exactly a local copy
that only the silo's own gradient moves.

Loss
----
With ``b`` and ``s`` the steering outputs of the backbone and the sub-network
on the same batch and ``y`` the labels::

    L     = L_lr + β·L_cd+ + (1-β)·L_cd-
    L_lr  = mean |b - y|                                      (L1, backbone only)
    L_cd+ = H(b ‖ sg(s)) ,  L_cd- = H(s ‖ sg(b))
    H(u ‖ v) = mean over the batch of KL( Bern(σ(u)) ‖ Bern(σ(v)) )
             = σ(u)·log(σ(u)/σ(v)) + (1-σ(u))·log((1-σ(u))/(1-σ(v)))

``sg`` stops the gradient, so the backbone is trained on ``L_lr + β·L_cd+`` and
the sub-network on ``(1-β)·L_cd-`` only, as in the write-up. ``L_lr`` is the
write-up's MAE (the released code uses MSE).

Why a Bernoulli KL: the write-up defines ``H(ŷ, y) = Σ f(ŷ) log(f(ŷ)/f(y))``,
a KL divergence between output *distributions*, but a branch outputs one
scalar. The released code squashes each output with a sigmoid; reading
``f(u) = (σ(u), 1-σ(u))`` (a softmax over the two logits ``(u, 0)``) makes ``H`` a
true KL, cheap and exactly zero when the branches agree. A Gaussian
with fixed variance would instead give the symmetric ``(u-v)²/2σ²``, which
makes ``β`` a mere gradient split; the Bernoulli KL is asymmetric, so ``β``
weighs two different divergences, as in the paper. For nearby outputs
``H(u‖v) ≈ σ'(u)·(u-v)²/2`` (``≈ (u-v)²/8`` at ``u ≈ 0``): a soft pull in output space,
whose gradient ``σ'(u)·(u-v)`` is small next to the L1 gradient (±1) for steering-sized
differences. ``kl_temperature`` τ (default 1, the released code's sigmoid) compares
``σ(u/τ)`` and ``σ(v/τ)`` instead, scaling the pull by about ``1/τ²``.
Both branches see the same dropout mask, so the divergence measures the
branches' weights rather than two dropout draws (and is 0 right after the copy).

The sub-network is a copy of the backbone the first time a silo trains (when
the silo has no local state yet, the received backbone is copied). A buffer
``sub_ready`` records that the copy was made; like the sub-network it stays on
the silo. ``variant="resnet8"`` is the plain DroNet-style baseline: the
backbone alone, trained on ``L_lr``, so CDL can be compared under any strategy.
Optimiser: Adam, lr 1e-3, weight decay 1e-5, batch 32 (the paper's); like
every fedsim task it is rebuilt each round, so its moments do not carry over
between rounds.

Data
----
``data="synthetic"`` (default) renders seeded road scenes (:func:`render_roads`):
the road bends with the curvature ``κ`` and is shifted by the car's lateral
offset ``o``; the label is the steering that follows the bend and drives back
to the lane centre, ``y = κ - 0.3·o`` in [-1, 1]. Silos differ (non-IID) in
their steering distribution (turn-biased, mostly straight, or bimodal, as the
per-vehicle Carla histograms) and in their look (illumination, texture,
road width, horizon, lane marks, sensor noise). ``label_shift`` and
``style_shift`` in [0, 1] blend each silo towards the pooled mixture of all
silos (0: IID). A silo holds ``total/n_silos × scale`` images (``dataset``
sets the published total: udacity 38,586, gazebo 66,806, carla 73,235;
``scale`` defaults to 0.05, e.g. 175 per silo on Gaia's 11), varied ±40 %
across silos.
``data=<folder>`` reads Udacity-style folders (:func:`load_steering_folder`).

Metrics (each silo's test split): ``rmse`` (headline, lower is better),
``mae``, ``mse`` (for pooling: pooled RMSE = sqrt(Σ n·mse / Σ n)), ``loss``
(= the L1 regression loss) and ``n``.
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedsim.clients.base import SiloData, Task, prox_term
from fedsim.errors import FedsimError, unknown_name

SIZES: dict[str, dict] = {
    "small": {"image_size": 64, "widths": (8, 8, 16, 32)},
    "paper": {"image_size": 200, "widths": (32, 32, 64, 128)},
}
VARIANTS = ("cdl", "resnet8")
#: Published image counts of the three driving datasets (all silos together).
DATASET_TOTALS: dict[str, int] = {"udacity": 38_586, "gazebo": 66_806, "carla": 73_235}
#: Steering = curvature - OFFSET_GAIN * lateral offset (drive back to the lane centre).
OFFSET_GAIN = 0.3


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
def _halved(side: int, times: int) -> int:
    """Spatial side after ``times`` 'same'-padded stride-2 layers: ceil(side / 2) each."""
    for _ in range(times):
        side = (side + 1) // 2
    return side


class ResBlock(nn.Module):
    """Pre-activation block: ``conv3(relu(bn(conv3/2(relu(bn(x)))))) + conv1/2(x)``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(x)


class ResNet8(nn.Module):
    """DroNet-style ResNet-8 steering regressor (one output).

    Parameters
    ----------
    image_size : int
        Side of the square grayscale input.
    widths : tuple of 4 ints
        Stem width and the three blocks' widths.
    dropout : float
        Dropout before the linear head.

    Examples
    --------
    >>> sum(p.numel() for p in ResNet8(200, (32, 32, 64, 128)).parameters())
    314657
    >>> ResNet8(64, (8, 8, 16, 32)).n_features  # 32 channels × 2 × 2
    128
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (8, 8, 16, 32),
                 dropout: float = 0.5) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.stem = nn.Conv2d(1, w0, 5, stride=2, padding=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.Sequential(ResBlock(w0, w1), ResBlock(w1, w2), ResBlock(w2, w3))
        self.n_features = w3 * _halved(image_size, 5) ** 2
        self.dropout = dropout
        self.head = nn.Linear(self.n_features, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Steering, shape ``(B,)``. ``mask``: a scaled dropout mask ``(B, n_features)``."""
        h = F.relu(self.blocks(self.pool(self.stem(x))).flatten(1))
        if mask is not None:
            h = h * mask
        elif self.training and self.dropout > 0:
            h = F.dropout(h, self.dropout)
        return self.head(h).squeeze(1)


class CDLNet(nn.Module):
    """Backbone ResNet-8, plus (``siamese=True``) a local sub-network of the same shape.

    ``forward`` is the backbone only (the sub-network is dropped at inference).
    """

    def __init__(self, image_size: int = 64, widths: tuple[int, ...] = (8, 8, 16, 32),
                 dropout: float = 0.5, siamese: bool = True) -> None:
        super().__init__()
        self.backbone = ResNet8(image_size, widths, dropout)
        self.sub = ResNet8(image_size, widths, dropout) if siamese else None
        if siamese:
            # 0 until the sub-network has been initialised from a received backbone.
            self.register_buffer("sub_ready", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def ensure_sub(self) -> bool:
        """Copy the backbone into the sub-network once; True if it copied now."""
        if self.sub is None or bool(self.sub_ready):
            return False
        self.sub.load_state_dict(self.backbone.state_dict())
        self.sub_ready.fill_(1.0)
        return True


# ---------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------
def bernoulli_kl(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``KL(Bern(σ(u)) ‖ Bern(σ(v)))`` computed from the logits.

    ``KL = p·(log p - log q) + (1-p)·(log(1-p) - log(1-q))`` with ``p = σ(u)``,
    ``q = σ(v)``, using ``log σ(z)`` and ``log(1-σ(z)) = log σ(-z)`` for stability.

    Examples
    --------
    >>> round(float(bernoulli_kl(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))), 6)
    0.143841
    """
    p = torch.sigmoid(u)
    return (p * (F.logsigmoid(u) - F.logsigmoid(v))
            + (1 - p) * (F.logsigmoid(-u) - F.logsigmoid(-v))).mean()


def cdl_loss(b: torch.Tensor, s: torch.Tensor, y: torch.Tensor, beta: float = 0.5,
             temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The CDL objective ``L_lr + β·H(b‖sg(s)) + (1-β)·H(s‖sg(b))``.

    Parameters
    ----------
    b, s : Tensor (B,)
        Backbone and sub-network steering outputs on the same batch.
    y : Tensor (B,)
        Steering labels.
    beta : float
        Weight of the positive term ``L_cd+`` (and ``1-β`` of ``L_cd-``).
    temperature : float
        ``τ`` in ``H(u‖v) = KL(Bern(σ(u/τ)) ‖ Bern(σ(v/τ)))``; 1 is the
        released code's plain sigmoid, a smaller ``τ`` strengthens the pull.

    Returns
    -------
    objective : Tensor
        One scalar whose gradient is ``∇(L_lr + β·L_cd+)`` for the backbone and
        ``∇((1-β)·L_cd-)`` for the sub-network (each branch's output is detached
        inside the other branch's term); its value is ``L``.
    parts : dict
        ``l1``, ``cd_plus``, ``cd_minus`` as floats.

    Examples
    --------
    >>> obj, parts = cdl_loss(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.5]))
    >>> float(obj), parts["cd_plus"]
    (0.5, 0.0)
    """
    l1 = (b - y).abs().mean()
    bt, st = b / temperature, s / temperature
    cd_plus = bernoulli_kl(bt, st.detach())
    cd_minus = bernoulli_kl(st, bt.detach())
    objective = l1 + beta * cd_plus + (1.0 - beta) * cd_minus
    return objective, {"l1": float(l1.detach()), "cd_plus": float(cd_plus.detach()),
                       "cd_minus": float(cd_minus.detach())}


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


# ---------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------
class CDLTask(Task):
    """Federated steering with the contrastive divergence loss (or its ResNet-8 baseline).

    Config keys (defaults): ``variant`` ("cdl" | "resnet8"), ``size``
    ("small" | "paper"), ``image_size`` and ``widths`` (override the size),
    ``dropout`` (0.5), ``beta`` (0.5), ``kl_temperature`` (1.0), ``optimizer`` ("adam" | "sgd"), ``lr``
    (1e-3), ``weight_decay`` (1e-5), ``batch_size`` (32), ``data``
    ("synthetic" or a folder), ``dataset`` ("udacity" | "gazebo" | "carla",
    sets the total image count), ``scale`` (0.05), ``n_per_silo`` (overrides the
    sizes), ``label_shift`` (1.0), ``style_shift`` (1.0), ``test_fraction``
    (0.2), ``steering_scale`` (1.0, folders only).

    With a folder, sub-folders that hold a CSV are the natural silos
    (sub-folder ``j`` goes to silo ``j mod n_silos``); with fewer sub-folders
    than silos, or none, all images are pooled and split into contiguous
    chunks of the order of ``label_shift·z(y) + (1-label_shift)·ε``, ``z`` the
    standardised steering and ``ε ~ N(0, 1)`` (1: sorted by steering, 0: random).
    """

    name = "cdl"
    reference_step_ms = 19.2  # CPU ms of one local step, default options (see Task.profile)
    metric = "rmse"
    higher_is_better = False

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.variant = str(c.get("variant", "cdl"))
        if self.variant not in VARIANTS:
            raise unknown_name("cdl variant", self.variant, VARIANTS)
        size = str(c.get("size", "small"))
        if size not in SIZES:
            raise unknown_name("cdl size", size, SIZES)
        self.image_size = int(c.get("image_size", SIZES[size]["image_size"]))
        self.widths = tuple(int(w) for w in c.get("widths", SIZES[size]["widths"]))
        if len(self.widths) != 4 or min(self.widths) < 1 or self.image_size < 8:
            raise FedsimError(f"cdl needs 4 positive widths and image_size >= 8, got {self.widths}, "
                              f"{self.image_size}")
        self.beta = float(c.get("beta", 0.5))
        self.temperature = float(c.get("kl_temperature", 1.0))
        if not self.temperature > 0:
            raise FedsimError(f"cdl kl_temperature must be > 0, got {self.temperature}")
        self.optimizer = str(c.get("optimizer", "adam"))
        if self.optimizer not in ("adam", "sgd"):
            raise unknown_name("cdl optimizer", self.optimizer, ("adam", "sgd"))
        self.dataset = str(c.get("dataset", "udacity"))
        if self.dataset not in DATASET_TOTALS:
            raise unknown_name("cdl dataset", self.dataset, DATASET_TOTALS)
        for key, default in (("beta", 0.5), ("label_shift", 1.0), ("style_shift", 1.0),
                             ("dropout", 0.5)):
            v = float(c.get(key, default))
            if not 0.0 <= v <= 1.0:
                raise FedsimError(f"cdl {key} must be in [0, 1], got {v}")
        if not 0.0 < float(c.get("test_fraction", 0.2)) < 1.0:
            raise FedsimError(f"cdl test_fraction must be in (0, 1), got {c.get('test_fraction')}")

    def _cfg(self, key: str, default):
        return type(default)(self.config.get(key, default))

    # -- model ---------------------------------------------------------------
    def model(self) -> CDLNet:
        return CDLNet(self.image_size, self.widths, self._cfg("dropout", 0.5),
                      siamese=self.variant == "cdl")

    def exchanged_keys(self, model: nn.Module) -> list[str]:
        """The backbone's parameters and BN running statistics; never ``sub.*``.

        ``num_batches_tracked`` (an integer counter BN ignores with a fixed
        momentum) and ``sub_ready`` stay local too.
        """
        return [k for k, v in model.state_dict().items()
                if k.startswith("backbone.") and v.is_floating_point()]

    # -- data ----------------------------------------------------------------
    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        data = str(self.config.get("data", "synthetic"))
        if data == "synthetic":
            if "n_per_silo" in self.config:
                n = int(self.config["n_per_silo"])
            else:
                n = int(silo_sizes(n_silos, seed, DATASET_TOTALS[self.dataset],
                                   self._cfg("scale", 0.05))[silo])
            x, y = synthetic_silo(silo, n_silos, seed, n, self.image_size,
                                  self._cfg("label_shift", 1.0), self._cfg("style_shift", 1.0))
        else:
            x, y = self._folder_partition(data, silo, n_silos, seed)
        idx = np.random.default_rng([seed, silo]).permutation(len(y))
        n_test = min(len(y) - 1, max(1, int(round(len(y) * self._cfg("test_fraction", 0.2)))))
        te, tr = idx[:n_test], idx[n_test:]
        t = torch.from_numpy
        return SiloData(t(x[tr]), t(y[tr]), t(x[te]), t(y[te]))

    def _folder_partition(self, root: str, silo: int, n_silos: int, seed: int):
        groups = _folder_silos(root, self.image_size, self._cfg("steering_scale", 1.0))
        if len(groups) >= n_silos:
            mine = [g for j, g in enumerate(groups) if j % n_silos == silo]
            return np.concatenate([g[0] for g in mine]), np.concatenate([g[1] for g in mine])
        x = np.concatenate([g[0] for g in groups])
        y = np.concatenate([g[1] for g in groups])
        if len(y) < 2 * n_silos:
            raise FedsimError(f"data folder {root!r} has {len(y)} images; {n_silos} silos need >= {2 * n_silos}")
        lam = self._cfg("label_shift", 1.0)
        z = (y - y.mean()) / (y.std() + 1e-8)
        key = lam * z + (1 - lam) * np.random.default_rng([seed, 505]).standard_normal(len(y))
        part = np.array_split(np.argsort(key, kind="stable"), n_silos)[silo]
        return x[part], y[part]

    # -- learning ------------------------------------------------------------
    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        lr, wd = self._cfg("lr", 1e-3), self._cfg("weight_decay", 1e-5)
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd,
                               momentum=self._cfg("momentum", 0.0))

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        """``steps`` mini-batch steps of the CDL objective (or L1 for ``resnet8``).

        Returns the mean objective ``loss`` (= ``L``) and its parts ``l1``,
        ``cd_plus``, ``cd_minus``. A FedProx term, if any, acts on the backbone
        only (the exchanged part).
        """
        model.ensure_sub()
        opt = self._optimizer(model)
        bs = min(self._cfg("batch_size", 32), data.n_train)
        p = model.backbone.dropout
        backbone_anchor = None
        if prox_mu and anchor is not None:
            named = [(n, a) for (n, _), a in zip(model.named_parameters(), anchor) if n.startswith("backbone.")]
            backbone_anchor = [a for _, a in named]
        model.train()
        sums = {"loss": 0.0, "l1": 0.0, "cd_plus": 0.0, "cd_minus": 0.0}
        for _ in range(steps):
            idx = torch.randint(0, data.n_train, (bs,), generator=generator)
            x, y = to_float(data.x_train[idx]), data.y_train[idx]
            # One dropout mask drawn from the run's generator: deterministic, shared by both branches.
            mask = (torch.rand((bs, model.backbone.n_features), generator=generator) >= p).float() / (1 - p) \
                if p > 0 else None
            b = model.backbone(x, mask)
            if model.sub is not None:
                objective, parts = cdl_loss(b, model.sub(x, mask), y, self.beta, self.temperature)
            else:
                objective = (b - y).abs().mean()
                parts = {"l1": float(objective.detach()), "cd_plus": 0.0, "cd_minus": 0.0}
            total = objective
            if backbone_anchor is not None:
                total = total + prox_term(model.backbone, backbone_anchor, prox_mu)
            opt.zero_grad()
            total.backward()
            opt.step()
            sums["loss"] += float(objective.detach())
            for k, v in parts.items():
                sums[k] += v
        return {k: v / max(1, steps) for k, v in sums.items()}

    @torch.no_grad()
    def evaluate(self, model, data):
        """RMSE, MAE, MSE and the L1 ``loss`` of the backbone on the test split."""
        model.eval()
        preds = torch.cat([model.backbone(to_float(chunk)) for chunk in torch.split(data.x_test, 256)])
        err = (preds - data.y_test).double()
        mse = float((err**2).mean())
        mae = float(err.abs().mean())
        return {"loss": mae, "rmse": math.sqrt(mse), "mae": mae, "mse": mse, "n": float(len(err))}


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
