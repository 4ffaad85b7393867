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


# ----------------------------------------------------------------- AIOZ-GDance-style folders
def load_sequences(root: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """Read a folder of group-dance sequences, one sub-folder per sequence (sorted by name).

    Each sequence folder holds ``music.npy``, float ``(T, 10)`` — per frame at
    :data:`FPS` the :data:`N_MUSIC` music features in the layout
    :func:`make_groups` writes (channel 0 the onset strength whose peaks are
    the beats, 1–4 the beat phase as cos/sin of 2φ and φ, 5 the downbeat pulse,
    6 the energy, 7–9 timbre) — and ``motion.npy``, float ``(N, T, 12)``: for
    each of the ``N`` dancers (2..:data:`N_MAX`) and frame the
    :data:`FEATURES` (root position on the floor in metres, then the pose
    angles in radians). This mirrors AIOZ-GDance (one folder per song with its
    music features and the dancers' motions), with our 12 pose features in
    place of SMPL parameters. Returns ``(name, music, motion)`` per sequence,
    float32.

    Every problem is one :class:`~fedsim.errors.FedsimError` line naming the
    file and the expected shape.
    """
    from pathlib import Path

    from fedsim.errors import FedsimError

    base = Path(root)
    if not base.is_dir():
        raise FedsimError(f"gcd data_dir {root!r} is not a folder (expected one sub-folder per sequence with "
                          f"music.npy and motion.npy)")
    seqs = [d for d in sorted(base.iterdir()) if d.is_dir()]
    if not seqs:
        raise FedsimError(f"gcd data_dir {root!r} has no sequence folders (expected <sequence>/music.npy "
                          f"[T, {N_MUSIC}] and <sequence>/motion.npy [dancers, T, {N_FEAT}])")
    out = []
    for d in seqs:
        arrays = []
        for name in ("music.npy", "motion.npy"):
            if not (d / name).is_file():
                raise FedsimError(f"gcd sequence {d} has no {name}")
            try:
                arrays.append(np.load(d / name, allow_pickle=False))
            except (OSError, ValueError) as exc:
                raise FedsimError(f"cannot read {d / name}: {str(exc).splitlines()[0]}") from None
        music, motion = arrays
        if music.ndim != 2 or music.shape[1] != N_MUSIC:
            raise FedsimError(f"{d / 'music.npy'} has shape {music.shape}; expected (frames, {N_MUSIC})")
        if motion.ndim != 3 or motion.shape[2] != N_FEAT:
            raise FedsimError(f"{d / 'motion.npy'} has shape {motion.shape}; expected (dancers, frames, {N_FEAT})")
        if not 2 <= motion.shape[0] <= N_MAX:
            raise FedsimError(f"{d / 'motion.npy'} has {motion.shape[0]} dancers; expected 2..{N_MAX}")
        if motion.shape[1] != music.shape[0]:
            raise FedsimError(f"{d}: motion.npy has {motion.shape[1]} frames but music.npy {music.shape[0]}")
        if not (np.issubdtype(music.dtype, np.number) and np.issubdtype(motion.dtype, np.number)
                and np.isfinite(music).all() and np.isfinite(motion).all()):
            raise FedsimError(f"{d}: music.npy and motion.npy must hold finite numbers")
        out.append((d.name, music.astype(np.float32), motion.astype(np.float32)))
    return tuple(out)


def folder_windows(sequences, silo: int, n_silos: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Silo ``silo``'s groups from :func:`load_sequences`: sequence ``j`` goes to silo
    ``j mod n_silos``; each is cut into non-overlapping windows of ``frames``
    frames. A silo keeps the windows of its most common dancer count (ties: the
    smaller), since a batch holds groups of one size. Returns motion
    ``(G, N, frames, 12)`` and music ``(G, frames, 10)``."""
    from fedsim.errors import FedsimError

    if len(sequences) < n_silos:
        raise FedsimError(f"gcd data_dir has {len(sequences)} sequences; {n_silos} silos need one each at least")
    mine = [s for j, s in enumerate(sequences) if j % n_silos == silo]
    by_count: dict[int, list] = {}
    for _, music, motion in mine:
        for a in range(0, music.shape[0] - frames + 1, frames):
            by_count.setdefault(motion.shape[0], []).append((motion[:, a:a + frames], music[a:a + frames]))
    if not by_count:
        raise FedsimError(f"silo {silo}'s sequences are shorter than frames={frames}; use smaller frames")
    n = min(by_count, key=lambda k: (-len(by_count[k]), k))
    groups = by_count[n]
    return np.stack([g[0] for g in groups]), np.stack([g[1] for g in groups])
