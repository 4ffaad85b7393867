"""How the time simulator scales with the number of silos.

For RING, MST, MATCHA and multigraph (on RING), builds the schedule and
simulates the cycle time (FEMNIST profile, default rounds) on

* Internet Topology Zoo networks as packaged by ``topohub`` (offline), and
* generated random geometric networks: ``N`` silos uniformly in a box over
  Europe (lat 35-60, lon -10-30), each linked to its 3 nearest neighbours,
  plus the edges of their Euclidean minimum spanning tree (so the network is
  connected); link lengths are great-circle km.

Each (network, strategy) runs in a fresh Python process with an empty,
private solver cache, so every figure is a cold one: wall and CPU seconds of
the whole job (connectivity graph + schedule + simulation, imports excluded)
and the process's peak RSS. The growth exponent ``b`` of ``time ≈ a N^b`` is
fitted by least squares on log-log over the generated networks of ≥ 200 silos.

Usage::

    python benchmarks/scale.py                 # full run (up to 2000 silos)
    python benchmarks/scale.py --quick         # tiny sizes, in-process (CI)
    python benchmarks/scale.py --sizes 100,200 --strategies ring
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STRATEGIES = ("ring", "mst", "matcha", "multigraph")
SIZES = (100, 200, 500, 1000, 2000)
ZOO = ("VtlWavenet2011", "TataNld")


def geometric_network(n: int, seed: int = 0):
    """A connected random geometric network of ``n`` silos (see the module docstring)."""
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial import cKDTree

    from fedsim.topologies.networks import Network, great_circle_km

    rng = np.random.default_rng(seed)
    lat = rng.uniform(35.0, 60.0, n)
    lon = rng.uniform(-10.0, 30.0, n)
    xy = np.stack([lat, lon * np.cos(np.radians(47.5))], axis=1)
    k = min(4, n)
    _, nn = cKDTree(xy).query(xy, k=k)
    pairs = {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in nn[i, 1:]}
    # Euclidean MST over the k-NN graph may be disconnected: take it on all pairs.
    diff = xy[:, None, :] - xy[None, :, :]
    dense = np.sqrt((diff**2).sum(-1))
    mst = minimum_spanning_tree(dense).tocoo()
    pairs |= {(min(int(a), int(b)), max(int(a), int(b))) for a, b in zip(mst.row, mst.col)}
    coords = [(float(a), float(b)) for a, b in zip(lat, lon)]
    links = tuple((i, j, great_circle_km(coords[i], coords[j])) for i, j in sorted(pairs))
    silos = tuple(f"s{i}" for i in range(n))
    return Network(f"geo{n}", silos, links, tuple(coords), title=f"random geometric, {n} silos")


def load(spec: str):
    """``geo:N`` or ``zoo:NAME``."""
    if spec.startswith("geo:"):
        return geometric_network(int(spec[4:]))
    from fedsim.topologies.networks import load_network

    return load_network(spec)


def run_one(spec: str, strategy: str) -> dict:
    """Build and simulate one (network, strategy) in this process; times exclude imports."""
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity, get_profile

    net = load(spec)
    prof = get_profile("femnist")
    t, c = time.perf_counter(), time.process_time()
    conn = connectivity(net)
    t_conn = time.perf_counter() - t
    sched = build_schedule(strategy, conn, prof)
    t_build = time.perf_counter() - t - t_conn
    ct = simulate(sched, conn, prof)
    return {
        "network": spec, "silos": net.n_silos, "links": net.n_links, "strategy": strategy,
        "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c,
        "connectivity_s": t_conn, "build_s": t_build, "cycle_time_ms": ct.value,
    }


def run_child(spec: str, strategy: str, timeout: float) -> dict:
    """:func:`run_one` in a fresh process with a private empty cache; adds peak RSS (MiB)."""
    code = (
        "import json, resource, sys; sys.path.insert(0, sys.argv[3]); import scale;"
        "r = scale.run_one(sys.argv[1], sys.argv[2]);"
        "r['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024;"
        "print(json.dumps(r))"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "FEDSIM_CACHE_DIR": cache}
        try:
            out = subprocess.run([sys.executable, "-c", code, spec, strategy, str(HERE)],
                                 capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"network": spec, "strategy": strategy, "error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"network": spec, "strategy": strategy, "error": last}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_exponent(rows: list[dict], strategy: str) -> float | None:
    pts = [(r["silos"], r["wall_s"]) for r in rows
           if r.get("strategy") == strategy and "error" not in r
           and r["network"].startswith("geo:") and r["silos"] >= 200]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([max(p[1], 1e-6) for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def table(rows: list[dict], strategies) -> str:
    lines = ["| network | silos | links | strategy | wall s | cpu s | connectivity s | peak RSS MiB | cycle time ms |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | | | {r['strategy']} | {r['error']} | | | | |")
            continue
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-"
        lines.append(
            f"| {r['network']} | {r['silos']} | {r['links']} | {r['strategy']} | {r['wall_s']:.2f} | "
            f"{r['cpu_s']:.2f} | {r['connectivity_s']:.2f} | {rss} | {r['cycle_time_ms']:.1f} |")
    fits = [f"{s}: N^{b:.2f}" for s in strategies if (b := fit_exponent(rows, s)) is not None]
    if fits:
        lines.append("")
        lines.append("Fitted growth of wall time on generated networks (≥ 200 silos): " + ", ".join(fits))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes in this process (a smoke test)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--zoo", default=",".join(ZOO), help="Topology Zoo names ('' for none)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per job, seconds")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    strategies = tuple(s for s in args.strategies.split(",") if s)
    if args.quick:
        rows = [run_one(f"geo:{n}", s) for n in (12, 30) for s in strategies]
        for r in rows:
            assert math.isfinite(r["cycle_time_ms"]) and r["cycle_time_ms"] > 0, r
        print(table(rows, strategies))
        return 0
    specs = [f"zoo:{z}" for z in args.zoo.split(",") if z] + [f"geo:{n}" for n in args.sizes.split(",") if n]
    rows = []
    for spec in specs:
        for s in strategies:
            r = run_child(spec, s, args.timeout)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print(table(rows, strategies))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
