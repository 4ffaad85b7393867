"""Group-dance metrics for the GCD task (numpy only).

Motion layout: one dancer's sequence is an array ``(T, F)`` whose first
``root_dims`` (default 2) channels are the root position on the floor (metres)
and whose remaining channels are pose values (joint angles, radians). A group
is ``(N, T, F)``; a batch of groups is ``(G, N, T, F)``. Frames are indexed
from 0.

The definitions follow the protocols named in the group-choreography
literature (FID_k, GenDiv, beat alignment, GMC, TIF) but are restated here
exactly, because each paper implements them a little differently:

- kinetic features :func:`kinetic_features`
- generation diversity :func:`generation_diversity`
- Fréchet distance :func:`frechet_distance`
- group motion correlation :func:`group_motion_correlation`
- trajectory intersection frequency :func:`trajectory_intersection_frequency`
- motion–beat alignment :func:`beat_alignment_score`
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.ndimage import gaussian_filter1d

from fedsim.clients.gcd.data import BEAT_SIGMA, N_FEAT, music_beats


def kinetic_speed(x: np.ndarray, root_dims: int = 2) -> np.ndarray:
    """Per-frame pose speed of one dancer, by central differences.

    ``s_t = ||p_{t+1} - p_{t-1}|| / 2`` for ``t = 1 .. T-2`` over the pose
    channels ``p = x[:, root_dims:]``; the end frames copy their neighbour
    (``s_0 = s_1``, ``s_{T-1} = s_{T-2}``), so the output has length ``T``.

    Examples
    --------
    >>> kinetic_speed(np.array([[0., 0., 0.], [0., 0., 1.], [0., 0., 3.], [0., 0., 6.]]))
    array([1.5, 1.5, 2.5, 2.5])
    """
    p = np.asarray(x, dtype=np.float64)[:, root_dims:]
    if p.shape[0] < 3:
        return np.zeros(p.shape[0])
    s = np.linalg.norm(p[2:] - p[:-2], axis=1) / 2.0
    return np.concatenate([s[:1], s, s[-1:]])


def kinetic_features(x: np.ndarray, root_dims: int = 2) -> np.ndarray:
    """Kinetic feature vector of one dancer's sequence ``(T, F)``.

    With pose channels ``p = x[:, root_dims:]`` (J of them), root ``r = x[:, :root_dims]``,
    forward differences ``v = Δp``, ``a = Δ²p``::

        k = [ mean_t |v_j| (j = 1..J),  mean_t |a_j| (j = 1..J),
              mean_t ||Δr||,  mean_t ||Δ²r|| ]                      (2J + 2 values)

    i.e. the per-joint mean absolute velocity and acceleration (the
    AIST++-style kinetic energy terms, without mass weights) and the root's
    mean planar speed and acceleration, all per frame.

    Examples
    --------
    >>> x = np.array([[0., 0., 0.], [1., 0., 2.], [2., 0., 4.]])  # root moves 1/frame, joint 2/frame
    >>> kinetic_features(x)
    array([2., 0., 1., 0.])
    """
    x = np.asarray(x, dtype=np.float64)
    p, r = x[:, root_dims:], x[:, :root_dims]
    v, a = np.diff(p, axis=0), np.diff(p, n=2, axis=0)
    rv, ra = np.diff(r, axis=0), np.diff(r, n=2, axis=0)
    return np.concatenate([np.abs(v).mean(0), np.abs(a).mean(0) if len(a) else np.zeros(p.shape[1]),
                           [np.linalg.norm(rv, axis=1).mean()],
                           [np.linalg.norm(ra, axis=1).mean() if len(ra) else 0.0]])


def group_kinetic_features(groups: np.ndarray, root_dims: int = 2) -> np.ndarray:
    """:func:`kinetic_features` of every dancer: ``(G, N, T, F) -> (G, N, 2J+2)``."""
    g = np.asarray(groups)
    return np.stack([[kinetic_features(d, root_dims) for d in grp] for grp in g])


def mean_pairwise_distance(feats: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of rows of ``feats``.

    Examples
    --------
    >>> mean_pairwise_distance(np.array([[0., 0.], [3., 4.], [0., 4.]]))
    4.0
    """
    f = np.asarray(feats, dtype=np.float64)
    n = len(f)
    if n < 2:
        return 0.0
    d = np.linalg.norm(f[:, None] - f[None], axis=-1)
    return float(d[np.triu_indices(n, 1)].mean())


def generation_diversity(groups: np.ndarray, root_dims: int = 2) -> float:
    """GenDiv: mean pairwise distance of the dancers' kinetic features inside a group.

    ``GenDiv = mean_g  mean_{i<j} ||k(x_g^i) - k(x_g^j)||`` with ``k`` from
    :func:`kinetic_features` — the spread between the dancers of one
    generated group, which is what the consistency/diversity control acts on.
    """
    feats = group_kinetic_features(groups, root_dims)
    return float(np.mean([mean_pairwise_distance(f) for f in feats]))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(n, D)``.

    ``FD = ||μ_a - μ_b||² + Tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^{1/2})`` with sample
    means and unbiased (``n - 1``) covariances. Applied to
    :func:`kinetic_features` of generated vs held-out real dancers it is the
    FID_k of the dance literature.

    Examples
    --------
    >>> round(frechet_distance(np.array([[0.], [2.]]), np.array([[1.], [3.]])), 6)
    1.0
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):  # singular product: regularise as in the FID reference code
        eps = 1e-6 * np.eye(len(mu_a))
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    fd = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))
    return max(fd, 0.0)


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    den = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / den) if den > 1e-12 else 0.0


def group_motion_correlation(groups: np.ndarray, max_lag: int = 3, root_dims: int = 2) -> float:
    """GMC: lag-tolerant cross-correlation of the dancers' kinetic speeds.

    For each group, each dancer's speed curve ``s_i`` (:func:`kinetic_speed`)
    is compared with every other dancer's::

        ρ_ij = max_{|τ| <= max_lag} Pearson(s_i[t], s_j[t + τ])   (over the frames both exist)
        GMC  = mean_g mean_{i<j} ρ_ij

    A constant speed curve has correlation 0 with anything. Identical or
    mirrored dancers (same speed) score 1; the maximum over small lags stands
    in for the DTW alignment of the original protocol.
    """
    g = np.asarray(groups, dtype=np.float64)
    if g.ndim == 3:
        g = g[None]
    per_group = []
    for grp in g:
        s = [kinetic_speed(d, root_dims) for d in grp]
        vals = []
        for i in range(len(s)):
            for j in range(i + 1, len(s)):
                best = -1.0
                for tau in range(-max_lag, max_lag + 1):
                    u = s[i][max(0, -tau):len(s[i]) - max(0, tau)]
                    v = s[j][max(0, tau):len(s[j]) - max(0, -tau)]
                    best = max(best, _pearson(u, v))
                vals.append(best)
        per_group.append(np.mean(vals) if vals else 1.0)
    return float(np.mean(per_group))


def trajectory_intersection_frequency(groups: np.ndarray, radius: float = 0.35, root_dims: int = 2) -> float:
    """TIF: fraction of frames in which some pair of dancers collides.

    Two dancers collide at frame t when their root positions (the first
    ``root_dims`` channels) are closer than ``radius``::

        TIF = mean_g (1/T) Σ_t 1[ min_{i<j} ||r_i(t) - r_j(t)|| < radius ]

    Examples
    --------
    Two dancers crossing on straight lines through the origin, 0.2 m per frame:
    they are closer than 0.3 m only at the three middle frames.

    >>> t = np.linspace(-1, 1, 11)
    >>> a = np.stack([t, np.zeros(11)], 1); b = np.stack([np.zeros(11), t], 1)
    >>> round(trajectory_intersection_frequency(np.stack([a, b]), radius=0.3), 4)  # 3 / 11
    0.2727
    """
    g = np.asarray(groups, dtype=np.float64)
    if g.ndim == 3:
        g = g[None]
    r = g[..., :root_dims]  # (G, N, T, 2)
    n = r.shape[1]
    if n < 2:
        return 0.0
    d = np.linalg.norm(r[:, :, None] - r[:, None], axis=-1)  # (G, N, N, T)
    iu = np.triu_indices(n, 1)
    close = (d[:, iu[0], iu[1]] < radius).any(axis=1)  # (G, T)
    return float(close.mean())


def motion_beats(x: np.ndarray, smooth: float = 1.0, root_dims: int = 2) -> np.ndarray:
    """Frames of the kinematic beats of one dancer: local minima of its speed.

    The speed curve :func:`kinetic_speed` is smoothed with a Gaussian of
    ``smooth`` frames (0: none); frame ``t`` (``1 <= t <= T-2``) is a beat when
    ``s_{t-1} > s_t < s_{t+1}`` (strict, so the copied end values of the
    speed curve never make a beat).
    """
    s = kinetic_speed(x, root_dims)
    if smooth > 0:
        s = gaussian_filter1d(s, smooth, mode="nearest")
    t = np.arange(1, len(s) - 1)
    return t[(s[t - 1] > s[t]) & (s[t] < s[t + 1])]


def beat_alignment_score(x: np.ndarray, music_beats: np.ndarray, sigma: float = 3.0,
                         smooth: float = 1.0, root_dims: int = 2) -> float:
    """Motion–beat alignment of one dancer (the AIST++ BeatAlign score).

    With kinematic beats ``B_k`` (:func:`motion_beats`) and music beats ``B_m``::

        BAS = (1/|B_k|) Σ_{t ∈ B_k} exp(-min_{b ∈ B_m} (t - b)² / (2 σ²))

    ``σ`` in frames. A dancer with no kinematic beat (e.g. standing still)
    scores 0.

    Examples
    --------
    >>> x = np.cos(2 * np.pi * np.arange(17) / 8)[:, None]  # speed minima at 4, 8, 12
    >>> beat_alignment_score(x, np.array([4, 8, 12]), smooth=0, root_dims=0)
    1.0
    """
    kb = motion_beats(x, smooth, root_dims)
    mb = np.asarray(music_beats, dtype=np.float64)
    if len(kb) == 0 or len(mb) == 0:
        return 0.0
    d = np.min(np.abs(kb[:, None] - mb[None]), axis=1)
    return float(np.mean(np.exp(-d ** 2 / (2 * sigma ** 2))))


def group_beat_alignment(groups: np.ndarray, beats: list[np.ndarray], sigma: float = 3.0,
                         smooth: float = 1.0, root_dims: int = 2) -> float:
    """Mean :func:`beat_alignment_score` over all dancers of all groups (``beats[g]`` per group)."""
    return float(np.mean([beat_alignment_score(d, beats[i], sigma, smooth, root_dims)
                          for i, grp in enumerate(np.asarray(groups)) for d in grp]))


def score_groups(gen: np.ndarray, music: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The five sampling metrics of groups ``gen (G, N, T, F)`` (physical units).

    Beats come from each group's ``music (G, T, 10)`` (:func:`music_beats`);
    ``fd_k`` compares the dancers' kinetic features with those of ``real``.
    """
    beats = [music_beats(mu) for mu in music]
    kin_gen = group_kinetic_features(gen).reshape(-1, 2 * (N_FEAT - 2) + 2)
    kin_real = group_kinetic_features(real).reshape(-1, 2 * (N_FEAT - 2) + 2)
    return {"gmc": group_motion_correlation(gen), "gen_div": generation_diversity(gen),
            "tif": trajectory_intersection_frequency(gen),
            "bas": group_beat_alignment(gen, beats, sigma=BEAT_SIGMA),
            "fd_k": frechet_distance(kin_gen, kin_real)}
