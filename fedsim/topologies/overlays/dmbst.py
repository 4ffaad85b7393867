"""δ-MBST: degree-bounded minimum bottleneck spanning tree (Marfoq et al., 2020).

SPEC-timing §4.3. With the round-trip weight
``Tc + l + max(M/C_up, M/C_dn, M/A)`` counted both ways (Tc once), the
candidates are the "cube" tree (a Hamiltonian path in the cube of the MST, a
2-MBST approximation) and δ-Prim trees for δ = 2 … N−1 (Prim from silo 0
where a tree silo takes new neighbours only while its degree < δ). The
candidate with the smallest cycle time, with degree-shared access links, wins;
the cube tree is kept on ties.
"""

from __future__ import annotations

from functools import lru_cache

import networkx as nx
import numpy as np

from fedsim.topologies.delay import Connectivity, DelayProfile, arc_delays
from fedsim.topologies.overlays.mst import tree_edges
from fedsim.topologies.schedule import Schedule, bidirect, static_schedule


def round_trip_weights(conn: Connectivity, profile: DelayProfile) -> np.ndarray:
    """Symmetric weight ``Tc + l + 2*max(M/C_up, M/C_dn, M/A)``, 0 on the diagonal."""
    lat = conn.latency(profile)
    core = profile.model_bits / conn.bandwidth(profile) * 1e3
    one_way = np.maximum(core, max(profile.upload_ms, profile.download_ms))
    w = profile.tc + lat + 2 * one_way
    np.fill_diagonal(w, 0.0)
    return w


def tree_cycle_time(conn: Connectivity, profile: DelayProfile, edges) -> float:
    """Cycle time of a bidirected tree: its only cycles are the 2-cycles."""
    arcs = bidirect(edges)
    d = arc_delays(conn, profile, arcs)
    return float(((d[0::2] + d[1::2]) / 2).max())


def cube_tree(conn: Connectivity, w: np.ndarray) -> list[tuple[int, int]] | None:
    """A Hamiltonian path in the cube of the MST, or None if none was found.

    networkx's tournament ``hamiltonian_path`` is applied to a graph that is
    not a tournament, as in the reference; its output is checked.
    """
    path = _cube_path(conn.n, tuple(tree_edges(conn, w)))
    return None if path is None else list(zip(path, path[1:]))


@lru_cache(maxsize=256)
def _cube_path(n: int, tree: tuple[tuple[int, int], ...]) -> tuple[int, ...] | None:
    """The checked path for one MST (cached: profiles often share the tree)."""
    mst = nx.Graph()
    mst.add_nodes_from(range(n))
    mst.add_edges_from(tree)
    cube = nx.Graph()
    cube.add_nodes_from(mst.nodes)
    for src, lengths in nx.shortest_path_length(mst):
        for dst, hops in lengths.items():
            if hops <= 3:
                cube.add_edge(src, dst)
    try:
        path = nx.tournament.hamiltonian_path(cube.to_directed())
    except (nx.NetworkXException, IndexError, RecursionError):
        return None
    edges = list(zip(path, path[1:]))
    if len(set(path)) != n or any(not cube.has_edge(u, v) or u == v for u, v in edges):
        return None
    return tuple(path)


def delta_prim(w: np.ndarray, delta: int, start: int = 0) -> list[tuple[int, int]]:
    """Prim's tree where a silo takes new neighbours only while its degree < ``delta``.

    Ties go to the first (tree silo in order of joining, outside silo in silo order).

    Examples
    --------
    >>> w = np.array([[0, 1, 1, 1], [1, 0, 5, 5], [1, 5, 0, 5], [1, 5, 5, 0]], float)
    >>> delta_prim(w, 2)  # silo 0 saturates at degree 2
    [(0, 1), (0, 2), (1, 3)]
    """
    w = np.asarray(w, dtype=float)
    n = len(w)
    inside = np.zeros(n, dtype=bool)
    inside[start] = True
    rank = np.full(n, n, dtype=np.int64)  # join order of tree silos
    rank[start] = 0
    deg = np.zeros(n, dtype=np.int64)
    order = [start]
    # Per outside silo: its cheapest weight to an unsaturated tree silo, and
    # the earliest-joined such tree silo (updates only on strictly smaller).
    best = w[start].copy()
    src = np.full(n, start)
    edges = []
    for step in range(1, n):
        cand = np.where(inside, np.inf, best)
        low = cand.min()
        ties = np.flatnonzero(cand == low)
        if len(ties) > 1:  # earliest-joined tree end first, then lowest silo
            r = rank[src[ties]]
            ties = ties[r == r.min()]
        v = int(ties[0])
        u = int(src[v])
        edges.append((u, v))
        deg[u] += 1
        deg[v] += 1
        inside[v] = True
        rank[v] = step
        order.append(v)
        if deg[v] < delta:
            better = (w[v] < best) & ~inside
            best[better] = w[v][better]
            src[better] = v
        if deg[u] >= delta:  # u is saturated: its outside silos look elsewhere
            affected = np.flatnonzero((src == u) & ~inside)
            if affected.size:
                rows = np.array([x for x in order if deg[x] < delta])
                sub = w[np.ix_(rows, affected)]
                pick = sub.argmin(axis=0)  # first minimum: earliest-joined row
                best[affected] = sub[pick, np.arange(len(affected))]
                src[affected] = rows[pick]
    return edges


def build(conn: Connectivity, profile: DelayProfile) -> Schedule:
    """Build the δ-MBST overlay (best of the cube tree and δ-Prim, δ = 2 … N−1)."""
    w = round_trip_weights(conn, profile)
    best, best_time, best_delta = None, np.inf, None
    cube = cube_tree(conn, w)
    if cube is not None:
        best, best_time, best_delta = cube, tree_cycle_time(conn, profile, cube), "cube"
    for delta in range(2, max(conn.n, 3)):
        edges = delta_prim(w, delta)
        t = tree_cycle_time(conn, profile, edges)
        if t < best_time:
            best, best_time, best_delta = edges, t, delta
        if np.bincount(np.asarray(edges).ravel(), minlength=conn.n).max() < delta:
            # The bound never bit: this is plain Prim's tree, and every larger
            # δ builds the same tree again (same time, so never strictly better).
            break
    return static_schedule("dmbst", conn.n, bidirect(best), info={"delta": best_delta})
