"""Does the advisor's ranking from short pilots match the ranking of full runs?

For each network (default Gaia and Exodus) and each strategy, one full run of
the digits task (``fedsim.run``, same seed for all). Ground truth: the
ranking by *simulated* time to the target of the full runs (``sim_cum_ms`` at
the first round whose mean test accuracy reaches the target). Advisor: the
ranking of :func:`fedsim.advise.rank` from the first ``--pilot-rounds`` rounds
of each curve (what a pilot of that length records: training is
deterministic for a seed and round k does not depend on the rounds after it;
the script checks this once by training one real pilot and comparing its
curve), with the cycle time of :func:`fedsim.cli.advise.run_cycle_ms`.
Agreement: Kendall's tau-b between the two rankings (strategies that do not
reach the target share the last rank) and whether the first place agrees.

    python benchmarks/advisor.py            # Gaia + Exodus, about 10 min on 2 shared cores
    python benchmarks/advisor.py --quick    # Gaia, 2 strategies, 3 rounds, pilots of 2 (a smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# network -> (strategies, full rounds, pilot rounds); Exodus (79 silos) is ~20x slower per round than Gaia.
PLAN = {
    "gaia": ("fedavg,ring,matcha,multigraph", 40, 5),
    "exodus": ("fedavg,ring,multigraph", 16, 4),
}
QUICK = {"gaia": ("fedavg,ring", 3, 2)}


def truth_rank(full: dict, target: float):
    """Strategy -> (simulated ms to the target or None, rounds or None) from the full runs."""
    out = {}
    for s, res in full.items():
        df = res.rounds
        hit = df[df["eval_metric"] >= target]
        out[s] = (None, None) if hit.empty else (float(hit["sim_cum_ms"].iloc[0]), int(hit["round"].iloc[0]))
    return out


def ranks(times: dict) -> dict:
    """Strategy -> rank (1 = fastest); not reached (None) share the last rank."""
    reached = sorted((t, s) for s, t in times.items() if t is not None)
    r = {s: i + 1 for i, (_, s) in enumerate(reached)}
    for s, t in times.items():
        if t is None:
            r[s] = len(reached) + 1
    return r


def tau_b(a: dict, b: dict) -> float:
    from scipy.stats import kendalltau

    keys = sorted(a)
    if len(keys) < 2:
        return float("nan")
    return float(kendalltau([a[k] for k in keys], [b[k] for k in keys]).statistic)


def bench_network(net: str, strategies: list[str], rounds: int, pilot: int, target_arg: str | None, lr: float,
                  out: Path, check_pilot: bool) -> dict:
    import numpy as np

    import fedsim
    from fedsim import advise
    from fedsim.cli.advise import run_cycle_ms

    full, walls = {}, {}
    for s in strategies:
        t0 = time.perf_counter()
        full[s] = fedsim.run(net, s, "digits", rounds=rounds, seed=0, out=out / f"{net}-{s}", overwrite=True, lr=lr)
        walls[s] = time.perf_counter() - t0
        print(f"  {net} {s}: {rounds} rounds in {walls[s]:.0f} s, final accuracy "
              f"{full[s].rounds['eval_metric'].iloc[-1]:.3f}", flush=True)
    if target_arg is None:  # 90% of the way from the initial model's accuracy to the level every full run reached
        start = float(next(iter(full.values())).rounds["eval_metric"].iloc[0])
        level = start + 0.9 * (min(float(r.rounds["eval_metric"].max()) for r in full.values()) - start)
        target = advise.Target("accuracy", round(level, 3), "eval_metric", True)
    else:
        target = advise.parse_target(target_arg, "accuracy")
    truth = truth_rank(full, target.value)
    cycles = {s: run_cycle_ms(r, net) for s, r in full.items()}
    curves = {s: (r.rounds["round"].to_numpy(float)[: pilot + 1], r.rounds["eval_metric"].to_numpy(float)[: pilot + 1])
              for s, r in full.items()}
    table = advise.rank(cycles, curves, target)
    adv_times = {row.strategy: (None if np.isnan(row.time_to_target_ms) else float(row.time_to_target_ms))
                 for row in table.itertuples()}
    r_truth, r_adv = ranks({s: t for s, (t, _) in truth.items()}), ranks(adv_times)
    pilot_equal = None
    if check_pilot:  # one real pilot against the first rounds of its full run
        s = strategies[-1]
        p = fedsim.run(net, s, "digits", rounds=pilot, seed=0, out=out / f"{net}-{s}-pilot", overwrite=True, lr=lr)
        pilot_equal = bool(np.allclose(p.rounds["eval_metric"].to_numpy(),
                                       full[s].rounds["eval_metric"].to_numpy()[: pilot + 1], atol=1e-6))
    rows = []
    for s in strategies:
        t_ms, t_rounds = truth[s]
        a = table.set_index("strategy").loc[s]
        rows.append({"strategy": s, "cycle_ms": cycles[s], "adv_rounds": a["rounds_to_target"],
                     "adv_method": a["method"], "adv_s": a["time_to_target_ms"] / 1e3, "adv_rank": r_adv[s],
                     "true_rounds": t_rounds, "true_s": None if t_ms is None else t_ms / 1e3,
                     "true_rank": r_truth[s]})
    best_adv = min(r_adv, key=r_adv.get)
    best_true = min(r_truth, key=r_truth.get)
    return {"network": net, "target": str(target), "rounds": rounds, "pilot": pilot, "rows": rows,
            "tau": tau_b(r_adv, r_truth), "top1": best_adv == best_true, "pilot_equal": pilot_equal,
            "wall_s": sum(walls.values())}


def markdown(results: list[dict]) -> str:
    lines = []
    for res in results:
        lines.append(f"**{res['network']}**, target {res['target']}, full runs {res['rounds']} rounds, "
                     f"pilots {res['pilot']} rounds: Kendall tau-b = {res['tau']:.2f}, first place "
                     f"{'agrees' if res['top1'] else 'differs'}"
                     + ("" if res["pilot_equal"] is None else
                        f"; a separately trained pilot equals the full run's first rounds: {res['pilot_equal']}")
                     + f" ({res['wall_s']:.0f} s of full runs)")
        lines.append("")
        lines.append("| strategy | cycle ms | advisor: est. rounds | advisor: est. time (s) | advisor rank | "
                     "full run: rounds | full run: simulated time (s) | true rank |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            est_r = "not reached" if r["adv_rounds"] != r["adv_rounds"] else f"{r['adv_rounds']:.0f} ({r['adv_method']})"
            est_s = "-" if r["adv_s"] != r["adv_s"] else f"{r['adv_s']:.2f}"
            tr = "not reached" if r["true_rounds"] is None else str(r["true_rounds"])
            ts = "-" if r["true_s"] is None else f"{r['true_s']:.2f}"
            lines.append(f"| {r['strategy']} | {r['cycle_ms']:.1f} | {est_r} | {est_s} | {r['adv_rank']} | {tr} | "
                         f"{ts} | {r['true_rank']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Gaia, 2 strategies, 3 rounds, pilots of 2 (smoke test)")
    ap.add_argument("--networks", help="comma list (default gaia,exodus)")
    ap.add_argument("--target", help="METRIC=VALUE (default: 90%% of the way from the initial accuracy to the "
                                     "level every full run reached)")
    ap.add_argument("--lr", type=float, default=0.3, help="digits SGD step (default 0.3)")
    ap.add_argument("--out", default="runs/bench-advisor", help="folder of the runs")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    plan = QUICK if args.quick else PLAN
    nets = args.networks.split(",") if args.networks else list(plan)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    results = []
    for i, net in enumerate(nets):
        strategies, rounds, pilot = plan.get(net, PLAN["gaia"])
        print(f"{net}: {strategies}, {rounds} rounds, pilots {pilot}", flush=True)
        results.append(bench_network(net, strategies.split(","), rounds, pilot, args.target, args.lr, Path(args.out),
                                     check_pilot=(i == 0 and not args.quick)))
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print()
    print(f"command: python benchmarks/advisor.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"started {started}; {time.perf_counter() - t0:.0f} s in all; uptime before: {load_before}; "
          f"after: {load_after}")
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
