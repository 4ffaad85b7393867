"""GCD: group-dance diffusion with contrastive consistency/diversity guidance.

A small version of *Controllable Group Choreography using Contrastive
Diffusion* (Le et al., ACM TOG 42(6), 2023) that trains on a CPU in
federated rounds.

Data
    A seeded procedural group-dance generator (:func:`make_groups`). Each
    group shares a choreography: every pose channel is a beat-synchronised
    cosine ``base_j + A_j g_j cos(h_j φ(t) + ψ_j)`` with ``φ(t) = π (t - t0) / P``
    (``P`` = frames per beat, ``h_j ∈ {1, 2}``, ``ψ_j ∈ {0, π}``), so every
    joint is at an extremum (speed minimum) on the beats. Dancers vary the
    group's moves (gain, phase jitter, left/right mirroring, a one-beat canon
    in the ``wave`` style) and stand in a formation (line, two rows, circle,
    V) that rotates, drifts and sways with the beat. The "music" is a
    ``(T, 10)`` feature sequence: beat onsets, beat and bar phase, downbeats,
    energy and a style timbre. Silos differ in style mix (Dirichlet(α) over
    :data:`STYLES`) and tempo range. Nothing is downloaded.

Model (:class:`GCDModel`)
    Denoiser ``G(x_m, m, c)`` predicting ``x_0`` of a group ``(N, T, F)``:
    motion tokens (one per dancer-frame) pass ``layers`` blocks of
    *Music-Motion Transformer* (self-attention under the local mask — a
    dancer attends only to its own frames — then cross-attention to the
    music tokens and the diffusion-time token) and *Group Global Attention*
    (attention under the global mask, every token to every token) followed
    by *Group Modulation* ``h̃ = S(w) ⊙ (h - μ(h)) / σ(h) + b(w)`` from the
    group embedding ``w = MLP(z + mean_t c_t) + e_N``, ``z ~ N(0, I)``.
    A contrastive encoder ``f(x, m, w) = exp(s(x, m, w))`` (local + global
    attention, pooled over frames and dancers to one logit) scores how well a
    group fits ``w``.

Diffusion
    Cosine schedule (:func:`cosine_alpha_bar`), ``x_0`` prediction, DDIM
    sampling with any number of steps (:func:`ddim_sample`), guidance that
    shifts each step's mean by ``γ Σ ∇ log f`` (:func:`ddim_parts`), long
    sequences from half-overlapping windows whose dancers are matched with the
    Hungarian algorithm before blending (:func:`blend_windows`,
    :func:`sample_long`).

Loss (:func:`diffusion_losses`)
    ``L = ||x_0 - x̂_0||² + λ_vel ||Δx_0 - Δx̂_0||² + λ_nce L_nce``, with the
    InfoNCE term over one positive and ``K`` negatives made by swapping in
    dancers (or whole groups) from other groups of the batch.

Compared with the published model: 2 blocks of width 48 instead of 5 of
512, a 3-layer group-embedding MLP instead of 8, 100 diffusion steps, 12
pose features instead of SMPL 6D rotations (hence no forward-kinematics or
foot-contact losses; the velocity term stays), and procedural data and
music features instead of AIOZ-GDance and Jukebox.

Metrics are in :mod:`fedsim.clients.gcd_metrics`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedsim.clients import gcd_metrics as gm
from fedsim.clients.base import SiloData, Task, prox_term
from fedsim.errors import FedsimError

FPS = 15
FEATURES = ("root_x", "root_y", "bob", "lean", "l_shoulder", "l_elbow", "r_shoulder", "r_elbow",
            "l_hip", "l_knee", "r_hip", "r_knee")
N_FEAT = len(FEATURES)
N_MUSIC = 10
STYLES = ("arms", "bounce", "sway", "wave")
N_MAX = 6  # dancer-count embedding table size (groups of 1..N_MAX dancers)
BEAT_SIGMA = 1.0  # beat-alignment tolerance in frames (≈ 0.07 s at 15 fps)

# Per style, amplitude (metres for bob, radians otherwise) and harmonic of the
# ten pose channels bob, lean, l_shoulder, l_elbow, r_shoulder, r_elbow, l_hip, l_knee, r_hip, r_knee.
_AMP = np.array([
    [0.03, 0.08, 1.00, 0.80, 1.00, 0.80, 0.10, 0.15, 0.10, 0.15],  # arms
    [0.10, 0.05, 0.35, 0.30, 0.35, 0.30, 0.45, 0.90, 0.45, 0.90],  # bounce
    [0.04, 0.35, 0.60, 0.30, 0.60, 0.30, 0.25, 0.30, 0.25, 0.30],  # sway
    [0.03, 0.10, 0.90, 0.90, 0.90, 0.90, 0.10, 0.20, 0.10, 0.20],  # wave
])
_HARM = np.array([
    [2, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [2, 1, 1, 1, 1, 1, 2, 2, 2, 2],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [2, 1, 1, 1, 1, 1, 1, 1, 1, 1],
])
_BASE = np.array([0.0, 0.0, 0.4, 0.3, 0.4, 0.3, 0.1, 0.2, 0.1, 0.2])
_SWAY = np.array([0.05, 0.05, 0.30, 0.05])  # root sway (m) along the formation's axis
_CANON = np.array([0, 0, 0, 1])  # beats of delay per dancer index
_ENERGY = np.array([0.6, 1.0, 0.4, 0.7])
_TIMBRE = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 0.3], [0.3, 0.3, 1.0], [1.0, 1.0, 0.0]])
_LR_PAIRS = ((4, 6), (5, 7), (8, 10), (9, 11))  # left/right channel pairs for mirroring


# ----------------------------------------------------------------- data
def _formation(kind: int, n: int, spacing: float) -> np.ndarray:
    """Root offsets ``(n, 2)`` of a formation: 0 line, 1 two rows, 2 circle, 3 V."""
    i = np.arange(n) - (n - 1) / 2
    if kind == 0:
        return np.stack([i * spacing, np.zeros(n)], 1)
    if kind == 1:
        return np.stack([i * spacing * 0.75, np.where(np.arange(n) % 2 == 0, -0.5, 0.5) * spacing], 1)
    if kind == 2:
        radius = max(spacing / (2 * math.sin(math.pi / max(n, 2))), spacing / 2)
        a = 2 * math.pi * np.arange(n) / n
        return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)
    return np.stack([i * spacing, -np.abs(i) * spacing * 0.6], 1)


def make_groups(n_groups: int, n_dancers: int, frames: int, rng: np.random.Generator,
                style_probs: np.ndarray | None = None, bpm_range: tuple[float, float] = (80.0, 140.0),
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Procedural group dances.

    Returns ``motion (G, N, T, 12)`` float32 in physical units (root in
    metres, see :data:`FEATURES`), ``music (G, T, 10)`` float32 and the
    ``style`` index of each group.

    Per group: style ``s ~ style_probs``, tempo ``bpm ~ U(bpm_range)``, beat
    period ``P = 60 · FPS / bpm`` frames, first beat ``t0 ~ U(0, P)``, beat
    phase ``φ(t) = π (t - t0) / P``. Pose channel ``j`` of dancer ``i``::

        θ_ij(t) = base_j + A_sj g_j (1 + 0.08 ε_ij) cos(h_sj φ(t) + ψ_j + π c_s i + δ_i) + 0.01 ε

    with group gains ``g_j ~ U(0.6, 1.4)``, group phases ``ψ_j ∈ {0, π}``,
    dancer phase jitter ``δ_i ~ N(0, 0.15²)``, canon ``c_s`` (1 for ``wave``)
    and left/right channels swapped for a mirrored dancer (probability 0.25).
    Roots: a formation with spacing ``U(1.0, 1.4)`` m, rotated by
    ``θ0 + ω t`` (``|ω| <= 0.01`` rad/frame), drifting ``<= 0.01`` m/frame,
    swaying ``sway_s cos φ(t)`` along the formation axis. Music channels:
    ``[onset, cos 2φ, sin 2φ, cos φ, sin φ, downbeat, energy, timbre×3]`` where
    onset / downbeat are sums of Gaussians (σ = 0.8 frame) at the beats / every
    fourth beat.
    """
    g_count, n, t_len = n_groups, n_dancers, frames
    probs = np.full(len(STYLES), 1 / len(STYLES)) if style_probs is None else np.asarray(style_probs, float)
    motion = np.zeros((g_count, n, t_len, N_FEAT))
    music = np.zeros((g_count, t_len, N_MUSIC))
    styles = rng.choice(len(STYLES), size=g_count, p=probs / probs.sum())
    t = np.arange(t_len, dtype=np.float64)
    for g in range(g_count):
        s = styles[g]
        period = 60.0 * FPS / rng.uniform(*bpm_range)
        t0 = rng.uniform(0, period)
        phi = np.pi * (t - t0) / period
        gains = rng.uniform(0.6, 1.4, 10)
        psi = rng.integers(0, 2, 10) * np.pi
        for i in range(n):
            gain = gains * (1 + 0.08 * rng.standard_normal(10))
            delta = 0.15 * rng.standard_normal()
            arg = _HARM[s][:, None] * phi[None] + (psi + np.pi * _CANON[s] * i + delta)[:, None]
            pose = _BASE[:, None] + (_AMP[s] * gain)[:, None] * np.cos(arg)
            motion[g, i, :, 2:] = pose.T + 0.01 * rng.standard_normal((t_len, 10))
            if rng.random() < 0.25:
                for a, b in _LR_PAIRS:
                    motion[g, i, :, [a, b]] = motion[g, i, :, [b, a]]
        offsets = _formation(int(rng.integers(0, 4)), n, rng.uniform(1.0, 1.4))
        ang = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.01, 0.01) * t
        sway = _SWAY[s] * np.cos(phi)
        local = offsets[:, None, :] + np.stack([sway, np.zeros(t_len)], 1)[None]  # (N, T, 2)
        c, sn = np.cos(ang)[None], np.sin(ang)[None]
        rot = np.stack([c * local[..., 0] - sn * local[..., 1], sn * local[..., 0] + c * local[..., 1]], -1)
        drift = rng.uniform(-0.01, 0.01, 2)[None, None] * t[None, :, None]
        motion[g, :, :, :2] = rot + drift
        beats = t0 + period * np.arange(-2, t_len / period + 2)
        pulse = np.exp(-((t[:, None] - beats[None]) ** 2) / (2 * 0.8 ** 2))
        bar = int(rng.integers(0, 4))
        music[g, :, 0] = pulse.sum(1)
        music[g, :, 1], music[g, :, 2] = np.cos(2 * phi), np.sin(2 * phi)
        music[g, :, 3], music[g, :, 4] = np.cos(phi), np.sin(phi)
        music[g, :, 5] = pulse[:, (np.arange(len(beats)) + bar) % 4 == 0].sum(1)
        music[g, :, 6] = _ENERGY[s] + 0.1 * np.cos(2 * np.pi * t / t_len + rng.uniform(0, 2 * np.pi))
        music[g, :, 7:] = _TIMBRE[s] + 0.05 * rng.standard_normal((t_len, 3))
    return motion.astype(np.float32), music.astype(np.float32), styles


def music_beats(music: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Beat frames of one music sequence ``(T, 10)``: local maxima of the onset channel above ``threshold``.

    Examples
    --------
    >>> m = np.zeros((9, N_MUSIC)); m[[0, 4, 8], 0] = 1.0
    >>> music_beats(m)
    array([0, 4, 8])
    """
    o = np.concatenate([[-np.inf], np.asarray(music)[:, 0], [-np.inf]])
    t = np.arange(1, len(o) - 1)
    return t[(o[t] >= o[t - 1]) & (o[t] > o[t + 1]) & (o[t] > threshold)] - 1


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


GUIDANCE_MODES = ("clean", "noisy")


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


# ----------------------------------------------------------------- rendering
def stick_figure(frame: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Front-view line segments of one dancer-frame (physical units), for drawing.

    Pelvis at ``(root_x, 1 + bob)``; torso 0.55 m leaning by ``lean``; arms
    (0.3 + 0.28 m) raised sideways by the shoulder angle and bent by the elbow
    angle; legs (0.45 + 0.45 m) spread by the hip angle, the knee bend
    shortening the drawn shin.
    """
    x, _, bob, lean, ls, le, rs, re, lh, lk, rh, rk = (float(v) for v in frame)

    def ray(p, ang, length):
        return p + length * np.array([math.sin(ang), -math.cos(ang)])

    pelvis = np.array([x, 1.0 + bob])
    neck = pelvis + 0.55 * np.array([math.sin(lean), math.cos(lean)])
    head = neck + 0.18 * np.array([math.sin(lean), math.cos(lean)])
    segs = [(pelvis, neck), (neck, head)]
    for side, sh, el in ((-1, ls, le), (1, rs, re)):
        elbow = ray(neck, side * sh + lean, 0.3)
        segs += [(neck, elbow), (elbow, ray(elbow, side * (sh + el) + lean, 0.28))]
    for side, hp, kn in ((-1, lh, lk), (1, rh, rk)):
        hip = pelvis + np.array([side * 0.1, 0.0])
        knee = ray(hip, side * hp, 0.45)
        segs += [(pelvis, hip), (hip, knee), (knee, ray(knee, side * hp * 0.5, 0.45 * math.cos(kn)))]
    return segs


def render_strip(groups: list[np.ndarray], path, frames: int = 8, labels: list[str] | None = None,
                 title: str | None = None) -> None:
    """Draw groups ``(N, T, F)`` (physical units) as rows of ``frames`` evenly spaced stick-figure frames.

    Dancers are placed by ``root_x``; ``root_y`` (depth) raises a dancer
    slightly and sets its shade. A last column shows the floor plan: each
    dancer's root trajectory over the window (dot = start, circle radius =
    the 0.35 m collision radius of the intersection metric at the end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(groups)
    fig, axes = plt.subplots(rows, frames + 1, figsize=(1.6 * (frames + 1), 1.9 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for r, grp in enumerate(groups):
        grp = np.asarray(grp)
        ts = np.linspace(0, grp.shape[1] - 1, frames).round().astype(int)
        xmin, xmax = grp[:, :, 0].min() - 0.8, grp[:, :, 0].max() + 0.8
        for k, t in enumerate(ts):
            ax = axes[r, k]
            for i in np.argsort(-grp[:, t, 1]):  # far dancers first
                depth = float(grp[i, t, 1])
                for a, b in stick_figure(grp[i, t]):
                    lift = np.array([0.0, 0.25 * depth])
                    ax.plot([a[0], b[0]], [(a + lift)[1], (b + lift)[1]], color=colors(i % 10), lw=1.6,
                            alpha=float(np.clip(0.95 - 0.15 * depth, 0.35, 1.0)))
            ax.set_xlim(xmin, xmax)
            ax.set_ylim(-0.4, 2.6)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if k == 0 and labels:
                ax.set_ylabel(labels[r], fontsize=8)
        ax = axes[r, frames]
        for i in range(grp.shape[0]):
            ax.plot(grp[i, :, 0], grp[i, :, 1], color=colors(i % 10), lw=1.2)
            ax.plot(grp[i, 0, 0], grp[i, 0, 1], "o", color=colors(i % 10), ms=3)
            ax.add_patch(plt.Circle((grp[i, -1, 0], grp[i, -1, 1]), 0.35, fill=False, color=colors(i % 10), lw=0.8))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title("floor plan", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------- task
_SAMPLE_METRICS = {"gmc": True, "gen_div": True, "tif": False, "bas": True, "fd_k": False}
_CHEAP_METRICS = {"nce_acc": True, "x0_mse": False}
_DEFAULTS: dict = {
    "n_dancers": 3, "frames": 32, "n_train": 96, "n_test": 24, "alpha": 0.5, "lr": 2e-3,
    "batch_size": 8, "diffusion_steps": 100, "d_model": 48, "layers": 2, "heads": 4, "enc_d": 32,
    "negatives": 4, "inter_negatives": 0.0, "motion_negatives": 0.5, "nce_weight": 0.01,
    "vel_weight": 1.0, "sample_eval": False, "ddim_steps": 10, "gamma": 0.0, "guidance_scale": 3.0,
    "guidance": "clean", "eval_samples": 16, "metric": None,
}


class GCDTask(Task):
    """Group-dance diffusion with contrastive guidance.

    Config keys (defaults in brackets): ``n_dancers`` [3] dancers per group, an
    int or a list cycled over silos (group-size skew); ``frames`` [32] per
    window at 15 fps; ``n_train`` [96] / ``n_test`` [24] groups per silo;
    ``alpha`` [0.5] Dirichlet concentration of each silo's style mix;
    ``lr`` [2e-3] Adam (a fresh optimiser each round); ``batch_size`` [8];
    ``diffusion_steps`` [100]; ``d_model`` [48], ``layers`` [2], ``heads`` [4], ``enc_d`` [32];
    ``negatives`` [4] per group, of which a fraction ``inter_negatives`` [0]
    are whole other groups and the rest swap dancers in, a fraction
    ``motion_negatives`` [0.5] of those keeping the original dancers' root
    trajectories (:func:`make_negatives`); ``nce_weight`` [0.01]; ``vel_weight`` [1.0];
    ``sample_eval`` [false]: also generate ``eval_samples`` [16] test groups
    with ``ddim_steps`` [10] DDIM steps and guidance ``gamma`` [0] ×
    ``guidance_scale`` [3] in ``guidance`` mode [``clean``] or ``noisy``
    (:func:`ddim_parts`) and report the sampling metrics; ``metric``: the
    headline, one of ``nce_acc`` ``x0_mse`` (always available) or ``gmc``
    ``gen_div`` ``tif`` ``bas`` ``fd_k`` (need ``sample_eval``); default
    ``fd_k`` with ``sample_eval`` and ``nce_acc`` without.

    ``evaluate`` always returns ``loss`` (= ``x0_mse``, the denoising MSE on
    the silo's test groups at fixed noise levels, normalised units),
    ``nce_acc`` (how often the encoder ranks the real group above its
    negatives on the test split), ``nce`` and ``n``: a few forward passes,
    cheap enough for every round. The sampling metrics are compared with the
    silo's held-out real test groups.
    """

    name = "gcd"
    reference_step_ms = 97.4  # CPU ms of one local step, default options (see Task.profile)
    metric = "nce_acc"
    higher_is_better = True

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(config)
        unknown = sorted(set(self.config) - set(_DEFAULTS))
        if unknown:
            raise FedsimError(f"unknown gcd option(s) {', '.join(unknown)}; valid: {', '.join(_DEFAULTS)}")
        self.opts = {k: self.config.get(k, v) for k, v in _DEFAULTS.items()}
        sample = bool(self.opts["sample_eval"])
        metric = self.opts["metric"] or ("fd_k" if sample else "nce_acc")
        valid = {**_CHEAP_METRICS, **(_SAMPLE_METRICS if sample else {})}
        if metric not in valid:
            raise FedsimError(f"gcd metric {metric!r} is not available; valid: {', '.join(valid)}"
                              + ("" if sample else " (the sampling metrics need sample_eval=true)"))
        self.metric, self.higher_is_better = metric, valid[metric]
        if self.opts["guidance"] not in GUIDANCE_MODES:
            raise FedsimError(f"gcd guidance must be one of {', '.join(GUIDANCE_MODES)}, "
                              f"got {self.opts['guidance']!r}")
        self.ab = cosine_alpha_bar(int(self.opts["diffusion_steps"]))
        ref, _, _ = make_groups(64, 3, int(self.opts["frames"]), np.random.default_rng(12345))
        flat = ref.reshape(-1, N_FEAT)
        self.mean = torch.from_numpy(flat.mean(0))
        self.std = torch.from_numpy(flat.std(0) + 1e-3)

    def _o(self, key: str, kind: type = float):
        return kind(self.opts[key])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def model(self) -> GCDModel:
        return GCDModel(d=self._o("d_model", int), layers=self._o("layers", int), heads=self._o("heads", int),
                        enc_d=self._o("enc_d", int))

    def silo_dancers(self, silo: int) -> int:
        n = self.opts["n_dancers"]
        n = int(n[silo % len(n)]) if isinstance(n, (list, tuple)) else int(n)
        if not 2 <= n <= N_MAX:
            raise FedsimError(f"gcd n_dancers must be in 2..{N_MAX}, got {n}")
        return n

    def silo_skew(self, silo: int, n_silos: int, seed: int) -> tuple[np.ndarray, tuple[float, float]]:
        """Silo ``silo``'s style mix ``~ Dir(α)`` and tempo range (BPM; centres spread over 85–135)."""
        rng = np.random.default_rng([seed, silo, 7])
        probs = rng.dirichlet(np.full(len(STYLES), self._o("alpha")))
        centre = 85 + 50 * (silo + 0.5) / max(n_silos, 1)
        return probs, (centre - 15.0, centre + 15.0)

    def partition(self, silo: int, n_silos: int, seed: int) -> SiloData:
        probs, bpm = self.silo_skew(silo, n_silos, seed)
        rng = np.random.default_rng([seed, silo])
        n_tr, n_te = self._o("n_train", int), self._o("n_test", int)
        motion, music, _ = make_groups(n_tr + n_te, self.silo_dancers(silo), self._o("frames", int), rng,
                                       probs, bpm)
        t = torch.from_numpy
        return SiloData(t(motion[:n_tr]), t(music[:n_tr]), t(motion[n_tr:]), t(music[n_tr:]))

    def train(self, model, data, steps, generator, prox_mu=0.0, anchor=None):
        opt = torch.optim.Adam(model.parameters(), lr=self._o("lr"))
        bs = min(self._o("batch_size", int), data.n_train)
        model.train()
        logs: dict[str, list[float]] = {"loss": [], "nce": [], "vel": []}
        for _ in range(steps):
            idx = torch.randint(0, data.n_train, (bs,), generator=generator)
            parts = diffusion_losses(model, self.normalise(data.x_train[idx]), data.y_train[idx], self.ab,
                                     generator, self._o("negatives", int),
                                     inter_fraction=self._o("inter_negatives"),
                                     motion_fraction=self._o("motion_negatives"))
            total = (parts["simple"] + self._o("vel_weight") * parts["vel"]
                     + self._o("nce_weight") * parts["nce"] + prox_term(model, anchor, prox_mu))
            opt.zero_grad()
            total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            logs["loss"].append(float(parts["simple"].detach()))
            logs["nce"].append(float(parts["nce"].detach()))
            logs["vel"].append(float(parts["vel"].detach()))
        return {k: float(np.mean(v)) for k, v in logs.items()}

    @torch.no_grad()
    def evaluate(self, model, data):
        model.eval()
        gen = torch.Generator().manual_seed(0)
        x0 = self.normalise(data.x_test)
        b = len(x0)
        m = 1 + (torch.arange(b) * (len(self.ab) - 1)) // max(b, 1)  # fixed spread of noise levels
        parts = diffusion_losses(model, x0, data.y_test, self.ab, gen, self._o("negatives", int), m=m,
                                 inter_fraction=self._o("inter_negatives"),
                                 motion_fraction=self._o("motion_negatives"))
        out = {"loss": float(parts["simple"]), "x0_mse": float(parts["simple"]),
               "nce": float(parts["nce"]), "nce_acc": float(parts["acc"]), "n": float(b)}
        if self.opts["sample_eval"]:
            out |= self.sample_metrics(model, data, gen)
        return out

    def sample_metrics(self, model: GCDModel, data: SiloData, generator: torch.Generator,
                       gamma: float | None = None) -> dict[str, float]:
        """Generate for the first ``eval_samples`` test songs and score the result.

        ``gmc`` (:func:`~fedsim.clients.gcd_metrics.group_motion_correlation`),
        ``gen_div`` (:func:`~fedsim.clients.gcd_metrics.generation_diversity`),
        ``tif`` (:func:`~fedsim.clients.gcd_metrics.trajectory_intersection_frequency`),
        ``bas`` (:func:`~fedsim.clients.gcd_metrics.group_beat_alignment` against the
        music's beats, σ = :data:`BEAT_SIGMA` frames) and ``fd_k`` (Fréchet distance
        of kinetic features against all the silo's held-out real test dancers).
        """
        k = min(self._o("eval_samples", int), len(data.y_test))
        music = data.y_test[:k]
        gamma = self._o("gamma") if gamma is None else gamma
        x = ddim_sample(model, music, int(data.x_test.shape[1]), self.ab, self._o("ddim_steps", int),
                        gamma, self._o("guidance_scale"), generator, mode=str(self.opts["guidance"]))
        return score_groups(self.denormalise(x).numpy(), music.numpy(), data.x_test.numpy())


def score_groups(gen: np.ndarray, music: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The five sampling metrics of groups ``gen (G, N, T, F)`` (physical units).

    Beats come from each group's ``music (G, T, 10)`` (:func:`music_beats`);
    ``fd_k`` compares the dancers' kinetic features with those of ``real``.
    """
    beats = [music_beats(mu) for mu in music]
    kin_gen = gm.group_kinetic_features(gen).reshape(-1, 2 * (N_FEAT - 2) + 2)
    kin_real = gm.group_kinetic_features(real).reshape(-1, 2 * (N_FEAT - 2) + 2)
    return {"gmc": gm.group_motion_correlation(gen), "gen_div": gm.generation_diversity(gen),
            "tif": gm.trajectory_intersection_frequency(gen),
            "bas": gm.group_beat_alignment(gen, beats, sigma=BEAT_SIGMA),
            "fd_k": gm.frechet_distance(kin_gen, kin_real)}
