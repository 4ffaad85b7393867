"""Speed of fedsim's time simulator.

Two benchmarks (see ``benchmarks/RESULTS.md`` for recorded numbers):

(a) The whole published Table 3 (15 network × profile rows × 7 topologies =
    105 cycle times), ``fedsim.timing.table3.reproduce(progress=False)``:

    * **cold, empty disk cache** -- a fresh Python process with a new, empty
      ``FEDSIM_CACHE_DIR``: every MATCHA activation-probability SDP is solved
      (SCS) and every in-process cache starts empty;
    * **cold, primed disk cache** -- a fresh process reusing that folder: the
      MATCHA decompositions come from the on-disk cache, everything else
      (connectivity graphs, overlays, simulations) is computed;
    * **warm** -- further calls in the same process (in-process caches
      filled: connectivity graphs, MATCHA decompositions, RING tours, STAR
      servers, δ-MBST cube paths).

    Every MATCHA problem counts as solved when its activation probabilities
    are computed (closed form or the numpy barrier method).

    The call is timed inside the process (``time.perf_counter`` around
    ``reproduce``); the import of fedsim and the whole process wall time are
    reported separately. Every run checks that all 105 cells are within
    tolerance.

(b) One multigraph cycle time: Exodus, FEMNIST profile, 6400 rounds. The
    schedule is built once; ``simulate`` is timed (median of repeats).

Usage::

    python benchmarks/timing_speed.py              # print the numbers
    python benchmarks/timing_speed.py --record     # also append them to RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py (the script folder is on sys.path)

HERE = Path(__file__).resolve().parent

# Runs in a fresh interpreter: imports, then `calls` timed calls of reproduce().
_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import fedsim.topologies, fedsim.timing.simulate, fedsim.timing.sweep
from fedsim.timing import table3
from fedsim.topologies.overlays import matcha
t_import = time.perf_counter() - t0
sdp = [0.0]
solve = matcha._activation_probabilities
def timed_solve(*args, **kwargs):  # time spent in MATCHA's activation-probability problems
    t = time.perf_counter()
    try:
        return solve(*args, **kwargs)
    finally:
        sdp[0] += time.perf_counter() - t
matcha._activation_probabilities = timed_solve
calls, cpu = [], []
for _ in range(int(sys.argv[1])):
    t, c = time.perf_counter(), time.process_time()
    cells = table3.reproduce(progress=False)
    calls.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
    bad = [c for c in cells if not c.ok]
    assert len(cells) == 105 and not bad, bad
stages = {}
if sys.argv[2] == "1":
    # Per-topology share of one more (warm) regeneration.
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity, get_profile
    from fedsim.topologies.networks import load_network
    for prof in table3.PROFILES:
        for net in table3.NETWORKS:
            conn, p = connectivity(load_network(net)), get_profile(prof)
            for topo in table3.COLUMNS:
                t = time.perf_counter()
                s = build_schedule(topo, conn, p)
                stages["build " + topo] = stages.get("build " + topo, 0.0) + time.perf_counter() - t
                t = time.perf_counter()
                simulate(s, conn, p)
                stages["simulate " + topo] = stages.get("simulate " + topo, 0.0) + time.perf_counter() - t
print(json.dumps({"import_s": t_import, "calls_s": calls, "cpu_s": cpu, "sdp_s": sdp[0],
                  "stages_s": stages}))
"""


def _child(cache_dir: str, calls: int, stages: bool = False) -> dict:
    env = dict(os.environ, FEDSIM_CACHE_DIR=cache_dir)
    env.pop("FEDSIM_CACHE", None)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(calls), "1" if stages else "0"],
                         env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    return result


def table3_benchmark(cold_repeats: int, primed_repeats: int, warm_calls: int) -> dict:
    empty, primed, warm = [], [], []
    stages: dict = {}
    for _ in range(cold_repeats):
        with tempfile.TemporaryDirectory(prefix="fedsim-bench-cache-") as tmp:
            empty.append(_child(tmp, 1))
            for _ in range(primed_repeats):
                primed.append(_child(tmp, 1))
            if warm_calls:
                w = _child(tmp, 1 + warm_calls)
                warm.extend(zip(w["calls_s"][1:], w["cpu_s"][1:]))
                if not stages:
                    stages = _child(tmp, 1, stages=True)["stages_s"]
    med = lambda xs: statistics.median(xs)  # noqa: E731
    return {
        "cold_empty_cache_s": med([r["calls_s"][0] for r in empty]),
        "cold_empty_cache_cpu_s": med([r["cpu_s"][0] for r in empty]),
        "cold_empty_cache_sdp_s": med([r["sdp_s"] for r in empty]),
        "cold_empty_cache_process_s": med([r["process_s"] for r in empty]),
        "cold_primed_cache_s": med([r["calls_s"][0] for r in primed]) if primed else float("nan"),
        "cold_primed_cache_cpu_s": med([r["cpu_s"][0] for r in primed]) if primed else float("nan"),
        "cold_primed_cache_process_s": med([r["process_s"] for r in primed]) if primed else float("nan"),
        "import_s": med([r["import_s"] for r in primed or empty]),
        "warm_s": med([w for w, _ in warm]) if warm else float("nan"),
        "warm_cpu_s": med([c for _, c in warm]) if warm else float("nan"),
        "runs": {"cold_empty": len(empty), "cold_primed": len(primed), "warm": len(warm)},
        "warm_breakdown_s": dict(sorted(stages.items(), key=lambda kv: -kv[1])),
    }


def multigraph_benchmark(repeats: int) -> dict:
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity, get_profile
    from fedsim.topologies.networks import load_network

    conn, prof = connectivity(load_network("exodus")), get_profile("femnist")
    sched = build_schedule("multigraph", conn, prof)
    value = simulate(sched, conn, prof, rounds=6400).value
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        simulate(sched, conn, prof, rounds=6400)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"median_s": statistics.median(times), "min_s": min(times),
            "median_cpu_s": statistics.median(cpu), "repeats": repeats,
            "cycle_time_ms": value, "s_max": sched.n_states}


def markdown(res: dict, cmd: str) -> str:
    a, b, m = res["table3"], res["multigraph"], res["machine"]
    lines = [
        f"### {m['date']}",
        "",
        f"- command: `{cmd}`",
        f"- machine: nproc = {m['nproc']}, {m['python']}, CPU `{m['cpu']}`; "
        f"load average (1, 5, 15 min) at the start {m['loadavg_at_start']}, at the end "
        f"{m['loadavg_at_end']}",
        "",
        "| benchmark | median wall | median CPU | target |",
        "|---|---:|---:|---:|",
        f"| (a) Table 3, cold process, empty disk cache (SDPs solved) | {a['cold_empty_cache_s']:.2f} s "
        f"(of which MATCHA's activation probabilities {a['cold_empty_cache_sdp_s']:.2f} s; whole process "
        f"{a['cold_empty_cache_process_s']:.2f} s) | {a['cold_empty_cache_cpu_s']:.2f} s | 2 s |",
        f"| (a) Table 3, cold process, primed disk cache | {a['cold_primed_cache_s']:.2f} s "
        f"(whole process {a['cold_primed_cache_process_s']:.2f} s, fedsim import "
        f"{a['import_s']:.2f} s) | {a['cold_primed_cache_cpu_s']:.2f} s | 2 s |",
        f"| (a) Table 3, warm (same process) | {a['warm_s']:.2f} s | {a['warm_cpu_s']:.2f} s | 2 s |",
        f"| (b) multigraph, Exodus FEMNIST, 6400 rounds (`simulate`) | {1e3 * b['median_s']:.2f} ms "
        f"(min {1e3 * b['min_s']:.2f} ms) | {1e3 * b['median_cpu_s']:.2f} ms | 50 ms |",
        "",
        f"Runs: {a['runs']['cold_empty']} cold/empty, {a['runs']['cold_primed']} cold/primed, "
        f"{a['runs']['warm']} warm; (b) {b['repeats']} repeats "
        f"(cycle time {b['cycle_time_ms']:.2f} ms, s_max = {b['s_max']}).",
        "",
        "Warm regeneration by part, summed over the 15 rows (s): " + ", ".join(
            f"{k} {v:.3f}" for k, v in a["warm_breakdown_s"].items() if v >= 0.0005) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold-repeats", type=int, default=3, help="fresh empty caches (default 3)")
    ap.add_argument("--primed-repeats", type=int, default=3,
                    help="fresh processes per primed cache folder (default 3)")
    ap.add_argument("--warm-calls", type=int, default=3, help="warm calls per cache folder (default 3)")
    ap.add_argument("--mg-repeats", type=int, default=21, help="repeats of benchmark (b) (default 21)")
    ap.add_argument("--quick", action="store_true",
                    help="one cold process and 2 repeats of (b), nothing recorded (a smoke test for CI)")
    ap.add_argument("--record", action="store_true", help="append the results to benchmarks/RESULTS.md")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.cold_repeats, args.primed_repeats, args.warm_calls, args.mg_repeats = 1, 0, 0, 2
        args.record = False
    load_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    res = {
        "table3": table3_benchmark(args.cold_repeats, args.primed_repeats, args.warm_calls),
        "multigraph": multigraph_benchmark(args.mg_repeats),
    }
    res["machine"] = describe()
    res["machine"]["loadavg_at_end"] = res["machine"].pop("loadavg")
    res["machine"]["loadavg_at_start"] = load_start
    cmd = "python benchmarks/timing_speed.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                                 if (argv or sys.argv[1:]) else "")
    text = markdown(res, cmd)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if args.record:
        from fedsim.io import atomic_write_text

        path = HERE / "RESULTS.md"
        old = path.read_text() if path.exists() else "# Benchmark results\n\n"
        atomic_write_text(path, old.rstrip("\n") + "\n\n" + text)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
