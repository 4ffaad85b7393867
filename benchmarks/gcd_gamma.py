"""GCD: how the guidance weight γ trades group consistency for diversity.

Trains one small GCD model (denoiser + contrastive encoder) on one silo's
procedural group dances with the task's own ``train`` (centrally: the
question here is the sampler, not the federation), then samples the same
test songs with the same initial noise and group noise ``z`` for every γ in
``--gammas`` (common random numbers, so the curves differ only by γ), in
both guidance modes of :func:`fedsim.clients.gcd.ddim_parts` (``noisy``: the
write-up's mean shift with the encoder's gradient at the noisy sample;
``clean``: the gradient at the clean estimate), and scores them with the
task's metrics:

- ``gmc``      group motion correlation (consistency, higher = more in sync)
- ``gen_div``  kinetic-feature spread between the dancers of a group (diversity)
- ``tif``      trajectory intersection frequency (collisions)
- ``bas``      motion–beat alignment
- ``fd_k``     Fréchet distance of kinetic features to held-out real dancers

The write-up's claim: consistency metrics rise and diversity falls as γ goes
from −1 to 1. Outputs: ``OUT/results.json``, ``OUT/curves.csv``, the curves
``FIG/gcd_gamma.png`` and a stick-figure strip ``FIG/gcd_strip.png`` (γ = −1,
0, 1 on one song in the first mode, and a long sequence made of blended
windows). The trained model is saved to ``OUT/model.pt``; ``--load`` reuses it.

Usage::

    python benchmarks/gcd_gamma.py                       # defaults reproduce the recorded numbers
    python benchmarks/gcd_gamma.py --steps 200 --samples 16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
METRICS = ("gmc", "gen_div", "tif", "bas", "fd_k")


def per_group(x: np.ndarray, music: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group values of the within-group metrics (for error bars)."""
    from fedsim.clients.gcd import metrics as gm
    from fedsim.clients.gcd.data import BEAT_SIGMA, music_beats

    return {"gmc": np.array([gm.group_motion_correlation(g) for g in x]),
            "gen_div": np.array([gm.generation_diversity(g[None]) for g in x]),
            "tif": np.array([gm.trajectory_intersection_frequency(g) for g in x]),
            "bas": np.array([gm.group_beat_alignment(g[None], [music_beats(m)], sigma=BEAT_SIGMA)
                             for g, m in zip(x, music)])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=900, help="training steps (default 900)")
    p.add_argument("--frames", type=int, default=32, help="frames per window at 15 fps (default 32)")
    p.add_argument("--d-model", type=int, default=48, help="denoiser width (default 48)")
    p.add_argument("--dancers", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--nce-weight", type=float, default=0.01)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-test", type=int, default=96, help="test groups: the first --samples give the songs, "
                   "the rest are the real reference set of fd_k (default 96)")
    p.add_argument("--samples", type=int, default=48, help="generated groups per γ (default 48)")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--modes", nargs="+", default=["clean", "noisy"], choices=["clean", "noisy"],
                   help="guidance modes to sweep (fedsim.clients.gcd.ddim_parts; default both)")
    p.add_argument("--scale-clean", type=float, default=3.0, help="guidance scale of the clean mode (default 3)")
    p.add_argument("--scale-noisy", type=float, default=20.0, help="guidance scale of the noisy mode (default 20)")
    p.add_argument("--gammas", type=float, nargs="+", default=[-1.0, -0.5, 0.0, 0.5, 1.0])
    p.add_argument("--long-frames", type=int, default=96, help="length of the long sample in the strip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", help="skip training: load a model state saved by an earlier run (OUT/model.pt)")
    p.add_argument("--out", default="/tmp/gcd_gamma")
    p.add_argument("--figures", default=str(HERE / "figures"))
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    from fedsim.clients.gcd.data import make_groups
    from fedsim.clients.gcd.metrics import score_groups
    from fedsim.clients.gcd.model import ddim_sample, sample_long
    from fedsim.clients.gcd.task import GCDTask
    from fedsim.plots import render_strip

    out, figs = Path(args.out), Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    figs.mkdir(parents=True, exist_ok=True)
    opts = {"frames": args.frames, "d_model": args.d_model, "n_dancers": args.dancers,
            "batch_size": args.batch_size, "lr": args.lr, "nce_weight": args.nce_weight,
            "n_train": args.n_train, "n_test": args.n_test, "alpha": 100.0}  # α large: all styles
    task = GCDTask(opts)
    data = task.partition(0, 1, seed=args.seed)
    torch.manual_seed(args.seed)
    model = task.model()
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    t0 = time.perf_counter()
    chunk = 50
    if args.load:
        model.load_state_dict(torch.load(args.load))
    for done in range(0, 0 if args.load else args.steps, chunk):
        tr = task.train(model, data, min(chunk, args.steps - done), gen)
        ev = task.evaluate(model, data)
        log.append({"step": done + min(chunk, args.steps - done), "train_loss": tr["loss"], "train_nce": tr["nce"],
                    "test_loss": ev["loss"], "test_nce_acc": ev["nce_acc"], "elapsed_s": time.perf_counter() - t0})
        print(f"step {log[-1]['step']:5d}  loss {tr['loss']:.4f}  nce {tr['nce']:.3f}  "
              f"test loss {ev['loss']:.4f}  test nce_acc {ev['nce_acc']:.3f}  ({log[-1]['elapsed_s']:.0f} s)",
              flush=True)
    train_s = time.perf_counter() - t0
    if not args.load:
        torch.save(model.state_dict(), out / "model.pt")
    model.eval()

    k = args.samples
    if len(data.y_test) < k + 16:
        raise SystemExit(f"--n-test must be >= --samples + 16 (the fd_k reference set), got {len(data.y_test)}")
    music, real = data.y_test[:k], data.x_test.numpy()[k:]
    noise_gen = torch.Generator().manual_seed(args.seed + 1)
    x_init = torch.randn(k, args.dancers, args.frames, data.x_test.shape[-1], generator=noise_gen)
    z = torch.randn(k, model.denoiser.d, generator=noise_gen)
    rows, samples = [], {}
    t1 = time.perf_counter()
    ref = score_groups(data.x_test.numpy()[:k], music.numpy(), real)  # the real dances of the same songs
    with torch.no_grad():
        _, w = model.denoiser.condition(music, args.dancers, z)
    for mode in args.modes:
        scale = args.scale_clean if mode == "clean" else args.scale_noisy
        for g in args.gammas:
            x = ddim_sample(model, music, args.dancers, task.ab, args.ddim_steps, g, scale,
                            x_init=x_init.clone(), z=z, mode=mode)
            phys = task.denormalise(x).numpy()
            samples[mode, g] = phys
            scores = score_groups(phys, music.numpy(), real)
            pg = per_group(phys, music.numpy())
            row = {"mode": mode, "scale": scale, "gamma": g, **scores,
                   **{f"{m}_sem": float(v.std(ddof=1) / np.sqrt(len(v))) for m, v in pg.items()}}
            with torch.no_grad():
                row["encoder_score"] = float(model.encoder(x, torch.zeros(k, dtype=torch.long), w).mean())
            rows.append(row)
            print("{mode:5s} γ={gamma:+.1f}  gmc {gmc:.3f}  gen_div {gen_div:.3f}  tif {tif:.3f}  bas {bas:.3f}  "
                  "fd_k {fd_k:.4f}  score {encoder_score:+.2f}".format(**row), flush=True)
    sample_s = time.perf_counter() - t1
    print("real        gmc {gmc:.3f}  gen_div {gen_div:.3f}  tif {tif:.3f}  bas {bas:.3f}  "
          "fd_k {fd_k:.4f}".format(**ref))

    trend = {}
    for mode in args.modes:
        sub = [r for r in rows if r["mode"] == mode]
        gam = np.array([r["gamma"] for r in sub])
        trend[mode] = {m: float(np.corrcoef(gam, [r[m] for r in sub])[0, 1]) for m in METRICS + ("encoder_score",)}
    result = {"args": vars(args), "train_s": train_s, "sample_s": sample_s, "train_log": log,
              "curves": rows, "real": ref, "pearson_with_gamma": trend,
              "params": int(sum(p.numel() for p in model.parameters()))}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "curves.csv", "w") as fh:
        keys = list(rows[0])
        fh.write(",".join(keys) + "\n")
        for r in rows:
            fh.write(",".join(r[kk] if isinstance(r[kk], str) else f"{r[kk]:.6g}" for kk in keys) + "\n")
    plot_curves(rows, ref, figs / "gcd_gamma.png", args)

    # Strip: one song at γ = -1, 0, 1 (same noise) and one long blended sequence.
    song, mode = 0, args.modes[0]
    picks = [g for g in (min(args.gammas), 0.0, max(args.gammas)) if (mode, g) in samples]
    groups = [samples[mode, g][song] for g in picks]
    labels = [f"γ = {g:+.0f}" for g in picks]
    _, lm, _ = make_groups(1, args.dancers, args.long_frames, np.random.default_rng(args.seed + 7))
    long = sample_long(model, torch.from_numpy(lm[0]), args.dancers, task.ab, args.frames, args.ddim_steps,
                       0.0, 1.0, torch.Generator().manual_seed(args.seed + 2))
    groups.append(task.denormalise(long).numpy())
    labels.append(f"long {args.long_frames} fr")
    render_strip(groups, figs / "gcd_strip.png", frames=8, labels=labels,
                 title="GCD samples: consistency (γ = +1) vs diversity (γ = -1); bottom: blended windows")
    print(f"train {train_s:.0f} s, sampling {sample_s:.0f} s; figures in {figs}; results in {out}")
    for mode, tr in trend.items():
        print(f"Pearson r with γ ({mode}):", {m: round(v, 3) for m, v in tr.items()})
    return result


def plot_curves(rows: list[dict], ref: dict, path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"gmc": "GMC (sync) ↑", "gen_div": "GenDiv (dancer diversity)", "tif": "TIF (collisions) ↓",
              "bas": "beat alignment ↑", "fd_k": "FD_k to real ↓"}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 2.9))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    for ax, m in zip(axes, METRICS):
        for mode in modes:
            sub = [r for r in rows if r["mode"] == mode]
            g = [r["gamma"] for r in sub]
            y = np.array([r[m] for r in sub])
            err = np.array([r.get(f"{m}_sem", 0.0) for r in sub])
            ax.errorbar(g, y, yerr=err, marker="o", capsize=3, label=f"{mode} (scale {sub[0]['scale']:g})")
        ax.axhline(ref[m], color="grey", ls="--", lw=1, label="real groups")
        ax.set_title(titles[m], fontsize=9)
        ax.set_xlabel("γ")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"GCD guidance sweep ({args.samples} groups × {args.dancers} dancers, "
                 f"{args.ddim_steps} DDIM steps, {args.steps} training steps; error bars: s.e.m. over groups)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
