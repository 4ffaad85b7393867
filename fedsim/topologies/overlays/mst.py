"""MST: minimum spanning tree of the connectivity graph (Marfoq et al., 2020).

Weight ``Tc + l(i, j) + M/A(i, j)`` (access terms left out when choosing the
tree, SPEC-timing §4.2); networkx's Kruskal, on edges in the connectivity
graph's order so ties break as in the reference pipeline.
"""

from __future__ import annotations

import networkx as nx

from fedsim.topologies.delay import Connectivity, DelayProfile, pair_delay_matrix
from fedsim.topologies.schedule import Schedule, bidirect, static_schedule


def tree_edges(conn: Connectivity, weights) -> list[tuple[int, int]]:
    """Edges of networkx's minimum spanning tree for a dense weight matrix."""
    g = nx.Graph()
    g.add_nodes_from(conn.graph.nodes)
    g.add_weighted_edges_from((u, v, weights[u, v]) for u, v in conn.graph.edges)
    return [(u, v) for u, v in nx.minimum_spanning_tree(g, weight="weight").edges]


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
