"""What several ``fedsim`` commands share: training flags, delay-profile and design flags, the
run summary. One place, so that every command uses the same words."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from fedsim.errors import FedsimError, check_int_at_least, check_positive


def add_profile_flags(p: argparse.ArgumentParser, default_profile: str | None = "femnist") -> None:
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


def profile_overrides(args) -> dict:
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

    options = task_options(args.task_option)
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


def resolved_profile(args, name: str):
    """The delay profile ``name`` with the command line's overrides and calibration."""
    from fedsim.timing.calibration import deployment_profile
    from fedsim.topologies.delay import get_profile

    prof = get_profile(name, **profile_overrides(args))
    if args.local_ms is not None or args.round_trips is not None:
        local = prof.tc if args.local_ms is None else check_positive("--local-ms", args.local_ms)
        trips = 1.0 if args.round_trips is None else check_positive("--round-trips", args.round_trips)
        prof = deployment_profile(prof, local, trips)
    return prof


def add_design_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("topology design")
    g.add_argument("--t", type=int, default=5, help="multigraph maximum multiplicity (default 5)")
    g.add_argument("--base", default="ring", help="overlay a multigraph is built on (default ring)")
    g.add_argument("--budget", type=float, default=0.5, help="MATCHA communication budget Cb (default 0.5)")
    g.add_argument("--seed", type=int, default=0, help="seed of MATCHA's activations (default 0)")


def split_names(value: str, valid: Sequence[str], kind: str) -> tuple[str, ...]:

    if value == "all":
        return tuple(valid)
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    if not items:
        raise FedsimError(f"no {kind} given; valid: all, {', '.join(valid)}")
    return items


def task_options(items: list[str] | None) -> dict:
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


def not_a_strategy(value: str, flag: str) -> None:
    """Catch the old words: ``--topology ring`` named the wiring; it is the network now."""
    from fedsim.topologies import TOPOLOGIES

    names = [v.strip() for v in str(value).split(",")]
    if names and all(n in TOPOLOGIES for n in names):
        raise FedsimError(f"{flag} is the network (e.g. gaia); {value!r} is a wiring: use --strategy "
                          f"{value} (fedsim cycle-time: --strategies)")
