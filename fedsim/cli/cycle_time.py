"""``fedsim cycle-time``: cycle times over topologies x strategies x profiles; the published table."""

from __future__ import annotations

import sys

from fedsim.cli.common import (
    NETWORK_NAMES,
    PROFILE_NAMES,
    WIRING_NAMES,
    add_design_flags,
    add_profile_flags,
    add_straggler_flags,
    int_in,
    not_a_strategy,
    out_file,
    ray_address,
    refuse_existing,
    resolved_profile,
    split_names,
)
from fedsim.errors import check_int_at_least


def cmd_cycle_time(args) -> int:
    from fedsim.errors import unknown_name
    from fedsim.topologies import TOPOLOGIES
    from fedsim.topologies.networks import BUILTIN_NETWORKS, load_network

    workers = check_int_at_least("--workers", args.workers, 1)
    refuse_existing(args.out, "--out", args.overwrite)
    if args.reproduce_table3:
        return _reproduce_table3(args, workers)
    not_a_strategy(args.networks, "--topologies")
    networks = split_names(args.networks, BUILTIN_NETWORKS, "network")
    topologies = split_names(args.strategies, TOPOLOGIES, "strategy")
    profiles = split_names(args.profiles, ("femnist", "inaturalist", "sent140"), "profile")
    for t in topologies:
        if t not in TOPOLOGIES:
            raise unknown_name("strategy", t, TOPOLOGIES)
    from fedsim import api

    out_format = _out_format(args.out)  # a bad --out fails before anything is computed
    # Resolve profiles here (the flags' own checks; a task profile is measured once), then the API sweeps.
    resolved = [resolved_profile(args, p) for p in profiles]
    for n in networks:
        load_network(n)
    check_int_at_least("--t", args.t, 1)
    df = api.cycle_times(networks, topologies, resolved, t=args.t, budget=args.budget, seed=args.seed,
                         workers=workers, progress=not args.no_progress, ray_address=args.ray_address,
                         stragglers=args.stragglers, compute_ms_file=args.compute_ms_file)
    print(api.markdown_table(df))
    if args.out:
        _write_table(df, args.out, out_format)
        print(f"\nwrote {len(df)} rows to {args.out}")
    return 0


OUT_SUFFIXES = (".csv", ".md", ".parquet")


def _out_format(out: str | None) -> str | None:
    """The format of ``--out`` from its suffix: csv, md or parquet (parquet needs pyarrow)."""
    if not out:
        return None
    from pathlib import Path

    from fedsim.errors import FedsimError

    suffix = Path(out).suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise FedsimError(f"--out {out}: unknown table format {suffix or '(no suffix)'!r}; accepted suffixes: "
                          f"{', '.join(OUT_SUFFIXES)}")
    if suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise FedsimError(f"--out {out}: .parquet needs pyarrow (pip install pyarrow); accepted suffixes "
                              f"without it: .csv, .md")
    return suffix[1:]


def _write_table(df, out: str, fmt: str) -> None:
    """Write the sweep atomically: CSV with its columns network,profile,topology,cycle_time_ms,silos,detail
    (topology = the wiring, as always in this file), a Markdown table, or the DataFrame as Parquet."""
    from fedsim import api
    from fedsim.io import atomic_write, atomic_write_text

    if fmt == "md":
        atomic_write_text(out, api.markdown_table(df) + "\n")
    elif fmt == "parquet":
        atomic_write(out, lambda tmp: df.to_parquet(tmp, index=False))
    else:
        legacy = df.rename(columns={"topology": "network", "strategy": "topology"})
        legacy = legacy[["network", "profile", "topology", "cycle_time_ms", "silos", "detail"]]
        atomic_write_text(out, legacy.to_csv(index=False, float_format="%.4f", lineterminator="\n"))


def _reproduce_table3(args, workers: int) -> int:
    from fedsim.timing import table3

    cells = table3.reproduce(workers=workers, progress=not args.no_progress)
    print("fedsim / published (ratio); '!' marks a cell outside its tolerance\n")
    print(table3.report(cells))
    print("\nlargest deviation per column:")
    for topo, c in table3.worst_per_column(cells).items():
        print(f"  {topo:<12} {100 * (c.ratio - 1):+.2f}%  ({c.profile}/{c.network}; tolerance "
              f"{100 * c.tolerance:.0f}%)")
    bad = [c for c in cells if not c.ok]
    if args.out:
        from fedsim.io import atomic_write_text

        lines = ["profile,network,topology,fedsim_ms,published_ms,ratio,tolerance,ok"]
        lines += [f"{c.profile},{c.network},{c.topology},{c.fedsim:.4f},{c.published},{c.ratio:.5f},"
                  f"{c.tolerance},{c.ok}" for c in cells]
        atomic_write_text(args.out, "\n".join(lines) + "\n")
        print(f"\nwrote {len(cells)} cells to {args.out}")
    if bad:
        print(f"\n{len(bad)} of {len(cells)} cells outside tolerance", file=sys.stderr)
        return 1
    print(f"\nall {len(cells)} cells within tolerance")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("cycle-time", help="sweep cycle times over topologies (networks) x strategies x profiles")
    p.add_argument("--topologies", "--networks", dest="networks", default="all",
                   help=f"networks: comma list of {', '.join(NETWORK_NAMES)}, or 'all' (default)")
    p.add_argument("--strategies", default="all",
                   help=f"wirings: comma list of {', '.join(WIRING_NAMES)}, or 'all' (default)")
    p.add_argument("--profiles", default="femnist,inaturalist,sent140",
                   help=f"delay profiles, comma list of: {', '.join(PROFILE_NAMES)} (default %(default)s)")
    p.add_argument("--workers", type=int_in(1), default=1, help="parallel Ray workers (default 1: sequential)")
    p.add_argument("--ray-address", type=ray_address, metavar="HOST:PORT|auto",
                   help="compute the cells on this existing Ray cluster (one task per network and profile)")
    p.add_argument("--out", type=out_file(*OUT_SUFFIXES),
                   help="write the table here: .csv, .md or .parquet (Parquet needs pyarrow)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--reproduce-table3", action="store_true",
                   help="recompute the published table; exit 1 if a cell is out of tolerance")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_design_flags(p)
    add_profile_flags(p, default_profile=None)
    add_straggler_flags(p)
    p.set_defaults(func=cmd_cycle_time)
