"""The WAN delay model: profile -> connectivity graph -> arc delays.

This follows the model of Marfoq et al. (NeurIPS 2020) as used for the
published cycle-time tables (see ``SPEC-timing`` §3 in the project docs):

* latency between two silos ``l = a * km + b`` ms along the km-shortest path of
  the underlay (``a = 0.0085``, ``b = 4``);
* available core bandwidth ``A = C_core / hops`` on that path;
* the delay of arc ``i -> j`` of an overlay::

      d(i, j) = u*Tc + l(i, j) + max(outdeg(i)*M/C_up, indeg(j)*M/C_dn, M/A(i, j))

  i.e. access links are shared equally among a silo's out-/in-arcs and upload
  and download overlap.

All times are milliseconds, capacities bit/s, model sizes bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache

import networkx as nx
import numpy as np

from fedsim.errors import FedsimError, check_int_at_least, check_positive, unknown_name
from fedsim.topologies.networks import Network


@dataclass(frozen=True)
class DelayProfile:
    """What one round costs a silo: model size, compute time and link capacities.

    Parameters
    ----------
    name : str
        Profile name (a published workload or a fedsim task).
    model_bits : float
        Size ``M`` of the exchanged model, in bits.
    compute_ms : float
        Computation time ``Tc`` of one local step, in ms.
    local_steps : int
        Local steps ``u`` per round; computation per round is ``u * Tc``.
    upload_bps, download_bps : float
        Access-link capacities of every silo (bit/s). Published tables: 1e10.
    core_bps : float
        Core (underlay) link capacity (bit/s). Published tables: 1e9.
    latency_ms_per_km, latency_base_ms : float
        Latency law ``ms = a * km + b``.
    silo_compute_ms, silo_upload_bps, silo_download_bps : tuple of float, optional
        Heterogeneous silos (stragglers): each silo's own step time and access
        capacities, in silo order, instead of ``compute_ms`` /
        ``upload_bps`` / ``download_bps`` (see :mod:`fedsim.topologies.stragglers`).
        An arc ``i -> j`` then costs ``u·Tc(i) + l(i,j) + max(outdeg(i)·M/C_up(i),
        indeg(j)·M/C_dn(j), M/A(i,j))`` (SPEC-timing §3.3 with per-silo terms).

    Examples
    --------
    >>> p = get_profile("femnist")
    >>> round(p.upload_ms, 4)  # M / C_up in ms
    0.4843
    """

    name: str
    model_bits: float
    compute_ms: float
    local_steps: int = 1
    upload_bps: float = 1e10
    download_bps: float = 1e10
    core_bps: float = 1e9
    latency_ms_per_km: float = 0.0085
    latency_base_ms: float = 4.0
    description: str = field(default="", compare=False)
    silo_compute_ms: tuple[float, ...] | None = None
    silo_upload_bps: tuple[float, ...] | None = None
    silo_download_bps: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_positive("model size (bits)", self.model_bits)
        check_positive("compute time per step (ms)", self.compute_ms)
        check_int_at_least("local steps", self.local_steps, 1)
        check_positive("upload capacity (--upload-bps)", self.upload_bps)
        check_positive("download capacity (--download-bps)", self.download_bps)
        check_positive("core capacity (--core-bps)", self.core_bps)
        check_positive("latency per km", self.latency_ms_per_km)
        if not self.latency_base_ms >= 0:
            check_positive("latency base (ms)", self.latency_base_ms)
        for name in ("silo_compute_ms", "silo_upload_bps", "silo_download_bps"):
            values = getattr(self, name)
            if values is not None:  # lists from a config.json become tuples (the profile stays hashable)
                values = tuple(float(check_positive(f"{name} of silo {i}", v)) for i, v in enumerate(values))
                object.__setattr__(self, name, values)

    def _per_silo(self, name: str, n: int, default: float) -> np.ndarray:
        values = getattr(self, name)
        if values is None:
            return np.full(n, default)
        if len(values) != n:
            raise FedsimError(f"profile {self.name}: {name} has {len(values)} values for {n} silos")
        return np.asarray(values, dtype=float)

    def tc_vector(self, n: int) -> np.ndarray:
        """Each silo's computation time of one round (ms): ``u * Tc(i)``."""
        if self.silo_compute_ms is None:
            return np.full(n, self.tc)
        return self.local_steps * self._per_silo("silo_compute_ms", n, self.compute_ms)

    def upload_ms_vector(self, n: int) -> np.ndarray:
        """Each silo's time to push one model through its unshared uplink (ms)."""
        if self.silo_upload_bps is None:
            return np.full(n, self.upload_ms)
        return self.model_bits / self._per_silo("silo_upload_bps", n, self.upload_bps) * 1e3

    def download_ms_vector(self, n: int) -> np.ndarray:
        """Each silo's time to pull one model through its unshared downlink (ms)."""
        if self.silo_download_bps is None:
            return np.full(n, self.download_ms)
        return self.model_bits / self._per_silo("silo_download_bps", n, self.download_bps) * 1e3

    @property
    def heterogeneous(self) -> bool:
        """Whether some silo has its own step time or access capacity."""
        return any(v is not None for v in (self.silo_compute_ms, self.silo_upload_bps, self.silo_download_bps))

    @property
    def tc(self) -> float:
        """Computation time of one round, ``u * Tc`` (ms)."""
        return self.local_steps * self.compute_ms

    @property
    def upload_ms(self) -> float:
        """Time to push one model through an unshared access uplink (ms)."""
        return self.model_bits / self.upload_bps * 1e3

    @property
    def download_ms(self) -> float:
        """Time to pull one model through an unshared access downlink (ms)."""
        return self.model_bits / self.download_bps * 1e3

    def with_overrides(self, **kwargs) -> DelayProfile:
        """Return a copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})


# Published constants (SPEC-timing §3.1). The reference code divides these by
# bit rates, so they are used as bits to reproduce the published tables.
PUBLISHED_PROFILES: dict[str, DelayProfile] = {
    p.name: p
    for p in (
        DelayProfile("synthetic", 4_354, 1.5, description="synthetic linear model"),
        DelayProfile("shakespeare", 3_385_747, 389.6, description="LEAF Shakespeare LSTM"),
        DelayProfile("femnist", 4_843_243, 4.6, description="LEAF FEMNIST CNN"),
        DelayProfile("sent140", 19_269_416, 9.8, description="Sentiment140 LSTM"),
        DelayProfile("inaturalist", 44_961_717, 25.4, description="iNaturalist ResNet-18"),
    )
}

def profile_names() -> list[str]:
    """Names accepted by :func:`get_profile` (the tasks' profiles: :func:`fedsim.clients.get_profile`)."""
    return list(PUBLISHED_PROFILES)


def get_profile(name: str, **overrides) -> DelayProfile:
    """Look up a delay profile by name, optionally overriding fields.

    Examples
    --------
    >>> get_profile("femnist", local_steps=2).tc
    9.2
    """
    if name in PUBLISHED_PROFILES:
        base = PUBLISHED_PROFILES[name]
    else:
        raise unknown_name("profile", name, profile_names())
    return base.with_overrides(**overrides)


@dataclass(frozen=True, eq=False)
class Connectivity:
    """The complete silo-to-silo graph derived from an underlay.

    Attributes
    ----------
    km : (N, N) ndarray
        km length of the shortest underlay path.
    hops : (N, N) ndarray of int
        Number of underlay links on that path (0 on the diagonal).
    edges : (N(N-1)/2, 2) int ndarray
        Every silo pair once, in the reference order (Kruskal and other
        tie-sensitive algorithms see the same order as the published
        pipeline): for each silo ``u`` in order, the silos ``v > u`` in the
        order Dijkstra from ``u`` reaches them.
    graph : nx.Graph
        The complete graph with edge attributes ``km`` and ``hops``, nodes and
        edges inserted in that order. Built on first use only (on 1000 silos
        it holds half a million edges); the array attributes are what the
        overlays and the simulator use.
    """

    network: Network
    km: np.ndarray
    hops: np.ndarray
    edges: np.ndarray

    @property
    def n(self) -> int:
        return self.km.shape[0]

    @cached_property
    def graph(self) -> nx.Graph:
        conn = nx.Graph()
        conn.add_nodes_from(self.network.graph().nodes(data=True))
        u, v = self.edges[:, 0], self.edges[:, 1]
        conn.add_edges_from(
            (a, b, {"km": k, "hops": h})
            for a, b, k, h in zip(u.tolist(), v.tolist(), self.km[u, v].tolist(), self.hops[u, v].tolist())
        )
        return conn

    def latency(self, profile: DelayProfile) -> np.ndarray:
        """Latency matrix in ms (0 on the diagonal)."""
        lat = profile.latency_ms_per_km * self.km + profile.latency_base_ms
        np.fill_diagonal(lat, 0.0)
        return lat

    def bandwidth(self, profile: DelayProfile) -> np.ndarray:
        """Available core bandwidth ``C_core / hops`` in bit/s (inf on the diagonal)."""
        with np.errstate(divide="ignore"):
            return profile.core_bps / self.hops


# Up to this many silos the connectivity graph is computed with networkx's
# Dijkstra, whose tie-breaking between equal-km paths the published pipeline
# used; above it with scipy's compiled shortest paths on arrays.
REFERENCE_DIJKSTRA_MAX_SILOS = 300
# Largest network whose connectivity graph is computed at all: its (N, N)
# arrays take ~20 bytes per pair and every overlay is at least quadratic.
MAX_CONNECTIVITY_SILOS = 3000


@lru_cache(maxsize=16)
def connectivity(network: Network) -> Connectivity:
    """Shortest km paths between every pair of silos of ``network``.

    On ties between equal-km paths the hop count is that of the path found by
    Dijkstra from the later silo of the pair (in silo order), as in the
    reference pipeline, which overwrote each pair with the later source. Above
    ``REFERENCE_DIJKSTRA_MAX_SILOS`` silos scipy's Dijkstra is used instead:
    the same km, and on exact km ties possibly another path's hop count.

    Raises
    ------
    FedsimError
        Above ``MAX_CONNECTIVITY_SILOS`` silos, before any work.
    """
    n = network.n_silos
    if n > MAX_CONNECTIVITY_SILOS:
        raise FedsimError(
            f"network {network.name!r} has {n} silos; the time simulator handles at most "
            f"{MAX_CONNECTIVITY_SILOS} (its silo-pair arrays and overlays grow as N^2 to N^3)"
        )
    if n <= REFERENCE_DIJKSTRA_MAX_SILOS:
        return _connectivity_networkx(network)
    return _connectivity_arrays(network)


def _connectivity_networkx(network: Network) -> Connectivity:
    g = network.graph()
    n = network.n_silos
    km = np.zeros((n, n))
    hops = np.zeros((n, n), dtype=np.int64)
    conn = nx.Graph()
    conn.add_nodes_from(g.nodes(data=True))
    for src, (dist, paths) in nx.all_pairs_dijkstra(g, weight="distance"):
        for dst, path in paths.items():
            if dst == src:
                continue
            km[src, dst] = km[dst, src] = dist[dst]
            hops[src, dst] = hops[dst, src] = len(path) - 1
            conn.add_edge(src, dst)
    for u, v, data in conn.edges(data=True):
        data["km"] = km[u, v]
        data["hops"] = int(hops[u, v])
    edges = np.asarray(list(conn.edges), dtype=np.int64).reshape(-1, 2)
    out = Connectivity(network=network, km=km, hops=hops, edges=edges)
    out.__dict__["graph"] = conn  # already built: keep it
    return out


def _connectivity_arrays(network: Network) -> Connectivity:
    """All-pairs shortest paths with scipy.sparse.csgraph, ``O(N (N + L) log N)``, arrays only."""
    import scipy.sparse
    from scipy.sparse.csgraph import dijkstra

    n = network.n_silos
    links = np.asarray([(i, j, km) for i, j, km in network.links], dtype=float).reshape(-1, 3)
    i, j = links[:, 0].astype(np.int64), links[:, 1].astype(np.int64)
    # A zero-length link is still a link (csgraph drops explicit zeros).
    w = np.where(links[:, 2] > 0, links[:, 2], np.finfo(float).tiny)
    adj = scipy.sparse.csr_matrix((w, (i, j)), shape=(n, n))
    km, pred = dijkstra(adj, directed=False, return_predecessors=True)
    if not np.all(np.isfinite(km)):
        raise FedsimError(f"network {network.name!r} is not connected")
    km[km < 1e-300] = 0.0
    np.fill_diagonal(km, 0.0)
    km = np.minimum(km, km.T)  # exactly symmetric
    # Hop counts along the predecessor trees; a pair takes the later silo's
    # tree, as the networkx path does.
    depth = _tree_depths(pred)
    later = np.arange(n)[:, None] > np.arange(n)[None, :]
    hops = np.where(later, depth, depth.T)
    order = np.argsort(km, axis=1, kind="stable")
    cols = order.ravel()
    srcs = np.repeat(np.arange(n), n)
    keep = cols > srcs
    edges = np.stack([srcs[keep], cols[keep]], axis=1).astype(np.int64)
    return Connectivity(network=network, km=km, hops=hops, edges=edges)


def _tree_depths(pred: np.ndarray) -> np.ndarray:
    """Depth of every node in each row's predecessor tree (negative: the root).

    Pointer jumping: ``O(N^2 log depth)`` array operations.
    """
    n = pred.shape[0]
    rows = np.arange(n)[:, None]
    anc = pred.astype(np.int64)
    depth = (anc >= 0).astype(np.int64)
    live = anc >= 0
    while live.any():
        a = np.where(live, anc, 0)
        depth = depth + np.where(live, depth[rows, a], 0)
        anc = np.where(live, anc[rows, a], -1)
        live = anc >= 0
    return depth


def degrees(n: int, arcs: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Out- and in-degree of each silo over the (masked) arcs.

    ``mask`` may be ``(A,)`` or ``(R, A)``; the result then has shape ``(N,)``
    or ``(R, N)`` (float, exact integer counts).

    Examples
    --------
    >>> out, inn = degrees(3, np.array([[0, 1], [0, 2], [2, 1]]))
    >>> out.tolist(), inn.tolist()
    ([2.0, 0.0, 1.0], [0.0, 2.0, 1.0])
    """
    arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
    if mask is None:
        return (np.bincount(arcs[:, 0], minlength=n).astype(float),
                np.bincount(arcs[:, 1], minlength=n).astype(float))
    mask = np.asarray(mask, dtype=float)
    if mask.ndim == 1:
        return (np.bincount(arcs[:, 0], weights=mask, minlength=n),
                np.bincount(arcs[:, 1], weights=mask, minlength=n))
    # (R, A) @ sparse (A, N) incidence: sums of 0/1 values, exact in float.
    import scipy.sparse

    rows = np.arange(len(arcs))
    ones = np.ones(len(arcs))
    out_inc = scipy.sparse.csr_matrix((ones, (rows, arcs[:, 0])), shape=(len(arcs), n))
    in_inc = scipy.sparse.csr_matrix((ones, (rows, arcs[:, 1])), shape=(len(arcs), n))
    return np.asarray((out_inc.T @ mask.T).T), np.asarray((in_inc.T @ mask.T).T)


def arc_terms(
    conn: Connectivity,
    profile: DelayProfile,
    arcs: np.ndarray,
    latency_ms: np.ndarray | None = None,
    bandwidth_bps: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-arc latency ``l(i, j)`` and core transfer time ``M / A(i, j)``, both in ms."""
    arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
    i, j = arcs[:, 0], arcs[:, 1]
    lat = conn.latency(profile)[i, j] if latency_ms is None else np.asarray(latency_ms, float)
    bw = conn.bandwidth(profile)[i, j] if bandwidth_bps is None else np.asarray(bandwidth_bps, float)
    return lat, profile.model_bits / bw * 1e3


def arc_delays(
    conn: Connectivity,
    profile: DelayProfile,
    arcs: np.ndarray,
    mask: np.ndarray | None = None,
    shared_access: bool = True,
    latency_ms: np.ndarray | None = None,
    bandwidth_bps: np.ndarray | None = None,
) -> np.ndarray:
    """Delay ``d(i, j)`` in ms of each arc (SPEC-timing §3.3).

    Parameters
    ----------
    arcs : (A, 2) int array
        Directed arcs ``(i, j)`` of the overlay.
    mask : (A,) or (R, A) bool array, optional
        Which arcs exist (per round). Degrees that share the access links are
        counted over existing arcs only. Delays of absent arcs are still
        returned (as if present); callers ignore them.
    latency_ms, bandwidth_bps : (A,) arrays, optional
        Per-arc overrides of the connectivity graph's latency and bandwidth.
    shared_access : bool
        ``False`` gives the unshared delay ``Tc + l + max(M/C_up, M/C_dn, M/A)``
        used when choosing ring arcs and multigraph multiplicities.

    Examples
    --------
    A 2-silo overlay with both arcs: each silo's access links carry one model.

    >>> from fedsim.topologies.networks import Network
    >>> net = Network("toy", ("a", "b"), ((0, 1, 1000.0),), (None, None))
    >>> p = get_profile("femnist")
    >>> d = arc_delays(connectivity(net), p, np.array([[0, 1], [1, 0]]))
    >>> [round(float(x), 4) for x in d]  # 4.6 + 12.5 + M/1e9 (4.8432 ms)
    [21.9432, 21.9432]
    """
    arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
    i, j = arcs[:, 0], arcs[:, 1]
    lat, core = arc_terms(conn, profile, arcs, latency_ms, bandwidth_bps)
    up_ms, dn_ms = profile.upload_ms_vector(conn.n), profile.download_ms_vector(conn.n)
    if shared_access:
        outdeg, indeg = degrees(conn.n, arcs, mask)
        up = outdeg[..., i] * up_ms[i]
        dn = indeg[..., j] * dn_ms[j]
    else:
        up, dn = up_ms[i], dn_ms[j]
    return profile.tc_vector(conn.n)[i] + lat + np.maximum(np.maximum(up, dn), core)


def pair_delay_matrix(conn: Connectivity, profile: DelayProfile, access: bool = True) -> np.ndarray:
    """Unshared arc delay for every ordered pair, ``(N, N)``, 0 on the diagonal.

    With ``access=False`` the access terms are left out (``Tc + l + M/A``), the
    weight used to choose STAR paths and the MST.
    """
    n = conn.n
    lat = conn.latency(profile)
    core = profile.model_bits / conn.bandwidth(profile) * 1e3
    if access:
        core = np.maximum(core, np.maximum(profile.upload_ms_vector(n)[:, None], profile.download_ms_vector(n)[None, :]))
    w = profile.tc_vector(n)[:, None] + lat + core
    w[np.arange(n), np.arange(n)] = 0.0
    return w
