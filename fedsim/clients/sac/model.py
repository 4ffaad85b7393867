"""The SAC model: backbone, class-name encoder, coupled attention and the two classifiers."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as tnf


MAX_TOKENS = 4  # class names are trimmed / zero-padded to 4 words


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
