"""RING: a directed ring from Christofides' TSP heuristic (Marfoq et al., 2020).

Arc weight ``Tc + l + max(M/C_up, M/C_dn, M/A)`` (each ring silo has one arc
each way, so no access sharing). Christofides (1976) as in the reference
pipeline (SPEC-timing §4.4): Prim's MST from silo 0 on the dense matrix,
minimum-weight perfect matching on the odd-degree silos (networkx
``max_weight_matching`` on negated weights), an Euler circuit from silo 0, and
shortcutting of repeated silos. The tie-breaking of ``max_weight_matching``
differs between networkx versions, so RING can differ by a few percent from
the published value on large networks.
"""

from __future__ import annotations

from functools import lru_cache

import networkx as nx
import numpy as np

from fedsim.topologies.delay import Connectivity, DelayProfile, pair_delay_matrix
from fedsim.topologies.schedule import Schedule, static_schedule


def prim_dense(w: np.ndarray, start: int = 0) -> np.ndarray:
    """Prim's MST on a dense symmetric matrix; returns the tree's weight matrix.

    Among equal candidates the first in (tree order, silo order) wins.
    """
    n = len(w)
    visited = [start]
    unvisited = [v for v in range(n) if v != start]
    tree = np.zeros_like(w)
    while unvisited:
        sub = np.ma.masked_equal(w[np.ix_(visited, unvisited)], 0)
        r, c = np.unravel_index(sub.argmin(), sub.shape)
        u, v = visited[r], unvisited[c]
        tree[u, v] = tree[v, u] = w[u, v]
        unvisited.remove(v)
        visited.append(v)
    return tree


def christofides(w: np.ndarray, start: int = 0) -> list[int]:
    """A TSP tour (list of silos, each once) by Christofides' heuristic.

    Examples
    --------
    >>> w = np.array([[0, 3, 4, 2], [3, 0, 2, 5], [4, 2, 0, 3], [2, 5, 3, 0]], float)
    >>> christofides(w)  # the tour 0-3-2-1 (length 2 + 3 + 2 + 3 = 10)
    [0, 3, 2, 1]
    """
    tree = prim_dense(w, start)
    odd = [i for i in range(len(w)) if np.count_nonzero(tree[i]) % 2 == 1]
    matching = nx.max_weight_matching(nx.from_numpy_array(-w[np.ix_(odd, odd)]), maxcardinality=True)
    euler = nx.from_numpy_array(tree, create_using=nx.MultiGraph)
    for a, b in matching:
        euler.add_edge(odd[a], odd[b], weight=w[odd[a], odd[b]])
    walk = [u for edge in nx.eulerian_circuit(euler, source=start) for u in edge]
    return list(dict.fromkeys(walk))


@lru_cache(maxsize=64)
def _cached_tour(n: int, weights: bytes) -> tuple[int, ...]:
    return tuple(christofides(np.frombuffer(weights, dtype=float).reshape(n, n)))


def build(conn: Connectivity, profile: DelayProfile) -> Schedule:
    """Build the RING overlay: arcs ``tour[k] -> tour[k+1]``, closed.

    The tour is cached per weight matrix (a multigraph on RING rebuilds the
    same ring).
    """
    w = np.ascontiguousarray(pair_delay_matrix(conn, profile, access=True), dtype=float)
    tour = list(_cached_tour(conn.n, w.tobytes()))
    arcs = np.array([(tour[k], tour[(k + 1) % len(tour)]) for k in range(len(tour))])
    return static_schedule("ring", conn.n, arcs, info={"tour": tour})
