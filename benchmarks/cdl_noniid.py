"""CDL vs the plain ResNet-8 baseline on non-IID road scenes, in fedsim's Ray simulation.

Both variants of ``--task cdl`` train on the same network (Gaia, 11 silos),
the same topology (ring), the same number of rounds and local steps, the same
seeds and the same non-IID synthetic data (per-silo steering distribution and
look; Udacity+ per-silo counts × 0.05 ≈ 175 images per silo). Only the local
objective differs: ``variant="cdl"`` (backbone + local sub-network, contrastive
divergence loss, β = 0.5) vs ``variant="resnet8"`` (backbone alone, L1 loss).

Reported per variant and seed, for the models after the last round:

* pooled test RMSE and MAE over all silos' test splits
  (``sqrt(Σ n_i·mse_i / Σ n_i)``), and the mean of the per-silo RMSEs;
* the simulated wall clock of the run (fedsim's delay model: the exchanged
  backbone's size and the step time given by ``--compute-ms``), and the
  measured wall time.

The step times are fixed by default (measured once on the benchmark machine,
1 thread, see the results file) so that the simulated clock is reproducible;
``--compute-ms measure`` re-measures them with ``Task.profile``. The CDL step
runs two branches, so it costs about twice the baseline's.

Usage::

    python benchmarks/cdl_noniid.py                       # the recorded run: 40 rounds × 5 local steps,
                                                          # seeds 0 and 1 (~11 min on 2 cores at load ~20)
    python benchmarks/cdl_noniid.py --rounds 10 --seeds 0 # a quick look

Writes ``OUT/results.json``, ``OUT/curves.csv`` (per round: simulated time and
pooled RMSE of each run) and the figure ``benchmarks/figures/cdl_noniid.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
# Median 1-thread step times (ms) measured with CDLTask.profile() on the benchmark machine
# (2 shared cores, under load); fixed so that the simulated clock is reproducible.
DEFAULT_COMPUTE_MS = "cdl=46,resnet8=25"


def _parse_compute(text: str, variants: list[str]) -> dict[str, float | None]:
    if text == "measure":
        return {v: None for v in variants}
    out: dict[str, float | None] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        out[name.strip()] = float(value)
    missing = [v for v in variants if v not in out]
    if missing:
        raise SystemExit(f"--compute-ms has no value for {missing}; give e.g. {DEFAULT_COMPUTE_MS} or 'measure'")
    return out


def run_one(variant: str, seed: int, args, compute_ms: float | None, options: dict) -> dict:
    from fedsim.apps.config import RunConfig
    from fedsim.apps.records import read_rounds
    from fedsim.apps.simulation import run_simulation

    run_dir = Path(args.out) / f"{variant}-seed{seed}"
    cfg = RunConfig(network=args.network, strategy=args.strategy, task="cdl", rounds=args.rounds,
                    local_steps=args.local_steps, seed=seed, compute_ms=compute_ms,
                    task_options=options | {"variant": variant}, checkpoint_every=args.rounds)
    evals: dict[int, dict[int, dict]] = {}

    def on_round(k, outcome, strategy):
        # Evaluations reported in round k are of the models after k - 1 rounds.
        evals[k - 1] = {s: dict(m) for s, m in outcome.train.items() if "eval_mse" in m}

    t0 = time.perf_counter()
    summary = run_simulation(cfg, run_dir, progress=False, on_round=on_round)
    wall = time.perf_counter() - t0
    rows = {int(r["round"]): r for r in read_rounds(run_dir)}
    curve = []
    for r in sorted(evals):
        m = evals[r]
        n = np.array([m[s]["eval_n"] for s in m])
        mse = np.array([m[s]["eval_mse"] for s in m])
        mae = np.array([m[s]["eval_mae"] for s in m])
        rmse = np.array([m[s]["eval_rmse"] for s in m])
        curve.append({"round": r, "sim_ms": float(rows[r]["sim_cum_ms"]),
                      "rmse_pooled": math.sqrt(float(n @ mse / n.sum())),
                      "mae_pooled": float(n @ mae / n.sum()), "rmse_mean": float(rmse.mean())})
    last = curve[-1]
    profile = json.loads((run_dir / "config.json").read_text())["profile"]
    return {"variant": variant, "seed": seed, "rounds": args.rounds, "rmse_pooled": last["rmse_pooled"],
            "mae_pooled": last["mae_pooled"], "rmse_mean_over_silos": last["rmse_mean"],
            "best_rmse_pooled": min(c["rmse_pooled"] for c in curve),
            "sim_total_ms": summary["simulated_total_ms"], "sim_cycle_time_ms": summary["simulated_cycle_time_ms"],
            "compute_ms": profile["compute_ms"], "model_bits": profile["model_bits"],
            "wall_s": wall, "curve": curve}


def paper_size_clock(network: str, strategy: str) -> dict:
    """Cycle time of the topology for the paper-size model (no training needed)."""
    from fedsim.apps.server_app import timing_topology
    from fedsim.clients.cdl.task import CDLTask
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.delay import DelayProfile
    from fedsim.topologies.networks import load_network

    task = CDLTask({"size": "paper"})
    model = task.model()
    sd = model.state_dict()
    backbone = sum(sd[k].numel() for k in task.exchanged_keys(model))
    conn = connectivity(load_network(network))
    out = {"exchanged_values": backbone}
    # 1.2 ms: the per-step compute time the CDL network generator uses for Udacity+ (GPU).
    for label, bits in (("backbone_only", 32.0 * backbone), ("whole_siamese_model", 20_157_248.0)):
        prof = DelayProfile(f"cdl-paper-{label}", bits, 1.2)
        sched = build_schedule(timing_topology(strategy), conn, prof)
        out[label] = {"model_bits": bits, "cycle_time_ms": simulate(sched, conn, prof, rounds=10, seed=0).value}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="gaia")
    p.add_argument("--strategy", default="ring")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--seeds", default="0,1", help="comma list")
    p.add_argument("--variants", default="cdl,resnet8", help="comma list of cdl variants")
    p.add_argument("--compute-ms", default=DEFAULT_COMPUTE_MS,
                   help="per-variant step time for the simulated clock, or 'measure' (default: %(default)s)")
    p.add_argument("--task-options", default="{}", help="JSON merged into the task options of every run")
    p.add_argument("--out", default="/tmp/cdl_noniid")
    p.add_argument("--figure", default=str(HERE / "figures" / "cdl_noniid.png"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    compute = _parse_compute(args.compute_ms, variants)
    options = json.loads(args.task_options)
    t0 = time.perf_counter()
    runs = []
    for seed in seeds:
        for v in variants:
            r = run_one(v, seed, args, compute[v], options)
            runs.append(r)
            print(f"{v:8s} seed {seed}: pooled RMSE {r['rmse_pooled']:.4f}  MAE {r['mae_pooled']:.4f}  "
                  f"(mean over silos {r['rmse_mean_over_silos']:.4f}; best {r['best_rmse_pooled']:.4f})  "
                  f"simulated {r['sim_total_ms'] / 1e3:.2f} s  wall {r['wall_s']:.0f} s", flush=True)
    summary = {}
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        summary[v] = {k: float(np.mean([r[k] for r in mine])) for k in
                      ("rmse_pooled", "mae_pooled", "rmse_mean_over_silos", "sim_total_ms", "sim_cycle_time_ms",
                       "wall_s")}
        summary[v]["rmse_pooled_per_seed"] = [r["rmse_pooled"] for r in mine]
    paper = paper_size_clock(args.network, args.strategy)
    result = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__,
              "total_wall_s": time.perf_counter() - t0, "summary": summary, "paper_size_clock": paper,
              "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["variant", "seed", "round", "sim_ms", "rmse_pooled", "mae_pooled", "rmse_mean"])
        for r in runs:
            for c in r["curve"]:
                w.writerow([r["variant"], r["seed"], c["round"], f"{c['sim_ms']:.3f}", f"{c['rmse_pooled']:.5f}",
                            f"{c['mae_pooled']:.5f}", f"{c['rmse_mean']:.5f}"])
    _figure(runs, variants, args)
    for v, s in summary.items():
        print(f"{v:8s} mean over seeds: pooled RMSE {s['rmse_pooled']:.4f}  MAE {s['mae_pooled']:.4f}  "
              f"simulated {s['sim_total_ms'] / 1e3:.2f} s ({s['sim_cycle_time_ms']:.1f} ms/round)")
    print(f"paper-size model on {args.network}/{args.strategy}: backbone {paper['exchanged_values']} values -> "
          f"{paper['backbone_only']['cycle_time_ms']:.1f} ms/round; whole Siamese model (as the released "
          f"generator counts it) -> {paper['whole_siamese_model']['cycle_time_ms']:.1f} ms/round")
    print(f"total wall {result['total_wall_s']:.0f} s; results in {out}")
    return result


def _figure(runs: list[dict], variants: list[str], args) -> None:
    from fedsim.plots import curves

    series = {}
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        t = np.mean([[c["sim_ms"] for c in r["curve"]] for r in mine], axis=0) / 1e3
        y = np.mean([[c["rmse_pooled"] for c in r["curve"]] for r in mine], axis=0)
        series[f"{v} (mean of {len(mine)} seeds)"] = (t, y)
    curves(series, "simulated wall clock (s)", "pooled test RMSE",
           args.figure, title=f"CDL vs ResNet-8, {args.network} {args.strategy}, {args.local_steps} local steps")


if __name__ == "__main__":
    main()
