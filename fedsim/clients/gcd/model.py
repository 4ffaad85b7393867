"""The GCD model: the group diffusion denoiser, the contrastive encoder, the losses and DDIM sampling."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedsim.clients.gcd.data import N_FEAT, N_MAX, N_MUSIC
from fedsim.clients.gcd.options import GUIDANCE_MODES


# ----------------------------------------------------------------- schedule
def cosine_alpha_bar(steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative signal levels ``ᾱ_0 .. ᾱ_M`` of the cosine schedule (Nichol & Dhariwal 2021).

    ``f(m) = cos²(((m / M) + s) / (1 + s) · π / 2)``,
    ``β_m = min(1 - f(m) / f(m - 1), max_beta)``, ``ᾱ_m = Π_{k<=m} (1 - β_k)``, ``ᾱ_0 = 1``.

    Examples
    --------
    >>> [round(v, 6) for v in cosine_alpha_bar(2, s=0.0).tolist()]  # f = 1, 1/2, 0; β_2 clipped to 0.999
    [1.0, 0.5, 0.0005]
    """
    m = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((m / steps + s) / (1 + s) * math.pi / 2) ** 2
    f = f / f[0]
    betas = torch.clamp(1 - f[1:] / f[:-1], max=max_beta)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


# ----------------------------------------------------------------- model
def local_mask(n: int, t: int) -> torch.Tensor:
    """Additive attention mask ``m_local`` over ``n·t`` dancer-major tokens.

    Token ``i·t + k`` is frame ``k`` of dancer ``i``; entry ``(a, b)`` is 0
    when tokens ``a`` and ``b`` belong to the same dancer and ``-inf``
    otherwise, so a dancer attends only to its own motion.

    Examples
    --------
    >>> local_mask(2, 2)
    tensor([[0., 0., -inf, -inf],
            [0., 0., -inf, -inf],
            [-inf, -inf, 0., 0.],
            [-inf, -inf, 0., 0.]])
    """
    dancer = torch.arange(n).repeat_interleave(t)
    mask = torch.zeros(n * t, n * t)
    mask[dancer[:, None] != dancer[None]] = float("-inf")
    return mask


def global_mask(n: int, t: int) -> torch.Tensor:
    """Additive attention mask ``m_global``: all zeros (every token sees every token)."""
    return torch.zeros(n * t, n * t)


def sinusoidal(pos: torch.Tensor, d: int) -> torch.Tensor:
    """Sinusoidal embedding ``(L,) -> (L, d)``: ``[sin(p ω_k), cos(p ω_k)]``, ``ω_k = 10000^{-2k/d}``."""
    k = torch.arange(d // 2, dtype=torch.float32)
    ang = pos.float()[:, None] * torch.exp(-math.log(10000.0) * 2 * k / d)[None]
    return torch.cat([torch.sin(ang), torch.cos(ang)], 1)


class GroupModulation(nn.Module):
    """``h̃ = S(w) ⊙ (h - μ(h)) / σ(h) + b(w)`` with ``S(w) = 1 + W_S w``, ``b(w) = W_b w``.

    ``μ`` and ``σ`` are per channel over the whole group sequence (all
    dancers' frames) of one sample. ``W_S``, ``W_b`` start at zero.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale, self.shift = nn.Linear(d, d), nn.Linear(d, d)
        for lin in (self.scale, self.shift):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        mu = h.mean(1, keepdim=True)
        sd = h.var(1, unbiased=False, keepdim=True).add(1e-5).sqrt()
        return (1 + self.scale(w))[:, None] * (h - mu) / sd + self.shift(w)[:, None]


def _ff(d: int, ff: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))


class MusicMotionLayer(nn.Module):
    """Masked (local) self-attention, cross-attention to the music context, feed-forward (pre-norm)."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = _ff(d, ff)

    def forward(self, h: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.ln1(h)
        h = h + self.self_attn(q, q, q, attn_mask=mask, need_weights=False)[0]
        h = h + self.cross_attn(self.ln2(h), ctx, ctx, need_weights=False)[0]
        return h + self.ff(self.ln3(h))


class GroupGlobalLayer(nn.Module):
    """Global-mask self-attention whose output is group-modulated by ``w``, then feed-forward."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mod = GroupModulation(d)
        self.ff = _ff(d, ff)

    def forward(self, h: torch.Tensor, w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.ln1(h)
        h = h + self.mod(self.attn(q, q, q, attn_mask=mask, need_weights=False)[0], w)
        return h + self.ff(self.ln2(h))


class GCDDenoiser(nn.Module):
    """Group diffusion denoising network ``x̂_0 = G(x_m, m, c)``."""

    def __init__(self, n_feat: int = N_FEAT, n_music: int = N_MUSIC, d: int = 64, heads: int = 4,
                 ff: int = 128, layers: int = 2, n_max: int = N_MAX) -> None:
        super().__init__()
        self.d = d
        self.music_in = nn.Linear(n_music, d)
        self.music_enc = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True,
                                                    norm_first=True)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.group_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.count_emb = nn.Embedding(n_max + 1, d)
        self.motion_in = nn.Linear(n_feat, d)
        self.local_layers = nn.ModuleList(MusicMotionLayer(d, heads, ff) for _ in range(layers))
        self.global_layers = nn.ModuleList(GroupGlobalLayer(d, heads, ff) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_feat))

    def condition(self, music: torch.Tensor, n: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoded music ``c (B, T, d)`` and group embedding ``w = MLP(z + mean_t c_t) + e_n``."""
        t = music.shape[1]
        c = self.music_enc(self.music_in(music) + sinusoidal(torch.arange(t), self.d)[None])
        w = self.group_mlp(z + c.mean(1)) + self.count_emb.weight[n][None]
        return c, w

    def forward(self, x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n, t, f = x.shape
        tau = self.time_mlp(sinusoidal(m, self.d))  # (B, d)
        h = self.motion_in(x) + sinusoidal(torch.arange(t), self.d)[None, None] + tau[:, None, None]
        h = h.reshape(b, n * t, self.d)
        ctx = torch.cat([c, tau[:, None]], 1)  # music tokens + diffusion-time token
        lm, gmask = local_mask(n, t), global_mask(n, t)
        for loc, glo in zip(self.local_layers, self.global_layers):
            h = glo(loc(h, ctx, lm), w, gmask)
        return self.out(h).reshape(b, n, t, f)


class ContrastiveEncoder(nn.Module):
    """Score ``s(x, m, w) = log f(x, w)`` of a (noisy) group for the group embedding ``w``.

    Tokens ``= Linear([x_t, x_t - x_{t-1}]) + pos(t) + MLP(sin(m)) + Linear(w)``
    (velocity as an input makes tempo visible to one layer), one local-mask
    and one global-mask transformer layer, per-dancer means ``e_i`` over
    frames, then ``s = MLP([mean_i e_i, std_i e_i])``. The spread across
    dancers is the pooled statistic that separates a coherent group from one
    with foreign dancers.
    """

    def __init__(self, n_feat: int = N_FEAT, d_w: int = 64, d: int = 32, heads: int = 2, ff: int = 64) -> None:
        super().__init__()
        self.d = d
        self.inp, self.w_in = nn.Linear(2 * n_feat, d), nn.Linear(d_w, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.local = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.glob = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        self.out = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 1))

    def forward(self, x: torch.Tensor, m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, n, t, _ = x.shape
        vel = torch.cat([torch.zeros_like(x[:, :, :1]), x.diff(dim=2)], 2)
        h = (self.inp(torch.cat([x, vel], -1)) + sinusoidal(torch.arange(t), self.d)[None, None]
             + (self.time_mlp(sinusoidal(m, self.d)) + self.w_in(w))[:, None, None])
        h = h.reshape(b, n * t, self.d)
        h = self.glob(self.local(h, src_mask=local_mask(n, t)), src_mask=global_mask(n, t))
        e = h.reshape(b, n, t, self.d).mean(2)
        pooled = torch.cat([e.mean(1), e.var(1, unbiased=False).add(1e-6).sqrt()], -1)
        return self.out(pooled).squeeze(-1)


class GCDModel(nn.Module):
    """Denoiser + contrastive encoder (both are exchanged in federated rounds)."""

    def __init__(self, d: int = 64, layers: int = 2, heads: int = 4, enc_d: int = 32) -> None:
        super().__init__()
        self.denoiser = GCDDenoiser(d=d, heads=heads, ff=2 * d, layers=layers)
        self.encoder = ContrastiveEncoder(d_w=d, d=enc_d, heads=2, ff=2 * enc_d)


# ----------------------------------------------------------------- losses
def q_sample(x0: torch.Tensor, m: torch.Tensor, ab: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion ``x_m = √ᾱ_m x_0 + √(1 - ᾱ_m) ε``."""
    a = ab[m].float().view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def posterior_step(x_m: torch.Tensor, x0_hat: torch.Tensor, m: torch.Tensor, ab: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """A sample of ``q(x_{m-1} | x_m, x̂_0)`` (DDPM posterior).

    ``μ̃ = √ᾱ_{m-1} β_m / (1 - ᾱ_m) x̂_0 + √α_m (1 - ᾱ_{m-1}) / (1 - ᾱ_m) x_m``,
    ``β̃ = (1 - ᾱ_{m-1}) / (1 - ᾱ_m) β_m``, with ``α_m = ᾱ_m / ᾱ_{m-1}``, ``β_m = 1 - α_m``.
    """
    shape = (-1, *([1] * (x_m.dim() - 1)))
    a, a_prev = ab[m].float().view(shape), ab[m - 1].float().view(shape)
    alpha = a / a_prev
    beta = 1 - alpha
    mean = a_prev.sqrt() * beta / (1 - a) * x0_hat + alpha.sqrt() * (1 - a_prev) / (1 - a) * x_m
    var = (1 - a_prev) / (1 - a) * beta
    return mean + var.sqrt() * noise


def make_negatives(x0: torch.Tensor, k: int, generator: torch.Generator, p_replace: float = 0.5,
                   inter_fraction: float = 0.5, motion_fraction: float = 0.0, root_dims: int = 2,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` negative groups per group by taking dancers from other groups of the batch.

    The first ``round(k · inter_fraction)`` negatives of a group are a whole
    other group ("inter"); the others replace each dancer, with probability
    ``p_replace`` (at least one dancer always), by a random dancer of a random
    other group ("intra"). The last ``round(k_intra · motion_fraction)`` intra
    negatives swap only the motion: a replaced dancer keeps its own root
    trajectory (the first ``root_dims`` channels), so the negative differs
    from the real group in how the dancers move, not where they stand.
    Returns ``neg (B, k, N, T, F)`` and ``src (B, k, N)``, the batch index
    each negative dancer's motion comes from. Needs ``B >= 2``.
    """
    b, n = x0.shape[:2]
    if b < 2:
        raise ValueError("negatives need at least two groups in a batch")
    n_inter = int(round(k * inter_fraction))
    n_motion = int(round((k - n_inter) * motion_fraction))
    other = (torch.arange(b)[:, None, None] + torch.randint(1, b, (b, k, n), generator=generator)) % b
    swap = torch.rand(b, k, n, generator=generator) < p_replace
    force = torch.randint(0, n, (b, k), generator=generator)
    swap[torch.arange(b)[:, None], torch.arange(k)[None], force] = True
    swap[:, :n_inter] = True
    other[:, :n_inter] = other[:, :n_inter, :1]  # one other group for all dancers
    dancer = torch.randint(0, n, (b, k, n), generator=generator)
    dancer[:, :n_inter] = torch.arange(n)
    own = torch.arange(b)[:, None, None].expand(b, k, n)
    src = torch.where(swap, other, own)
    idx = torch.where(swap, dancer, torch.arange(n).expand(b, k, n))
    neg = x0[src, idx]
    if n_motion:
        neg[:, k - n_motion:, :, :, :root_dims] = x0[:, None, :, :, :root_dims]
    return neg, src


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """``L_nce = -mean log( e^{s_0} / Σ_j e^{s_j} )`` with the positive in column 0 of ``(B, 1+K)`` logits."""
    return nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def diffusion_losses(model: GCDModel, x0: torch.Tensor, music: torch.Tensor, ab: torch.Tensor,
                     generator: torch.Generator, negatives: int = 3, m: torch.Tensor | None = None,
                     inter_fraction: float = 0.0, motion_fraction: float = 0.5) -> dict[str, torch.Tensor]:
    """The training terms on a batch of normalised groups ``x0 (B, N, T, F)``.

    ``simple = mean ||x_0 - G(x_m, m, c)||²``, ``vel = mean ||Δ_t x_0 - Δ_t x̂_0||²``
    and (``negatives > 0``, ``B >= 2``) ``nce``: the positive and every
    negative group ``x_0^j`` (:func:`make_negatives` with ``inter_fraction``
    and ``motion_fraction``) are noised to step ``m``,
    denoised by ``G`` with the same music and ``w``, stepped to ``m - 1`` with
    :func:`posterior_step`, and scored by the encoder at ``m - 1``;
    ``nce = InfoNCE`` of those scores (positive first). ``nce`` trains the
    encoder and, through the positive's denoised step and ``w``, the
    denoiser (the negatives' denoising pass is gradient-free to keep a step
    cheap). Also returns ``acc``: how often the positive scores highest.
    """
    b, n = x0.shape[:2]
    steps = len(ab) - 1
    if m is None:
        m = torch.randint(1, steps + 1, (b,), generator=generator)
    den = model.denoiser
    z = torch.randn(b, den.d, generator=generator)
    c, w = den.condition(music, n, z)
    x_m = q_sample(x0, m, ab, torch.randn(x0.shape, generator=generator))
    pred = den(x_m, m, c, w)
    out = {"simple": ((pred - x0) ** 2).mean(),
           "vel": ((pred.diff(dim=2) - x0.diff(dim=2)) ** 2).mean()}
    k = negatives if b >= 2 else 0
    if not k:
        out["nce"] = out["acc"] = torch.zeros(())
        return out
    neg, _ = make_negatives(x0, k, generator, inter_fraction=inter_fraction, motion_fraction=motion_fraction)
    neg = neg.reshape(b * k, *x0.shape[1:])
    mk = m.repeat_interleave(k)
    neg_m = q_sample(neg, mk, ab, torch.randn(neg.shape, generator=generator))
    with torch.no_grad():  # the negatives' denoising pass carries no gradient (saves 3/4 of the backward)
        neg_hat = den(neg_m, mk, c.repeat_interleave(k, 0), w.repeat_interleave(k, 0))
    x_prev = torch.cat([posterior_step(x_m, pred, m, ab, torch.randn(x0.shape, generator=generator))[:, None],
                        posterior_step(neg_m, neg_hat, mk, ab,
                                       torch.randn(neg.shape, generator=generator)).reshape(b, k, *x0.shape[1:])],
                       1).reshape(b * (1 + k), *x0.shape[1:])
    mm = m.repeat_interleave(1 + k)
    logits = model.encoder(x_prev, mm - 1, w.repeat_interleave(1 + k, 0)).reshape(b, 1 + k)
    out["nce"] = info_nce(logits)
    out["acc"] = (logits.argmax(1) == 0).float().mean()
    return out


# ----------------------------------------------------------------- sampling
def guidance_gradient(model: GCDModel, x: torch.Tensor, m: int, w: torch.Tensor) -> torch.Tensor:
    """``∇_{x_m} log f(x_m, w)`` of the contrastive encoder at step ``m``."""
    mt = torch.full((x.shape[0],), m, dtype=torch.long)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        return torch.autograd.grad(model.encoder(xg, mt, w.detach()).sum(), xg)[0]


def ddim_parts(model: GCDModel, x: torch.Tensor, m: int, m_next: int, c: torch.Tensor, w: torch.Tensor,
               ab: torch.Tensor, gamma: float = 0.0, scale: float = 1.0, mode: str = "clean",
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pieces of one guided DDIM jump ``m -> m'``: ``(x̂_0, ε̂, shift)``.

    ``x̂_0 = G(x_m, m, c)``, ``ε̂ = (x_m - √ᾱ_m x̂_0) / √(1 - ᾱ_m)``; the jump is
    ``x_{m'} = √ᾱ_{m'} x̂_0 + √(1 - ᾱ_{m'}) ε̂ + shift``. Contrastive guidance
    moves the step's mean along the encoder's score ``log f = s``:

    ``mode="noisy"`` (the write-up's formula)
        ``shift = γ · scale · Σ · ∇_{x_m} s(x_m, m, w)`` with
        ``Σ = (1 - ᾱ_{m'}) / (1 - ᾱ_m) · (1 - ᾱ_m / ᾱ_{m'})``, the variance of
        the DDPM reverse step over the same jump (``β̃_m`` for ``m' = m - 1``,
        0 for ``m' = 0``).
    ``mode="clean"``
        the gradient is taken at the clean estimate, where the encoder is
        most reliable, and applied to it:
        ``x̂_0 ← x̂_0 + γ · scale · (1 - ᾱ_m) · ∇_{x̂_0} s(x̂_0, 0, w)`` (``ε̂``
        kept), i.e. the mean moves by ``√ᾱ_{m'} γ scale (1 - ᾱ_m) ∇ s``;
        returned in ``x̂_0`` with ``shift = 0``.

    ``γ > 0`` moves towards groups the encoder finds consistent with ``w``,
    ``γ < 0`` away from them (diversity).
    """
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {GUIDANCE_MODES}, got {mode!r}")
    mt = torch.full((x.shape[0],), m, dtype=torch.long)
    a, a_next = float(ab[m]), float(ab[m_next])
    with torch.no_grad():
        x0_hat = model.denoiser(x, mt, c, w)
    eps = (x - math.sqrt(a) * x0_hat) / math.sqrt(1 - a)
    shift = torch.zeros_like(x)
    if gamma and mode == "noisy":
        var = (1 - a_next) / (1 - a) * (1 - a / a_next)
        shift = gamma * scale * var * guidance_gradient(model, x, m, w)
    elif gamma:
        x0_hat = x0_hat + gamma * scale * (1 - a) * guidance_gradient(model, x0_hat, 0, w)
    return x0_hat, eps, shift


def _timesteps(total: int, steps: int) -> list[int]:
    ts = np.unique(np.round(np.linspace(total, 0, steps + 1)).astype(int))[::-1]
    return [int(v) for v in ts]


def ddim_sample(model: GCDModel, music: torch.Tensor, n: int, ab: torch.Tensor, steps: int = 10,
                gamma: float = 0.0, scale: float = 1.0, generator: torch.Generator | None = None,
                x_init: torch.Tensor | None = None, z: torch.Tensor | None = None,
                mode: str = "clean") -> torch.Tensor:
    """Deterministic DDIM (η = 0) from ``x_M ~ N(0, I)`` to ``x_0`` in ``steps`` jumps.

    Timesteps ``M = m_0 > m_1 > … > m_S = 0`` evenly spaced; each jump
    ``x_{m'} = √ᾱ_{m'} x̂_0 + √(1 - ᾱ_{m'}) ε̂ + shift`` (:func:`ddim_parts`).
    Since ``ᾱ_0 = 1`` the last jump returns ``x̂_0``; with one step the
    result is ``G(x_M, M, c)``. Returns normalised motion ``(B, n, T, F)``.
    """
    b, t = music.shape[:2]
    den = model.denoiser
    x = torch.randn(b, n, t, N_FEAT, generator=generator) if x_init is None else x_init
    z = torch.randn(b, den.d, generator=generator) if z is None else z
    with torch.no_grad():
        c, w = den.condition(music, n, z)
    ts = _timesteps(len(ab) - 1, steps)
    for m, m_next in zip(ts[:-1], ts[1:]):
        x0_hat, eps, shift = ddim_parts(model, x, m, m_next, c, w, ab, gamma, scale, mode)
        a_next = float(ab[m_next])
        x = math.sqrt(a_next) * x0_hat + math.sqrt(1 - a_next) * eps + shift
    return x.detach()


def blend_windows(chunks: torch.Tensor, starts: list[int], total: int,
                  ) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Join overlapping windows ``(C, N, W, F)`` into one group sequence ``(N, total, F)``.

    Window ``c`` covers frames ``starts[c] .. starts[c] + W - 1``. Before
    window ``c`` is added, its dancers are matched to the sequence built so
    far by the Hungarian algorithm on the cost
    ``C_ij = ||y_i[overlap] - x_j[overlap]||`` (Euclidean over the overlapping
    frames), then the overlap is blended linearly,
    ``(1 - λ_k) y + λ_k x`` with ``λ_k = (k + 1) / (L + 1)`` for the ``k``-th
    of ``L`` overlapping frames. Returns the sequence and, per window, the
    dancer order used (``perm[c][i]``: the window's dancer placed at slot ``i``).
    """
    from scipy.optimize import linear_sum_assignment

    c_count, n, width = chunks.shape[:3]
    out = torch.zeros(n, total, chunks.shape[-1], dtype=chunks.dtype)
    out[:, starts[0]:starts[0] + width] = chunks[0]
    end = starts[0] + width
    perms = [np.arange(n)]
    for ci in range(1, c_count):
        s = starts[ci]
        ov = max(0, end - s)
        x = chunks[ci]
        if ov > 0:
            cost = torch.cdist(out[:, s:s + ov].reshape(n, -1)[None].double(),
                               x[:, :ov].reshape(n, -1)[None].double())[0].numpy()
            _, col = linear_sum_assignment(cost)
        else:
            col = np.arange(n)
        x = x[torch.as_tensor(col)]
        lam = (torch.arange(ov, dtype=chunks.dtype) + 1) / (ov + 1)
        out[:, s:s + ov] = (1 - lam)[None, :, None] * out[:, s:s + ov] + lam[None, :, None] * x[:, :ov]
        out[:, s + ov:s + width] = x[:, ov:]
        end = s + width
        perms.append(col)
    return out, perms


def window_starts(total: int, width: int, hop: int) -> list[int]:
    """Window starts ``0, hop, 2·hop, …`` with the last window ending at ``total``.

    Examples
    --------
    >>> window_starts(20, 8, 4)
    [0, 4, 8, 12]
    >>> window_starts(18, 8, 4)
    [0, 4, 8, 10]
    """
    if total <= width:
        return [0]
    starts = list(range(0, total - width, hop)) + [total - width]
    return sorted(set(starts))


def sample_long(model: GCDModel, music: torch.Tensor, n: int, ab: torch.Tensor, width: int,
                steps: int = 10, gamma: float = 0.0, scale: float = 1.0,
                generator: torch.Generator | None = None, mode: str = "clean") -> torch.Tensor:
    """A long group dance for one music sequence ``(T_long, M)``: ``(n, T_long, F)`` normalised.

    The music is cut into windows of ``width`` frames overlapping by half; all
    windows are denoised together with one group embedding ``w`` (one ``z``).
    At every DDIM step the windows' ``x̂_0`` are joined by :func:`blend_windows`
    (Hungarian dancer matching + linear blend), each window's state is
    re-ordered with its matching, and the next state is formed from the
    blended ``x̂_0`` sliced back to the window.
    """
    total = music.shape[0]
    starts = window_starts(total, width, max(1, width // 2))
    chunks_music = torch.stack([music[s:s + width] for s in starts])
    cc = len(starts)
    den = model.denoiser
    x = torch.randn(cc, n, width, N_FEAT, generator=generator)
    z = torch.randn(1, den.d, generator=generator).expand(cc, -1)
    with torch.no_grad():
        c, w = den.condition(chunks_music, n, z)
    ts = _timesteps(len(ab) - 1, steps)
    long = torch.zeros(n, total, N_FEAT)
    for m, m_next in zip(ts[:-1], ts[1:]):
        x0_hat, eps, shift = ddim_parts(model, x, m, m_next, c, w, ab, gamma, scale, mode)
        long, perms = blend_windows(x0_hat.detach(), starts, total)
        order = [torch.as_tensor(p) for p in perms]
        eps = torch.stack([eps[i, order[i]] for i in range(cc)])
        shift = torch.stack([shift[i, order[i]] for i in range(cc)])
        x0_b = torch.stack([long[:, s:s + width] for s in starts])
        a_next = float(ab[m_next])
        x = (math.sqrt(a_next) * x0_b + math.sqrt(1 - a_next) * eps + shift).detach()
    return long
