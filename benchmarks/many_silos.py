"""Many virtual silos on the Simulation Engine: per-round wall time and peak memory against the silo count.

For each silo count N a network of N silos at seeded random places in
Europe is written as GML, then a real ``fedsim run`` (a subprocess: Ray,
Flower's engine, fedsim's round loop) trains ``--rounds`` rounds of CDL's
small ResNet-8 variant with ``--task-option n_per_silo=10``. The figures:

* ``start_s``: from the process start to the end of round 1's records
  (start-up, silo query, and one round);
* ``round_s``: the median ``wall_s`` of rounds 2.. (``rounds.csv``);
* ``ms_per_silo``: ``round_s / N``, flat if the round loop is linear;
* ``peak_gb``: the peak resident memory of the whole process tree (sampled
  every 0.2 s with psutil).

Usage::

    python benchmarks/many_silos.py --silos 100 300 1000 --strategies fedavg ring
    python benchmarks/many_silos.py --quick        # 12 silos, 2 rounds (what CI runs)
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil


def write_network(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` silos at random places in Europe, each linked to its 3 nearest (a connected ring added)."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(36, 60, n), rng.uniform(-9, 30, n)
    lines = ["graph ["]
    lines += [f'  node [ id {i} label "s{i}" Latitude {lat[i]:.4f} Longitude {lon[i]:.4f} ]' for i in range(n)]
    edges = {(i, (i + 1) % n) for i in range(n)} if n > 2 else {(0, 1)}
    pts = np.c_[lat, lon]
    for i in range(n):
        near = np.argsort(((pts - pts[i]) ** 2).sum(1))[1:4]
        edges |= {tuple(sorted((i, int(j)))) for j in near}
    lines += [f"  edge [ source {a} target {b} ]" for a, b in sorted({tuple(sorted(e)) for e in edges}) if a != b]
    lines.append("]")
    path.write_text("\n".join(lines) + "\n")
    return path


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(n: int, strategy: str, rounds: int, work: Path) -> dict:
    net = write_network(work / f"net{n}.gml", n)
    out = work / f"run-{n}-{strategy}"
    cmd = [sys.executable, "-m", "fedsim.cli", "run", "--topology", str(net), "--strategy", strategy, "--task", "cdl",
           "--task-option", "variant=resnet8", "--task-option", "n_per_silo=10", "--rounds", str(rounds),
           "--compute-ms", "5", "--out", str(out), "--overwrite", "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak, first = psutil.Process(proc.pid), 0, None
    stop = threading.Event()

    def sample():
        nonlocal peak, first
        while not stop.is_set():
            peak = max(peak, _tree_rss(ps))
            if first is None and (out / "rounds.csv").exists():
                with open(out / "rounds.csv") as fh:
                    if sum(1 for _ in fh) >= 2:  # header + row 0 -> round 1 is recorded when row 1 opens
                        first = time.perf_counter() - t0
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    stop.set()
    th.join()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fedsim run failed for {n} silos ({strategy}): {stderr.strip().splitlines()[-1:]}")
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    walls = [float(r["wall_s"]) for r in rows[2:]] or [float(rows[1]["wall_s"])]
    round_s = statistics.median(walls)
    return {"silos": n, "strategy": strategy, "total_s": total, "start_s": first or float("nan"),
            "round1_s": float(rows[1]["wall_s"]), "round_s": round_s, "ms_per_silo": round_s / n * 1e3,
            "peak_gb": peak / 1e9}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--silos", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--strategies", nargs="+", default=["fedavg", "ring"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="12 silos, 2 rounds, fedavg only (CI)")
    args = ap.parse_args(argv)
    if args.quick:
        args.silos, args.strategies, args.rounds = [12], ["fedavg"], 2
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = []
    with tempfile.TemporaryDirectory(prefix="fedsim-many-") as tmp:
        for n in args.silos:
            for strategy in args.strategies:
                r = run_once(n, strategy, args.rounds, Path(tmp))
                results.append(r)
                print(f"{n:5d} silos {strategy:8s} total {r['total_s']:7.1f} s  first round done {r['start_s']:6.1f} s  "
                      f"round 1 {r['round1_s']:6.2f} s  later rounds {r['round_s']:6.2f} s "
                      f"({r['ms_per_silo']:.1f} ms/silo)  peak {r['peak_gb']:.2f} GB", flush=True)
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}")
    return results


if __name__ == "__main__":
    main()
