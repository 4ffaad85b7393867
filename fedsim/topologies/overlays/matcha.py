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

import numpy as np
import scipy.linalg
import scipy.optimize

from fedsim.errors import FedsimError
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
    """
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for u, v in edges:
        nbrs[u].append(v)
        nbrs[v].append(u)
    n_colors = max((len(a) for a in nbrs), default=0) + 1
    color: dict[tuple[int, int], int | None] = {}
    at: list[dict[int, int]] = [dict() for _ in range(n)]  # node -> {colour: neighbour}

    def key(a: int, b: int) -> tuple[int, int]:
        return (a, b) if a < b else (b, a)

    def set_color(a: int, b: int, c: int | None) -> None:
        old = color.get(key(a, b))
        if old is not None:
            at[a].pop(old, None)
            at[b].pop(old, None)
        color[key(a, b)] = c
        if c is not None:
            at[a][c] = b
            at[b][c] = a

    def free(node: int, c: int | None) -> bool:
        return c not in at[node]

    def first_free(node: int) -> int:
        return next(c for c in range(n_colors) if c not in at[node])

    for u, v in edges:
        if color.get(key(u, v)) is not None:
            continue
        # Maximal fan of u starting at v.
        fan = [v]
        in_fan = {v}
        grown = True
        while grown:
            grown = False
            for x in nbrs[u]:
                cx = color.get(key(u, x))
                if x not in in_fan and cx is not None and free(fan[-1], cx):
                    fan.append(x)
                    in_fan.add(x)
                    grown = True
                    break
        c = first_free(u)
        d = first_free(fan[-1])
        # The cd-path from u, starting with colour d.
        path_nodes = {u}
        path_edges = []
        node, want = u, d
        while True:
            nxt = at[node].get(want)
            if nxt is None or key(node, nxt) in path_edges:
                break
            path_edges.append(key(node, nxt))
            path_nodes.add(nxt)
            node, want = nxt, (c if want == d else d)
        sub = [v]
        for x in fan[1:]:
            if color.get(key(u, x)) == d:
                break
            sub.append(x)
        if sub[-1] in path_nodes and len(path_edges) > 0:
            sub = fan
        # Invert the path (clear first so the per-node index stays consistent).
        flipped = [(a, b, d if color[(a, b)] == c else c) for a, b in path_edges]
        for a, b, _ in flipped:
            set_color(a, b, None)
        for a, b, cc in flipped:
            set_color(a, b, cc)
        # Rotate the fan and colour its last edge with d.
        for k in range(len(sub) - 1):
            nxt_c = color.get(key(u, sub[k + 1]))
            set_color(u, sub[k + 1], None)
            set_color(u, sub[k], nxt_c)
        set_color(u, sub[-1], d)
    return {k: c for k, c in color.items() if c is not None}


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
    return scipy.linalg.null_space(np.ones((1, n)))


def activation_probabilities(laps: list[np.ndarray], budget: float) -> np.ndarray:
    """``p`` maximising λ₂(Σ p_j L_j) s.t. 0 ≤ p ≤ 1, Σ p ≤ budget · #matchings.

    Solved as ``max γ s.t. Qᵀ(Σ p_j L_j)Q ⪰ γI`` with SCS (a first-order conic
    solver, tolerance 1e-7): interior-point solvers factor a dense system over
    the whole PSD cone and take seconds to minutes on 80-silo networks.
    """
    import cvxpy as cp

    k, n = len(laps), laps[0].shape[0]
    q = _complement_basis(n)
    stacked = np.stack([(q.T @ lap @ q).ravel() for lap in laps], axis=1)
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
    res = scipy.optimize.minimize_scalar(rho, bounds=(0.0, 2.0 / low), method="bounded",
                                         options={"xatol": 1e-10})
    return float(res.x)


@lru_cache(maxsize=32)
def decomposition(
    conn: Connectivity, plus: bool, budget: float
) -> tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray, float]:
    """Edges, matching index per edge, activation probabilities and α (cached)."""
    if plus:
        edges = [(u, v) for u, v in conn.graph.edges]
    else:
        seen, edges = set(), []
        for u, v, _ in conn.network.links:
            k = (min(u, v), max(u, v))
            if u != v and k not in seen:
                seen.add(k)
                edges.append((u, v))
    colors = misra_gries(conn.n, edges)
    used = sorted(set(colors.values()))
    index = {c: j for j, c in enumerate(used)}
    match = np.array([index[colors[(min(u, v), max(u, v))]] for u, v in edges])
    laps = [laplacian(conn.n, [e for e, m in zip(edges, match) if m == j]) for j in range(len(used))]
    p = activation_probabilities(laps, budget)
    alpha = mixing_step(laps, p)
    return tuple(edges), match, p, alpha


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
