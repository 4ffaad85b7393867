"""Tests for fedsim.topologies.networks (built-in data, GML and Topology Zoo loaders).

These tests never read ../shared: the built-in networks come from the package's
own JSON files, and GML inputs are written into tmp_path.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
import socket
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.errors import FedsimError
from fedsim.topologies import networks as nw
from fedsim.topologies.networks import (
    BUILTIN_NETWORKS,
    EARTH_RADIUS_KM,
    NETWORK_ALIASES,
    Network,
    builtin_network,
    great_circle_km,
    load_gml,
    load_network,
    load_zoo,
    network_names,
)

# ---------------------------------------------------------------------------
# Built-in networks
# ---------------------------------------------------------------------------

# name: (silos, links, min km, max km, zero-km links) -- SPEC-timing.md section 2
EXPECTED = {
    "gaia": (11, 55, 825, 18_529, 0),
    "nws": (22, 231, 14, 5_503, 0),
    "geant": (40, 61, 82, 4_083, 0),
    "exodus": (79, 147, 0, 8_372, 70),
    "ebone": (87, 161, 0, 5_853, 74),
}

GAIA_SILOS = (
    "Virginia", "California", "Oregon", "Dublin", "Frankfurt", "Tokyo",
    "Seoul", "Singapore", "Sydney", "Mumbai", "Sao Paulo",
)
NWS_SILOS = (
    "Ashburn", "Atlanta", "Boston", "Chicago", "Dallas", "Denver", "Hayward",
    "Jacksonville", "Los Angeles", "Miami, Florida", "Minneapolis", "Montreal",
    "New York", "Newark", "Palo Alto", "Phoenix", "Philadelphie", "San José",
    "Seattle", "South Bend", "Saint-Louis", "Toronto",
)


def test_builtin_names():
    assert BUILTIN_NETWORKS == ("gaia", "nws", "geant", "exodus", "ebone")
    assert network_names() == list(BUILTIN_NETWORKS)
    assert NETWORK_ALIASES == {"amazon_us": "nws", "aws_na": "nws"}


@pytest.mark.parametrize("name", BUILTIN_NETWORKS)
def test_builtin_counts_and_km_ranges(name):
    n_silos, n_links, lo, hi, zeros = EXPECTED[name]
    net = builtin_network(name)
    assert net.name == name
    assert (net.n_silos, net.n_links) == (n_silos, n_links)
    assert len(net.silos) == len(set(net.silos)) == n_silos
    kms = [km for _, _, km in net.links]
    assert round(min(kms)) == lo
    assert round(max(kms)) == hi
    assert sum(km == 0 for km in kms) == zeros
    assert all(i != j for i, j, _ in net.links)
    assert net.is_connected()
    assert net.has_coords()
    assert net.title and net.provenance


@pytest.mark.parametrize("name", BUILTIN_NETWORKS)
def test_builtin_graph_order_is_a_fixed_point(name):
    """graph() adds links in stored order, and the stored order is networkx's own
    edge order, so the graph equals what networkx.read_gml gives on the source."""
    net = builtin_network(name)
    g = net.graph()
    assert list(g.nodes) == list(range(net.n_silos))
    assert [g.nodes[i]["name"] for i in g] == list(net.silos)
    assert [(u, v) for u, v in g.edges] == [(i, j) for i, j, _ in net.links]
    assert [d for _, _, d in g.edges(data="distance")] == [km for _, _, km in net.links]
    assert all(i < j for i, j, _ in net.links)
    for i, (lat, lon) in enumerate(net.coords):
        assert g.nodes[i]["lat"] == lat and g.nodes[i]["lon"] == lon


def test_builtin_silo_order_and_known_links():
    gaia = builtin_network("gaia")
    assert gaia.silos == GAIA_SILOS
    assert gaia.links[0] == (0, 1, 3560.859824767453)  # Virginia--California
    assert nx.is_isomorphic(gaia.graph(), nx.complete_graph(11))

    assert builtin_network("nws").silos == NWS_SILOS
    assert builtin_network("geant").silos[:4] == ("NL", "BE", "DK", "PL")

    exodus = builtin_network("exodus")
    assert exodus.silos[:2] == ("San+Jose,+CA471", "Santa+Clara,+CA444")
    assert exodus.links[0] == (0, 1, 21.537793763270834)
    i, j, km = max(exodus.links, key=lambda link: link[2])
    assert {exodus.silos[i], exodus.silos[j]} == {"Santa+Clara,+CA336", "Tokyo526"}
    assert km == pytest.approx(8372.352046117057, abs=1e-9)

    ebone = builtin_network("ebone")
    assert ebone.silos[0] == "London,+UnitedKingdom209"
    i, j, km = max(ebone.links, key=lambda link: link[2])
    assert {ebone.silos[i], ebone.silos[j]} == {"Paris,+France193", "New+York,+NY240"}
    assert round(km) == 5853


def test_builtin_coordinates_are_plausible():
    gaia = builtin_network("gaia")
    sydney = gaia.coords[gaia.silos.index("Sydney")]
    assert sydney[0] < -30 and sydney[1] > 150
    geant = builtin_network("geant")
    assert geant.coords[0] == (52.37403, 4.88969)  # NL, from the GML file
    ebone = builtin_network("ebone")
    # the ebone file's inter-city km fit the labelled cities (within 1%)
    for i, j, km in ebone.links:
        if km > 300:
            assert great_circle_km(ebone.coords[i], ebone.coords[j]) == pytest.approx(km, rel=0.01)


def test_alias_and_case():
    assert builtin_network("amazon_us") is builtin_network("nws")
    assert load_network("aws_na") == builtin_network("nws")
    assert load_network(" Gaia ").name == "gaia"


def test_builtin_is_cached_and_immutable():
    net = builtin_network("gaia")
    assert builtin_network("gaia") is net
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.name = "x"  # type: ignore[misc]
    g = net.graph()
    g.remove_node(0)
    assert net.graph().number_of_nodes() == 11


def test_packaged_json_files():
    # Silo counts of the published networks (Marfoq et al. 2020, Do et al. 2023):
    # Gaia 11 AWS regions, AWS North America 22, Géant 40, Exodus 79, Ebone 87;
    # Gaia and AWS NA are complete graphs.
    published = {"gaia": 11, "nws": 22, "geant": 40, "exodus": 79, "ebone": 87}
    folder = importlib.resources.files("fedsim.topologies") / "data"
    for name in BUILTIN_NETWORKS:
        data = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert data["name"] == name
        assert {"title", "provenance", "license", "silos", "links"} <= set(data)
        assert "approximate" in data["provenance"] or name == "geant"
        net = builtin_network(name)
        # The loader keeps the file's silos and links, in the file's order.
        assert net.silos == tuple(s["name"] for s in data["silos"])
        assert net.links == tuple((int(i), int(j), float(km)) for i, j, km in data["links"])
        assert net.is_connected()
        if name in published:
            assert net.n_silos == published[name], name
        if name in ("gaia", "nws"):
            assert net.n_links == net.n_silos * (net.n_silos - 1) // 2, name
    # The provenance note of gaia.json: Virginia-California is 3,561 km in the source file.
    gaia = builtin_network("gaia")
    km = {frozenset((gaia.silos[i], gaia.silos[j])): d for i, j, d in gaia.links}
    assert km[frozenset(("Virginia", "California"))] == pytest.approx(3561, abs=1)
    assert (folder / "PROVENANCE.md").is_file()


def test_to_dict_roundtrip():
    net = builtin_network("exodus")
    assert Network.from_dict(json.loads(json.dumps(net.to_dict()))) == net


def test_unknown_names_list_valid_ones():
    with pytest.raises(FedsimError) as exc:
        load_network("gaya")
    msg = str(exc.value)
    assert "'gaya'" in msg
    for name in BUILTIN_NETWORKS:
        assert name in msg
    assert "zoo:NAME" in msg and ".gml" in msg
    assert "\n" not in msg

    with pytest.raises(FedsimError) as exc:
        builtin_network("nope")
    assert "gaia, nws, geant, exodus, ebone" in str(exc.value)


# ---------------------------------------------------------------------------
# Network construction
# ---------------------------------------------------------------------------


def test_network_validation():
    ok = Network("t", ("a", "b"), ((0, 1, 1.0),), ())
    assert ok.coords == (None, None) and not ok.has_coords()
    bad = [
        dict(silos=("a",), links=()),
        dict(silos=("a", "a"), links=((0, 1, 1.0),)),
        dict(silos=("a", "b"), links=((0, 1, -1.0),)),
        dict(silos=("a", "b"), links=((0, 0, 1.0),)),
        dict(silos=("a", "b"), links=((0, 2, 1.0),)),
        dict(silos=("a", "b"), links=((0, 1, 1.0), (1, 0, 2.0))),
        dict(silos=("a", "b"), links=((0, 1, float("nan")),)),
        dict(silos=("a", "b"), links=((0, 1, 1.0),), coords=((91.0, 0.0), None)),
    ]
    for kw in bad:
        kw.setdefault("coords", ())
        with pytest.raises(FedsimError):
            Network("t", **kw)


def test_disconnected_network_is_refused():
    net = Network("split", ("a", "b", "c", "d"), ((0, 1, 1.0), (2, 3, 1.0)), ())
    assert net.n_components() == 2 and not net.is_connected()
    with pytest.raises(FedsimError, match=r"network 'split' is disconnected: 2 components"):
        nw.check_connected(net)


def test_great_circle_hand_computed():
    # one degree of arc on the equator = 2*pi*R/360
    assert great_circle_km((0.0, 0.0), (0.0, 1.0)) == pytest.approx(
        2 * math.pi * EARTH_RADIUS_KM / 360, rel=1e-12
    )
    assert great_circle_km((0.0, 1.0), (90.0, 0.0)) == pytest.approx(10007.557221, abs=1e-5)
    assert great_circle_km((10.0, 20.0), (10.0, 20.0)) == 0.0


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.data())
def test_graph_matches_links_property(n, data):
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = data.draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    kms = data.draw(st.lists(st.floats(0, 20000), min_size=len(chosen), max_size=len(chosen)))
    links = tuple((i, j, km) for (i, j), km in zip(chosen, kms))
    net = Network("h", tuple(f"s{i}" for i in range(n)), links, ())
    g = net.graph()
    assert g.number_of_nodes() == n and g.number_of_edges() == len(links)
    assert all(g.edges[i, j]["distance"] == km for i, j, km in links)
    assert net.is_connected() == nx.is_connected(g)


# ---------------------------------------------------------------------------
# GML loader
# ---------------------------------------------------------------------------


def _gml(nodes: list[str], edges: list[str], header: str = "") -> str:
    body = "".join(f"  node [\n{n}\n  ]\n" for n in nodes)
    body += "".join(f"  edge [\n{e}\n  ]\n" for e in edges)
    return f"graph [\n{header}{body}]\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_gml_with_distances(tmp_path):
    text = _gml(
        ['    id 0\n    label "A"', '    id 1\n    label "S&#227;o"', '    id 2\n    label "C"'],
        [
            "    source 0\n    target 1\n    distance 10.5",
            "    source 1\n    target 2\n    distance 0",
            "    source 2\n    target 0\n    distance 7",
        ],
        header='  label "Tiny"\n',
    )
    net = load_gml(_write(tmp_path, "tiny.gml", text))
    assert net.name == "tiny" and net.title == "Tiny"
    assert net.silos == ("A", "São", "C")
    assert net.links == ((0, 1, 10.5), (0, 2, 7.0), (1, 2, 0.0))
    assert not net.has_coords()
    assert "tiny.gml" in net.provenance
    # same through load_network, with str and with Path
    assert load_network(str(tmp_path / "tiny.gml")) == net
    assert load_network(tmp_path / "tiny.gml") == net


def test_gml_link_order_reproduces_networkx(tmp_path):
    # file order differs from networkx's: graph() must equal nx.read_gml's graph
    text = _gml(
        [f'    id {i}\n    label "n{i}"' for i in range(4)],
        [
            "    source 2\n    target 1\n    distance 1",
            "    source 3\n    target 0\n    distance 2",
            "    source 0\n    target 1\n    distance 3",
            "    source 2\n    target 3\n    distance 4",
        ],
    )
    path = _write(tmp_path, "order.gml", text)
    net = load_gml(path)
    ref = nx.read_gml(path)
    g = net.graph()
    names = list(ref)
    assert [g.nodes[i]["name"] for i in g] == names
    for i in g:
        assert [names[j] for j in g.adj[i]] == list(ref.adj[names[i]])
    assert [(names[u], names[v]) for u, v in g.edges] == list(ref.edges)


def test_gml_with_only_coordinates(tmp_path):
    text = _gml(
        [
            '    id 0\n    label "Equator0"\n    Latitude 0\n    Longitude 0',
            '    id 1\n    label "Equator1"\n    Latitude 0.0\n    Longitude 1.0',
            '    id 2\n    label "Pole"\n    Latitude 90\n    Longitude 0',
        ],
        ["    source 0\n    target 1", "    source 1\n    target 2"],
    )
    net = load_gml(_write(tmp_path, "geo.gml", text))
    assert net.has_coords()
    assert net.coords[2] == (90.0, 0.0)
    (_, _, km01), (_, _, km12) = net.links
    # hand computed: R = 6371.0088 km; 1 degree of arc = 111.195080 km;
    # (0, 1) to the pole is a quarter circle = pi/2 * R = 10007.557221 km
    assert km01 == pytest.approx(111.195080, abs=1e-6)
    assert km12 == pytest.approx(10007.557221, abs=1e-6)


def test_gml_mixed_distance_and_coordinates(tmp_path):
    text = _gml(
        [
            '    id 0\n    label "a"\n    Latitude 0\n    Longitude 0',
            '    id 1\n    label "b"\n    Latitude 0\n    Longitude 1',
            '    id 2\n    label "c"',
        ],
        ["    source 0\n    target 1", "    source 1\n    target 2\n    distance 5"],
    )
    net = load_gml(_write(tmp_path, "mixed.gml", text))
    assert net.links[0][2] == pytest.approx(111.19508, abs=1e-4)
    assert net.links[1] == (1, 2, 5.0)
    assert net.coords[2] is None and not net.has_coords()


def test_gml_without_distance_or_coordinates(tmp_path):
    text = _gml(
        ['    id 0\n    label "a"', '    id 1\n    label "b"'],
        ["    source 0\n    target 1"],
    )
    path = _write(tmp_path, "bare.gml", text)
    with pytest.raises(FedsimError) as exc:
        load_gml(path)
    msg = str(exc.value)
    assert "bare.gml" in msg
    assert "distance" in msg and "Latitude/Longitude" in msg
    assert "\n" not in msg


def test_gml_disconnected(tmp_path):
    text = _gml(
        [f'    id {i}\n    label "n{i}"' for i in range(5)],
        [
            "    source 0\n    target 1\n    distance 1",
            "    source 2\n    target 3\n    distance 1",
        ],
    )
    path = _write(tmp_path, "islands.gml", text)
    with pytest.raises(FedsimError) as exc:
        load_network(str(path))
    msg = str(exc.value)
    assert "islands" in msg and "disconnected" in msg and "3 components" in msg


def test_gml_missing_file(tmp_path):
    missing = tmp_path / "nowhere.gml"
    with pytest.raises(FedsimError, match="nowhere.gml.*not found"):
        load_network(str(missing))
    with pytest.raises(FedsimError, match="nowhere.gml"):
        load_gml(missing)


def test_gml_directory_is_refused(tmp_path):
    folder = tmp_path / "dir.gml"
    folder.mkdir()
    with pytest.raises(FedsimError, match="dir.gml"):
        load_gml(folder)


def test_gml_malformed(tmp_path):
    path = _write(tmp_path, "broken.gml", "graph [\n  node [\n    id 0\n")
    with pytest.raises(FedsimError, match="broken.gml.*not valid GML"):
        load_gml(path)
    path = _write(tmp_path, "nograph.gml", "hello world\n")
    with pytest.raises(FedsimError, match="nograph.gml"):
        load_gml(path)


def test_gml_negative_and_non_numeric_distance(tmp_path):
    nodes = ['    id 0\n    label "a"', '    id 1\n    label "b"']
    path = _write(tmp_path, "neg.gml", _gml(nodes, ["    source 0\n    target 1\n    distance -3"]))
    with pytest.raises(FedsimError, match="neg.gml.*distance -3"):
        load_gml(path)
    path = _write(tmp_path, "txt.gml", _gml(nodes, ['    source 0\n    target 1\n    distance "far"']))
    with pytest.raises(FedsimError, match="txt.gml.*distance 'far'"):
        load_gml(path)


def test_gml_too_few_silos(tmp_path):
    path = _write(tmp_path, "one.gml", _gml(['    id 0\n    label "a"'], []))
    with pytest.raises(FedsimError, match="one.gml.*at least 2"):
        load_gml(path)


def test_gml_multigraph_and_self_loops(tmp_path):
    text = _gml(
        ['    id 0\n    label "a"', '    id 1\n    label "b"', '    id 2\n    label "c"'],
        [
            "    source 0\n    target 1\n    distance 9",
            "    source 1\n    target 0\n    distance 4",
            "    source 1\n    target 1\n    distance 2",
            "    source 1\n    target 2\n    distance 6",
        ],
        header="  multigraph 1\n",
    )
    net = load_gml(_write(tmp_path, "multi.gml", text))
    assert net.links == ((0, 1, 4.0), (1, 2, 6.0))
    # parallel edges in a file that does not declare 'multigraph 1'
    net2 = load_gml(_write(tmp_path, "undeclared.gml", text.replace("  multigraph 1\n", "")))
    assert net2.links == net.links


def test_gml_duplicate_labels(tmp_path):
    text = _gml(
        ['    id 0\n    label "x"', '    id 1\n    label "x"', '    id 2\n    label "y"'],
        ["    source 0\n    target 1\n    distance 1", "    source 1\n    target 2\n    distance 1"],
    )
    net = load_gml(_write(tmp_path, "dups.gml", text))
    assert net.silos == ("x (id 0)", "x (id 1)", "y")


def test_gml_utf8_labels(tmp_path):
    text = _gml(
        ['    id 0\n    label "Zürich"', '    id 1\n    label "Genève"'],
        ["    source 0\n    target 1\n    distance 224"],
    )
    net = load_gml(_write(tmp_path, "swiss.gml", text))
    assert net.silos == ("Zürich", "Genève")


# ---------------------------------------------------------------------------
# Topology Zoo via topohub
# ---------------------------------------------------------------------------


@pytest.fixture
def no_internet(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_zoo_abilene_offline(no_internet):
    pytest.importorskip("topohub")
    net = load_network("zoo:Abilene")
    assert net.name == "Abilene"
    assert (net.n_silos, net.n_links) == (11, 14)
    assert net.silos[0] == "New York"
    assert net.has_coords() and net.is_connected()
    assert "Topology Zoo" in net.provenance
    # every link is the haversine distance between its endpoints
    for i, j, km in net.links:
        assert km == pytest.approx(great_circle_km(net.coords[i], net.coords[j]))
    # New York -- Chicago is about 1,145 km
    ny, chi = net.silos.index("New York"), net.silos.index("Chicago")
    km = net.graph().edges[ny, chi]["distance"]
    assert 1100 < km < 1200
    assert load_zoo("abilene") == net  # case-insensitive


def test_zoo_names_and_unknown():
    pytest.importorskip("topohub")
    names = nw.zoo_names()
    assert "Abilene" in names and "Geant2012" in names and len(names) > 100
    with pytest.raises(FedsimError) as exc:
        load_network("zoo:Abilen")
    msg = str(exc.value)
    assert "'Abilen'" in msg and "Abilene" in msg and "zoo_names()" in msg
    with pytest.raises(FedsimError, match="zoo:Abilene"):
        load_network("zoo:")
