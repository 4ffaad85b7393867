"""Start-up of ``fedsim``: ``--help``, the time to the first round, and a whole 1-round run.

Each repetition runs, back to back in fresh processes:

* ``fedsim --help``;
* ``fedsim run --topology gaia --strategy ring --task digits --rounds 1`` (a
  real Simulation Engine run: Ray, Flower's engine, fedsim's round loop),
  noting when round 1's records reach ``rounds.csv`` (the file gets its
  row 0 when round 1's replies close it) and when the process has exited.

It prints the minimum and median of each figure and the machine's load.

Usage::

    python benchmarks/startup.py --reps 5
    python benchmarks/startup.py --quick      # one repetition (what CI runs)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _fedsim(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedsim", *args]


def help_time() -> float:
    t0 = time.perf_counter()
    subprocess.run(_fedsim("--help"), check=True, capture_output=True)
    return time.perf_counter() - t0


def run_time(out: Path) -> tuple[float, float]:
    """(seconds to round 1 recorded, seconds to process exit) of a 1-round digits run on Gaia."""
    cmd = _fedsim("run", "--topology", "gaia", "--strategy", "ring", "--task", "digits", "--rounds", "1",
                  "--out", str(out), "--overwrite", "--no-progress")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    csv = out / "rounds.csv"
    while proc.poll() is None:
        if first is None and csv.exists() and csv.read_text().count("\n") >= 2:
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fedsim run failed: {proc.stderr.read().strip().splitlines()[-1:]}")
    return (first if first is not None else total), total


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one repetition")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else args.reps
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    load0 = os.getloadavg()[0]
    helps, firsts, totals = [], [], []
    with tempfile.TemporaryDirectory(prefix="fedsim-startup-") as tmp:
        for i in range(reps):
            helps.append(help_time())
            first, total = run_time(Path(tmp) / f"run{i}")
            firsts.append(first)
            totals.append(total)
    out = {}
    for name, xs in (("fedsim --help", helps), ("run: round 1 recorded", firsts), ("run: 1-round run, exit", totals)):
        out[name] = (min(xs), statistics.median(xs))
        print(f"{name:26s} min {min(xs):6.2f} s   median {statistics.median(xs):6.2f} s   ({reps} runs)")
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, 1-min load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    return out


if __name__ == "__main__":
    main()
