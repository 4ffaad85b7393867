"""MATCHA and MATCHA(+): random unions of matchings (Wang et al., 2019).

SPEC-timing §4.5. The base graph (MATCHA: the underlay's links; MATCHA(+):
the complete connectivity graph) is split into matchings by Misra & Gries'
edge colouring (≤ Δ+1 colours). Matching ``j`` is activated each round with
probability ``p_j``, chosen to maximise the algebraic connectivity of the
expected graph under the budget ``Σ p_j ≤ Cb · #matchings``; the mixing step
``α`` minimises the spectral norm of the expected mixing error, and round
``k`` mixes with ``W_k = I − α L_k``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError
from fedsim.topologies import cache
from fedsim.topologies.delay import Connectivity, DelayProfile
from fedsim.topologies.schedule import Schedule, bidirect


def misra_gries(n: int, edges: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """Proper edge colouring with at most Δ+1 colours (Misra & Gries, 1992).

    Edges are coloured in the given order; every choice takes the first free
    colour and scans neighbours in insertion order, so the colouring is
    deterministic.

    Returns
    -------
    dict
        ``(min(u, v), max(u, v)) -> colour``.

    Examples
    --------
    A triangle needs Δ + 1 = 3 colours:

    >>> sorted(misra_gries(3, [(0, 1), (1, 2), (0, 2)]).items())
    [((0, 1), 2), ((0, 2), 1), ((1, 2), 0)]
    """
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        nbrs[u].append(v)
        nbrs[v].append(u)
    n_colors = max((len(a) for a in nbrs), default=0) + 1
    # col[a][b]: colour of edge a-b (absent: uncoloured); at[a][c]: neighbour across colour c.
    col: list[dict[int, int]] = [dict() for _ in range(n)]
    at: list[dict[int, int]] = [dict() for _ in range(n)]

    def uncolor(a: int, b: int) -> None:
        c = col[a].pop(b, None)
        if c is not None:
            del col[b][a]
            del at[a][c]
            del at[b][c]

    def paint(a: int, b: int, c: int) -> None:
        col[a][b] = c
        col[b][a] = c
        at[a][c] = b
        at[b][c] = a

    def first_free(node: int) -> int:
        used = at[node]
        for c in range(n_colors):
            if c not in used:
                return c
        raise AssertionError("no free colour")

    for u, v in edges:
        col_u = col[u]
        if v in col_u:
            continue
        # Maximal fan of u starting at v: the next fan silo is the first
        # neighbour (insertion order) whose edge colour is free at the last.
        fan = [v]
        in_fan = {v}
        # Coloured edges at u do not change while the fan grows.
        cand = [(x, col_u[x]) for x in nbrs[u] if x in col_u]
        while True:
            at_last = at[fan[-1]]
            for x, cx in cand:
                if cx not in at_last and x not in in_fan:
                    fan.append(x)
                    in_fan.add(x)
                    break
            else:
                break
        c = first_free(u)
        d = first_free(fan[-1])
        # The cd-path from u, starting with colour d.
        path_nodes = {u}
        path_edges = []
        seen_edges: set[tuple[int, int]] = set()
        node, want = u, d
        while True:
            nxt = at[node].get(want)
            if nxt is None:
                break
            k = (node, nxt) if node < nxt else (nxt, node)
            if k in seen_edges:
                break
            seen_edges.add(k)
            path_edges.append(k)
            path_nodes.add(nxt)
            node, want = nxt, (c if want == d else d)
        sub = [v]
        for x in fan[1:]:
            if col_u.get(x) == d:
                break
            sub.append(x)
        if sub[-1] in path_nodes and len(path_edges) > 0:
            sub = fan
        # Invert the path (clear first so the per-node index stays consistent).
        flipped = [(a, b, d if col[a][b] == c else c) for a, b in path_edges]
        for a, b, _ in flipped:
            uncolor(a, b)
        for a, b, cc in flipped:
            paint(a, b, cc)
        # Rotate the fan and colour its last edge with d.
        for k in range(len(sub) - 1):
            nxt_c = col_u.get(sub[k + 1])
            uncolor(u, sub[k + 1])
            uncolor(u, sub[k])
            if nxt_c is not None:
                paint(u, sub[k], nxt_c)
        uncolor(u, sub[-1])
        paint(u, sub[-1], d)
    out: dict[tuple[int, int], int] = {}
    for a in range(n):
        for b, c in col[a].items():
            if a < b:
                out[(a, b)] = c
    return out


def laplacian(n: int, edges) -> np.ndarray:
    """Unweighted graph Laplacian of ``edges`` on ``n`` silos."""
    lap = np.zeros((n, n))
    for u, v in edges:
        lap[u, v] -= 1
        lap[v, u] -= 1
        lap[u, u] += 1
        lap[v, v] += 1
    return lap


def _complement_basis(n: int) -> np.ndarray:
    """Orthonormal basis ``Q`` (n × n−1) of the space orthogonal to the all-ones vector.

    Every Laplacian maps ``1`` to 0, so both SDPs are posed on ``1⊥``: this drops
    the ``β 11ᵀ`` and ``11ᵀ/N`` terms and makes the problems smaller and better
    conditioned without changing their optima.
    """
    import scipy.linalg

    return scipy.linalg.null_space(np.ones((1, n)))


def activation_probabilities(laps: list[np.ndarray], budget: float) -> np.ndarray:
    """``p`` maximising λ₂(Σ p_j L_j) s.t. 0 ≤ p ≤ 1, Σ p ≤ budget · #matchings.

    Solved as ``max γ s.t. Qᵀ(Σ p_j L_j)Q ⪰ γI`` with SCS (a first-order conic
    solver, tolerance 1e-7): interior-point solvers factor a dense system over
    the whole PSD cone and take seconds to minutes on 80-silo networks.
    """
    k, n = len(laps), laps[0].shape[0]
    q = _complement_basis(n)
    stacked = np.stack([(q.T @ lap @ q).ravel() for lap in laps], axis=1)
    return _solve_activation_probabilities(stacked, n, k, budget)


def _solve_activation_probabilities(stacked: np.ndarray, n: int, k: int, budget: float) -> np.ndarray:
    """The SDP of :func:`activation_probabilities` on ``1⊥`` (``stacked``: Qᵀ L_j Q per column)."""
    import cvxpy as cp

    p, gamma = cp.Variable(k), cp.Variable()
    expected = cp.reshape(stacked @ p, (n - 1, n - 1), order="C")
    cons = [p >= 0, p <= 1, cp.sum(p) <= budget * k, (expected + expected.T) / 2 - gamma * np.eye(n - 1) >> 0]
    problem = cp.Problem(cp.Maximize(gamma), cons)
    for solver, opts in ((cp.SCS, {"eps_abs": 1e-7, "eps_rel": 1e-7}), (cp.CLARABEL, {})):
        try:
            problem.solve(solver=solver, **opts)
        except cp.error.SolverError:
            continue
        if problem.status in ("optimal", "optimal_inaccurate") and p.value is not None:
            return np.clip(np.asarray(p.value, dtype=float), 0.0, 1.0)
    raise FedsimError(f"MATCHA activation-probability SDP failed ({problem.status}); try another --budget")


def mixing_step(laps: list[np.ndarray], p: np.ndarray) -> float:
    """``α`` minimising ρ s.t. ``I − 2αL̄ + β(L̄² + 2L̃) − 11ᵀ/N ⪯ ρI``, ``α² ≤ β``.

    The left side grows with β (``L̄² + 2L̃ ⪰ 0``), so β = α² at the optimum
    and the SDP reduces exactly to the convex scalar problem
    ``min_α λ_max(Qᵀ(I − 2αL̄ + α²(L̄² + 2L̃))Q)``, solved here by bounded
    Brent search.
    """
    n = laps[0].shape[0]
    q = _complement_basis(n)
    l_bar = sum(pj * lj for pj, lj in zip(p, laps))
    l_tilde = sum(pj * (1 - pj) * lj for pj, lj in zip(p, laps))
    a = q.T @ l_bar @ q
    b = q.T @ (l_bar @ l_bar + 2 * l_tilde) @ q
    eye = np.eye(n - 1)

    def rho(alpha: float) -> float:
        return float(np.linalg.eigvalsh(eye - 2 * alpha * a + alpha**2 * b)[-1])

    # rho(0) = 1 and rho grows for alpha < 0, so the optimum lies in [0, 2/λ_min(a)].
    low = max(float(np.linalg.eigvalsh(a)[0]), 1e-12)
    import scipy.optimize

    res = scipy.optimize.minimize_scalar(rho, bounds=(0.0, 2.0 / low), method="bounded",
                                         options={"xatol": 1e-10})
    return float(res.x)


@lru_cache(maxsize=32)
def decomposition(
    conn: Connectivity, plus: bool, budget: float
) -> tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray, float]:
    """Edges, matching index per edge, activation probabilities and α.

    Cached in the process and on disk (:mod:`fedsim.topologies.cache`): the
    activation-probability SDP takes seconds per network. The disk key hashes
    the silo count, the edge list (in order), the budget, this module's source
    and the numpy/scipy/cvxpy/SCS/Clarabel versions, i.e. everything the
    result depends on; an entry is also checked (proper matchings,
    probabilities in [0, 1] within budget, finite α) before it is used.
    ``FEDSIM_CACHE=off`` disables the disk cache.
    """
    if plus:
        edges = [(u, v) for u, v in conn.graph.edges]
    else:
        seen, edges = set(), []
        for u, v, _ in conn.network.links:
            k = (min(u, v), max(u, v))
            if u != v and k not in seen:
                seen.add(k)
                edges.append((u, v))
    key = cache.digest(
        "matcha-decomposition/1", conn.n, np.asarray(edges, dtype=np.int64).reshape(-1, 2),
        float(budget), _module_source(),
        cache.package_versions("numpy", "scipy", "cvxpy", "scs", "clarabel"),
    )
    hit = _checked_entry(cache.load("matcha", key), conn.n, edges, budget)
    if hit is not None:
        match, p, alpha = hit
        return tuple(edges), match, p, alpha
    colors = misra_gries(conn.n, edges)
    used = sorted(set(colors.values()))
    index = {c: j for j, c in enumerate(used)}
    match = np.array([index[colors[(min(u, v), max(u, v))]] for u, v in edges])
    laps = [laplacian(conn.n, [e for e, m in zip(edges, match) if m == j]) for j in range(len(used))]
    p = activation_probabilities(laps, budget)
    alpha = mixing_step(laps, p)
    cache.store("matcha", key, {
        "what": "fedsim MATCHA decomposition: matching per edge, activation probabilities, alpha",
        "silos": conn.n, "edges": len(edges), "budget": float(budget),
        "match": match.tolist(), "p": p.tolist(), "alpha": alpha,
    })
    return tuple(edges), match, p, alpha


@lru_cache(maxsize=1)
def _module_source() -> bytes:
    return Path(__file__).read_bytes()


def _checked_entry(entry, n: int, edges, budget: float):
    """``(match, p, alpha)`` from a cache entry if it is a valid decomposition, else None."""
    if entry is None:
        return None
    try:
        match = np.asarray(entry["match"], dtype=np.int64)
        p = np.asarray(entry["p"], dtype=float)
        alpha = float(entry["alpha"])
    except (KeyError, TypeError, ValueError):
        return None
    k = len(p)
    if match.shape != (len(edges),) or p.ndim != 1 or k == 0:
        return None
    if match.min(initial=0) < 0 or match.max(initial=0) >= k or len(np.unique(match)) != k:
        return None
    ends = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    slots = np.concatenate([match * n + ends[:, 0], match * n + ends[:, 1]])
    if len(np.unique(slots)) != len(slots):  # a silo twice in one matching
        return None
    if not (np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)) and p.sum() <= budget * k + 1e-4):
        return None
    if not (np.isfinite(alpha) and alpha >= 0):
        return None
    return match, p, alpha


def _build(conn: Connectivity, plus: bool, budget: float) -> Schedule:
    if not 0 < budget <= 1:
        raise FedsimError(f"MATCHA communication budget must be in (0, 1], got {budget}")
    edges, match, p, alpha = decomposition(conn, plus, float(budget))
    arcs = bidirect(edges)
    return Schedule(
        "matcha_plus" if plus else "matcha", conn.n, arcs, np.ones(len(arcs), dtype=np.int64),
        matchings=np.repeat(match, 2), probabilities=p, alpha=alpha,
        info={"budget": budget, "n_matchings": len(p)},
    )


def build(conn: Connectivity, profile: DelayProfile, budget: float = 0.5) -> Schedule:
    """MATCHA on the underlay's links, budget ``Cb`` (default 0.5)."""
    return _build(conn, plus=False, budget=budget)


def build_plus(conn: Connectivity, profile: DelayProfile, budget: float = 0.5) -> Schedule:
    """MATCHA(+) on the complete connectivity graph, budget ``Cb`` (default 0.5)."""
    return _build(conn, plus=True, budget=budget)
