"""``fedsim compare``: overlay runs on one plot."""

from __future__ import annotations

from fedsim.errors import FedsimError


def cmd_compare(args) -> int:
    import numpy as np

    from fedsim.apps.records import read_rounds
    from fedsim.plots import curves

    series = {}
    for d in args.runs:
        from pathlib import Path

        rows = read_rounds(d)
        if not rows:
            raise FedsimError(f"{d} has no rounds.csv with completed rounds")
        label = Path(d).name
        x = np.array([r["sim_cum_ms"] / 1e3 if args.x == "time" else r["round"] for r in rows], float)
        series[label] = (x, np.array([r["eval_metric"] for r in rows], float))
        best = max(series[label][1])
        print(f"{label}: {len(rows) - 1} rounds, simulated {rows[-1]['sim_cum_ms'] / 1e3:.3f} s, "
              f"final {rows[-1]['eval_metric']:.4f}, best {best:.4f}")
    xlabel = "simulated wall clock (s)" if args.x == "time" else "round"
    curves(series, xlabel, "mean test metric", args.out, title="fedsim compare")
    print(f"plot written to {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="overlay runs on one plot (metric vs simulated time)")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="compare.png", help="plot file (default compare.png)")
    p.add_argument("--x", choices=("time", "round"), default="time")
    p.set_defaults(func=cmd_compare)
