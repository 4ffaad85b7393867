"""The ``fedsim`` command line.

Every user mistake (a bad name, file or number) ends with one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import threading
import json
import sys
from collections.abc import Sequence

from fedsim.errors import FedsimError, check_int_at_least, check_positive


def _add_profile_flags(p: argparse.ArgumentParser, default_profile: str | None = "femnist") -> None:
    """Delay-model flags; ``default_profile=None`` leaves out ``--profile`` (commands that sweep profiles)."""
    g = p.add_argument_group("delay model (defaults: the published setting)")
    if default_profile is not None:
        g.add_argument("--profile", default=default_profile, help="delay profile (default: %(default)s)")
    g.add_argument("--upload-bps", type=float, help="access uplink capacity per silo, bit/s (default 1e10)")
    g.add_argument("--download-bps", type=float, help="access downlink capacity per silo, bit/s (default 1e10)")
    g.add_argument("--core-bps", type=float, help="core link capacity, bit/s (default 1e9)")
    g.add_argument("--local-steps", type=int, help="local steps per round (default 1)")
    g = p.add_argument_group("calibration to a deployment (docs/deployment.md)")
    g.add_argument("--local-ms", type=float,
                   help="measured round time of the deployment on unshaped links, used as the computation per round")
    g.add_argument("--round-trips", type=float,
                   help="round trips of a silo's link that the deployment's protocol spends per round "
                        "(scales every latency; the published model: 1)")


def _overrides(args) -> dict:
    out = {}
    for flag, field in (("upload_bps", "upload_bps"), ("download_bps", "download_bps"), ("core_bps", "core_bps")):
        v = getattr(args, flag)
        if v is not None:
            out[field] = check_positive("--" + flag.replace("_", "-"), v)
    if args.local_steps is not None:
        out["local_steps"] = check_int_at_least("--local-steps", args.local_steps, 1)
    return out


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """What a training run is, for ``fedsim run`` and ``fedsim deploy run|local`` alike."""
    p.add_argument("--strategy", default="multigraph",
                   help="fedavg fedprox star ring mst dmbst matcha matcha_plus multigraph (default multigraph)")
    p.add_argument("--task", default="digits", help="local task (default digits)")
    p.add_argument("--rounds", type=int, help="rounds (default 20; with --resume: the run's own)")
    p.add_argument("--local-steps", type=int, default=1, help="local steps per round (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t", type=int, default=5, help="multigraph maximum multiplicity")
    p.add_argument("--base", default="ring", help="multigraph base overlay")
    p.add_argument("--budget", type=float, default=0.5, help="MATCHA budget")
    p.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    p.add_argument("--alpha", type=float, help="Dirichlet label-skew alpha of the task's partition")
    p.add_argument("--lr", type=float, help="local learning rate")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE", help="task option (repeatable)")
    p.add_argument("--checkpoint-every", type=int, default=10, help="rounds between checkpoints (default 10)")
    p.add_argument("--compute-ms", type=_compute_ms, metavar="MS|measure",
                   help="compute time per local step for the simulated clock (default: the task's fixed "
                        "reference step time, the same on every machine; 'measure': measure it here)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (its config.json gives the rest)")
    p.add_argument("--data-plane", default="auto", choices=("auto", "hub", "grpc"),
                   help="how models travel: auto (decentralized strategies peer to peer over gRPC in a "
                        "deployment, in process in simulation; FedAvg/FedProx/STAR through the hub), hub, grpc")
    p.add_argument("--sync-every", type=int,
                   help="peer data plane: rounds the silos run between meetings with the ServerApp "
                        "(records, checkpoint; default: --checkpoint-every)")
    p.add_argument("--peer-timeout", type=float, default=60.0,
                   help="peer data plane: seconds a silo waits for an in-neighbour's model before it "
                        "counts that silo lost and mixes without it (default 60)")


def _compute_ms(value: str):
    """``--compute-ms``: a positive number of ms, or ``measure``."""
    if value == "measure":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number of ms or 'measure', got {value!r}") from None


def training_config(args, network: str, **extra):
    """The :class:`~fedsim.apps.config.RunConfig` of a new run from :func:`add_training_flags`."""
    from fedsim.apps.config import RunConfig

    options = _task_options(args.task_option)
    if args.alpha is not None:
        options["alpha"] = args.alpha
    if args.lr is not None:
        options["lr"] = args.lr
    if args.rounds is not None:
        extra["rounds"] = args.rounds
    cfg = RunConfig(network=network, strategy=args.strategy, task=args.task, local_steps=args.local_steps,
                    seed=args.seed, t=args.t, base=args.base, budget=args.budget, mu=args.mu,
                    task_options=options, checkpoint_every=args.checkpoint_every, compute_ms=args.compute_ms,
                    data_plane=args.data_plane, sync_every=args.sync_every, peer_timeout=args.peer_timeout,
                    **extra)
    cfg.validate()
    return cfg


def resumed_config(args, run_dir):
    """The configuration of the run in ``run_dir`` for ``--resume`` (``--rounds`` extends it)."""
    from fedsim.apps.config import RunConfig

    cfg = RunConfig.of_run(run_dir)
    if args.rounds is not None:
        cfg.rounds = check_int_at_least("--rounds", args.rounds, 1)
    return cfg


RUN_FILES = ("rounds.csv", "checkpoint.npz", "summary.json", "failures.json")  # what --overwrite replaces


def print_summary(s: dict, wall: str = "real") -> None:
    """The run summary lines of ``fedsim run`` and ``fedsim deploy`` (``wall``: how its time was taken)."""
    print(f"{s['strategy']} on {s['network']} ({s['silos']} silos), task {s['task']}: "
          f"{s['rounds_completed']} rounds")
    print(f"  final mean test {s['metric']}: {s['final_eval_metric']:.4f}   loss {s['final_eval_loss']:.4f}")
    print(f"  simulated wall clock: {s['simulated_total_ms'] / 1e3:.3f} s "
          f"(cycle time {s['simulated_cycle_time_ms']:.2f} ms, {s['timing_topology']})")
    print(f"  {wall} wall time in rounds: {s['wall_total_s']:.1f} s ({s['mean_wall_round_s'] * 1e3:.0f} ms/round)")
    plane = s.get("data_plane")
    if plane:
        where = {"hub": "through the hub", "inproc": "mixed in process", "grpc": "peer to peer over gRPC",
                 "mpi": "peer to peer over MPI"}[plane]
        line = (f"  data plane: {plane}, models {where} ({s.get('hub_array_bytes', 0) / 1e6:.2f} MB through the "
                f"hub, {s.get('peer_array_bytes', 0) / 1e6:.2f} MB peer to peer)")
        if s.get("measured_cycle_ms"):
            line += f"; measured cycle time {s['measured_cycle_ms']:.1f} ms"
        print(line)


def _profile(args, name: str):
    """The delay profile ``name`` with the command line's overrides and calibration."""
    from fedsim.timing.calibration import deployment_profile
    from fedsim.topologies.delay import get_profile

    prof = get_profile(name, **_overrides(args))
    if args.local_ms is not None or args.round_trips is not None:
        local = prof.tc if args.local_ms is None else check_positive("--local-ms", args.local_ms)
        trips = 1.0 if args.round_trips is None else check_positive("--round-trips", args.round_trips)
        prof = deployment_profile(prof, local, trips)
    return prof


def _add_design_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("topology design")
    g.add_argument("--t", type=int, default=5, help="multigraph maximum multiplicity (default 5)")
    g.add_argument("--base", default="ring", help="overlay a multigraph is built on (default ring)")
    g.add_argument("--budget", type=float, default=0.5, help="MATCHA communication budget Cb (default 0.5)")
    g.add_argument("--seed", type=int, default=0, help="seed of MATCHA's activations (default 0)")


def _split(value: str, valid: Sequence[str], kind: str) -> tuple[str, ...]:

    if value == "all":
        return tuple(valid)
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    if not items:
        raise FedsimError(f"no {kind} given; valid: all, {', '.join(valid)}")
    return items


# ----------------------------------------------------------------- networks
def cmd_networks(args) -> int:
    from fedsim.topologies.networks import BUILTIN_NETWORKS, NETWORK_ALIASES, builtin_network

    aliases = {}
    for a, n in NETWORK_ALIASES.items():
        aliases.setdefault(n, []).append(a)
    print(f"{'network':<8} {'silos':>5} {'links':>5} {'coords':>6}  provenance")
    for name in BUILTIN_NETWORKS:
        net = builtin_network(name)
        first = (net.title or net.provenance).splitlines()[0] if (net.title or net.provenance) else ""
        print(f"{name:<8} {net.n_silos:>5} {net.n_links:>5} {'yes' if net.has_coords() else 'no':>6}  {first}")
        if name in aliases:
            print(f"{'':<8} aliases: {', '.join(aliases[name])}")
    print("\nAlso accepted wherever a network is asked for: zoo:NAME (Internet Topology Zoo, "
          "offline via topohub) and a path to a .gml file.")
    return 0


# ----------------------------------------------------------------- topology
def _not_a_strategy(value: str, flag: str) -> None:
    """Catch the old words: ``--topology ring`` named the wiring; it is the network now."""
    from fedsim.topologies import TOPOLOGIES

    names = [v.strip() for v in str(value).split(",")]
    if names and all(n in TOPOLOGIES for n in names):
        raise FedsimError(f"{flag} is the network (e.g. gaia); {value!r} is a wiring: use --strategy "
                          f"{value} (fedsim cycle-time: --strategies)")


def cmd_topology(args) -> int:
    import fedsim.clients  # noqa: F401  (registers the tasks' delay profiles)
    from fedsim.errors import unknown_name
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import TOPOLOGIES, build_schedule, connectivity
    from fedsim.topologies.networks import load_network

    from fedsim.apps.plan import timing_topology

    _not_a_strategy(args.network, "--topology")
    if args.strategy is None:
        raise FedsimError(f"give the wiring with --strategy NAME ({', '.join(TOPOLOGIES)})")
    design = timing_topology(args.strategy)
    if design not in TOPOLOGIES:
        raise unknown_name("strategy", args.strategy, TOPOLOGIES)
    net = load_network(args.network)
    prof = _profile(args, args.profile)
    check_int_at_least("--t", args.t, 1)
    conn = connectivity(net)
    sched = build_schedule(design, conn, prof, t=args.t, base=args.base, budget=args.budget)
    ct = simulate(sched, conn, prof, rounds=args.rounds, seed=args.seed)
    names = net.silos
    full = sched.delays(conn, prof)
    print(f"network {net.name}: {net.n_silos} silos, {net.n_links} links; profile {prof.name} "
          f"(M={prof.model_bits:g} bit, Tc={prof.compute_ms:g} ms x {prof.local_steps} step(s), "
          f"up/down {prof.upload_bps:g}/{prof.download_bps:g} bit/s, core {prof.core_bps:g} bit/s)")
    label = sched.topology + (f" on {sched.base}, t={args.t}" if sched.base else "")
    print(f"strategy {label}: {len(sched.arcs)} arcs")
    if sched.server is not None:
        print(f"server: {names[sched.server]}")
    if sched.is_random:
        print(f"{len(sched.probabilities)} matchings, activation probabilities "
              f"{', '.join(f'{p:.3f}' for p in sched.probabilities)}; alpha = {sched.alpha:.4f}")
    print("\narcs (delay with shared access links, ms):")
    for a, (u, v) in enumerate(sched.arcs.tolist()):
        extra = f"  x{sched.multiplicity[a]}" if sched.topology == "multigraph" else ""
        extra += f"  matching {sched.matchings[a]}" if sched.is_random else ""
        print(f"  {names[u]} -> {names[v]}  {full[a]:.2f}{extra}")
    if not sched.is_random:
        s_max = sched.n_states
        print(f"\nstates: s_max = {s_max}")
        shown = s_max if args.all_states else min(s_max, 12)
        for s in range(shown):
            iso = [names[i] for i in sched.isolated(s)]
            n_strong = int(sched.state_mask(s).sum())
            print(f"  state {s}: {n_strong}/{len(sched.arcs)} strong arcs; isolated: "
                  f"{', '.join(iso) if iso else '-'}")
        if shown < s_max:
            print(f"  ... {s_max - shown} more states (--all-states to list them)")
    print(f"\ncycle time: {ct.value:.2f} ms  ({ct.definition})")
    if args.plot:
        from fedsim.plots import topology_map

        state = args.state if args.state is not None else (1 if sched.n_states > 1 else 0)
        topology_map(net, sched, state, args.plot,
                     title=f"{net.name} {label}, state {state} ({prof.name}: {ct.value:.1f} ms)")
        print(f"map written to {args.plot}")
    return 0


# ----------------------------------------------------------------- cycle-time
def cmd_cycle_time(args) -> int:
    import fedsim.clients  # noqa: F401  (registers the tasks' delay profiles)
    from fedsim.timing.sweep import SweepConfig, markdown_table, run_sweep, write_csv
    from fedsim.topologies import TOPOLOGIES
    from fedsim.topologies.networks import BUILTIN_NETWORKS, load_network
    from fedsim.errors import unknown_name

    workers = check_int_at_least("--workers", args.workers, 1)
    if args.reproduce_table3:
        return _reproduce_table3(args, workers)
    _not_a_strategy(args.networks, "--topologies")
    networks = _split(args.networks, BUILTIN_NETWORKS, "network")
    topologies = _split(args.strategies, TOPOLOGIES, "strategy")
    profiles = _split(args.profiles, ("femnist", "inaturalist", "sent140"), "profile")
    for t in topologies:
        if t not in TOPOLOGIES:
            raise unknown_name("strategy", t, TOPOLOGIES)
    overrides = _overrides(args)
    # Resolve profiles here (a task profile is measured once) and ship them to the workers.
    resolved = {p: _profile(args, p) for p in profiles}
    for n in networks:
        load_network(n)
    check_int_at_least("--t", args.t, 1)
    configs = [SweepConfig(n, p, tuple(sorted(overrides.items())), args.t, args.budget, args.seed,
                           resolved=resolved[p])
               for p in profiles for n in networks]
    rows = run_sweep(configs, topologies, workers=workers, progress=not args.no_progress)
    print(markdown_table(rows, topologies))
    if args.out:
        write_csv(args.out, rows)
        print(f"\nwrote {len(rows)} rows to {args.out}")
    return 0


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


# ----------------------------------------------------------------- run
def _task_options(items: list[str] | None) -> dict:
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FedsimError(f"--task-option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _new_run_dir(args):
    """``(cfg, run_dir)`` of a new ``fedsim run``: validated, the run folder prepared (``--overwrite``)."""
    from pathlib import Path

    from fedsim.apps.records import SILO_STATE_DIR
    from fedsim.topologies.networks import first_silos_gml, load_network

    network = args.network or args.topology
    if network is None:
        raise FedsimError("give the network with --topology NAME (or --network NAME), e.g. --topology gaia")
    net = load_network(network)  # fail on a bad network before anything is written
    stem = Path(network).stem.replace(":", "-") + (f"-{args.silos}" if args.silos else "")
    run_dir = Path(args.out or f"runs/{stem}-{args.strategy}-{args.task}-s{args.seed}")
    if args.silos:
        check_int_at_least("--silos", args.silos, 2)
        if args.silos > net.n_silos:
            raise FedsimError(f"--silos {args.silos}: network {net.name} has only {net.n_silos} silos")
    cfg = training_config(args, network, max_failed_rounds=args.max_failed_rounds,
                          round_timeout=args.round_timeout, workers=args.workers,
                          inject_fault=args.inject_fault)
    if (run_dir / "rounds.csv").exists() and not args.overwrite:
        raise FedsimError(f"{run_dir} already holds a run; use --resume {run_dir}, another --out, or --overwrite")
    if args.overwrite:
        import shutil

        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / SILO_STATE_DIR, ignore_errors=True)  # the silos' own kept parameters
    if args.silos:
        cfg.network = first_silos_gml(network, args.silos, run_dir)
    return cfg, run_dir


def cmd_run(args) -> int:
    from pathlib import Path

    if args.engine == "mpi":
        return _run_mpi(args)
    if args.resume:
        run_dir = Path(args.resume)
        cfg = resumed_config(args, run_dir)
    else:
        cfg, run_dir = _new_run_dir(args)
    from fedsim.apps.simulation import run_simulation

    s = run_simulation(cfg, run_dir, progress=not args.no_progress, resume=bool(args.resume))
    print_summary(s)
    print(f"  run directory: {run_dir}")
    return 0


def _run_mpi(args) -> int:
    """``--engine mpi``: start ``mpiexec -n NP`` (``--np``) or, under mpiexec, be one silo's rank."""
    from pathlib import Path

    from fedsim.apps import mpi

    if not mpi.under_mpiexec():
        if args.np is None:
            raise FedsimError("--engine mpi needs --np N (one rank per silo), or start fedsim under mpiexec -n N")
        check_int_at_least("--np", args.np, 1)
        if not args.resume:
            _new_run_dir(args)  # validate and prepare here, before any rank starts
        argv = [a for i, a in enumerate(args.argv) if a != "--np" and not (i and args.argv[i - 1] == "--np")
                and not a.startswith("--np=") and a != "--overwrite"]
        return mpi.launch(args.np, argv)
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    prepared = None
    if rank == 0:
        try:
            if args.resume:
                prepared = (resumed_config(args, Path(args.resume)), Path(args.resume))
            else:
                prepared = _new_run_dir(args)
        except FedsimError as exc:
            prepared = exc
    prepared = MPI.COMM_WORLD.bcast(prepared, root=0)
    if isinstance(prepared, FedsimError):
        if rank == 0:
            raise prepared
        return 2
    cfg, run_dir = prepared
    s = mpi.run_mpi(cfg, run_dir, progress=not args.no_progress and rank == 0, resume=bool(args.resume))
    if s is not None:
        print_summary(s)
        print(f"  run directory: {run_dir}")
    return 0


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


# ----------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Cross-silo federated learning on Flower with a WAN time simulator.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("networks", help="list the built-in networks")
    p.set_defaults(func=cmd_networks)

    p = sub.add_parser("topology", help="wire the silos of a network one way (a strategy) and print it")
    p.add_argument("--topology", "--network", dest="network", required=True,
                   help="the network: built-in name, zoo:NAME or a .gml path")
    p.add_argument("--strategy",
                   help="the wiring (required): star, ring, mst, dmbst, matcha, matcha_plus or multigraph "
                        "(fedavg and fedprox are timed as star)")
    _add_design_flags(p)
    _add_profile_flags(p)
    p.add_argument("--rounds", type=int, help="rounds to simulate (multigraph, MATCHA)")
    p.add_argument("--plot", help="write a map of the overlay to this PNG/PDF/SVG")
    p.add_argument("--state", type=int, help="state drawn by --plot (default: 1 for a multigraph)")
    p.add_argument("--all-states", action="store_true", help="list every state, not the first 12")
    p.set_defaults(func=cmd_topology)

    p = sub.add_parser("cycle-time", help="sweep cycle times over topologies (networks) x strategies x profiles")
    p.add_argument("--topologies", "--networks", dest="networks", default="all",
                   help="networks: comma list or 'all' (default)")
    p.add_argument("--strategies", default="all", help="wirings: comma list or 'all' (default)")
    p.add_argument("--profiles", default="femnist,inaturalist,sent140", help="comma list")
    p.add_argument("--workers", type=int, default=1, help="parallel Ray workers (default 1: sequential)")
    p.add_argument("--out", help="write the table as CSV here")
    p.add_argument("--reproduce-table3", action="store_true",
                   help="recompute the published table; exit 1 if a cell is out of tolerance")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_design_flags(p)
    _add_profile_flags(p, default_profile=None)
    p.set_defaults(func=cmd_cycle_time)

    p = sub.add_parser("run", help="train on Flower's Simulation Engine (Ray), in-process, or on MPI ranks")
    p.add_argument("--topology", help="the network (built-in name, zoo:NAME or .gml), e.g. gaia")
    p.add_argument("--network", help="same as --topology")
    add_training_flags(p)
    p.add_argument("--out", help="run directory (default runs/NETWORK-STRATEGY-TASK-sSEED)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--workers", type=int, default=0, help="parallel ClientApp actors (default: up to 2)")
    p.add_argument("--max-failed-rounds", type=int, default=1,
                   help="stop after this many rounds with a failed silo (default 1)")
    p.add_argument("--round-timeout", type=float, help="seconds to wait for a round's replies")
    p.add_argument("--inject-fault", metavar="SILO:ROUND", help="make a silo's ClientApp raise (testing)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--silos", type=int, help="use the first N silos of --topology, fully connected")
    p.add_argument("--engine", choices=("ray", "mpi"), default="ray",
                   help="ray: Flower's Simulation Engine (default); mpi: one MPI rank per silo, models peer "
                        "to peer, no Flower process (decentralized strategies)")
    p.add_argument("--np", type=int, help="--engine mpi: start mpiexec with this many ranks (= silos)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compare", help="overlay runs on one plot (metric vs simulated time)")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="compare.png", help="plot file (default compare.png)")
    p.add_argument("--x", choices=("time", "round"), default="time")
    p.set_defaults(func=cmd_compare)

    from fedsim.clients.cfor_retrieval import add_retrieve_parser
    from fedsim.deploy.cli import add_deploy_parser

    add_retrieve_parser(sub)
    add_deploy_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --engine mpi starts itself under mpiexec
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if inherited as ignored
    try:
        return int(args.func(args) or 0)
    except FedsimError as exc:
        print(f"fedsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
