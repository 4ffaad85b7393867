"""``fedsim run``: train on Flower's Simulation Engine (Ray) or on MPI ranks."""

from __future__ import annotations

from fedsim.cli.common import (
    NETWORK_HELP,
    add_training_flags,
    int_in,
    out_dir,
    positive_float,
    print_summary,
    ray_address,
    resume_dir,
    resumed_config,
    training_config,
)
from fedsim.errors import FedsimError


def _new_run_dir(args):
    """``(cfg, run_dir)`` of a new ``fedsim run``: validated, the run folder prepared (``--overwrite``)."""
    from fedsim.apps.rundir import new_run

    network = args.network or args.topology
    if network is None:
        raise FedsimError("give the network with --topology NAME (or --network NAME), e.g. --topology gaia")
    if args.network and args.topology and args.network != args.topology:
        raise FedsimError(f"--topology {args.topology} and --network {args.network} disagree; give one")
    cfg = training_config(args, network, max_failed_rounds=args.max_failed_rounds,
                          round_timeout=args.round_timeout, workers=args.workers,
                          inject_fault=args.inject_fault)
    return new_run(cfg, args.out, args.overwrite, args.silos, args.workers)


def cmd_run(args) -> int:

    if args.engine == "mpi":
        if args.ray_address:
            raise FedsimError("--ray-address is for --engine ray (the Simulation Engine); MPI ranks need no Ray")
        return _run_mpi(args)
    if args.resume:
        if args.overwrite:
            raise FedsimError("--resume continues a run and --overwrite replaces it: give one of them")
        run_dir = resume_dir(args.resume)
        cfg = resumed_config(args, run_dir)
    else:
        cfg, run_dir = _new_run_dir(args)
    cfg.ray_address = args.ray_address  # where it runs, not what it trains: a resumed run may move
    from fedsim.apps.simulation import run_simulation

    s = run_simulation(cfg, run_dir, progress=not args.no_progress, resume=bool(args.resume))
    print_summary(s)
    print(f"  run directory: {run_dir}")
    return 0


def _run_mpi(args) -> int:
    """``--engine mpi``: start ``mpiexec -n NP`` (``--np``) or, under mpiexec, be one silo's rank."""
    from pathlib import Path

    from fedsim.apps import mpi
    from fedsim.strategies import DECENTRALIZED

    if not args.resume and args.strategy not in DECENTRALIZED:
        raise FedsimError(f"--engine mpi runs decentralized strategies ({', '.join(DECENTRALIZED)}); "
                          f"{args.strategy} needs a hub: use the default engine")
    if not mpi.under_mpiexec():
        if args.np is None:
            raise FedsimError("--engine mpi needs --np N (one rank per silo), or start fedsim under mpiexec -n N")
        if args.resume:
            resumed_config(args, resume_dir(args.resume))  # check before any rank starts
        else:
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
                prepared = (resumed_config(args, resume_dir(args.resume)), Path(args.resume))
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


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train on Flower's Simulation Engine (Ray), in-process, or on MPI ranks")
    p.add_argument("--topology", help=f"the network: {NETWORK_HELP}")
    p.add_argument("--network", help="same as --topology")
    add_training_flags(p)
    p.add_argument("--out", type=out_dir, help="run directory (default runs/NETWORK-STRATEGY-TASK-sSEED)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--workers", type=int_in(0), default=0, help="parallel ClientApp actors (default 0: up to 2)")
    p.add_argument("--max-failed-rounds", type=int_in(1), default=1,
                   help="stop after this many rounds with a failed silo (default 1)")
    p.add_argument("--round-timeout", type=positive_float, help="seconds to wait for a round's replies")
    p.add_argument("--inject-fault", metavar="SILO:ROUND",
                   help="make silo SILO's ClientApp raise in round ROUND (testing failure handling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--silos", type=int_in(2), help="use the first N silos of --topology, fully connected (N >= 2)")
    p.add_argument("--engine", choices=("ray", "mpi"), default="ray",
                   help="ray: Flower's Simulation Engine (default); mpi: one MPI rank per silo, models peer "
                        "to peer, no Flower process (decentralized strategies)")
    p.add_argument("--np", type=int_in(1), help="--engine mpi: start mpiexec with this many ranks (= silos)")
    p.add_argument("--ray-address", type=ray_address, metavar="HOST:PORT|auto",
                   help="run on this existing Ray cluster (one ClientApp actor per cluster CPU; 'auto': the "
                        "cluster this machine belongs to) instead of a private Ray on this machine")
    p.set_defaults(func=cmd_run)
