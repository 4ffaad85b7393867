"""Mixing matrices of the decentralized designs (SPEC-timing §5).

Row ``i`` of ``W`` says how silo ``i`` forms its next model from the models of
the silos it receives from: ``x_i ← Σ_j W_ij x_j``. An arc ``j → i`` of a
schedule carries ``j``'s model to ``i`` (the direction the simulated clock
makes ``i`` wait on).
"""

from __future__ import annotations

import numpy as np

from fedsim.topologies.schedule import Schedule


def ring_weights(n: int, arcs: np.ndarray) -> np.ndarray:
    """``W = ½(I + P)``: each silo averages itself and its ring predecessor."""
    w = 0.5 * np.eye(n)
    for u, v in np.asarray(arcs).tolist():
        w[v, u] += 0.5
    return w


def metropolis_weights(n: int, arcs: np.ndarray) -> np.ndarray:
    """Metropolis–Hastings weights ``1 / (1 + max(d_i, d_j))``: symmetric, doubly stochastic."""
    adj = np.zeros((n, n), dtype=bool)
    for u, v in np.asarray(arcs).tolist():
        if u != v:
            adj[u, v] = adj[v, u] = True
    deg = adj.sum(1)
    w = np.where(adj, 1.0 / (1 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    w[np.arange(n), np.arange(n)] = 1 - w.sum(1)
    return w


def fdla_weights(n: int, arcs: np.ndarray) -> tuple[np.ndarray, str]:
    """Fastest distributed linear averaging weights (Xiao & Boyd, 2004).

    Minimises ``‖W − 11ᵀ/N‖₂`` over symmetric ``W`` with ``W1 = 1`` supported on
    the overlay's edges and self-loops, written as ``W = I − Σ_e w_e a_e a_eᵀ``
    (``a_e = e_u − e_v``) so that symmetry and row sums hold by construction,
    and posed on ``1⊥``. Falls back to Metropolis weights if the SDP fails.

    Returns
    -------
    (W, method) with method ``"fdla"`` or ``"metropolis"``.
    """
    edges = sorted({(min(u, v), max(u, v)) for u, v in np.asarray(arcs).tolist() if u != v})
    if n == 1 or not edges:
        return np.eye(n), "fdla"
    try:
        import cvxpy as cp
        import scipy.linalg

        q = scipy.linalg.null_space(np.ones((1, n)))
        basis = []
        for u, v in edges:
            a = np.zeros(n)
            a[u], a[v] = 1.0, -1.0
            b = q.T @ a
            basis.append(np.outer(b, b).ravel())
        stacked = np.stack(basis, axis=1)
        w = cp.Variable(len(edges))
        m = np.eye(n - 1) - cp.reshape(stacked @ w, (n - 1, n - 1), order="C")
        s = cp.Variable()
        sym = (m + m.T) / 2
        prob = cp.Problem(cp.Minimize(s), [sym << s * np.eye(n - 1), sym >> -s * np.eye(n - 1)])
        prob.solve(solver=cp.SCS, eps_abs=1e-8, eps_rel=1e-8)
        if prob.status not in ("optimal", "optimal_inaccurate") or w.value is None:
            raise RuntimeError(prob.status)
        mat = np.eye(n)
        for (u, v), we in zip(edges, np.asarray(w.value)):
            mat[u, v] = mat[v, u] = we
            mat[u, u] -= we
            mat[v, v] -= we
        if np.abs(np.linalg.eigvalsh(mat - np.ones((n, n)) / n)).max() >= 1 - 1e-9:
            raise RuntimeError("no contraction")
        return mat, "fdla"
    except Exception:  # noqa: BLE001 - any solver failure: documented fallback
        return metropolis_weights(n, arcs), "metropolis"


def multigraph_weights(schedule: Schedule, k: int, self_weight: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Mixing of round ``k`` of a multigraph (Do et al., 2023; SPEC-timing §5.2).

    Silo ``i`` keeps ``self_weight`` of its own model and shares the rest
    equally over its strong in-neighbours; a silo with none (isolated) keeps its
    own model. A neighbour whose arc was weak in the previous round sends its
    previous-round model (it has been in flight since then).

    Returns
    -------
    W : (N, N) array
    stale : (N, N) bool array
        ``stale[i, j]``: silo ``i`` uses ``j``'s previous-round model.
    """
    n = schedule.n
    strong = schedule.state_mask(k)
    was_strong = schedule.state_mask(k - 1) if k > 0 else np.ones_like(strong)
    w = np.zeros((n, n))
    stale = np.zeros((n, n), dtype=bool)
    senders: list[list[int]] = [[] for _ in range(n)]
    for a, (u, v) in enumerate(schedule.arcs.tolist()):
        if strong[a] and u != v:
            senders[v].append(u)
            stale[v, u] = not was_strong[a]
    for i in range(n):
        if senders[i]:
            w[i, i] = self_weight
            for j in senders[i]:
                w[i, j] += (1 - self_weight) / len(senders[i])
        else:
            w[i, i] = 1.0
    return w, stale


def matcha_weights(schedule: Schedule, present: np.ndarray) -> np.ndarray:
    """``W_k = I − α L_k`` for the arcs present in round ``k``."""
    n = schedule.n
    lap = np.zeros((n, n))
    for u, v in schedule.arcs[present].tolist():
        if u < v:  # each edge appears as two arcs
            lap[u, v] -= 1
            lap[v, u] -= 1
            lap[u, u] += 1
            lap[v, v] += 1
    return np.eye(n) - schedule.alpha * lap
