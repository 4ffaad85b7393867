"""Max-plus cycle time of a weighted digraph.

In a synchronous decentralized round every silo waits for all its
in-neighbours, ``t_j(k+1) = max_i t_i(k) + d(i, j)``; the steady-state round
time is the **maximum cycle mean** of the delay digraph (Baccelli et al.,
*Synchronization and Linearity*, 1992). Two exact evaluators are provided:

* :func:`karp_cycle_time` -- Karp's algorithm (1978), vectorised over the
  max-plus product, ``O(N^3)``;
* :class:`CycleBasis` -- enumerate the elementary cycles of a fixed arc set
  once, then each evaluation is a matrix-vector product. Overlays used in
  practice (rings, bidirected trees, stars) have very few cycles, so this is
  what the per-round simulators use.
"""

from __future__ import annotations

from itertools import islice

import networkx as nx
import numpy as np


def _dense(n: int, arcs: np.ndarray, delays: np.ndarray) -> np.ndarray:
    w = np.full((n, n), -np.inf)
    arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
    # Parallel arcs: the slowest one binds.
    np.maximum.at(w, (arcs[:, 0], arcs[:, 1]), np.asarray(delays, dtype=float))
    return w


def karp_cycle_time(n: int, arcs: np.ndarray, delays: np.ndarray, source: int = 0) -> float:
    """Maximum cycle mean by Karp's algorithm.

    ``D_k(v)`` is the heaviest walk of exactly ``k`` arcs from ``source`` to
    ``v``; the answer is ``max_v min_k (D_N(v) - D_k(v)) / (N - k)``. The digraph
    must be strongly connected (every cycle reachable from ``source``).

    Examples
    --------
    A 3-silo ring with delays 1, 2, 6 has cycle time 3:

    >>> karp_cycle_time(3, [[0, 1], [1, 2], [2, 0]], [1.0, 2.0, 6.0])
    3.0
    """
    w = _dense(n, arcs, delays)
    d = np.full((n + 1, n), -np.inf)
    d[0, source] = 0.0
    for k in range(1, n + 1):
        d[k] = np.max(d[k - 1][:, None] + w, axis=0)
    best = -np.inf
    with np.errstate(invalid="ignore"):
        for v in range(n):
            if d[n, v] == -np.inf:
                continue
            ks = np.arange(n)
            vals = (d[n, v] - d[:n, v]) / (n - ks)
            vals = vals[np.isfinite(d[:n, v])]
            if vals.size:
                best = max(best, float(vals.min()))
    return best


class CycleBasis:
    """All elementary cycles of a fixed arc set, for fast repeated evaluation.

    Parameters
    ----------
    n : int
        Number of silos.
    arcs : (A, 2) int array
        The directed arcs. Delays passed to :meth:`cycle_time` follow this order.
    limit : int
        Give up (``ok`` is False) if there are more cycles than this; callers
        then fall back to :func:`karp_cycle_time`.

    Examples
    --------
    >>> cb = CycleBasis(2, [[0, 1], [1, 0]])
    >>> cb.cycle_time([3.0, 5.0])
    4.0
    """

    def __init__(self, n: int, arcs: np.ndarray, limit: int = 20_000) -> None:
        self.n = n
        self.arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        index: dict[tuple[int, int], int] = {}
        for a, (u, v) in enumerate(self.arcs.tolist()):
            index.setdefault((u, v), a)
            g.add_edge(u, v)
        cycles = _simple_structure_cycles(n, self.arcs)
        if cycles is None:
            cycles = list(islice(nx.simple_cycles(g), limit + 1))
        self.ok = len(cycles) <= limit
        if not self.ok:
            self.matrix = np.zeros((0, len(self.arcs)))
            return
        # Parallel arcs between the same pair are merged in `_dense`; here the
        # first one stands for the pair, which is what every fedsim overlay has.
        m = np.zeros((len(cycles), len(self.arcs)))
        for c, cyc in enumerate(cycles):
            for u, v in zip(cyc, cyc[1:] + cyc[:1]):
                m[c, index[(u, v)]] = 1.0 / len(cyc)
        self.matrix = m

    def cycle_time(self, delays: np.ndarray) -> float | np.ndarray:
        """Maximum cycle mean for ``delays`` of shape ``(A,)`` or ``(R, A)``."""
        delays = np.asarray(delays, dtype=float)
        if not self.ok:
            if delays.ndim == 1:
                return karp_cycle_time(self.n, self.arcs, delays)
            return np.array([karp_cycle_time(self.n, self.arcs, d) for d in delays])
        if self.matrix.shape[0] == 0:
            return 0.0 if delays.ndim == 1 else np.zeros(delays.shape[0])
        means = delays @ self.matrix.T
        return float(means.max()) if delays.ndim == 1 else means.max(axis=-1)


def _simple_structure_cycles(n: int, arcs: np.ndarray) -> list[list[int]] | None:
    """The elementary cycles of two common overlays, without a general search.

    * A bidirected tree (every arc's reverse is present, no self-loops, and
      the undirected edges form a forest): its elementary cycles are exactly
      the 2-cycles ``u -> v -> u``.
    * A single directed cycle through distinct silos (a ring).

    Returns ``None`` for anything else (the caller then enumerates with
    networkx). Cycles are returned as silo lists, like ``nx.simple_cycles``.
    """
    pairs = {(int(u), int(v)) for u, v in arcs.tolist()}
    if not pairs or any(u == v for u, v in pairs):
        return None
    if all((v, u) in pairs for u, v in pairs):
        edges = {(u, v) for u, v in pairs if u < v}
        parent = list(range(n))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for u, v in edges:
            ru, rv = find(u), find(v)
            if ru == rv:
                return None  # an undirected cycle: not a tree
            parent[ru] = rv
        return [[u, v] for u, v in sorted(edges)]
    succ: dict[int, int] = {}
    for u, v in pairs:
        if u in succ:
            return None
        succ[u] = v
    if len(set(succ.values())) != len(succ):
        return None
    start = next(iter(sorted(succ)))
    cycle, node = [start], succ[start]
    while node != start:
        if node not in succ or len(cycle) > len(succ):
            return None
        cycle.append(node)
        node = succ[node]
    return [cycle] if len(cycle) == len(succ) else None


def max_cycle_mean(n: int, arcs: np.ndarray, delays: np.ndarray) -> float:
    """Maximum cycle mean of a strongly connected digraph (any method)."""
    cb = CycleBasis(n, arcs, limit=5_000)
    return float(cb.cycle_time(delays))
