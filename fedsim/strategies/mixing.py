"""Mixing matrices of the decentralized designs (SPEC-timing §5).

Row ``i`` of ``W`` says how silo ``i`` forms its next model from the models of
the silos it receives from: ``x_i ← Σ_j W_ij x_j``. An arc ``j → i`` of a
schedule carries ``j``'s model to ``i`` (the direction the simulated clock
makes ``i`` wait on).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def renormalise(w: np.ndarray, answered: np.ndarray, stale: np.ndarray | None = None,
                eps: float = 1e-12) -> np.ndarray:
    """Mixing matrix restricted to the silos that answered (see module docstring).

    Parameters
    ----------
    w : (N, N) array
        The round's mixing matrix, rows sum to one.
    answered : (N,) bool array
        ``answered[j]``: silo ``j``'s reply arrived this round.
    stale : (N, N) bool array, optional
        Entries that use the sender's previous-round model (kept even if the
        sender did not answer).

    Examples
    --------
    >>> w = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    >>> renormalise(w, np.array([True, True, False]))
    array([[1. , 0. , 0. ],
           [0.5, 0.5, 0. ],
           [0. , 0. , 1. ]])
    """
    w = np.asarray(w, dtype=float)
    n = w.shape[0]
    alive = np.asarray(answered, dtype=bool)
    keep = np.broadcast_to(alive[None, :], w.shape).copy()
    if stale is not None:
        keep |= np.asarray(stale, dtype=bool)
    out = np.where(keep, w, 0.0)
    sums = out.sum(axis=1)
    eye = np.eye(n)
    for i in range(n):
        if not alive[i] or sums[i] <= eps:
            out[i] = eye[i]
        else:
            out[i] /= sums[i]
    return out


@dataclass(frozen=True)
class SiloRound:
    """What one silo does in one round of a decentralized strategy.

    Attributes
    ----------
    self_weight : float
        ``W_ii``: the weight of the silo's own freshly trained model.
    inbound : tuple of (src, weight, stale)
        The silos it waits for, ascending: ``W_i,src`` and whether the arrival
        is the sender's model from the start of the round (multigraph: the arc
        was weak in the previous round, so that model has been in flight
        since) rather than the one it trained this round.
    fresh_to, stale_to : tuple of int
        The silos it sends its trained model to / its start-of-round model to.
    """

    self_weight: float
    inbound: tuple[tuple[int, float, bool], ...]
    fresh_to: tuple[int, ...]
    stale_to: tuple[int, ...]

    def to_json(self) -> list:
        return [self.self_weight, [list(x) for x in self.inbound], list(self.fresh_to), list(self.stale_to)]

    @classmethod
    def from_json(cls, data: list) -> SiloRound:
        w, inbound, fresh, stale = data
        return cls(float(w), tuple((int(j), float(x), bool(s)) for j, x, s in inbound),
                   tuple(int(j) for j in fresh), tuple(int(j) for j in stale))


class MixingPlan:
    """Per-round mixing of a decentralized strategy, for the whole federation or one silo.

    The plan is the single source of the mixing arithmetic: the Simulation
    Engine's round loop and every silo of the peer data plane call
    :meth:`silo_round` and :func:`mix_row`, so the same seed gives the same
    models whichever carries them.

    Parameters
    ----------
    schedule : Schedule
        A decentralized design (ring, mst, dmbst, matcha, matcha_plus, multigraph).
    rounds : int
        Total rounds (MATCHA draws its activations for all of them up front).
    seed : int
        Seed of MATCHA's activations (the simulated clock uses the same draws).
    self_weight : float
        Multigraph self weight.

    Examples
    --------
    >>> from fedsim.topologies.schedule import static_schedule
    >>> plan = MixingPlan(static_schedule("ring", 3, [(0, 1), (1, 2), (2, 0)]), rounds=2)
    >>> plan.silo_round(1, 1)
    SiloRound(self_weight=0.5, inbound=((0, 0.5, False),), fresh_to=(2,), stale_to=())
    """

    def __init__(self, schedule: Schedule, rounds: int, seed: int = 0, self_weight: float = 0.7) -> None:
        self.schedule = schedule
        self.n = schedule.n
        self.rounds = int(rounds)
        self.self_weight = float(self_weight)
        self.weights_method: str | None = None
        self._static: np.ndarray | None = None
        self._present: np.ndarray | None = None
        if schedule.is_random:
            self._present, _ = schedule.round_masks(rounds, seed)
        elif schedule.topology == "ring":
            self._static, self.weights_method = ring_weights(schedule.n, schedule.arcs), "ring"
        elif schedule.topology != "multigraph":
            self._static, self.weights_method = fdla_weights(schedule.n, schedule.arcs)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = {}

    def matrix(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W, stale)`` of round ``k`` (1-based)."""
        w, stale, _ = self._round(k)
        return w, stale

    def _round(self, k: int):
        if k not in self._cache:
            if not 1 <= k <= self.rounds:
                raise ValueError(f"round {k} is outside 1..{self.rounds}")
            s = self.schedule
            if self._present is not None:
                w, stale, strong = matcha_weights(s, self._present[k - 1]), None, self._present[k - 1]
            elif self._static is not None:
                w, stale, strong = self._static, None, np.ones(len(s.arcs), dtype=bool)
            else:
                (w, stale), strong = multigraph_weights(s, k - 1, self.self_weight), s.state_mask(k - 1)
            if len(self._cache) > 64:  # rounds are asked in order; keep the cache small
                self._cache.clear()
            self._cache[k] = (w, stale, strong)
        return self._cache[k]

    def silo_round(self, i: int, k: int) -> SiloRound:
        """Silo ``i``'s part of round ``k``: whom it waits for and sends to, and its weights."""
        w, stale, strong = self._round(k)
        arcs = self.schedule.arcs[strong]
        senders = sorted({int(u) for u, v in arcs.tolist() if v == i and u != i})
        receivers = sorted({int(v) for u, v in arcs.tolist() if u == i and v != i})
        inbound = tuple((j, float(w[i, j]), bool(stale is not None and stale[i, j])) for j in senders)
        fresh = tuple(v for v in receivers if not (stale is not None and stale[v, i]))
        old = tuple(v for v in receivers if stale is not None and stale[v, i])
        return SiloRound(float(w[i, i]), inbound, fresh, old)


def mix_row(plan: SiloRound, own: np.ndarray, arrivals: dict[int, np.ndarray], eps: float = 1e-12) -> np.ndarray:
    """Silo's next model ``Σ_j W_ij z_j`` from its own trained model and what arrived.

    Sums in float64 in a fixed order (own model, then senders ascending) and
    returns float32, so every engine computes bit-identical models. A sender
    whose model did not arrive (a lost silo) is left out and the remaining
    weights are renormalised to sum to one; if they sum to ``<= eps`` (FDLA
    and MATCHA weights may be negative) the silo keeps its own model.

    Examples
    --------
    >>> r = SiloRound(0.5, ((0, 0.25, False), (2, 0.25, False)), (), ())
    >>> mix_row(r, np.ones(2, np.float32), {0: np.zeros(2, np.float32), 2: np.full(2, 2, np.float32)})
    array([1., 1.], dtype=float32)
    >>> mix_row(r, np.ones(2, np.float32), {0: np.zeros(2, np.float32)})  # silo 2 lost: 2/3 own, 1/3 silo 0
    array([0.6666667, 0.6666667], dtype=float32)
    """
    total = plan.self_weight + sum(w for j, w, _ in plan.inbound if j in arrivals)
    missing = any(j not in arrivals for j, _, _ in plan.inbound)
    if missing and abs(total) <= eps:
        return np.asarray(own, dtype=np.float32).copy()
    scale = 1.0 / total if missing else 1.0
    acc = np.asarray(own, dtype=np.float64) * (plan.self_weight * scale)
    for j, w, _ in plan.inbound:
        if j in arrivals:
            acc += np.asarray(arrivals[j], dtype=np.float64) * (w * scale)
    return acc.astype(np.float32)
