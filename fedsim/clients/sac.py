"""SAC: fine-grained classification with a Self-Assessment Classifier.

A backbone CNN gives a feature map ``F`` (``d_f`` channels on an ``m × n``
grid, ``f = m·n`` cells) and a visual feature ``V``; the first (coarse)
classifier on ``V`` gives probabilities ``P1`` and the top-``k`` candidate
classes. The self-assessment branch re-reads the image with those
candidates in mind:

1. **Top-k class embedding** -- each class name is split into at most 4
   word tokens; each token is mapped to a learned embedding row through a
   deterministic hash (``1 + crc32(token) mod (B - 1)``, row 0 = padding), and
   a GRU over the tokens gives one vector ``E_j ∈ R^{d_e}`` per class. No
   pretrained word vectors are used (nothing is downloaded): the hashed table
   is trained with the rest of the model, so names that share a word share
   its embedding row.
2. **Joint embedding** -- with layer-normalised cells ``F̂_i = LN(F_i)`` and
   names ``Ê_j = LN(E_j)``, an attention map over all ``f × k`` (cell, class)
   couples, ``M = softmax_{(i,j)}(F̂_i^T T_M Ê_j)`` (one softmax over the
   ``f·k`` couples of an image), and the low-rank bilinear joint
   representation

   ``J = P^T Σ_{i,j} M_ij (tanh(U^T F̂_i) ⊙ tanh(W^T Ê_j))``

   i.e. the couple tensor ``T_u ∈ R^{d_f × d_e × d_j}`` of the method is
   factorised with rank ``R``: ``T_u[a, b, c] = Σ_r U[a, r] W[b, r] P[r, c]``
   (with tanh on the two projections, as in low-rank bilinear pooling; the
   maps ``U``, ``W``, ``P`` also carry biases).
3. **Self assessment** -- the second (fine) classifier on ``J``. As in the
   released code of the method, ``J`` is mapped back to the visual width and
   added residually to ``V``: ``P2 = softmax(C2·ReLU(V + Q·J) + c2)``
   (``residual = true``, default). With ``residual = false`` the classifier
   sees ``J`` alone, ``P2 = softmax(C2·ReLU(J) + c2)``, as the method's text
   reads; in a pilot on the ``fine`` set (one silo, 320 steps) that variant's
   ``P2`` alone reached 59 % top-1 against 84 % for ``P1``, while the
   residual one tracked ``P1`` (79 % vs 77 %). The prediction is
   ``P = α·P1 + (1 − α)·P2``.
4. **Dropping** -- during training, the cells whose attention mass
   ``a_i = Σ_j M_ij`` reaches ``θ·max_i a_i`` are erased from the input
   (set to 0, the dataset mean after standardisation; the cell mask is
   upsampled to pixels) and the erased image is trained on as well.

Training loss per batch (``λ`` = ``sac_weight``, ``ω`` = ``drop_weight``):
``L(x) = CE(z1, y) + λ·CE(z2, y)`` and ``(1 − ω)·L(x) + ω·L(drop(x))``.
With ``sac = false`` the model is the backbone and its first classifier
only, trained with ``CE(z1, y)`` and predicting ``P = P1`` -- the baseline
for measuring what SAC adds. Evaluation reports top-1 ``accuracy`` (the
headline), ``topk_accuracy`` (the true class among the ``k`` most probable),
``accuracy_coarse`` (top-1 of ``P1`` alone), ``loss = mean(-log P[y])`` and
``n``.

Data (``dataset``):

- ``digits`` -- scikit-learn's bundled 8×8 handwritten digits (1,797 images,
  in the wheel), class names "zero" ... "nine".
- ``fine`` -- a seeded generator of visually near glyph classes on a 16×16
  canvas: four outline shapes (ring, box, diamond, triangle) × three small
  details (none, a dot in the upper or the lower half), e.g. "upper dot
  ring" vs "lower dot ring" vs "plain ring"; names share their tokens. Shapes
  are jittered (position, size, rotation, stroke, contrast), with pixel noise
  and a stray dot in some images, so the detail is what separates classes.
- ``cub`` -- a CUB-200-2011-style folder ``data_dir`` with ``images/``,
  ``images.txt`` (id, relative path), ``classes.txt`` (id, name, e.g.
  ``001.Black_footed_Albatross``), ``image_class_labels.txt`` (image id,
  class id) and optionally ``train_test_split.txt`` (image id, 1 = train).
  Images are read with Pillow and resized to ``image_size``².

Silos get a Dirichlet(``alpha``) label skew of the pooled images. Each silo
holds out ``test_fraction`` of its images for testing, or, where a CUB-style
folder has ``train_test_split.txt``, keeps its images' official split.

Config keys (defaults): ``dataset`` ("digits"), ``data_dir`` (cub only),
``sac`` (true), ``k`` (3), ``sac_alpha`` α (0.5), ``sac_weight`` λ (1.0),
``drop_weight`` ω (0.5), ``drop_threshold`` θ (0.5), ``embed_dim`` (16),
``name_dim`` d_e (32), ``joint_dim`` d_j (32), ``rank`` R (32),
``hash_buckets`` (256), ``width`` (16), ``feat_dim`` d_f (32), ``grid`` (4),
``visual_dim`` d_v (64), ``residual`` (true), ``alpha`` Dirichlet (0.5), ``optimizer`` ("sgd"
or "adam"), ``lr`` (0.05), ``momentum`` (SGD: 0.9; the optimiser is new
each round), ``batch_size`` (32), ``test_fraction`` (0.2), ``image_size``
(cub: 32), ``grayscale`` (cub: false), ``n_per_class`` (fine: 150),
``data_seed`` (fine: 0). ``alpha`` is the Dirichlet skew (``fedsim run
--alpha``) as for every task; the probability mix is ``sac_alpha``. The
defaults are the small CPU version: ``k = 3`` of 10–12 classes (the method
uses ``k = 10`` of 120–200 classes, GloVe-300 words and a 1024-d GRU),
``α = 0.5`` as in the method's write-up, ``λ = 1``. Every parameter is
exchanged (backbone, both classifiers, name encoder, joint embedding).

Examples
--------
>>> names = [c for c in FINE_CLASSES if c.endswith("ring")]
>>> names
['plain ring', 'upper dot ring', 'lower dot ring']
>>> name_tokens("001.Black_footed_Albatross")
['black', 'footed', 'albatross']
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as tnf

from fedsim.clients.base import SiloData, Task, dirichlet_partition, prox_term
from fedsim.errors import FedsimError, unknown_name

DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FINE_SHAPES = ("ring", "box", "diamond", "triangle")
FINE_DETAILS = ("plain", "upper dot", "lower dot")
FINE_CLASSES = tuple(f"{d} {s}" for s in FINE_SHAPES for d in FINE_DETAILS)
DATASETS = ("digits", "fine", "cub")
MAX_TOKENS = 4  # class names are trimmed / zero-padded to 4 words

DEFAULTS: dict = {
    "dataset": "digits", "data_dir": "", "sac": True, "k": 3, "sac_alpha": 0.5, "sac_weight": 1.0,
    "drop_weight": 0.5, "drop_threshold": 0.5, "embed_dim": 16, "name_dim": 32, "joint_dim": 32,
    "rank": 32, "hash_buckets": 256, "width": 16, "feat_dim": 32, "grid": 4, "visual_dim": 64,
    "residual": True, "alpha": 0.5, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32,
    "test_fraction": 0.2, "image_size": 32, "grayscale": False, "n_per_class": 150, "data_seed": 0,
}


# ----------------------------------------------------------------- class names
def name_tokens(name: str) -> list[str]:
    """Lower-case word tokens of a class name (a leading ``NNN.`` index dropped).

    Examples
    --------
    >>> name_tokens("upper dot ring")
    ['upper', 'dot', 'ring']
    """
    name = re.sub(r"^\s*\d+\.", "", name)
    return [t for t in re.split(r"[^0-9a-z]+", name.lower()) if t]


def hash_token(token: str, buckets: int) -> int:
    """Row of ``token`` in a hashed embedding table: ``1 + crc32(token) mod (buckets - 1)``.

    Row 0 is reserved for padding. crc32 (unlike Python's ``hash``) is the same
    in every process, so every silo maps a word to the same row.

    Examples
    --------
    >>> hash_token("dot", 256) == hash_token("dot", 256) and 1 <= hash_token("dot", 256) < 256
    True
    """
    return 1 + zlib.crc32(token.encode("utf-8")) % (buckets - 1)


def encode_names(names: list[str] | tuple[str, ...], buckets: int,
                 max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows ``(N, max_tokens)`` (0-padded) and token counts ``(N,)`` of class names.

    Examples
    --------
    >>> ids, lengths = encode_names(["plain ring", "ring"], 256)
    >>> ids.shape, lengths.tolist(), bool(ids[0, 1] == ids[1, 0])
    (torch.Size([2, 4]), [2, 1], True)
    """
    ids = torch.zeros(len(names), max_tokens, dtype=torch.long)
    lengths = torch.ones(len(names), dtype=torch.long)
    for c, name in enumerate(names):
        toks = name_tokens(name)[:max_tokens] or ["<empty>"]
        ids[c, :len(toks)] = torch.tensor([hash_token(t, buckets) for t in toks])
        lengths[c] = len(toks)
    return ids, lengths


# ----------------------------------------------------------------- model
@dataclass
class SACOutput:
    """Forward pass: coarse logits ``z1 (B, N)``; with SAC also fine logits
    ``z2 (B, N)``, attention ``M (B, f, k)``, candidate classes ``topk (B, k)``
    and the class embeddings ``E (N, d_e)`` used."""

    logits1: torch.Tensor
    logits2: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    topk: torch.Tensor | None = None
    class_embeddings: torch.Tensor | None = None


def couple_attention(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over all (cell, class) couples of each sample.

    ``scores`` is ``(B, f, k)``; the result sums to 1 over its last two axes.

    Examples
    --------
    >>> m = couple_attention(torch.zeros(1, 2, 2))
    >>> m.tolist()
    [[[0.25, 0.25], [0.25, 0.25]]]
    """
    b, f, k = scores.shape
    return torch.softmax(scores.reshape(b, f * k), dim=1).reshape(b, f, k)


def mix_probabilities(logits1: torch.Tensor, logits2: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``P = α·softmax(z1) + (1 − α)·softmax(z2)``; ``softmax(z1)`` without a second classifier."""
    p1 = torch.softmax(logits1, dim=-1)
    if logits2 is None:
        return p1
    return alpha * p1 + (1.0 - alpha) * torch.softmax(logits2, dim=-1)


def drop_most_attended(x: torch.Tensor, attention: torch.Tensor, grid: tuple[int, int],
                       threshold: float) -> torch.Tensor:
    """Erase the most-attended region of each image.

    Cell mass ``a_i = Σ_j M_ij``; cells with ``a_i ≥ θ·max_i a_i`` are dropped,
    the ``m × n`` cell mask is upsampled (nearest) to the image and the image
    is multiplied by ``1 − mask``. ``θ = 1`` drops only the top cell(s).

    Examples
    --------
    >>> x = torch.ones(1, 1, 2, 2)
    >>> m = torch.tensor([[[0.7], [0.1], [0.1], [0.1]]])
    >>> drop_most_attended(x, m, (2, 2), 0.5)[0, 0].tolist()
    [[0.0, 1.0], [1.0, 1.0]]
    """
    a = attention.sum(-1)  # (B, f)
    dropped = (a >= threshold * a.max(dim=1, keepdim=True).values).to(x.dtype)
    mask = dropped.reshape(-1, 1, *grid)
    mask = tnf.interpolate(mask, size=tuple(x.shape[-2:]), mode="nearest")
    return x * (1.0 - mask)


class GridPool(nn.Module):
    """Max-pool to a ``size × size`` map: a plain max-pool when the input divides
    evenly (much faster on CPU), else adaptive max-pooling (same result then)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h == w == self.size:
            return x
        if h % self.size == 0 and w % self.size == 0:
            return tnf.max_pool2d(x, (h // self.size, w // self.size))
        return tnf.adaptive_max_pool2d(x, self.size)


class SACNet(nn.Module):
    """Backbone CNN + first classifier, optionally + the self-assessment branch.

    Backbone: ``conv3×3(c→width) → ReLU → max-pool to 2grid×2grid →
    conv3×3(width→d_f) → ReLU → max-pool to grid×grid`` gives ``F``
    (so any input size works); ``V = ReLU(Linear(vec F))``;
    ``z1 = Linear(V)``. The SAC branch (``sac=True``) is described in the
    module docstring.
    """

    def __init__(self, class_names: list[str] | tuple[str, ...], in_channels: int = 1, *, sac: bool = True,
                 k: int = 3, width: int = 16, feat_dim: int = 32, grid: int = 4, visual_dim: int = 64,
                 embed_dim: int = 16, name_dim: int = 32, joint_dim: int = 32, rank: int = 32,
                 hash_buckets: int = 256, residual: bool = True) -> None:
        super().__init__()
        n = len(class_names)
        self.n_classes, self.k, self.grid, self.sac = n, min(k, n), (grid, grid), sac
        self.residual = residual
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            GridPool(2 * grid),  # the second conv runs on a (2·grid)² map whatever the input
            nn.Conv2d(width, feat_dim, 3, padding=1), nn.ReLU(),
            GridPool(grid),
        )
        self.visual = nn.Sequential(nn.Linear(feat_dim * grid * grid, visual_dim), nn.ReLU())
        self.classifier1 = nn.Linear(visual_dim, n)
        if not sac:
            return
        ids, lengths = encode_names(class_names, hash_buckets)
        # fixed by the class names: not parameters, never exchanged
        self.register_buffer("name_ids", ids, persistent=False)
        self.register_buffer("name_lengths", lengths, persistent=False)
        self.token_embedding = nn.Embedding(hash_buckets, embed_dim, padding_idx=0)
        self.name_gru = nn.GRU(embed_dim, name_dim, batch_first=True)
        self.norm_f = nn.LayerNorm(feat_dim)  # puts both modalities on one scale: without it
        self.norm_e = nn.LayerNorm(name_dim)  # J starts ~0 and the fine classifier learns very slowly
        self.att = nn.Linear(feat_dim, name_dim, bias=False)  # T_M
        self.proj_f = nn.Linear(feat_dim, rank)  # U
        self.proj_e = nn.Linear(name_dim, rank)  # W
        self.proj_j = nn.Linear(rank, joint_dim)  # P
        if residual:
            self.joint_to_visual = nn.Linear(joint_dim, visual_dim)  # Q
        self.classifier2 = nn.Linear(visual_dim if residual else joint_dim, n)

    def class_embeddings(self) -> torch.Tensor:
        """``E ∈ R^{N × d_e}``: the GRU's hidden state after each name's last token."""
        out, _ = self.name_gru(self.token_embedding(self.name_ids))
        last = (self.name_lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, last).squeeze(1)

    def joint(self, feat: torch.Tensor, names: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention ``M (B, f, k)`` and joint representation ``J (B, d_j)``.

        ``feat`` is ``F`` flattened to ``(B, f, d_f)``, ``names`` is ``E_k (B, k, d_e)``;
        both are layer-normalised (``F̂_i = LN(F_i)``, ``Ê_j = LN(E_j)``) before the
        attention ``M = softmax(F̂_i^T T_M Ê_j)`` and ``J = P^T Σ M_ij (tanh(U^T F̂_i) ⊙ tanh(W^T Ê_j))``.
        """
        feat, names = self.norm_f(feat), self.norm_e(names)
        scores = torch.einsum("bie,bje->bij", self.att(feat), names)  # F_i^T T_M E_j
        m = couple_attention(scores)
        pooled = torch.einsum("bij,bir,bjr->br", m, torch.tanh(self.proj_f(feat)),
                              torch.tanh(self.proj_e(names)))
        return m, self.proj_j(pooled)

    def forward(self, x: torch.Tensor, class_embeddings: torch.Tensor | None = None) -> SACOutput:
        """``class_embeddings`` reuses ``E`` of an earlier pass in the same step."""
        fmap = self.backbone(x)  # (B, d_f, m, n)
        v = self.visual(fmap.flatten(1))
        z1 = self.classifier1(v)
        if not self.sac:
            return SACOutput(z1)
        emb = self.class_embeddings() if class_embeddings is None else class_embeddings
        topk = z1.detach().topk(self.k, dim=1).indices  # the ambiguity classes (not differentiated)
        m, j = self.joint(fmap.flatten(2).transpose(1, 2), emb[topk])  # E_k: (B, k, d_e)
        z2 = self.classifier2(torch.relu(v + self.joint_to_visual(j) if self.residual else j))
        return SACOutput(z1, z2, m, topk, emb)


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


# ----------------------------------------------------------------- task
class SACTask(Task):
    """Fine-grained classification with (``sac=true``) or without the SAC branch.

    See the module docstring for the model, the losses, the data and the
    config keys. Every parameter (backbone, both classifiers, name encoder,
    joint embedding) is exchanged.
    """

    name = "sac"
    reference_step_ms = 9.8  # CPU ms of one local step, default options (see Task.profile)
    metric = "accuracy"

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        unknown = sorted(set(self.config) - set(DEFAULTS))
        if unknown:
            raise FedsimError(f"unknown sac option(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        for key in self.config:  # fail early on a value of the wrong type
            self._cfg(key)
        if self._cfg("dataset") not in DATASETS:
            raise unknown_name("sac dataset", self._cfg("dataset"), DATASETS)
        if self._cfg("dataset") == "cub" and not self._cfg("data_dir"):
            raise FedsimError("sac dataset 'cub' needs data_dir=PATH (a CUB-style folder)")
        if not 0.0 <= self._cfg("sac_alpha") <= 1.0:
            raise FedsimError(f"sac_alpha must be in [0, 1], got {self._cfg('sac_alpha')}")
        if not 0.0 <= self._cfg("drop_weight") <= 1.0:
            raise FedsimError(f"drop_weight must be in [0, 1], got {self._cfg('drop_weight')}")
        if self._cfg("optimizer") not in ("sgd", "adam"):
            raise unknown_name("sac optimizer", self._cfg("optimizer"), ("sgd", "adam"))
        if self._cfg("k") < 1:
            raise FedsimError(f"k must be >= 1, got {self._cfg('k')}")
        self._pool: Pool | None = None

    def _cfg(self, key: str):
        default = DEFAULTS[key]
        value = self.config.get(key, default)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text not in ("1", "true", "yes", "0", "false", "no"):
                raise FedsimError(f"sac option {key} expects true or false, got {value!r}")
            return text in ("1", "true", "yes")
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise FedsimError(f"sac option {key} expects a {type(default).__name__}, got {value!r}") from None

    # -- data ----------------------------------------------------------------
    def classes(self) -> tuple[tuple[str, ...], int]:
        """Class names and image channels of the configured dataset (no image read)."""
        ds = self._cfg("dataset")
        if ds == "digits":
            return DIGIT_CLASSES, 1
        if ds == "fine":
            return FINE_CLASSES, 1
        return cub_classes(self._cfg("data_dir")), 1 if self._cfg("grayscale") else 3

    def pool(self) -> Pool:
        """The whole dataset, built once per task object; each channel standardised
        to mean 0, std 1 over the pooled images."""
        if self._pool is None:
            ds = self._cfg("dataset")
            if ds == "digits":
                from sklearn.datasets import load_digits

                d = load_digits()
                self._pool = Pool((d.images / 16.0).astype(np.float32)[:, None],
                                  d.target.astype(np.int64), DIGIT_CLASSES)
            elif ds == "fine":
                self._pool = make_fine(self._cfg("n_per_class"), seed=self._cfg("data_seed"))
            else:
                self._pool = load_cub(self._cfg("data_dir"), self._cfg("image_size"), self._cfg("grayscale"))
            # per-channel standardisation with the pooled dataset's constants: unit-scale
            # inputs make the first rounds learn much faster
            x = self._pool.x
            mean = x.mean(axis=(0, 2, 3), keepdims=True)
            std = x.std(axis=(0, 2, 3), keepdims=True) + 1e-6
            self._pool.x = ((x - mean) / std).astype(np.float32)
        return self._pool

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        pool = self.pool()
        parts = dirichlet_partition(pool.y, n_silos, self._cfg("alpha"), seed)
        idx = np.random.default_rng([seed, silo]).permutation(parts[silo])
        if pool.is_train is not None:
            tr, te = idx[pool.is_train[idx]], idx[~pool.is_train[idx]]
            if len(tr) == 0 or len(te) == 0:
                raise FedsimError(f"silo {silo} got no {'training' if len(tr) == 0 else 'test'} images "
                                  "from train_test_split.txt; use fewer silos or a larger alpha")
        else:
            n_test = max(1, int(round(len(idx) * self._cfg("test_fraction"))))
            te, tr = idx[:n_test], idx[n_test:]
        t = torch.from_numpy
        return SiloData(t(pool.x[tr]), t(pool.y[tr]), t(pool.x[te]), t(pool.y[te]))

    # -- model ---------------------------------------------------------------
    def model(self) -> SACNet:
        names, channels = self.classes()
        keys = ("k", "width", "feat_dim", "grid", "visual_dim", "embed_dim", "name_dim", "joint_dim",
                "rank", "hash_buckets", "residual")
        return SACNet(names, channels, sac=self._cfg("sac"), **{key: self._cfg(key) for key in keys})

    # -- learning ------------------------------------------------------------
    def loss(self, out: SACOutput, y: torch.Tensor) -> torch.Tensor:
        """``CE(z1, y) + λ·CE(z2, y)`` (``CE(z1, y)`` without the SAC branch)."""
        loss = tnf.cross_entropy(out.logits1, y)
        if out.logits2 is not None:
            loss = loss + self._cfg("sac_weight") * tnf.cross_entropy(out.logits2, y)
        return loss

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        if self._cfg("optimizer") == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=self._cfg("lr"))
        else:
            opt = torch.optim.SGD(model.parameters(), lr=self._cfg("lr"), momentum=self._cfg("momentum"))
        bs = min(self._cfg("batch_size"), data.n_train)
        omega, theta = self._cfg("drop_weight"), self._cfg("drop_threshold")
        model.train()
        losses = []
        for _ in range(steps):
            idx = torch.randint(0, data.n_train, (bs,), generator=generator)
            x, y = data.x_train[idx], data.y_train[idx]
            out = model(x)
            loss = self.loss(out, y)
            if out.attention is not None and omega > 0:
                erased = drop_most_attended(x, out.attention.detach(), model.grid, theta)
                loss = (1 - omega) * loss + omega * self.loss(model(erased, out.class_embeddings), y)
            opt.zero_grad()
            (loss + prox_term(model, anchor, prox_mu)).backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"loss": float(np.mean(losses))}

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        out = model(data.x_test)
        p = mix_probabilities(out.logits1, out.logits2, self._cfg("sac_alpha"))
        y = data.y_test
        k = min(self._cfg("k"), p.shape[1])
        nll = -torch.log(p.gather(1, y[:, None]).clamp_min(1e-12)).mean()
        return {"loss": float(nll),
                "accuracy": float((p.argmax(1) == y).float().mean()),
                "topk_accuracy": float(topk_hits(p, y, k).float().mean()),
                "accuracy_coarse": float((out.logits1.argmax(1) == y).float().mean()),
                "n": float(len(y))}


def topk_hits(p: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """1 where the true class is among the ``k`` most probable, per sample."""
    return (p.topk(k, dim=1).indices == y[:, None]).any(1)

