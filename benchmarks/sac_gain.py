"""What the Self-Assessment Classifier adds: backbone alone vs backbone + SAC.

Both arms train the ``sac`` task with the same network, strategy, rounds,
local steps, seeds, data partition, initial backbone weights and mini-batch
draws (fedsim's Ray-backed simulation, ``fedsim.apps.simulation``); they
differ only in the task option ``sac`` (false: backbone + first classifier,
trained with cross-entropy; true: + the SAC branch and the dropping module).
Reported per arm and seed, on the final models (each silo on its own test
split): top-1 and top-k accuracy pooled over silos (sum of hits / sum of test
images) and the mean of the per-silo accuracies (``eval_metric`` of
``rounds.csv``), plus the simulated wall clock of the run (the task's
delay profile is measured automatically, so the SAC arm's larger model and
slower step show up there). Each arm's delay profile is measured once, before
the runs (median of ``--profile-steps`` timed local steps, one thread), and
shared by all its seeds.

The published write-up reports +1.2 to +1.9 points top-1 when SAC is added to
a backbone on CUB-200-2011 / Stanford Dogs / FGVC Aircraft; this script
reports what fedsim measures on the offline fine-grained glyph set.

Usage (defaults reproduce the recorded numbers)::

    python benchmarks/sac_gain.py
    python benchmarks/sac_gain.py --rounds 10 --seeds 0 --out /tmp/sac_gain_quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch


def task_options(args, sac: bool) -> dict:
    options = {"dataset": args.dataset, "n_per_class": args.n_per_class, "alpha": args.alpha,
               "lr": args.lr, "momentum": args.momentum, "k": args.k, "sac": sac}
    if sac:
        for item in args.sac_option or []:  # e.g. drop_weight=0 for an ablation
            key, _, value = item.partition("=")
            try:
                options[key] = json.loads(value)
            except ValueError:
                options[key] = value
    return options


def measure_profile(args, sac: bool) -> dict:
    """The arm's delay profile, measured once (exchanged bits, median step on 1 thread)."""
    from fedsim.clients import get_task

    return asdict(get_task("sac", task_options(args, sac)).profile(steps=args.profile_steps))


def run_arm(args, seed: int, sac: bool, out: Path, profile: dict) -> dict:
    from fedsim.apps.config import RunConfig
    from fedsim.apps.simulation import run_simulation
    from fedsim.errors import FedsimError

    cfg = RunConfig(network=args.network, strategy=args.strategy, task="sac", rounds=args.rounds,
                    local_steps=args.local_steps, seed=seed, task_options=task_options(args, sac),
                    checkpoint_every=args.rounds, workers=args.workers, profile=dict(profile))
    final: dict[int, dict] = {}

    def on_round(k, outcome, _strategy):
        if k == args.rounds + 1:  # the final evaluation replies
            final.update({s: dict(m) for s, m in outcome.train.items()})

    run_dir = out / f"{'sac' if sac else 'backbone'}-s{seed}"
    t0 = time.perf_counter()
    try:
        summary = run_simulation(cfg, run_dir, progress=False, on_round=on_round)
    except FedsimError as exc:  # e.g. silos that did not start in time on a busy machine: retry once
        print(f"run {run_dir.name} failed ({exc}); retrying once in {run_dir.name}-retry", flush=True)
        run_dir = run_dir.with_name(run_dir.name + "-retry")
        final.clear()
        t0 = time.perf_counter()
        summary = run_simulation(cfg, run_dir, progress=False, on_round=on_round)
    wall = time.perf_counter() - t0
    n = np.array([final[s]["eval_n"] for s in sorted(final)])

    def pooled(key: str) -> float:
        return float(sum(final[s][key] * final[s]["eval_n"] for s in final) / n.sum())

    return {"seed": seed, "sac": sac, "silos": len(final), "test_images": int(n.sum()),
            "top1_pooled": pooled("eval_accuracy"), "topk_pooled": pooled("eval_topk_accuracy"),
            "top1_coarse_pooled": pooled("eval_accuracy_coarse"),
            "top1_mean_over_silos": float(summary["final_eval_metric"]),
            "loss_pooled": pooled("eval_loss"),
            "top1_per_silo": [float(final[s]["eval_accuracy"]) for s in sorted(final)],
            "simulated_total_s": float(summary["simulated_total_ms"]) / 1e3,
            "simulated_cycle_ms": float(summary["simulated_cycle_time_ms"]),
            "model_bits": float(profile["model_bits"]), "compute_ms": float(profile["compute_ms"]),
            "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--network", default="gaia")
    p.add_argument("--strategy", default="fedavg")
    p.add_argument("--dataset", default="fine", help="sac dataset: fine, digits (default fine)")
    p.add_argument("--n-per-class", type=int, default=300, help="fine: images per class (default 300)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label skew (default 0.5)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--k", type=int, default=3, help="top-k candidates and top-k accuracy (default 3)")
    p.add_argument("--workers", type=int, default=0, help="ClientApp actors (default: up to 2)")
    p.add_argument("--sac-option", action="append", metavar="KEY=VALUE",
                   help="extra sac task option for the SAC arm only (repeatable), e.g. drop_weight=0")
    p.add_argument("--profile-steps", type=int, default=20,
                   help="timed local steps per arm for its delay profile (median; default 20)")
    p.add_argument("--out", default="/tmp/sac_gain", help="run directories and results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    profiles = {sac: measure_profile(args, sac) for sac in (False, True)}
    for sac in (False, True):
        print(f"{'backbone+SAC' if sac else 'backbone    '} profile: {profiles[sac]['model_bits']:.0f} bits, "
              f"{profiles[sac]['compute_ms']:.2f} ms per local step (measured here, 1 thread)", flush=True)
    for seed in args.seeds:
        for sac in (False, True):
            r = run_arm(args, seed, sac, out, profiles[sac])
            results.append(r)
            print(f"seed {seed} {'backbone+SAC' if sac else 'backbone    '}: top-1 {100 * r['top1_pooled']:.2f} "
                  f"top-{args.k} {100 * r['topk_pooled']:.2f} (coarse head {100 * r['top1_coarse_pooled']:.2f}; "
                  f"mean over silos {100 * r['top1_mean_over_silos']:.2f}) on {r['test_images']} images, "
                  f"simulated {r['simulated_total_s']:.2f} s, wall {r['wall_s']:.0f} s", flush=True)
    elapsed = time.perf_counter() - t0

    def arm(sac: bool, key: str) -> np.ndarray:
        return np.array([r[key] for r in results if r["sac"] == sac]) * 100

    gain = arm(True, "top1_pooled") - arm(False, "top1_pooled")
    gain_k = arm(True, "topk_pooled") - arm(False, "topk_pooled")
    lines = [f"| arm | top-1 pooled (%) | top-{args.k} pooled (%) | top-1 mean over silos (%) | "
             "simulated time (s) | model bits | step ms |", "|---|---|---|---|---|---|---|"]
    for sac in (False, True):
        sel = [r for r in results if r["sac"] == sac]
        sd = arm(sac, "top1_pooled").std(ddof=1) if len(sel) > 1 else 0.0
        lines.append(
            f"| {'backbone + SAC' if sac else 'backbone alone'} | "
            f"{arm(sac, 'top1_pooled').mean():.2f} ± {sd:.2f} | "
            f"{arm(sac, 'topk_pooled').mean():.2f} | {arm(sac, 'top1_mean_over_silos').mean():.2f} | "
            f"{np.mean([r['simulated_total_s'] for r in sel]):.2f} | {sel[0]['model_bits']:.0f} | "
            f"{np.mean([r['compute_ms'] for r in sel]):.1f} |")
    sem = gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else float("nan")
    lines.append("")
    lines.append(f"top-1 gain per seed (points): {', '.join(f'{g:+.2f}' for g in gain)}; "
                 f"mean {gain.mean():+.2f} ± {sem:.2f} (s.e.m.); top-{args.k} gain mean {gain_k.mean():+.2f}")
    table = "\n".join(lines)
    print("\n" + table)
    print(f"\n{len(results)} runs in {elapsed:.0f} s")
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg(),
               "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    (out / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine, "runs": results,
                                                  "elapsed_s": elapsed, "gain_top1_points": gain.tolist()},
                                                 indent=2))
    (out / "results.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
