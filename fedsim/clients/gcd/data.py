"""GCD data: procedural dance groups with music features (and AIOZ-GDance-style folders)."""

from __future__ import annotations

import math

import numpy as np


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
