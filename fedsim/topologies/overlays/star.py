"""STAR: server-based FedAvg, the server at the silo of highest load centrality.

Marfoq et al. (NeurIPS 2020), SPEC-timing §4.1: the server is the silo of
maximum load centrality (latency-weighted) on the connectivity graph; every
other silo reaches it along the Dijkstra path for ``Tc + latency + M/A``, with
the path's summed latency and the last hop's bandwidth.
"""

from __future__ import annotations

from functools import lru_cache

import networkx as nx
import numpy as np

from fedsim.errors import unknown_name
from fedsim.topologies.delay import Connectivity, DelayProfile
from fedsim.topologies.schedule import Schedule, bidirect

CENTRALITIES = ("load", "closeness", "information")


def _direct_paths_only(conn: Connectivity, a: float, b: float) -> bool:
    """Whether every pair's direct latency beats every two-hop detour (strictly).

    Latencies are computed as in :func:`server_silo` (``a * km + b`` per pair)
    and detours summed in the same floating-point arithmetic networkx's Dijkstra
    uses. With ``b > 0`` this always holds, because ``km`` is a shortest-path
    metric: every detour pays the ``b`` term twice.
    """
    n = conn.n
    if n < 3:
        return True
    lat = a * conn.km + b
    np.fill_diagonal(lat, np.inf)
    detour = np.full((n, n), np.inf)
    for k in range(n):
        np.minimum(detour, lat[:, k, None] + lat[None, k, :], out=detour)
    off = ~np.eye(n, dtype=bool)
    return bool(np.all(detour[off] > lat[off]))


@lru_cache(maxsize=128)
def server_silo(conn: Connectivity, a: float, b: float, centrality: str = "load") -> int:
    """The silo of maximum centrality for the latency law ``a * km + b``.

    Ties go to the first silo. On the complete connectivity graph every
    shortest latency path is usually the direct link (see
    :func:`_direct_paths_only`); then no silo lies on another pair's shortest
    path, every load centrality is 0, and the server is silo 0. That case is
    answered without running networkx's ``load_centrality`` (which would
    return the same all-zero scores).
    """
    if centrality == "load" and _direct_paths_only(conn, a, b):
        return 0
    g = nx.Graph()
    g.add_nodes_from(conn.graph.nodes)
    g.add_weighted_edges_from(
        ((u, v, a * d["km"] + b) for u, v, d in conn.graph.edges(data=True)), weight="latency"
    )
    if centrality == "load":
        scores = nx.load_centrality(g, weight="latency")
    elif centrality == "closeness":
        scores = nx.closeness_centrality(g, distance="latency")
    elif centrality == "information":
        scores = nx.information_centrality(g, weight="latency")
    else:
        raise unknown_name("centrality", centrality, CENTRALITIES)
    return max(scores, key=scores.get)  # first silo on ties


def build(conn: Connectivity, profile: DelayProfile, centrality: str = "load") -> Schedule:
    """Build the STAR schedule (arcs server -> silo and silo -> server).

    Examples
    --------
    >>> from fedsim.topologies.networks import builtin_network
    >>> from fedsim.topologies.delay import connectivity, get_profile
    >>> s = build(connectivity(builtin_network("gaia")), get_profile("femnist"))
    >>> s.n, len(s.arcs)
    (11, 20)
    """
    server = server_silo(conn, profile.latency_ms_per_km, profile.latency_base_ms, centrality)
    lat = conn.latency(profile)
    bw = conn.bandwidth(profile)
    g = nx.Graph()
    g.add_nodes_from(conn.graph.nodes)
    for u, v in conn.graph.edges:
        g.add_edge(u, v, weight=profile.tc + lat[u, v] + profile.model_bits / bw[u, v] * 1e3)
    _, paths = nx.single_source_dijkstra(g, server, weight="weight")
    edges, lats, bws = [], [], []
    for silo in range(conn.n):
        if silo == server:
            continue
        path = paths[silo]
        hops = list(zip(path, path[1:]))
        path_lat = float(sum(lat[u, v] for u, v in hops))
        last_bw = float(bw[hops[-1]])
        edges.append((server, silo))
        lats += [path_lat, path_lat]
        bws += [last_bw, last_bw]
    return Schedule(
        "star", conn.n, bidirect(edges), np.ones(2 * len(edges), dtype=np.int64),
        server=server, latency_ms=np.array(lats), bandwidth_bps=np.array(bws),
        info={"centrality": centrality},
    )
