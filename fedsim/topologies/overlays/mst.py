"""MST: minimum spanning tree of the connectivity graph (Marfoq et al., 2020).

Weight ``Tc + l(i, j) + M/A(i, j)`` (access terms left out when choosing the
tree, SPEC-timing §4.2); networkx's Kruskal, on edges in the connectivity
graph's order so ties break as in the reference pipeline.
"""

from __future__ import annotations

from functools import lru_cache

import networkx as nx
import numpy as np

from fedsim.topologies.delay import Connectivity, DelayProfile, pair_delay_matrix
from fedsim.topologies.schedule import Schedule, bidirect, static_schedule


@lru_cache(maxsize=64)
def _edge_arrays(conn: Connectivity) -> tuple[np.ndarray, np.ndarray]:
    """Endpoints of the connectivity graph's edges, in its edge order."""
    return conn.edges[:, 0], conn.edges[:, 1]


def tree_edges(conn: Connectivity, weights) -> list[tuple[int, int]]:
    """Edges of networkx's minimum spanning tree for a dense weight matrix.

    Same result, edge order included, as ``nx.minimum_spanning_tree(g).edges``
    for the complete graph ``g`` with the connectivity graph's edge order:
    networkx's Kruskal stably sorts the edges by weight (ties keep edge order),
    accepts an edge iff it joins two components, and builds the tree by adding
    the accepted edges in that order. The sort and the union-find run here on
    arrays instead of a 3,700-edge networkx graph.
    """
    w = np.asarray(weights, dtype=float)
    eu, ev = _edge_arrays(conn)
    wt = w[eu, ev]
    if np.isnan(wt).any():
        raise ValueError("NaN found as an edge weight")
    parent = list(range(conn.n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    accepted = []
    for e in np.argsort(wt, kind="stable").tolist():
        u, v = int(eu[e]), int(ev[e])
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv
            accepted.append((u, v))
            if len(accepted) == conn.n - 1:
                break
    tree = nx.Graph()
    tree.add_nodes_from(range(conn.n))
    tree.add_edges_from(accepted)
    return [(u, v) for u, v in tree.edges]


def build(conn: Connectivity, profile: DelayProfile) -> Schedule:
    """Build the MST overlay, both directions of every tree edge.

    Examples
    --------
    >>> from fedsim.topologies.networks import builtin_network
    >>> from fedsim.topologies.delay import connectivity, get_profile
    >>> s = build(connectivity(builtin_network("gaia")), get_profile("femnist"))
    >>> len(s.arcs)  # 10 tree edges, both ways
    20
    """
    edges = tree_edges(conn, pair_delay_matrix(conn, profile, access=False))
    return static_schedule("mst", conn.n, bidirect(edges))
