"""Underlay networks: the built-in ones and loaders for GML / Topology Zoo.

A :class:`Network` is where the silos are and which wide-area links join
them: silo names, optional (lat, lon) coordinates, and undirected links
carrying a length in kilometres. It is immutable; :meth:`Network.graph`
builds a fresh :class:`networkx.Graph` for the algorithms.

Sources
-------
- Built-in networks (:data:`BUILTIN_NETWORKS`): ``gaia`` (11 AWS regions),
  ``nws`` (22 AWS North-America locations; aliases ``amazon_us``,
  ``aws_na``), ``geant`` (Géant 2012, 40 nodes), ``exodus`` (Rocketfuel
  AS3967, 79 routers), ``ebone`` (Rocketfuel AS1755, 87 routers). They are
  the project's own JSON files in ``fedsim/topologies/data`` (see
  ``PROVENANCE.md`` there); nothing outside the package is read.
- ``zoo:NAME``: an Internet Topology Zoo network shipped inside the
  ``topohub`` package (offline; no network access).
- ``PATH.gml``: any networkx-readable GML file.

Node and link order matter: downstream algorithms start from node 0 and
break ties by insertion order. Silos keep the file's node order, and
:meth:`Network.graph` adds nodes and links in the stored order, so for a
built-in network it reproduces ``networkx.read_gml`` on the reference GML
exactly (node order and adjacency order).

Distances that are not given are great-circle distances by the haversine
formula on a sphere of radius :data:`EARTH_RADIUS_KM` (the IUGG mean Earth
radius, 6371.0088 km); they differ from WGS-84 geodesic distances by at most
about 0.5 %.

Examples
--------
>>> net = load_network("gaia")
>>> net.n_silos, net.n_links, net.silos[0]
(11, 55, 'Virginia')
>>> g = net.graph()
>>> round(g.edges[0, 1]["distance"])
3561
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.resources
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from fedsim.errors import FedsimError, unknown_name

__all__ = [
    "BUILTIN_NETWORKS",
    "EARTH_RADIUS_KM",
    "NETWORK_ALIASES",
    "Network",
    "builtin_network",
    "check_connected",
    "great_circle_km",
    "load_gml",
    "load_network",
    "load_zoo",
    "network_names",
    "zoo_names",
]

#: Names of the networks that ship with fedsim, in the papers' order.
BUILTIN_NETWORKS: tuple[str, ...] = ("gaia", "nws", "geant", "exodus", "ebone")

#: Other accepted names for built-in networks.
NETWORK_ALIASES: dict[str, str] = {"amazon_us": "nws", "aws_na": "nws"}

#: Mean Earth radius (IUGG), km, used for great-circle distances.
EARTH_RADIUS_KM: float = 6371.0088

_ZOO_PREFIX = "zoo:"

Coord = tuple[float, float]
Link = tuple[int, int, float]


# --------------------------------------------------------------------------
# The Network object
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """An underlay network of silos joined by wide-area links.

    Parameters
    ----------
    name : str
        Short name (``"gaia"``, a GML file stem, a Topology Zoo name).
    silos : tuple of str
        Silo names, unique, in node order (node ``i`` is ``silos[i]``).
    links : tuple of (int, int, float)
        Undirected links ``(i, j, km)`` with ``i != j`` indices into
        ``silos`` and ``km >= 0`` the link length in kilometres. At most one
        link per pair of silos. Order is kept (it fixes tie-breaking).
    coords : tuple of (float, float) or None
        ``(lat, lon)`` in degrees per silo, or ``None`` where unknown. Used
        for drawing maps and for distances of GML edges without ``distance``.
        An empty tuple means "no coordinates" and is expanded to ``None``
        for every silo.
    title : str, optional
        Human-readable title.
    provenance : str, optional
        Where the data comes from.

    Raises
    ------
    FedsimError
        If the data is inconsistent (fewer than 2 silos, duplicate silo names,
        bad indices, self-loops, duplicate links, negative or non-finite
        distances, coordinates out of range).

    Notes
    -----
    Construction does not require the network to be connected; loaders
    (:func:`load_network` and friends) do, see :func:`check_connected`.

    Examples
    --------
    >>> net = Network("tri", ("a", "b", "c"), ((0, 1, 10.0), (1, 2, 5.0)), ())
    >>> net.n_silos, net.n_links, net.has_coords()
    (3, 2, False)
    >>> sorted(net.graph().edges(data="distance"))
    [(0, 1, 10.0), (1, 2, 5.0)]
    """

    name: str
    silos: tuple[str, ...]
    links: tuple[tuple[int, int, float], ...]
    coords: tuple[tuple[float, float] | None, ...]
    title: str = ""
    provenance: str = ""

    def __post_init__(self) -> None:
        name = str(self.name)
        silos = tuple(str(s) for s in self.silos)
        n = len(silos)
        where = f"network {name!r}"
        if n < 2:
            raise FedsimError(f"{where} has {n} silo(s); at least 2 are needed")
        seen: dict[str, int] = {}
        for i, s in enumerate(silos):
            if s in seen:
                raise FedsimError(
                    f"{where}: silo name {s!r} is used by nodes {seen[s]} and {i}; "
                    "silo names must be unique"
                )
            seen[s] = i

        coords_in = tuple(self.coords) if self.coords is not None else ()
        if len(coords_in) == 0:
            coords_in = (None,) * n
        if len(coords_in) != n:
            raise FedsimError(
                f"{where}: {len(coords_in)} coordinates for {n} silos; "
                "give one (lat, lon) or None per silo"
            )
        coords: list[Coord | None] = []
        for i, c in enumerate(coords_in):
            if c is None:
                coords.append(None)
                continue
            try:
                lat, lon = (float(v) for v in c)
            except (TypeError, ValueError):
                raise FedsimError(
                    f"{where}: coordinates of silo {silos[i]!r} must be (lat, lon) "
                    f"numbers or None, got {c!r}"
                ) from None
            _check_latlon(lat, lon, f"{where}: silo {silos[i]!r}")
            coords.append((lat, lon))

        links: list[Link] = []
        pairs: set[tuple[int, int]] = set()
        for link in self.links:
            try:
                i, j, km = link
            except (TypeError, ValueError):
                raise FedsimError(
                    f"{where}: link {link!r} must be (i, j, km)"
                ) from None
            if not (_is_int(i) and _is_int(j)) or not (0 <= i < n and 0 <= j < n):
                raise FedsimError(
                    f"{where}: link {link!r} has silo indices outside 0..{n - 1}"
                )
            i, j = int(i), int(j)
            if i == j:
                raise FedsimError(
                    f"{where}: link {link!r} joins silo {silos[i]!r} to itself"
                )
            km = _as_km(km, f"{where}: link {silos[i]!r}--{silos[j]!r}")
            key = (min(i, j), max(i, j))
            if key in pairs:
                raise FedsimError(
                    f"{where}: silos {silos[i]!r} and {silos[j]!r} are linked "
                    "more than once; keep one link per pair"
                )
            pairs.add(key)
            links.append((i, j, km))

        object.__setattr__(self, "name", name)
        object.__setattr__(self, "silos", silos)
        object.__setattr__(self, "links", tuple(links))
        object.__setattr__(self, "coords", tuple(coords))
        object.__setattr__(self, "title", str(self.title))
        object.__setattr__(self, "provenance", str(self.provenance))

    def __repr__(self) -> str:
        return (
            f"Network(name={self.name!r}, n_silos={self.n_silos}, "
            f"n_links={self.n_links}, title={self.title!r})"
        )

    @property
    def n_silos(self) -> int:
        """Number of silos (nodes)."""
        return len(self.silos)

    @property
    def n_links(self) -> int:
        """Number of undirected links."""
        return len(self.links)

    def has_coords(self) -> bool:
        """Whether every silo has (lat, lon) coordinates."""
        return all(c is not None for c in self.coords)

    def graph(self) -> nx.Graph:
        """Build the underlay as a new :class:`networkx.Graph`.

        Nodes are ``0 .. n_silos - 1`` added in silo order, with node
        attribute ``"name"`` (and ``"lat"``, ``"lon"`` where known); edges
        are added in link order with attribute ``"distance"`` (km). Graph
        attribute ``"name"`` is the network name.

        Returns
        -------
        networkx.Graph
            A fresh graph; changing it does not change the network.
        """
        g = nx.Graph(name=self.name)
        for i, (silo, c) in enumerate(zip(self.silos, self.coords)):
            if c is None:
                g.add_node(i, name=silo)
            else:
                g.add_node(i, name=silo, lat=c[0], lon=c[1])
        for i, j, km in self.links:
            g.add_edge(i, j, distance=km)
        return g

    def n_components(self) -> int:
        """Number of connected components of the underlay."""
        return nx.number_connected_components(self.graph())

    def is_connected(self) -> bool:
        """Whether every silo can reach every other one over the links."""
        return self.n_components() == 1

    def to_dict(self) -> dict[str, Any]:
        """The network in fedsim's JSON layout (see :meth:`from_dict`)."""
        return {
            "name": self.name,
            "title": self.title,
            "provenance": self.provenance,
            "silos": [
                {
                    "name": s,
                    "lat": None if c is None else c[0],
                    "lon": None if c is None else c[1],
                }
                for s, c in zip(self.silos, self.coords)
            ],
            "links": [[i, j, km] for i, j, km in self.links],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> Network:
        """Build a network from fedsim's JSON layout.

        Parameters
        ----------
        data : mapping
            ``{"name", "title", "provenance", "silos": [{"name", "lat",
            "lon"}, ...], "links": [[i, j, km], ...]}``; other keys are
            ignored.
        source : str, optional
            Where the data came from, used in error messages.

        Returns
        -------
        Network
        """
        where = source or "network data"
        try:
            silos = data["silos"]
            links = data["links"]
            names = [s["name"] for s in silos]
            coords = [
                None if s.get("lat") is None or s.get("lon") is None
                else (s["lat"], s["lon"])
                for s in silos
            ]
            return cls(
                name=data.get("name", ""),
                silos=tuple(names),
                links=tuple(tuple(link) for link in links),
                coords=tuple(coords),
                title=data.get("title", ""),
                provenance=data.get("provenance", ""),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise FedsimError(
                f"{where} is not a fedsim network (needs 'silos' with 'name' "
                f"and 'links' as [i, j, km]): {type(err).__name__} {err}"
            ) from None


def check_connected(net: Network, where: str | None = None) -> Network:
    """Return ``net`` if it is connected, else raise a one-line FedsimError.

    Several algorithms (Karp's cycle mean from node 0, Dijkstra) assume that
    every silo can reach every other one.

    Parameters
    ----------
    net : Network
        The network to check.
    where : str, optional
        How to name the network in the message (default
        ``"network 'NAME'"``), e.g. ``"network file 'x.gml'"``.

    Examples
    --------
    >>> net = Network("two", ("a", "b", "c", "d"), ((0, 1, 1.0), (2, 3, 1.0)), ())
    >>> check_connected(net)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fedsim.errors.FedsimError: network 'two' is disconnected: 2 components ...
    """
    g = net.graph()
    if nx.is_connected(g):
        return net
    comps = sorted(nx.connected_components(g), key=lambda c: (-len(c), min(c)))
    sizes = ", ".join(str(len(c)) for c in comps[:6]) + (", ..." if len(comps) > 6 else "")
    small = min(comps[1:], key=lambda c: (len(c), min(c)))
    example = ", ".join(repr(net.silos[i]) for i in sorted(small)[:3])
    raise FedsimError(
        f"{where or f'network {net.name!r}'} is disconnected: {len(comps)} components "
        f"(sizes {sizes}; e.g. {example} cannot reach {net.silos[min(comps[0])]!r}); "
        "every silo must reach every other one"
    )


# --------------------------------------------------------------------------
# Built-in networks
# --------------------------------------------------------------------------


def network_names() -> list[str]:
    """Names of the built-in networks (aliases not included)."""
    return list(BUILTIN_NETWORKS)


def _canonical_builtin(name: str) -> str | None:
    key = str(name).strip().lower()
    key = NETWORK_ALIASES.get(key, key)
    return key if key in BUILTIN_NETWORKS else None


def builtin_network(name: str) -> Network:
    """Load a built-in network from the package's JSON data.

    Parameters
    ----------
    name : str
        One of :data:`BUILTIN_NETWORKS` or an alias from
        :data:`NETWORK_ALIASES` (case-insensitive).

    Returns
    -------
    Network
        The (cached, immutable) network.

    Raises
    ------
    FedsimError
        If ``name`` is not a built-in network.

    Examples
    --------
    >>> builtin_network("amazon_us").name
    'nws'
    """
    key = _canonical_builtin(name)
    if key is None:
        raise unknown_name("network", str(name), [*BUILTIN_NETWORKS, *NETWORK_ALIASES])
    return _load_builtin(key)


@functools.lru_cache(maxsize=None)
def _load_builtin(key: str) -> Network:
    resource = importlib.resources.files("fedsim.topologies") / "data" / f"{key}.json"
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # a broken installation, not a user mistake
        raise RuntimeError(
            f"fedsim's packaged network data {key}.json is missing or corrupt ({err}); "
            "reinstall fedsim"
        ) from err
    net = Network.from_dict(data, source=f"packaged file {key}.json")
    return check_connected(net)


# --------------------------------------------------------------------------
# Great-circle distance
# --------------------------------------------------------------------------


def great_circle_km(a: Sequence[float], b: Sequence[float]) -> float:
    """Great-circle distance in km between two (lat, lon) points in degrees.

    Haversine formula on a sphere of radius :data:`EARTH_RADIUS_KM`.

    Examples
    --------
    >>> round(great_circle_km((0.0, 0.0), (0.0, 1.0)), 3)
    111.195
    """
    lat1, lon1 = math.radians(a[0]), math.radians(a[1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


# --------------------------------------------------------------------------
# GML
# --------------------------------------------------------------------------


def load_gml(path: str | os.PathLike[str]) -> Network:
    """Load a network from a GML file.

    Nodes keep the file's order and are named by their ``label`` (by
    ``"label (id N)"`` where labels repeat, by the id where there is none).
    A node's ``Latitude``/``Longitude`` become its coordinates. An edge's
    ``distance`` attribute is its length in km; an edge without one gets the
    great-circle distance between its endpoints' coordinates. Self-loops are
    dropped; parallel edges (multigraph files) collapse into one keeping the
    shortest distance.

    Links come in the order ``networkx.read_gml`` yields the edges (for files
    written by networkx, as all the reference files are, that is the file's
    edge order), so :meth:`Network.graph` reproduces ``networkx.read_gml``'s
    graph, adjacency order included.

    Parameters
    ----------
    path : str or path-like
        The GML file. Non-ASCII UTF-8 text is accepted.

    Returns
    -------
    Network
        Named after the file stem; connected.

    Raises
    ------
    FedsimError
        If the file is missing or unreadable, is not valid GML, has an edge
        without ``distance`` whose endpoints lack coordinates, has a negative
        or non-numeric distance, has fewer than 2 nodes, or is disconnected.
    """
    p = Path(os.fspath(path)).expanduser()
    shown = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FedsimError(f"network file {shown!r} not found") from None
    except IsADirectoryError:
        raise FedsimError(f"network file {shown!r} is a directory, expected a .gml file") from None
    except OSError as err:
        raise FedsimError(f"cannot read network file {shown!r}: {err.strerror or err}") from None

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    # networkx wants 7-bit ASCII with HTML character references.
    text = text.encode("ascii", "xmlcharrefreplace").decode("ascii")

    g = _parse_gml_text(text, shown)
    name = p.stem
    title = ""
    for key in ("label", "Network", "name"):
        value = g.graph.get(key)
        if isinstance(value, str) and value.strip():
            title = value.strip()
            break
    digest = hashlib.sha256(raw).hexdigest()
    net = _network_from_gml_graph(
        g,
        name=name,
        title=title,
        provenance=f"GML file {p.name} (sha256 {digest})",
        where=f"network file {shown!r}",
    )
    return check_connected(net, f"network {name!r} (file {shown!r})")


def _parse_gml_text(text: str, shown: str) -> nx.Graph:
    """Parse GML text keyed by node id; allow undeclared parallel edges."""
    try:
        return nx.parse_gml(text, label="id")
    except nx.NetworkXError as err:
        msg = str(err).splitlines()[0]
        if "is duplicated" in msg and msg.startswith("edge"):
            # Parallel edges in a file that does not declare 'multigraph 1':
            # read it as a multigraph and collapse them below.
            m = re.search(r"\bgraph\s*\[", text)
            if m is not None:
                idx = m.end()
                patched = text[:idx] + "\n  multigraph 1\n" + text[idx:]
                try:
                    return nx.parse_gml(patched, label="id")
                except (nx.NetworkXError, ValueError, TypeError):
                    pass
        raise FedsimError(f"network file {shown!r} is not valid GML: {msg}") from None
    except (ValueError, TypeError, RecursionError) as err:
        raise FedsimError(f"network file {shown!r} is not valid GML: {err}") from None


def _network_from_gml_graph(
    g: nx.Graph, *, name: str, title: str, provenance: str, where: str
) -> Network:
    ids = list(g.nodes)
    n = len(ids)
    if n < 2:
        raise FedsimError(f"{where} has {n} node(s); a network needs at least 2 silos")
    index = {node_id: k for k, node_id in enumerate(ids)}

    # Names: labels, disambiguated by id where they repeat.
    labels = [g.nodes[i].get("label") for i in ids]
    counts: dict[str, int] = {}
    for lab in labels:
        if lab is not None:
            counts[str(lab)] = counts.get(str(lab), 0) + 1
    names = []
    for node_id, lab in zip(ids, labels):
        if lab is None:
            names.append(str(node_id))
        elif counts[str(lab)] > 1:
            names.append(f"{lab} (id {node_id})")
        else:
            names.append(str(lab))
    if len(set(names)) != n:  # pathological: fall back to ids
        names = [str(i) for i in ids]

    coords: list[Coord | None] = []
    for node_id, silo in zip(ids, names):
        coords.append(_node_coord(g.nodes[node_id], f"{where}: node {silo!r}"))

    # Edge order as networkx.read_gml(path) reports it: read_gml relabels the
    # id-keyed graph to labels, which re-adds the edges in adjacency order.
    h = nx.relabel_nodes(g, index, copy=True)
    if h.is_multigraph():
        edge_iter: Iterable[tuple[int, int, dict[str, Any]]] = (
            (u, v, d) for u, v, _k, d in h.edges(keys=True, data=True)
        )
    else:
        edge_iter = h.edges(data=True)

    best: dict[tuple[int, int], Link] = {}
    for u, v, d in edge_iter:
        if u == v:
            continue
        what = f"{where}: edge {names[u]!r}--{names[v]!r}"
        if "distance" in d:
            km = _as_km(d["distance"], what, attr="distance")
        elif coords[u] is not None and coords[v] is not None:
            km = great_circle_km(coords[u], coords[v])
        else:
            raise FedsimError(
                f"{what} has no 'distance' and its nodes lack Latitude/Longitude; "
                "give edges a km 'distance' or nodes Latitude/Longitude"
            )
        key = (min(u, v), max(u, v))
        if key not in best or km < best[key][2]:
            first = best.get(key, (u, v, km))
            best[key] = (first[0], first[1], km)
    # dict keeps first-occurrence order
    return Network(
        name=name,
        silos=tuple(names),
        links=tuple(best.values()),
        coords=tuple(coords),
        title=title,
        provenance=provenance,
    )


def _node_coord(attrs: Mapping[str, Any], where: str) -> Coord | None:
    lat = lon = None
    for k, v in attrs.items():
        kl = str(k).lower()
        if kl == "latitude":
            lat = v
        elif kl == "longitude":
            lon = v
    if lat is None or lon is None:
        return None
    if not (_is_number(lat) and _is_number(lon)):
        raise FedsimError(
            f"{where} has non-numeric Latitude/Longitude ({lat!r}, {lon!r}); "
            "give degrees as numbers"
        )
    lat, lon = float(lat), float(lon)
    _check_latlon(lat, lon, where)
    return (lat, lon)


# --------------------------------------------------------------------------
# Topology Zoo (via topohub)
# --------------------------------------------------------------------------


def _topohub_zoo_dir() -> Any:
    try:
        import topohub  # noqa: F401
    except ImportError:
        raise FedsimError(
            "zoo:NAME networks need the 'topohub' package (pip install topohub); "
            "use a built-in name or a .gml path instead"
        ) from None
    return importlib.resources.files("topohub") / "data" / "topozoo"


@functools.lru_cache(maxsize=1)
def _zoo_index() -> dict[str, str]:
    folder = _topohub_zoo_dir()
    names = sorted(
        entry.name[: -len(".json")]
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )
    return {n.lower(): n for n in names}


def zoo_names() -> list[str]:
    """Names of the Internet Topology Zoo networks available offline.

    They ship inside the ``topohub`` package; use them as ``zoo:NAME``.

    Examples
    --------
    >>> "Abilene" in zoo_names()  # doctest: +SKIP
    True
    """
    return sorted(_zoo_index().values(), key=str.lower)


def load_zoo(name: str) -> Network:
    """Load an Internet Topology Zoo network from the ``topohub`` package.

    Uses ``topohub.get("topozoo/NAME")``, which reads the JSON that ships
    inside ``topohub`` (``topohub/data/topozoo/NAME.json``); nothing is
    downloaded. topohub keeps only nodes that have coordinates
    (rounded to 0.01°) and the edges between them. fedsim recomputes each
    link's length as the haversine great-circle distance (see
    :func:`great_circle_km`) from those coordinates, so the result is
    consistent with :func:`load_gml` on coordinate-only files.

    Parameters
    ----------
    name : str
        Topology Zoo name, case-insensitive, e.g. ``"Abilene"``,
        ``"Geant2012"``. See :func:`zoo_names`.

    Returns
    -------
    Network
        Named after the Topology Zoo file; connected.

    Raises
    ------
    FedsimError
        If topohub is missing, the name is unknown, or the network (after
        topohub dropped nodes without coordinates) is disconnected.
    """
    index = _zoo_index()
    key = str(name).strip()
    if key.lower().startswith(_ZOO_PREFIX):
        key = key[len(_ZOO_PREFIX):]
    real = index.get(key.lower())
    if real is None:
        close = difflib.get_close_matches(key.lower(), list(index), n=5, cutoff=0.6)
        shown = [index[c] for c in close] or zoo_names()[:5]
        label = "close matches" if close else "e.g."
        raise FedsimError(
            f"unknown Topology Zoo network {name!r}; {label}: {', '.join(shown)} "
            f"({len(index)} in all; list them with "
            "fedsim.topologies.networks.zoo_names())"
        )
    import topohub

    try:
        # Reads topohub/data/topozoo/<real>.json from the installed package.
        data = topohub.get(f"topozoo/{real}")
    except (KeyError, OSError, ValueError) as err:
        raise FedsimError(f"cannot read Topology Zoo network {real!r} from topohub: {err!r}") from None

    where = f"Topology Zoo network {real!r}"
    nodes = data.get("nodes", [])
    if len(nodes) < 2:
        raise FedsimError(f"{where} has {len(nodes)} node(s) with coordinates; at least 2 are needed")
    index_of = {str(node["id"]): k for k, node in enumerate(nodes)}
    raw_names = [str(node.get("name", node["id"])) for node in nodes]
    counts: dict[str, int] = {}
    for nm in raw_names:
        counts[nm] = counts.get(nm, 0) + 1
    names = [
        f"{nm} (id {node['id']})" if counts[nm] > 1 else nm
        for nm, node in zip(raw_names, nodes)
    ]
    coords: list[Coord | None] = []
    for node, silo in zip(nodes, names):
        pos = node.get("pos")
        if pos is None:
            coords.append(None)
        else:
            lon, lat = float(pos[0]), float(pos[1])  # topohub stores (lon, lat)
            _check_latlon(lat, lon, f"{where}: node {silo!r}")
            coords.append((lat, lon))

    # Add in topohub's (file) order, then take networkx's edge order, as
    # load_gml does, so that graph() is a fixed point of this order.
    g = nx.Graph()
    g.add_nodes_from(range(len(nodes)))
    for edge in data.get("edges", []):
        u, v = index_of[str(edge["source"])], index_of[str(edge["target"])]
        if u == v:
            continue
        if coords[u] is not None and coords[v] is not None:
            km = great_circle_km(coords[u], coords[v])
        else:
            km = _as_km(edge["dist"], f"{where}: edge {names[u]!r}--{names[v]!r}")
        if g.has_edge(u, v):
            km = min(km, g.edges[u, v]["distance"])
        g.add_edge(u, v, distance=km)
    links = tuple((u, v, d) for u, v, d in g.edges(data="distance"))

    net = Network(
        name=real,
        silos=tuple(names),
        links=links,
        coords=tuple(coords),
        title=f"Internet Topology Zoo: {real}",
        provenance=(
            f"Internet Topology Zoo network {real!r} as packaged by topohub "
            f"{getattr(topohub, '__version__', '?')} (nodes without coordinates "
            "dropped by topohub; coordinates rounded to 0.01 deg); link km = "
            "haversine great-circle distance (R = 6371.0088 km) computed by fedsim. "
            "Topology Zoo: S. Knight et al., IEEE JSAC 29(9), 2011"
        ),
    )
    return check_connected(net, f"Topology Zoo network {real!r} (as packaged by topohub)")


# --------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------


def load_network(spec: str | os.PathLike[str]) -> Network:
    """Load a network from a name, a Topology Zoo name or a GML path.

    Parameters
    ----------
    spec : str or path-like
        - a built-in name (:data:`BUILTIN_NETWORKS`) or alias
          (:data:`NETWORK_ALIASES`), case-insensitive;
        - ``"zoo:NAME"`` for an Internet Topology Zoo network via topohub;
        - a path ending in ``.gml``.

    Returns
    -------
    Network
        A connected network.

    Raises
    ------
    FedsimError
        One line naming what was wrong (unknown name, missing or malformed
        file, disconnected network, ...) and what is accepted.

    Examples
    --------
    >>> load_network("nws").n_silos
    22
    >>> load_network("fast")
    Traceback (most recent call last):
    ...
    fedsim.errors.FedsimError: unknown network 'fast'; valid: gaia, nws, ...
    """
    if isinstance(spec, os.PathLike):
        net = load_gml(spec)
    else:
        text = str(spec).strip()
        builtin = _canonical_builtin(text)
        if builtin is not None:
            net = builtin_network(builtin)
        elif text.lower().startswith(_ZOO_PREFIX):
            rest = text[len(_ZOO_PREFIX):].strip()
            if not rest:
                raise FedsimError(
                    "zoo: needs a Topology Zoo name, e.g. zoo:Abilene "
                    "(list them with fedsim.topologies.networks.zoo_names())"
                )
            net = load_zoo(rest)
        elif text.lower().endswith(".gml"):
            net = load_gml(text)
        else:
            raise unknown_name(
                "network",
                text,
                [*BUILTIN_NETWORKS, *NETWORK_ALIASES, "zoo:NAME (Topology Zoo)", "PATH.gml"],
            )
    return check_connected(net)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, float) and x.is_integer()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_km(value: Any, where: str, attr: str = "distance") -> float:
    if not _is_number(value):
        raise FedsimError(f"{where} has {attr} {value!r}; give a number of km >= 0")
    km = float(value)
    if not math.isfinite(km) or km < 0:
        raise FedsimError(f"{where} has {attr} {value!r}; give a finite number of km >= 0")
    return km


def _check_latlon(lat: float, lon: float, where: str) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)) or not (
        -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0
    ):
        raise FedsimError(
            f"{where} has coordinates ({lat!r}, {lon!r}); "
            "latitude must be in [-90, 90] and longitude in [-180, 180] degrees"
        )


def first_silos_gml(spec: str, n: int, folder: str | os.PathLike[str]) -> str:
    """Write the first ``n`` silos of network ``spec``, fully connected, as a GML file; returns its path.

    The silos keep their names and coordinates (distances are great-circle).
    Used by ``--silos N`` to run a small federation on part of a real network.

    Examples
    --------
    >>> import tempfile
    >>> load_network(first_silos_gml("gaia", 3, tempfile.mkdtemp())).n_links
    3
    """
    from fedsim.errors import check_int_at_least

    base = load_network(spec)
    n = check_int_at_least("--silos", n, 2)
    if n > base.n_silos:
        raise FedsimError(f"--silos {n}: network {base.name} has only {base.n_silos} silos")
    if any(c is None for c in base.coords[:n]):
        raise FedsimError(f"--silos needs silo coordinates; network {base.name} has none")
    g = nx.Graph()
    for i in range(n):
        lat, lon = base.coords[i]
        g.add_node(base.silos[i], Latitude=float(lat), Longitude=float(lon))
    g.add_edges_from((base.silos[i], base.silos[j]) for i in range(n) for j in range(i + 1, n))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{base.name}-{n}.gml"
    nx.write_gml(g, path)
    return str(path)
