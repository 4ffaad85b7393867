"""Multigraph vs ring on Gaia: test accuracy and simulated wall clock of real training runs.

Runs ``fedsim run --topology gaia --strategy {multigraph,ring} --task digits
--rounds 300`` for seeds 0, 1, 2 (through :func:`fedsim.apps.simulation.run_simulation`,
the function the CLI calls) and records per run: final mean test accuracy, best
mean test accuracy over rounds 1..R, the mean of the last 20 rounds' mean test
accuracy, and the simulated wall clock (``summary.json`` ``simulated_total_ms``).

The claim checked: *multigraph reaches at least ring's test accuracy minus 2
points while its simulated wall clock is smaller* - per seed and on the seed
means, for each of the three accuracy measures. It also reports the simulated
time each design needs to first reach ``ring's final accuracy - 2 points``.

The simulated clock uses a fixed compute time per local step (``--compute-ms``,
default 1.0 ms, about the measured digits step on a 2-core EPYC box with one
thread) so that every run - both designs, all seeds, any machine - is timed
with the same delay profile and the numbers reproduce exactly; ``--compute-ms 0``
measures the step once on this machine instead (as ``fedsim run`` does by
default) and still shares that one value between all runs.

Writes the run directories under ``--out`` (default ``runs/multigraph_vs_ring``,
git-ignored), ``result.md`` / ``result.json`` there, and one figure (accuracy
vs simulated time, seed 0) at ``--figure``.

Example::

    python benchmarks/multigraph_vs_ring.py                    # the recorded numbers
    python benchmarks/multigraph_vs_ring.py --rounds 50 --seeds 0 --out /tmp/mvr
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("multigraph", "ring")


def run_one(args, strategy: str, seed: int, compute_ms: float, out: Path) -> tuple[dict, list[dict]]:
    from fedsim.apps.config import RunConfig
    from fedsim.apps.records import read_rounds
    from fedsim.apps.simulation import run_simulation

    cfg = RunConfig(network=args.network, strategy=strategy, task=args.task, rounds=args.rounds,
                    local_steps=args.local_steps, seed=seed, t=args.t, workers=args.workers,
                    compute_ms=compute_ms, checkpoint_every=args.checkpoint_every)
    run_dir = out / f"{args.network}-{strategy}-{args.task}-s{seed}"
    summary_path = run_dir / "summary.json"
    if args.reuse and summary_path.exists():
        old = json.loads((run_dir / "config.json").read_text())
        same = all(old.get(k) == v for k, v in
                   {"network": args.network, "strategy": strategy, "task": args.task, "rounds": args.rounds,
                    "local_steps": args.local_steps, "seed": seed, "t": args.t, "compute_ms": compute_ms}.items())
        summary = json.loads(summary_path.read_text())
        if same and summary.get("rounds_completed") == args.rounds:
            print(f"reusing {run_dir}", file=sys.stderr)
            return summary, read_rounds(run_dir)
    for name in ("rounds.csv", "checkpoint.npz", "summary.json", "failures.json"):
        (run_dir / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    summary = run_simulation(cfg, run_dir, progress=False)
    print(f"{strategy} seed {seed}: final {summary['final_eval_metric']:.4f}, simulated "
          f"{summary['simulated_total_ms'] / 1e3:.2f} s, real {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)
    return summary, read_rounds(run_dir)


def measures(summary: dict, rows: list[dict], last: int) -> dict:
    acc = np.array([r["eval_metric"] for r in rows], float)  # row 0 = initial model
    t = np.array([r["sim_cum_ms"] for r in rows], float)
    return {"final": float(summary["final_eval_metric"]), "best": float(np.nanmax(acc[1:])),
            f"last{last}": float(np.nanmean(acc[-last:])), "sim_total_s": float(summary["simulated_total_ms"]) / 1e3,
            "cycle_time_ms": float(summary["simulated_cycle_time_ms"]), "acc": acc, "t_s": t / 1e3}


def time_to(acc: np.ndarray, t_s: np.ndarray, target: float) -> float | None:
    hit = np.flatnonzero(acc >= target)
    return float(t_s[hit[0]]) if hit.size else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="gaia")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--local-steps", type=int, default=1)
    ap.add_argument("--t", type=int, default=5, help="multigraph maximum multiplicity (fedsim default 5)")
    ap.add_argument("--compute-ms", type=float, default=1.0,
                    help="compute time per local step for the simulated clock (default 1.0; 0: measure once)")
    ap.add_argument("--tolerance", type=float, default=2.0, help="accuracy points multigraph may lose (default 2)")
    ap.add_argument("--last", type=int, default=20, help="rounds averaged at the end (default 20)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--reuse", action="store_true", help="keep finished runs with the same settings in --out")
    ap.add_argument("--out", default="runs/multigraph_vs_ring", help="run directories and result files")
    ap.add_argument("--figure", default="benchmarks/figures/multigraph_vs_ring_gaia_digits_seed0.png",
                    help="accuracy vs simulated time of the first seed")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from fedsim.apps.simulation import quiet_env

    quiet_env(out / ".flwr")
    compute_ms = args.compute_ms
    if not compute_ms:
        from fedsim.clients import get_task

        compute_ms = round(get_task(args.task).profile().compute_ms, 4)
    res: dict = {}
    for seed in args.seeds:
        for s in STRATEGIES:
            summary, rows = run_one(args, s, seed, compute_ms, out)
            res[(s, seed)] = measures(summary, rows, args.last)

    # -- figure (first seed) ---------------------------------------------------
    from fedsim.plots import curves

    seed0 = args.seeds[0]
    curves({f"{s} (seed {seed0})": (res[(s, seed0)]["t_s"], res[(s, seed0)]["acc"]) for s in STRATEGIES},
           "simulated wall clock (s)", "mean test accuracy", args.figure,
           title=f"{args.network}, {args.task}: multigraph vs ring, {args.rounds} rounds")

    # -- table -------------------------------------------------------------------
    tol = args.tolerance / 100
    lastk = f"last{args.last}"
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cmd = "python benchmarks/multigraph_vs_ring.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"### Multigraph vs ring: {args.network}, {args.task}, {args.rounds} rounds, "
             f"{args.local_steps} local step, seeds {' '.join(map(str, args.seeds))}", "",
             f"`{cmd.strip()}` - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs ({cpu}), "
             f"Python {platform.python_version()}; simulated clock with compute {compute_ms} ms/step; "
             f"multigraph t={args.t}.", "",
             f"| seed | design | final acc | best acc | mean acc last {args.last} | simulated wall clock (s) | "
             f"cycle time (ms) | sim. time to ring final - {args.tolerance:g} pts (s) |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for seed in args.seeds:
        ring = res[("ring", seed)]
        target = ring["final"] - tol
        for s in STRATEGIES:
            r = res[(s, seed)]
            tt = time_to(r["acc"], r["t_s"], target)
            r["time_to_target_s"] = tt
            lines.append(f"| {seed} | {s} | {r['final']:.4f} | {r['best']:.4f} | {r[lastk]:.4f} | "
                         f"{r['sim_total_s']:.2f} | {r['cycle_time_ms']:.2f} | "
                         f"{'never' if tt is None else f'{tt:.2f}'} |")
        mg = res[("multigraph", seed)]
        verdicts.append({m: (mg[m] >= ring[m] - tol) for m in ("final", "best", lastk)}
                        | {"faster": mg["sim_total_s"] < ring["sim_total_s"]})
    mean = {s: {m: float(np.mean([res[(s, sd)][m] for sd in args.seeds])) for m in
                ("final", "best", lastk, "sim_total_s")} for s in STRATEGIES}
    for s in STRATEGIES:
        lines.append(f"| mean | {s} | {mean[s]['final']:.4f} | {mean[s]['best']:.4f} | {mean[s][lastk]:.4f} | "
                     f"{mean[s]['sim_total_s']:.2f} | | |")
    lines += ["", f"Claim: multigraph accuracy >= ring accuracy - {args.tolerance:g} points **and** smaller "
              "simulated wall clock.", "",
              "| measure | " + " | ".join(f"seed {sd}" for sd in args.seeds) + " | seed mean (diff, points) |",
              "|---|" + "---|" * (len(args.seeds) + 1)]
    for m in ("final", "best", lastk):
        cells = []
        for sd, v in zip(args.seeds, verdicts):
            d = 100 * (res[("multigraph", sd)][m] - res[("ring", sd)][m])
            cells.append(f"{'holds' if v[m] and v['faster'] else 'fails'} ({d:+.1f})")
        dm = 100 * (mean["multigraph"][m] - mean["ring"][m])
        ok = dm >= -args.tolerance and mean["multigraph"]["sim_total_s"] < mean["ring"]["sim_total_s"]
        lines.append(f"| {m} accuracy | " + " | ".join(cells) + f" | {'holds' if ok else 'fails'} ({dm:+.1f}) |")
    at_equal = []
    for sd in args.seeds:
        mg, ring = res[("multigraph", sd)], res[("ring", sd)]
        idx = int(np.searchsorted(ring["t_s"], mg["t_s"][-1], side="right")) - 1
        at_equal.append(f"seed {sd}: {ring['acc'][idx]:.4f} after {idx} rounds")
        ring["acc_at_multigraph_end"] = float(ring["acc"][idx])
    lines += ["", f"Equal simulated time: when multigraph ends ({mean['multigraph']['sim_total_s']:.2f} s, "
              f"{args.rounds} rounds), ring's mean test accuracy is " + "; ".join(at_equal) + "."]
    speed = mean["ring"]["sim_total_s"] / mean["multigraph"]["sim_total_s"]
    lines += ["", f"Simulated wall clock for {args.rounds} rounds: multigraph {mean['multigraph']['sim_total_s']:.2f} s "
              f"vs ring {mean['ring']['sim_total_s']:.2f} s (ring / multigraph = {speed:.2f}x). "
              f"Figure: `{args.figure}`."]
    md = "\n".join(lines) + "\n"
    (out / "result.md").write_text(md)
    (out / "result.json").write_text(json.dumps(
        {"args": vars(args), "compute_ms": compute_ms,
         "runs": {f"{s}-s{sd}": {k: v for k, v in r.items() if k not in ("acc", "t_s")} for (s, sd), r in res.items()},
         "mean": mean, "verdicts": verdicts}, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
