"""``fedsim advise``: rank the wirings of a network by predicted time to a target metric.

Time to target = cycle time (the simulated clock of the task's delay profile on
the network, per wiring) x rounds to reach the target, the rounds read off or
extrapolated from short pilot runs (``--pilot-rounds``, trained with
:func:`fedsim.run`) or from earlier run folders (``--from-runs``). The
method is in :mod:`fedsim.advise`.
"""

from __future__ import annotations

DEFAULT_STRATEGIES = "star,ring,mst,dmbst,matcha,matcha_plus,multigraph"


def cmd_advise(args) -> int:
    from pathlib import Path

    from fedsim import advise, api
    from fedsim.clients import TASKS, get_task
    from fedsim.errors import FedsimError, check_int_at_least, unknown_name
    from fedsim.strategies import STRATEGIES
    from fedsim.topologies.networks import load_network

    if args.task not in TASKS:
        raise unknown_name("task", args.task, TASKS)
    net = load_network(args.topology)  # a bad network fails before any pilot starts
    task = get_task(args.task, _task_options(args.task_option))
    target = (advise.parse_target(args.target, task.metric, task.higher_is_better)
              if args.target is not None else None)
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise FedsimError(f"--plot {args.plot}: accepted suffixes: .png, .pdf, .svg")
    if args.out and Path(args.out).suffix.lower() != ".csv":
        raise FedsimError(f"--out {args.out}: the advisor's table is written as CSV; give a .csv file")
    check_int_at_least("--local-steps", args.local_steps, 1)
    progress = not args.no_progress
    if args.from_runs:
        if args.pilot_rounds is not None:
            raise FedsimError("give either --pilot-rounds N (train pilots) or --from-runs DIR... (earlier runs)")
        results = [api.load_run(d) for d in args.from_runs]
        seen: dict[str, str] = {}
        for r in results:
            s = r.config.get("strategy")
            if r.config.get("task") != args.task:
                raise FedsimError(f"--from-runs {r.dir}: a run of task {r.config.get('task')!r}, not {args.task!r}")
            if s in seen:
                raise FedsimError(f"--from-runs: {seen[s]} and {r.dir} are both runs of strategy {s}; give one per "
                                  f"strategy")
            seen[s] = str(r.dir)
        source = f"curves of {len(results)} earlier run(s)"
    else:
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if not strategies:
            raise FedsimError(f"--strategies: no strategy given; valid: {', '.join(STRATEGIES)}")
        for s in strategies:
            if s not in STRATEGIES:
                raise unknown_name("strategy", s, STRATEGIES)
        if len(set(strategies)) != len(strategies):
            raise FedsimError(f"--strategies {args.strategies}: a strategy is named twice")
        pilot_rounds = check_int_at_least("--pilot-rounds", 5 if args.pilot_rounds is None else args.pilot_rounds,
                                          1)
        pilot_dir = Path(args.pilot_dir or f"runs/advise-{Path(args.topology).stem.replace(':', '-')}-"
                                           f"{args.task}-s{args.seed}")
        results = []
        for i, s in enumerate(strategies, 1):
            if progress:
                print(f"pilot {i}/{len(strategies)}: {s}, {pilot_rounds} rounds -> {pilot_dir / s}", flush=True)
            results.append(api.run(args.topology, s, args.task, rounds=pilot_rounds, seed=args.seed,
                                   out=pilot_dir / s, overwrite=True, task_options=_task_options(args.task_option),
                                   local_steps=args.local_steps, workers=args.workers))
        source = f"pilots of {pilot_rounds} rounds in {pilot_dir}"
    if target is None:
        target = _default_target(results, task)
        target_note = " (default: the level every curve reached)"
    else:
        target_note = ""
    cycles, curves = {}, {}
    for r in results:
        s = r.config["strategy"]
        cycles[s] = run_cycle_ms(r, args.topology)
        if target.column not in r.rounds:
            raise FedsimError(f"{r.dir}/rounds.csv has no column {target.column} for --target {target.name}")
        curves[s] = (r.rounds["round"].to_numpy(float), r.rounds[target.column].to_numpy(float))
    table = advise.rank(cycles, curves, target)
    print(f"advisor: task {args.task} on {net.name} ({net.n_silos} silos); target {target}{target_note}; "
          f"{source}")
    print(advise.text_table(table, target.name))
    print("time to target = cycle time x rounds to target; rounds: first observed round at the target, else "
          "extrapolated from a least-squares fit of the metric vs ln(1 + round)")
    if args.out:
        from fedsim.io import atomic_write_text

        atomic_write_text(args.out, table.to_csv(index=False, lineterminator="\n"))
        print(f"wrote {args.out}")
    if args.plot:
        advise.plot(table, args.plot, title=f"{args.task} on {net.name}: time to {target}")
        print(f"wrote {args.plot}")
    return 0


def run_cycle_ms(result, topology: str) -> float:
    """Cycle time (ms) on ``topology`` of the strategy of a run, with the delay profile stored in the run
    (the task's, as the run's own simulated clock) and its local steps and design parameters."""
    from fedsim import api
    from fedsim.apps.plan import timing_topology
    from fedsim.topologies.delay import DelayProfile

    cfg = result.config
    prof = cfg.get("profile")
    if prof:
        profile = DelayProfile(**{k: v for k, v in prof.items() if k != "description"})
    else:
        profile = cfg["task"]
    df = api.cycle_times(topology, [timing_topology(cfg["strategy"])], profile,
                         local_steps=int(cfg.get("local_steps") or 1), t=int(cfg.get("t", 5)),
                         budget=float(cfg.get("budget", 0.5)), seed=int(cfg.get("seed", 0)))
    return float(df["cycle_time_ms"].iloc[0])


def _default_target(results, task):
    """The headline metric at the level every curve reached (the worst of the curves' best values)."""
    from fedsim.advise import Target

    best = []
    for r in results:
        m = r.rounds["eval_metric"].dropna()
        if len(m):
            best.append(m.max() if task.higher_is_better else m.min())
    from fedsim.errors import FedsimError

    if not best:
        raise FedsimError("no evaluated round in the runs; give --target METRIC=VALUE")
    level = min(best) if task.higher_is_better else max(best)
    return Target(task.metric, round(float(level), 4), "eval_metric", task.higher_is_better)


def _task_options(items) -> dict:
    from fedsim.cli.common import task_options

    return task_options(items)


def add_parser(sub) -> None:
    p = sub.add_parser("advise", help="rank the strategies of a network by predicted time to a target metric")
    p.add_argument("--topology", "--network", dest="topology", required=True,
                   help="the network (built-in name, zoo:NAME or .gml)")
    p.add_argument("--task", default="digits", help="local task (default digits)")
    p.add_argument("--target", metavar="METRIC=VALUE",
                   help="e.g. accuracy=0.8 (the task's metric, 'pooled' or 'loss'); default: the level of the "
                        "task's metric that every curve reached")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                   help="pilots: comma list of strategies (default %(default)s)")
    p.add_argument("--pilot-rounds", type=int, help="rounds of each pilot run (default 5)")
    p.add_argument("--from-runs", nargs="+", metavar="DIR", help="read the curves from these run folders instead")
    p.add_argument("--pilot-dir", help="folder of the pilot runs (default runs/advise-NETWORK-TASK-sSEED)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pilots (default 0)")
    p.add_argument("--local-steps", type=int, default=1, help="local steps per round of the pilots (default 1)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task option of the pilots")
    p.add_argument("--workers", type=int, default=0, help="parallel ClientApp actors of the pilots")
    p.add_argument("--out", help="write the table as CSV here")
    p.add_argument("--plot", help="bar chart of the predicted times (.png, .pdf, .svg)")
    p.add_argument("--no-progress", action="store_true", help="no pilot progress lines")
    p.set_defaults(func=cmd_advise)
