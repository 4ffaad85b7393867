"""Build fedsim's built-in network data files from the reference GML files.

Run once by a developer (the package never reads the reference folder at run
time; the generated JSON files are fedsim's own data)::

    .venv/bin/python scripts/build_networks.py ../shared/reference/networks

It reads ``gaia.gml``, ``amazon_us.gml`` (-> ``nws``), ``geantdistance.gml``
(-> ``geant``), ``exodus.gml`` and ``ebone.gml`` from the given folder and
writes ``fedsim/topologies/data/{gaia,nws,geant,exodus,ebone}.json`` plus
``fedsim/topologies/data/PROVENANCE.md`` (``--out DIR`` to write elsewhere).

What it does to each file:

- Reads it with :func:`fedsim.topologies.networks.load_gml` (so runtime GML
  loading and the packaged data agree): silos in the GML node order, named by
  the node ``label`` exactly as networkx reads it (HTML character references
  such as ``&#233;`` decoded); links in the GML edge order as ``[i, j, km]``
  with ``km`` the edge ``distance`` attribute at full float precision. It
  checks independently (a regex scan of the raw text) that this link order is
  the file's edge order and that the counts match the published ones.
- Coordinates: Géant's come from the file's ``Latitude``/``Longitude``. For
  the others, whose nodes carry only a label, it adds approximate city-centre
  coordinates from the lookup tables below (city-level accuracy, written by
  fedsim's developers from general geographic knowledge; for drawing maps
  only, never used for distances). Rocketfuel labels such as
  ``San+Jose,+CA471`` are a city plus a router number; the city is looked up.
- Other attributes (Gaia's ``capacity``, Géant's ``Country``, ``LinkSpeed``
  and friends) are not carried over: the delay model does not use them.

The script is deterministic: running it twice gives identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedsim.topologies.networks import Network, load_gml  # noqa: E402

# ---------------------------------------------------------------------------
# Approximate city-centre coordinates (lat, lon), degrees.
# ---------------------------------------------------------------------------

#: Gaia's 11 AWS regions (Hsieh et al., NSDI'17), placed at the region's
#: usual city.
GAIA_COORDS: dict[str, tuple[float, float]] = {
    "Virginia": (39.04, -77.49),  # us-east-1, N. Virginia (Ashburn)
    "California": (37.77, -122.42),  # us-west-1, N. California (San Francisco)
    "Oregon": (45.52, -122.68),  # us-west-2, Oregon (Portland)
    "Dublin": (53.35, -6.26),  # eu-west-1
    "Frankfurt": (50.11, 8.68),  # eu-central-1
    "Tokyo": (35.68, 139.69),  # ap-northeast-1
    "Seoul": (37.57, 126.98),  # ap-northeast-2
    "Singapore": (1.29, 103.85),  # ap-southeast-1
    "Sydney": (-33.87, 151.21),  # ap-southeast-2
    "Mumbai": (19.08, 72.88),  # ap-south-1
    "Sao Paulo": (-23.55, -46.63),  # sa-east-1
}

#: AWS North America, 22 locations (labels as in amazon_us.gml, decoded).
NWS_COORDS: dict[str, tuple[float, float]] = {
    "Ashburn": (39.04, -77.49),
    "Atlanta": (33.75, -84.39),
    "Boston": (42.36, -71.06),
    "Chicago": (41.88, -87.63),
    "Dallas": (32.78, -96.80),
    "Denver": (39.74, -104.99),
    "Hayward": (37.67, -122.08),
    "Jacksonville": (30.33, -81.66),
    "Los Angeles": (34.05, -118.24),
    "Miami, Florida": (25.76, -80.19),
    "Minneapolis": (44.98, -93.27),
    "Montreal": (45.50, -73.57),
    "New York": (40.71, -74.01),
    "Newark": (40.74, -74.17),
    "Palo Alto": (37.44, -122.14),
    "Phoenix": (33.45, -112.07),
    "Philadelphie": (39.95, -75.17),  # Philadelphia (French spelling in the file)
    "San José": (37.34, -121.89),
    "Seattle": (47.61, -122.33),
    "South Bend": (41.68, -86.25),
    "Saint-Louis": (38.63, -90.20),  # St. Louis, Missouri
    "Toronto": (43.65, -79.38),
}

#: Cities of the Rocketfuel Exodus (AS3967) and Ebone (AS1755) router labels,
#: after removing the router number and turning '+' into spaces.
ROCKETFUEL_COORDS: dict[str, tuple[float, float]] = {
    # Exodus (AS3967)
    "Amsterdam": (52.37, 4.90),
    "Atlanta, GA": (33.75, -84.39),
    "Austin, TX": (30.27, -97.74),
    "Chicago, IL": (41.88, -87.63),
    "El Segundo, CA": (33.92, -118.42),
    "Fort Worth, TX": (32.76, -97.33),
    "Frankfurt": (50.11, 8.68),
    "Herndon, VA": (38.97, -77.39),
    "Irvine, CA": (33.68, -117.83),
    "Jersey City, NJ": (40.72, -74.04),
    "London": (51.51, -0.13),
    "Miami, FL": (25.76, -80.19),
    "New York, NY": (40.71, -74.01),
    "Oak Brook, IL": (41.83, -87.93),
    "Palo Alto, CA": (37.44, -122.14),
    "San Jose, CA": (37.34, -121.89),
    "Santa Clara, CA": (37.35, -121.96),
    "Tokyo": (35.68, 139.69),
    "Toronto, Canada": (43.65, -79.38),
    "Tukwila, WA": (47.47, -122.26),
    "Waltham, MA": (42.38, -71.24),
    "Weehawken, NJ": (40.77, -74.02),
    # Ebone (AS1755)
    "Amsterdam, Netherlands": (52.37, 4.90),
    "Antwerp, Belgium": (51.22, 4.40),
    "Barcelona, Spain": (41.39, 2.17),
    "Berlin, Germany": (52.52, 13.40),
    "Bracknell, UnitedKingdom": (51.42, -0.75),
    "Bratislava, Slovakia": (48.15, 17.11),
    "Brussels, Belgium": (50.85, 4.35),
    "Copenhagen, Denmark": (55.68, 12.57),
    "Dusseldorf, Germany": (51.23, 6.77),
    "Frankfurt, Germany": (50.11, 8.68),
    "Geneva, Switzerland": (46.20, 6.14),
    "Hamburg, Germany": (53.55, 9.99),
    "London, UnitedKingdom": (51.51, -0.13),
    "Manchester, UnitedKingdom": (53.48, -2.24),
    "Milan, Italy": (45.46, 9.19),
    "Munich, Germany": (48.14, 11.58),
    "Paris, France": (48.86, 2.35),
    "Prague, CzechRepublic": (50.08, 14.44),
    "Rome, Italy": (41.90, 12.50),
    "Rotterdam, Netherlands": (51.92, 4.48),
    "Stockholm, Sweden": (59.33, 18.07),
    "Vienna, Austria": (48.21, 16.37),
}


def rocketfuel_city(label: str) -> str:
    """City of a Rocketfuel router label: ``'San+Jose,+CA471'`` -> ``'San Jose, CA'``."""
    return re.sub(r"\d+$", "", label).replace("+", " ").strip()


# ---------------------------------------------------------------------------
# Per-network metadata
# ---------------------------------------------------------------------------

_REPO_A = (
    "github.com/omarfoq/communication-in-cross-silo-fl (commit 01b2aa3), "
    "graph_utils/data/{file}; byte-identical in github.com/aioz-ai/MultigraphFL "
    "(commit a002ddb)"
)
_PAPERS = (
    "distances in km as preprocessed by the cross-silo FL papers' public code "
    "(Marfoq et al., 'Throughput-Optimal Topology Design for Cross-Silo "
    "Federated Learning', NeurIPS 2020, Apache-2.0; Do et al., 'Reducing "
    "Training Time in Cross-Silo Federated Learning using Multigraph Topology', "
    "ICCV 2023, MIT)"
)
_ADDED = (
    "Silo coordinates are approximate city centres added by fedsim (city-level "
    "accuracy, for drawing maps only; distances come from the file)."
)
_LICENSE_A = (
    "Apache-2.0 (file as distributed in omarfoq/communication-in-cross-silo-fl; "
    "the byte-identical copy in aioz-ai/MultigraphFL is MIT, Copyright (c) 2023 "
    "AIOZ AI)"
)

SPECS: dict[str, dict] = {
    "gaia": {
        "file": "gaia.gml",
        "title": "Gaia: 11 AWS regions",
        "origin": (
            "The 11 AWS regions of the Gaia paper (Hsieh et al., 'Gaia: "
            "Geo-Distributed Machine Learning Approaching LAN Speeds', NSDI'17): "
            "Virginia, California, Oregon, Dublin, Frankfurt, Tokyo, Seoul, "
            "Singapore, Sydney, Mumbai, Sao Paulo; complete graph"
        ),
        "coords": "gaia",
        "license": _LICENSE_A,
        "extra_license": "",
        "dropped": "edge 'capacity' (bit/s; unused by the delay model)",
        "counts": (11, 55),
        "notes": (
            "The file's km fit Virginia, California and Oregon geocoded as US "
            "state centroids (e.g. Virginia-California 3,561 km), not the AWS "
            "region cities used for the coordinates here."
        ),
    },
    "nws": {
        "file": "amazon_us.gml",
        "title": "AWS North America: 22 locations",
        "origin": "AWS North America, 22 locations (the papers' 'AWS NA'/'NWS'); complete graph",
        "coords": "nws",
        "license": _LICENSE_A,
        "extra_license": "",
        "dropped": "nothing (nodes carry only a label)",
        "counts": (22, 231),
        "notes": (
            "The file's km place 'San José' in San José, Costa Rica (all 21 of its "
            "links fit that within 0.5%; e.g. Palo Alto-San José 4,880 km), an "
            "evident geocoding slip upstream; every other silo fits its US/Canada "
            "city. fedsim keeps the file's km (they produce the published cycle "
            "times) and puts the silo's map coordinates at San Jose, California."
        ),
    },
    "geant": {
        "file": "geantdistance.gml",
        "title": "GEANT 2012 (Internet Topology Zoo 'Geant2012')",
        "origin": (
            "Internet Topology Zoo network 'Geant2012' (Topology Zoo Toolset, "
            "source geant.net maps, obtained 29/03/2012), with a km 'distance' "
            "added to each edge by the papers' code"
        ),
        "coords": "file",
        "license": _LICENSE_A,
        "extra_license": (
            " Upstream data: Internet Topology Zoo (S. Knight et al., IEEE JSAC "
            "29(9), 2011), under the Topology Zoo's own terms of use, which the "
            "source repository does not restate."
        ),
        "dropped": (
            "node 'Country', 'Internal', 'type', 'geocode*'; edge 'LinkSpeed', "
            "'LinkSpeedUnits', 'LinkSpeedRaw', 'LinkLabel', 'capacity', 'id'"
        ),
        "counts": (40, 61),
        "notes": (
            "The file's km are geodesic distances computed with latitude and "
            "longitude swapped: all 61 agree within 1% with the great-circle "
            "distance between (Longitude, Latitude) read as (lat, lon), none "
            "within 1% with the true one (e.g. DK-IS 3,922 km in the file, 2,104 km true). fedsim "
            "keeps the file's km (they produce the published cycle times) and the "
            "file's true coordinates."
        ),
    },
    "exodus": {
        "file": "exodus.gml",
        "title": "Exodus (Rocketfuel AS3967)",
        "origin": (
            "Rocketfuel ISP map AS3967 (Exodus), router level; labels are "
            "city + router number; routers in the same city are 0 km apart"
        ),
        "coords": "rocketfuel",
        "license": _LICENSE_A,
        "extra_license": (
            " Upstream data: Rocketfuel (Spring, Mahajan, Wetherall, SIGCOMM "
            "2002), under Rocketfuel's own terms of use, which the source "
            "repository does not restate."
        ),
        "dropped": "nothing (nodes carry only a label)",
        "counts": (79, 147),
        "notes": (
            "The file's km place 'Herndon, VA' in Herndon, Kansas (its 6 "
            "inter-city links fit that within 16 km; e.g. New York-"
            "Herndon 2,269 km, true 347 km), an evident geocoding slip upstream; "
            "all other inter-city links fit the labelled cities. fedsim keeps the "
            "file's km and puts the map coordinates at Herndon, Virginia."
        ),
    },
    "ebone": {
        "file": "ebone.gml",
        "title": "Ebone (Rocketfuel AS1755)",
        "origin": (
            "Rocketfuel ISP map AS1755 (Ebone), router level; labels are "
            "city + router number; routers in the same city are 0 km apart"
        ),
        "coords": "rocketfuel",
        "license": _LICENSE_A,
        "extra_license": (
            " Upstream data: Rocketfuel (Spring, Mahajan, Wetherall, SIGCOMM "
            "2002), under Rocketfuel's own terms of use, which the source "
            "repository does not restate."
        ),
        "dropped": "nothing (nodes carry only a label)",
        "counts": (87, 161),
        "notes": "The file's inter-city km fit the labelled cities within 0.5%.",
    },
}


def _coord_for(kind: str, silo: str) -> tuple[float, float] | None:
    if kind == "gaia":
        return GAIA_COORDS.get(silo)
    if kind == "nws":
        return NWS_COORDS.get(silo)
    if kind == "rocketfuel":
        return ROCKETFUEL_COORDS.get(rocketfuel_city(silo))
    raise ValueError(kind)


def _file_edge_order(text: str) -> list[tuple[int, int]]:
    """Edges ``(source id, target id)`` in the order they appear in the file."""
    return [
        (int(a), int(b))
        for a, b in re.findall(r"\bedge\s*\[\s*source\s+(-?\d+)\s+target\s+(-?\d+)", text)
    ]


def _file_node_ids(text: str) -> list[int]:
    return [int(a) for a in re.findall(r"\bnode\s*\[\s*id\s+(-?\d+)", text)]


def build_one(key: str, src_dir: Path) -> tuple[dict, dict]:
    """Return (json data, provenance facts) for built-in network ``key``."""
    spec = SPECS[key]
    path = src_dir / spec["file"]
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    net = load_gml(path)

    # Independent checks of order and counts against the raw text.
    text = raw.decode("ascii")
    ids = _file_node_ids(text)
    file_edges = _file_edge_order(text)
    pos = {node_id: k for k, node_id in enumerate(ids)}
    assert len(ids) == net.n_silos, (key, len(ids), net.n_silos)
    assert [(pos[s], pos[t]) for s, t in file_edges] == [(i, j) for i, j, _ in net.links], (
        f"{key}: link order differs from the file's edge order"
    )
    assert (net.n_silos, net.n_links) == spec["counts"], (key, net.n_silos, net.n_links)
    file_km = [float(x) for x in re.findall(r"\bdistance\s+(\S+)", text)]
    assert file_km == [km for _, _, km in net.links], f"{key}: distances differ from the file"

    if spec["coords"] == "file":
        coords = net.coords
        assert net.has_coords(), key
        coord_note = "Silo coordinates are the file's node Latitude/Longitude."
    else:
        coords = tuple(_coord_for(spec["coords"], s) for s in net.silos)
        missing = [s for s, c in zip(net.silos, coords) if c is None]
        assert not missing, f"{key}: no coordinates for {missing}"
        coord_note = _ADDED

    provenance = (
        f"{spec['origin']}. Source file: {spec['file']} from {_REPO_A.format(file=spec['file'])}; "
        f"{_PAPERS}. {coord_note} Data note: {spec['notes']}"
    )
    out = Network(
        name=key,
        silos=net.silos,
        links=net.links,
        coords=coords,
        title=spec["title"],
        provenance=provenance,
    )
    data = out.to_dict()
    data = {
        "name": data["name"],
        "title": data["title"],
        "provenance": data["provenance"],
        "license": spec["license"] + "." + spec["extra_license"],
        "source_file": spec["file"],
        "source_sha256": digest,
        "silos": data["silos"],
        "links": data["links"],
    }
    kms = [km for _, _, km in out.links]
    cities = sorted({rocketfuel_city(s) for s in out.silos}) if spec["coords"] == "rocketfuel" else None
    facts = {
        "key": key,
        "file": spec["file"],
        "bytes": len(raw),
        "sha256": digest,
        "n": out.n_silos,
        "e": out.n_links,
        "km_min": min(kms),
        "km_max": max(kms),
        "zero": sum(k == 0 for k in kms),
        "cities": cities,
        "origin": spec["origin"],
        "license": data["license"],
        "coords": coord_note,
        "dropped": spec["dropped"],
        "notes": spec["notes"],
    }
    return data, facts


def provenance_md(facts: list[dict]) -> str:
    lines = [
        "# Built-in network data: provenance",
        "",
        "Generated by `scripts/build_networks.py` from the reference GML files;",
        "do not edit by hand. fedsim reads only these JSON files at run time.",
        "",
        "JSON layout: `{name, title, provenance, license, source_file, source_sha256,",
        "silos: [{name, lat, lon}], links: [[i, j, km]]}`. Silos are in the GML node",
        "order and links in the GML edge order (algorithms start from node 0 and are",
        "tie-sensitive); `km` is the GML edge `distance` at full precision, in",
        "kilometres (great-circle), as preprocessed by the cross-silo FL papers'",
        "public code:",
        "",
        "- **A** = github.com/omarfoq/communication-in-cross-silo-fl, commit `01b2aa3`,",
        "  `graph_utils/data/` — Apache License 2.0. Marfoq et al., \"Throughput-Optimal",
        "  Topology Design for Cross-Silo Federated Learning\", NeurIPS 2020.",
        "- **B** = github.com/aioz-ai/MultigraphFL, commit `a002ddb` — MIT, \"Copyright",
        "  (c) 2023 AIOZ AI\" (a fork of A with byte-identical GML files). Do et al.,",
        "  \"Reducing Training Time in Cross-Silo Federated Learning using Multigraph",
        "  Topology\", ICCV 2023.",
        "",
        "Added by fedsim: for gaia, nws, exodus and ebone the GML nodes carry only a",
        "label, so fedsim added **approximate city-centre coordinates** (city-level",
        "accuracy, from general geographic knowledge; the table is in",
        "`scripts/build_networks.py`). They are for drawing maps only; all",
        "distances come from the files. Géant's coordinates are the file's own.",
        "",
        "| file | source (A) | sha256 of source GML | silos | links | km range | 0-km links |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in facts:
        lines.append(
            f"| `{f['key']}.json` | `{f['file']}` ({f['bytes']:,} B) | `{f['sha256']}` | "
            f"{f['n']} | {f['e']} | {f['km_min']:,.1f}–{f['km_max']:,.1f} | {f['zero']} |"
        )
    lines.append("")
    for f in facts:
        lines += [
            f"## `{f['key']}.json`",
            "",
            f"- Origin: {f['origin']}.",
            f"- Source: A `graph_utils/data/{f['file']}`, sha256 `{f['sha256']}`.",
            f"- License: {f['license']}",
            f"- Coordinates: {f['coords']}",
            f"- Not carried over: {f['dropped']}.",
            f"- Data note: {f['notes']}",
        ]
        if f["cities"]:
            lines.append(
                f"- Router labels are city + router number; {len(f['cities'])} cities: "
                + "; ".join(f["cities"]) + "."
            )
        lines.append("")
    lines += [
        "## Notes on the data",
        "",
        "- Rocketfuel routers in the same city are joined by 0 km links (exodus,",
        "  ebone). `Read_me_gml.txt` upstream calls the Rocketfuel `distance` a",
        "  latency from `latencies.intra`, but the values are great-circle km",
        "  (Santa Clara–Tokyo 8,372 km, Paris–New York 5,853 km) and the papers'",
        "  code treats them as km; so does fedsim.",
        "- amazon_us.gml spells two labels as \"Philadelphie\" and \"San Jos&#233;\"",
        "  (decoded to \"San José\"); the names are kept as in the file.",
        "- Upstream distances were geocoded by the papers' code; the per-file",
        "  data notes above list where they disagree with the labelled places.",
        "  fedsim keeps every `distance` exactly as in the file so that the",
        "  published cycle-time tables are reproduced.",
        "- Géant's UA, MD and BY nodes have coordinates in this file but not in the",
        "  Topology Zoo original, so topohub's `topozoo/Geant2012` (37 nodes, 58",
        "  edges) differs from `geant` (40 nodes, 61 links).",
        "",
    ]
    return "\n".join(lines)


def to_json(data: dict) -> str:
    """JSON text with one silo and one link per line (readable diffs)."""
    out = ["{"]
    keys = list(data)
    for n, key in enumerate(keys):
        comma = "," if n < len(keys) - 1 else ""
        value = data[key]
        if key in ("silos", "links"):
            items = [json.dumps(v, ensure_ascii=False) for v in value]
            out.append(f"  {json.dumps(key)}: [")
            out += [f"    {item}," for item in items[:-1]] + [f"    {items[-1]}"]
            out.append(f"  ]{comma}")
        else:
            out.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    out.append("}")
    text = "\n".join(out) + "\n"
    assert json.loads(text) == data
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="folder holding the reference GML files")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "fedsim" / "topologies" / "data",
        help="output folder (default: fedsim/topologies/data)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    facts = []
    for key in SPECS:
        data, f = build_one(key, args.reference)
        facts.append(f)
        target = args.out / f"{key}.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(to_json(data), encoding="utf-8")
        tmp.replace(target)
        print(f"wrote {target} ({f['n']} silos, {f['e']} links)")
    md = args.out / "PROVENANCE.md"
    md.write_text(provenance_md(facts), encoding="utf-8")
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
