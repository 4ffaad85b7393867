"""``fedsim compare``: overlay runs on one plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fedsim.cli.common import PLOT_SUFFIXES, out_file, refuse_existing
from fedsim.errors import FedsimError

# Headline metrics where smaller is better (every other metric: larger is better).
LOWER_IS_BETTER = frozenset({"rmse", "mse", "mae", "fd_k", "fid", "loss", "perplexity"})


def metric_direction(name: str) -> str:
    """``"min"`` if a smaller ``name`` is better, else ``"max"``.

    Examples
    --------
    >>> metric_direction("rmse"), metric_direction("fd_k"), metric_direction("accuracy")
    ('min', 'min', 'max')
    """
    return "min" if name.lower() in LOWER_IS_BETTER else "max"


def run_metric(run_dir: Path) -> str:
    """The name of the headline metric a run recorded as ``eval_metric``."""
    summary, config = run_dir / "summary.json", run_dir / "config.json"
    for path in (summary, config):
        if not path.exists():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            raise FedsimError(f"cannot read {path}: not a fedsim run file") from None
        if path is summary and data.get("metric"):
            return str(data["metric"])
        if path is config and data.get("task"):
            from fedsim.clients import get_task

            try:
                return str(get_task(data["task"], data.get("task_options") or {}).metric)
            except FedsimError:
                break
    return "metric"


def labels_of(dirs: list[Path]) -> list[str]:
    """Legend labels: each folder's name, with parent folders added until they are distinct.

    Examples
    --------
    >>> labels_of([Path("a/run"), Path("b/run"), Path("c/other")])
    ['a/run', 'b/run', 'other']
    """
    parts = [d.resolve().parts for d in dirs]
    depth = [1] * len(dirs)
    while True:
        labels = ["/".join(p[-k:]) for p, k in zip(parts, depth)]
        clash = {lab for lab in labels if labels.count(lab) > 1}
        if not clash:
            return labels
        grown = False
        for i, lab in enumerate(labels):
            if lab in clash and depth[i] < len(parts[i]):
                depth[i] += 1
                grown = True
        if not grown:
            return ["/".join(p) for p in parts]


def _check(args) -> list[tuple[Path, list[dict], str]]:
    """Every run folder readable, one metric (or --mixed-metrics), the output allowed: before any plot."""
    from fedsim.apps.records import read_rounds

    refuse_existing(args.out, "--out", args.overwrite)
    seen: set[Path] = set()
    runs = []
    for d in args.runs:
        path = Path(d)
        if not path.is_dir():
            raise FedsimError(f"{d} is not a folder; give run folders (fedsim run --out)")
        if path.resolve() in seen:
            raise FedsimError(f"{d} is given twice")
        seen.add(path.resolve())
        if not (path / "rounds.csv").exists():
            raise FedsimError(f"{d} has no rounds.csv (not a fedsim run folder)")
        try:
            rows = read_rounds(path)
        except (OSError, ValueError, KeyError) as exc:
            raise FedsimError(f"cannot read {path / 'rounds.csv'}: {exc}") from None
        if not rows:
            raise FedsimError(f"{d} has no rounds.csv with completed rounds")
        if not all({"round", "sim_cum_ms"} <= set(r) for r in rows):
            raise FedsimError(f"{path / 'rounds.csv'} is not a fedsim rounds file (no round, sim_cum_ms columns)")
        runs.append((path, rows, run_metric(path)))
    metrics = sorted({m for _, _, m in runs})
    if len(metrics) > 1 and not args.mixed_metrics:
        raise FedsimError(f"the runs report different metrics ({', '.join(metrics)}); compare runs of one metric, "
                          "or give --mixed-metrics to overlay them anyway")
    return runs


def cmd_compare(args) -> int:
    import numpy as np

    from fedsim.plots import curves

    runs = _check(args)
    series = {}
    for label, (path, rows, metric) in zip(labels_of([r[0] for r in runs]), runs):
        x = np.array([r["sim_cum_ms"] / 1e3 if args.x == "time" else r["round"] for r in rows], float)
        y = np.array([r.get("eval_metric", math.nan) for r in rows], float)
        direction = metric_direction(metric)
        finite = y[np.isfinite(y)]
        best = (finite.min() if direction == "min" else finite.max()) if finite.size else math.nan
        key = label if len(runs) == 1 or len({m for *_, m in runs}) == 1 else f"{label} ({metric})"
        series[key] = (x, y)
        print(f"{label}: {len(rows) - 1} rounds, simulated {rows[-1]['sim_cum_ms'] / 1e3:.3f} s, "
              f"final {metric} {y[-1]:.4f}, best {best:.4f} ({direction})")
    metrics = sorted({m for *_, m in runs})
    xlabel = "simulated wall clock (s)" if args.x == "time" else "round"
    ylabel = f"mean test {metrics[0]}" if len(metrics) == 1 else "mean test metric (" + ", ".join(metrics) + ")"
    curves(series, xlabel, ylabel, args.out, title="fedsim compare")
    print(f"plot written to {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="overlay runs on one plot (metric vs simulated time)")
    p.add_argument("runs", nargs="+", help="run directories (from fedsim run or fedsim deploy)")
    p.add_argument("--out", type=out_file(*PLOT_SUFFIXES), default="compare.png",
                   help="plot file, .png .pdf or .svg (default compare.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--x", choices=("time", "round"), default="time",
                   help="x axis: simulated wall clock (time, default) or round")
    p.add_argument("--mixed-metrics", action="store_true",
                   help="overlay runs whose headline metrics differ (e.g. accuracy and rmse) on one axis")
    p.set_defaults(func=cmd_compare)
