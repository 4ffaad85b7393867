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

import contextlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError
from fedsim.topologies import cache
from fedsim.topologies.delay import Connectivity, DelayProfile
from fedsim.topologies.schedule import Schedule, bidirect


def small_blas(size: int = 0, limit: int | None = None):
    """Run BLAS single-threaded (a context manager; ``limit``: only below that size).

    The simulator's matrices (up to a few thousand rows) gain little from
    threads on the few cores it runs on, and on a busy machine OpenBLAS's
    spinning threads cost many times the work itself (measured: 12 s instead
    of 0.4 s CPU for one 87-silo SDP at load 9 on 2 cores). Without
    threadpoolctl installed this does nothing.
    """
    if limit is not None and size >= limit:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


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
    # col[a][b]: colour of edge a-b (absent: uncoloured); at[a][c]: neighbour
    # across colour c, -1 where colour c is free at a (a list: free colours
    # are found by C-level scans instead of Python loops).
    col: list[dict[int, int]] = [dict() for _ in range(n)]
    at: list[list[int]] = [[-1] * n_colors for _ in range(n)]
    # With < 256 colours, free[a][c] == 1 iff colour c is free at a: a byte
    # table, so a fan step is one C-level translate + find over the candidates.
    small = n_colors < 256
    free: list[bytearray] = [bytearray(b"\x01" * n_colors + b"\x00" * (256 - n_colors)) if small
                             else bytearray() for _ in range(n)]

    def uncolor(a: int, b: int) -> None:
        c = col[a].pop(b, None)
        if c is not None:
            del col[b][a]
            at[a][c] = -1
            at[b][c] = -1
            if small:
                free[a][c] = 1
                free[b][c] = 1

    def paint(a: int, b: int, c: int) -> None:
        col[a][b] = c
        col[b][a] = c
        at[a][c] = b
        at[b][c] = a
        if small:
            free[a][c] = 0
            free[b][c] = 0

    for u, v in edges:
        col_u = col[u]
        if v in col_u:
            continue
        # Maximal fan of u starting at v: the next fan silo is the first
        # neighbour (insertion order) whose edge colour is free at the last.
        # Coloured edges at u do not change while the fan grows; a neighbour
        # taken into the fan leaves the candidate list.
        fan = [v]
        if small:
            rest_x = [x for x in nbrs[u] if x in col_u]
            rest_c = bytearray(col_u[x] for x in rest_x)
            while rest_x:
                idx = rest_c.translate(free[fan[-1]]).find(1)
                if idx < 0:
                    break
                fan.append(rest_x.pop(idx))
                del rest_c[idx]
        else:
            rest = [(x, col_u[x]) for x in nbrs[u] if x in col_u]
            while rest:
                at_last = at[fan[-1]]
                for idx, (x, cx) in enumerate(rest):
                    if at_last[cx] < 0:
                        fan.append(x)
                        del rest[idx]
                        break
                else:
                    break
        c = at[u].index(-1)
        d = at[fan[-1]].index(-1)
        # The cd-path from u, starting with colour d.
        path_nodes = {u}
        path_edges = []
        seen_edges: set[tuple[int, int]] = set()
        node, want = u, d
        while True:
            nxt = at[node][want]
            if nxt < 0:
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
        # Rotate the fan: edge u-sub[k] takes the colour of u-sub[k+1] (all
        # coloured: fan silos after v are coloured neighbours of u), and the
        # last edge takes d. Cleared first, then painted, as above.
        at_u = at[u]
        new_cols = [col_u[x] for x in sub[1:]]
        new_cols.append(d)
        free_u = free[u]
        for x in sub[1:]:
            cx = col_u.pop(x)
            del col[x][u]
            at_u[cx] = -1
            at[x][cx] = -1
            if small:
                free_u[cx] = 1
                free[x][cx] = 1
        for x, cx in zip(sub, new_cols):
            col_u[x] = cx
            col[x][u] = cx
            at_u[cx] = x
            at[x][cx] = u
            if small:
                free_u[cx] = 0
                free[x][cx] = 0
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

    Every Laplacian maps ``1`` to 0, so both problems are posed on ``1⊥``: this
    drops the ``β 11ᵀ`` and ``11ᵀ/N`` terms without changing their optima. The
    basis is the last ``n − 1`` columns of the Householder reflection that
    swaps ``e_1`` and ``1/√n`` (formed in ``O(n²)``).

    Examples
    --------
    >>> q = _complement_basis(4)
    >>> bool(np.allclose(q.T @ q, np.eye(3))), bool(np.allclose(q.sum(axis=0), 0))
    (True, True)
    """
    v = np.full(n, 1.0 / np.sqrt(n))
    v[0] -= 1.0
    vv = float(v @ v)
    if vv == 0.0:  # n == 1
        return np.zeros((n, 0))
    h = np.eye(n) - np.outer(v, v) * (2.0 / vv)
    return h[:, 1:]


def _edges_of(laps: list[np.ndarray]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(n, ends, weights, owner, k)``: the edges of Laplacians ``L_j`` and the ``j`` of each."""
    ends, weights, owner = [], [], []
    for j, lap in enumerate(laps):
        lap = np.asarray(lap, dtype=float)
        iu, ju = np.nonzero(np.triu(-lap, 1))
        ends.append(np.stack([iu, ju], axis=1))
        weights.append(-lap[iu, ju])
        owner.append(np.full(len(iu), j))
    return (laps[0].shape[0], np.concatenate(ends).astype(np.int64), np.concatenate(weights),
            np.concatenate(owner).astype(np.int64), len(laps))


def _weighted_laplacian(n: int, ends: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Laplacian of the edges ``ends`` with ``weights`` (dense ``n × n``)."""
    lap = np.zeros((n, n))
    u, v = ends[:, 0], ends[:, 1]
    np.add.at(lap, (u, v), -weights)
    np.add.at(lap, (v, u), -weights)
    np.add.at(lap, (u, u), weights)
    np.add.at(lap, (v, v), weights)
    return lap


def activation_probabilities(laps: list[np.ndarray], budget: float) -> np.ndarray:
    """``p`` maximising λ₂(Σ p_j L_j) s.t. 0 ≤ p ≤ 1, Σ p ≤ budget · #matchings.

    The SDP ``max γ s.t. Qᵀ(Σ p_j L_j)Q ⪰ γI`` has only ``k + 1`` scalar
    variables, so it is solved here directly (:func:`_solve_activation_probabilities`,
    a log-barrier Newton method in numpy), without a general conic solver.

    Closed form: when every matching has the same number of edges and the
    uniform choice ``p_j = budget`` makes the expected Laplacian a multiple of
    ``I − 11ᵀ/N`` (e.g. Misra-Gries on a complete graph of odd size), uniform
    is the unique optimum: ``λ₂ ≤ tr(Σ p_j L_j)/(N − 1) = 2 Σ p_j |M_j|/(N − 1)``,
    whose maximum over the constraints the uniform choice attains, and equality
    forces all off-diagonal entries, hence all ``p_j``, to be equal.
    """
    return _activation_probabilities(*_edges_of(laps), budget)


def _activation_probabilities(n: int, ends: np.ndarray, weights: np.ndarray, owner: np.ndarray,
                              k: int, budget: float) -> np.ndarray:
    """:func:`activation_probabilities` for matchings given as edges (``owner``: matching of each)."""
    if budget >= 1:
        return np.ones(k)  # λ₂ never decreases when a p_j grows
    sizes = np.bincount(owner, weights=weights, minlength=k)  # total weight per matching
    uniform = np.full(k, float(budget))
    if np.allclose(sizes, sizes[0], rtol=1e-12, atol=0):
        # Spectrum of L(uniform) on 1⊥: all equal iff L(uniform) = c (I − 11ᵀ/N).
        lam = np.linalg.eigvalsh(_weighted_laplacian(n, ends, weights * float(budget)))[1:]
        if lam[-1] - lam[0] <= 1e-9 * abs(lam[-1]):
            return uniform
    if len(ends) <= 3000:  # E x E traces: cheaper than E N^2 products
        return _solve_activation_full_space(n, ends, weights, owner, k, budget)
    q = _complement_basis(n)
    rows = (q[ends[:, 0]] - q[ends[:, 1]]) * np.sqrt(weights)[:, None]
    return _solve_activation_probabilities(rows, owner, k, budget)


def _solve_activation_probabilities(rows: np.ndarray, owner: np.ndarray, k: int, budget: float,
                                    rel_gap: float = 1e-8) -> np.ndarray:
    """The SDP of :func:`activation_probabilities` by a log-barrier Newton method.

    Minimises ``−t γ − log det(A(p) − γI) − Σ log p_j − Σ log(1 − p_j) −
    log(budget·k − Σ p_j)`` with ``A(p) = Σ_e p_{j(e)} c_e c_eᵀ`` for growing
    ``t`` (×20 per centring) until the duality gap bound ``ν/t`` (``ν = m + 2k + 1``)
    is below ``rel_gap · γ``. Each Newton step costs one Cholesky factorisation
    and ``O(E m² + k² m²)`` products (``m = N − 1``). The path converges to the
    analytic centre of the optimal face, a deterministic choice when the
    optimum is not unique.
    """
    m = rows.shape[1]
    cap = budget * k
    nu = m + 2 * k + 1
    order = np.argsort(owner, kind="stable")
    rows, owner = rows[order], owner[order]
    bounds = np.searchsorted(owner, np.arange(k + 1))

    stack = None
    if k * m * m <= 15_000_000:  # A_j as dense matrices: A(p) in k m^2 instead of E m^2
        stack = np.empty((k, m, m))
        for j in range(k):
            rj = rows[bounds[j]:bounds[j + 1]]
            stack[j] = rj.T @ rj

    def amat(p):
        if stack is not None:
            return np.tensordot(p, stack, axes=1)
        return (rows * p[owner][:, None]).T @ rows

    def barrier(p, g, t):
        if np.any(p <= 0) or np.any(p >= 1) or p.sum() >= cap:
            return np.inf, None
        try:
            r = np.linalg.cholesky(amat(p) - g * np.eye(m))
        except np.linalg.LinAlgError:
            return np.inf, None
        val = (-t * g - 2 * np.log(np.diag(r)).sum() - np.log(p).sum() - np.log1p(-p).sum()
               - np.log(cap - p.sum()))
        return val, r

    def max_step(p, step, tm):
        """Largest s keeping p + s dp strictly inside the box, the budget and the PSD cone."""
        dp = step[:k]
        s_max = np.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            s_max = min(s_max, np.min(np.where(dp < 0, -p / dp, np.inf)),
                        np.min(np.where(dp > 0, (1 - p) / dp, np.inf)))
            if dp.sum() > 0:
                s_max = min(s_max, (cap - p.sum()) / dp.sum())
        # S + s dS = R (I + s M) R^T with M = sum_i dx_i T_i.
        low = float(np.linalg.eigvalsh(np.tensordot(step, tm, axes=1))[0])
        if low < 0:
            s_max = min(s_max, -1.0 / low)
        return s_max

    def newton_system(p, g, t, r):
        rinv = np.linalg.inv(r)
        d = rows @ rinv.T  # d_e = R^-1 c_e
        tm = np.empty((k + 1, m, m))
        for j in range(k):
            dj = d[bounds[j]:bounds[j + 1]]
            tm[j] = dj.T @ dj
        tm[k] = -(rinv @ rinv.T)
        flat = tm.reshape(k + 1, -1)
        hess = flat @ flat.T
        grad = -np.trace(tm, axis1=1, axis2=2)
        slack = cap - p.sum()
        grad[:k] += -1 / p + 1 / (1 - p) + 1 / slack
        grad[k] -= t
        hess[:k, :k] += np.diag(1 / p**2 + 1 / (1 - p) ** 2) + 1 / slack**2
        return grad, hess, tm

    p = np.full(k, 0.9 * budget)
    g = float(np.linalg.eigvalsh(amat(p))[0])
    g -= 0.5 * abs(g) + 1e-9
    return _barrier_path(barrier, newton_system, lambda p, step, tm: min(1.0, 0.99 * max_step(p, step, tm)),
                         p, g, nu, rel_gap, tol_dec=1e-9)


def _barrier_path(barrier, newton_system, step_limit, p: np.ndarray, g: float, nu: float, rel_gap: float,
                  tol_dec: float) -> np.ndarray:
    """The log-barrier path both MATCHA solvers follow, over ``(p, γ)``.

    ``barrier(p, g, t) -> (value, state)`` (``inf`` outside the domain);
    ``newton_system(p, g, t, state) -> (grad, hess, aux)``; ``step_limit(p,
    step, aux)`` the longest step to try. Damped Newton steps with
    backtracking (Armijo factor 0.25) centre each ``t``; ``t`` grows ×20 until
    the duality gap bound ``ν/t`` is below ``rel_gap · |γ|``.
    """
    t = nu / max(abs(g), 1e-12)
    val, state = barrier(p, g, t)
    k = len(p)
    for _outer in range(60):
        for _newton in range(100):
            grad, hess, aux = newton_system(p, g, t, state)
            try:
                step = np.linalg.solve(hess, -grad)
            except np.linalg.LinAlgError:
                step = -grad
            dec = float(-grad @ step)
            if dec / 2 < tol_dec:
                break
            s = s0 = step_limit(p, step, aux)
            while s > 1e-6 * s0:  # below that only rounding noise is left
                new_val, new_state = barrier(p + s * step[:k], g + s * step[k], t)
                if new_val <= val - 0.25 * s * dec:
                    break
                s *= 0.5
            else:
                break
            p, g, val, state = p + s * step[:k], g + s * step[k], new_val, new_state
        if nu / t <= rel_gap * max(abs(g), 1e-12):
            break
        t *= 20.0
        val, state = barrier(p, g, t)
    if not np.all(np.isfinite(p)):
        raise FedsimError("MATCHA activation-probability problem failed; try another --budget")
    return np.clip(p, 0.0, 1.0)


def _solve_activation_full_space(n: int, ends: np.ndarray, weights: np.ndarray, owner: np.ndarray,
                                 k: int, budget: float, rel_gap: float | None = None) -> np.ndarray:
    """The same barrier method as :func:`_solve_activation_probabilities`, posed in ``R^N``.

    For few edges ``E`` on many silos: with ``M = L(p) − γI + (γ + 1) 11ᵀ/N``
    (``M ≻ 0`` iff ``Qᵀ L(p) Q ≻ γI``; ``log det M = log det(Qᵀ(L(p) − γI)Q)``)
    and ``b_e = e_u − e_v ⊥ 1``, every trace the Newton step needs is an entry
    of ``G = B M⁻¹ Bᵀ`` (``E × E``): ``tr(S⁻¹A_j) = Σ_{e∈j} G_ee``,
    ``tr(S⁻¹A_iS⁻¹A_j) = Σ_{e∈i, f∈j} G_ef²``. One ``N × N`` inverse and
    ``E²`` gathers per step instead of ``O(E N²)`` products.

    Above 300 silos the path stops at a relative duality gap of 1e-6 (instead
    of 1e-8) and a centring stops once the Newton decrement is below
    ``1e-7 ν``: each step costs an ``N × N`` factorisation and inverse there.
    """
    large = n > 300
    if rel_gap is None:
        rel_gap = 1e-6 if large else 1e-8
    tol_dec = 1e-7 * ((n - 1) + 2 * k + 1) if large else 1e-9
    cap = budget * k
    nu = (n - 1) + 2 * k + 1
    u, v = ends[:, 0], ends[:, 1]
    sw = np.sqrt(weights)
    onehot = np.zeros((len(ends), k))
    onehot[np.arange(len(ends)), owner] = 1.0
    eye = np.eye(n)

    def mmat(p, g):
        return _weighted_laplacian(n, ends, weights * p[owner]) - g * eye + (g + 1.0) / n

    def barrier(p, g, t):
        if np.any(p <= 0) or np.any(p >= 1) or p.sum() >= cap:
            return np.inf, None
        m = mmat(p, g)
        try:
            r = np.linalg.cholesky(m)
        except np.linalg.LinAlgError:
            return np.inf, None
        val = (-t * g - 2 * np.log(np.diag(r)).sum() - np.log(p).sum() - np.log1p(-p).sum()
               - np.log(cap - p.sum()))
        return val, m

    def newton_system(p, g, t, m):
        if large:  # inverse from the Cholesky factor (half the work of LU)
            import scipy.linalg

            c_f, _ = scipy.linalg.cho_factor(m, lower=True, check_finite=False)
            minv = scipy.linalg.cho_solve((c_f, True), eye, check_finite=False)
        else:
            minv = np.linalg.inv(m)
        y = (minv[:, u] - minv[:, v]) * sw  # columns M^-1 c_e
        gmat = (y[u] - y[v]) * sw[:, None]  # G_ef = c_e^T M^-1 c_f
        hess = np.empty((k + 1, k + 1))
        hess[:k, :k] = onehot.T @ (gmat * gmat) @ onehot
        hess[:k, k] = hess[k, :k] = -(onehot.T @ np.einsum("ie,ie->e", y, y))
        hess[k, k] = float(np.einsum("ij,ij->", minv, minv)) - 1.0
        grad = np.empty(k + 1)
        slack = cap - p.sum()
        grad[:k] = -(onehot.T @ np.diag(gmat)) - 1 / p + 1 / (1 - p) + 1 / slack
        grad[k] = -t + float(np.trace(minv)) - 1.0
        hess[:k, :k] += np.diag(1 / p**2 + 1 / (1 - p) ** 2) + 1 / slack**2
        return grad, hess, slack

    def step_limit(p, step, slack):
        """Longest step keeping p strictly inside the box and the budget (the barrier checks the rest)."""
        dp = step[:k]
        s0 = 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            s0 = min(s0, 0.99 * np.min(np.where(dp < 0, -p / dp, np.inf)),
                     0.99 * np.min(np.where(dp > 0, (1 - p) / dp, np.inf)))
            if dp.sum() > 0:
                s0 = min(s0, 0.99 * slack / dp.sum())
        return s0

    p = np.full(k, 0.9 * budget)
    g = float(np.linalg.eigvalsh(mmat(p, 0.0) - 1.0 / n)[1])  # λ₂ of L(p)
    g -= 0.5 * abs(g) + 1e-9
    return _barrier_path(barrier, newton_system, step_limit, p, g, nu, rel_gap, tol_dec)


def mixing_step(laps: list[np.ndarray], p: np.ndarray) -> float:
    """``α`` minimising ρ s.t. ``I − 2αL̄ + β(L̄² + 2L̃) − 11ᵀ/N ⪯ ρI``, ``α² ≤ β``.

    The left side grows with β (``L̄² + 2L̃ ⪰ 0``), so β = α² at the optimum
    and the SDP reduces exactly to the convex scalar problem
    ``min_α ρ(α) = λ_max(Qᵀ(I − 2αL̄ + α²(L̄² + 2L̃))Q)``, solved here on the
    bracket ``[0, 2/λ_min(QᵀL̄Q)]`` by steps that keep a sign change of ρ's
    (sub)gradient: the secant step on the derivative (exact for a smooth
    quadratic) alternating with the intersection of the two end tangents
    (exact at a kink of two linear pieces), with bisection as safeguard.
    """
    return _mixing_step(*_edges_of(laps), p)


def _mixing_step(n: int, ends: np.ndarray, weights: np.ndarray, owner: np.ndarray, k: int,
                 p: np.ndarray) -> float:
    """:func:`mixing_step` for matchings given as edges (``owner``: matching of each)."""
    p = np.asarray(p, dtype=float)
    q = _complement_basis(n)
    l_bar = _weighted_laplacian(n, ends, weights * p[owner])
    l_tilde = _weighted_laplacian(n, ends, weights * (p * (1 - p))[owner])
    a = q.T @ l_bar @ q
    b = q.T @ (l_bar @ l_bar + 2 * l_tilde) @ q
    eye = np.eye(n - 1)

    if n - 1 > 300:  # the top eigenpairs only (LAPACK syevr): the full eigh is 3x the work
        import scipy.linalg

        def top_pairs(mat):
            return scipy.linalg.eigh(mat, subset_by_index=[n - 4, n - 2], check_finite=False)
    else:
        top_pairs = np.linalg.eigh

    def rho(alpha: float) -> tuple[float, float]:
        lam, vec = top_pairs(eye - 2 * alpha * a + alpha**2 * b)
        top = vec[:, lam >= lam[-1] - 1e-12 * max(1.0, abs(lam[-1]))]
        slopes = np.linalg.eigvalsh(top.T @ (-2 * a + 2 * alpha * b) @ top)
        # A subgradient whose sign tells on which side the minimum lies.
        slope = 0.0 if slopes[0] <= 0 <= slopes[-1] else float(slopes[0] if slopes[0] > 0 else slopes[-1])
        return float(lam[-1]), slope

    low = max(float(np.linalg.eigvalsh(a)[0]), 1e-12)
    lo, hi = 0.0, 2.0 / low
    (f_lo, d_lo), (f_hi, d_hi) = rho(lo), rho(hi)
    if d_lo >= 0:
        return lo
    if d_hi <= 0:
        return hi
    widths = [hi - lo]
    for it in range(200):
        if hi - lo <= 1e-10 * hi:
            break
        if len(widths) >= 3 and widths[-1] > 0.5 * widths[-3]:
            x = 0.5 * (lo + hi)
        elif it % 2 == 0:
            x = lo - d_lo * (hi - lo) / (d_hi - d_lo)
        else:
            x = (f_hi - f_lo + d_lo * lo - d_hi * hi) / (d_lo - d_hi)
        x = min(max(x, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))
        f_x, d_x = rho(x)
        if d_x == 0:
            return float(x)
        if d_x < 0:
            lo, f_lo, d_lo = x, f_x, d_x
        else:
            hi, f_hi, d_hi = x, f_x, d_x
        widths.append(hi - lo)
    return float(lo if f_lo <= f_hi else hi)


@lru_cache(maxsize=32)
def decomposition(
    conn: Connectivity, plus: bool, budget: float
) -> tuple[tuple[tuple[int, int], ...], np.ndarray, np.ndarray, float]:
    """Edges, matching index per edge, activation probabilities and α.

    Cached in the process and on disk (:mod:`fedsim.topologies.cache`): the
    colouring and the activation-probability problem grow with the network.
    The disk key hashes the silo count, the edge list (in order), the budget,
    this module's source and the numpy version, i.e. everything the
    result depends on; an entry is also checked (proper matchings,
    probabilities in [0, 1] within budget, finite α) before it is used.
    ``FEDSIM_CACHE=off`` disables the disk cache.
    """
    if plus:
        edges = [(u, v) for u, v in conn.edges.tolist()]
    else:
        seen, edges = set(), []
        for u, v, _ in conn.network.links:
            k = (min(u, v), max(u, v))
            if u != v and k not in seen:
                seen.add(k)
                edges.append((u, v))
    key = cache.digest(
        "matcha-decomposition/2", conn.n, np.asarray(edges, dtype=np.int64).reshape(-1, 2),
        float(budget), _module_source(), cache.package_versions("numpy"),
    )
    hit = _checked_entry(cache.load("matcha", key), conn.n, edges, budget)
    if hit is not None:
        match, p, alpha = hit
        return tuple(edges), match, p, alpha
    colors = misra_gries(conn.n, edges)
    used = sorted(set(colors.values()))
    index = {c: j for j, c in enumerate(used)}
    match = np.array([index[colors[(min(u, v), max(u, v))]] for u, v in edges])
    ends = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    parts = (conn.n, ends, np.ones(len(ends)), match.astype(np.int64), len(used))
    with small_blas(conn.n):
        p = _activation_probabilities(*parts, budget)
        alpha = _mixing_step(*parts, p)
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
