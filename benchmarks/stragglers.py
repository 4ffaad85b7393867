"""How stragglers change the ranking of strategies (simulated cycle times, no training).

For each network and straggler level, every strategy's cycle time with a delay
profile (FEMNIST by default), each silo's step time the profile's times a seeded draw of
``exp(N(0, SIGMA^2))`` (``--stragglers lognormal:SIGMA``); SIGMA = 0 is the
published, homogeneous setting. Prints one table per network: cycle time
(ms) and rank of each strategy per level.

Usage::

    python benchmarks/stragglers.py                         # gaia, exodus; sigma 0, 0.5, 1.0; seeds 0-2
    python benchmarks/stragglers.py --quick                 # gaia, sigma 0 and 1.0, one seed (CI)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

STRATEGIES = ["star", "ring", "mst", "dmbst", "matcha", "multigraph"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=["gaia", "exodus"])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    ap.add_argument("--seeds", type=int, default=3, help="straggler draws per level (mean cycle time)")
    ap.add_argument("--profile", default="femnist", help="delay profile (default femnist; shakespeare: 390 ms steps)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.networks, args.sigmas, args.seeds = ["gaia"], [0.0, 1.0], 1
    import fedsim

    t0 = time.perf_counter()
    out = {}
    for net in args.networks:
        table = {}
        for sigma in args.sigmas:
            runs = []
            for seed in range(args.seeds if sigma > 0 else 1):
                df = fedsim.cycle_times(net, STRATEGIES, args.profile, seed=seed,
                                        stragglers=f"lognormal:{sigma:g}" if sigma > 0 else None)
                runs.append(df.set_index("strategy")["cycle_time_ms"])
            table[sigma] = sum(runs) / len(runs)
        out[net] = table
        print(f"\n{net}, {args.profile}: mean cycle time (ms) over {args.seeds} straggler draws; rank in brackets")
        print("| strategy | " + " | ".join(f"sigma {s:g}" for s in args.sigmas) + " |")
        print("|---|" + "---:|" * len(args.sigmas))
        ranks = {s: table[s].rank().astype(int) for s in args.sigmas}
        for strategy in STRATEGIES:
            cells = " | ".join(f"{table[s][strategy]:.1f} ({ranks[s][strategy]})" for s in args.sigmas)
            print(f"| {strategy} | {cells} |")
    print(f"\n# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}, "
          f"{time.perf_counter() - t0:.0f} s")
    return out


if __name__ == "__main__":
    main()
