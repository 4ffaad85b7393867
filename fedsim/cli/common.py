"""What several ``fedsim`` commands share: training flags, delay-profile and design flags, the
run summary. One place, so that every command uses the same words."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedsim.apps.rundir import (  # noqa: F401 - the run folder's checks, shared with the Python API
    RUN_FILES,
    check_fault,
    check_silos,
    check_task_options,
    holds_run,
)
from fedsim.errors import FedsimError, check_int_at_least, check_positive

if TYPE_CHECKING:
    from pathlib import Path


def _path(p) -> Path:
    """``pathlib.Path``, imported when first needed (pathlib pulls in urllib: ~10 ms of ``fedsim --help``)."""
    from pathlib import Path

    return Path(p)

# The names users type, listed in --help without importing the registries (numpy, torch...);
# tests/test_bad_input.py checks that they equal the registries.
TASK_NAMES = ("digits", "cdl", "gcd", "cfor", "sac")
STRATEGY_NAMES = ("fedavg", "fedprox", "star", "ring", "mst", "dmbst", "matcha", "matcha_plus", "multigraph")
WIRING_NAMES = ("star", "ring", "mst", "dmbst", "matcha", "matcha_plus", "multigraph")
BASE_NAMES = ("ring", "mst", "dmbst", "star")
PUBLISHED_PROFILE_NAMES = ("synthetic", "shakespeare", "femnist", "sent140", "inaturalist")
PROFILE_NAMES = PUBLISHED_PROFILE_NAMES + TASK_NAMES
NETWORK_NAMES = ("gaia", "nws", "geant", "exodus", "ebone")
NETWORK_HELP = f"built-in ({', '.join(NETWORK_NAMES)}), zoo:NAME or a .gml path"
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
SEED_MAX = 2**32 - 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``fedsim CMD: error: ...`` and exit code 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


# ----------------------------------------------------------------- argparse types: one check per kind of value
def _typed(name: str, check: Callable[[str], object]) -> Callable[[str], object]:
    check.__name__ = name  # argparse names the type in its messages
    return check


def _finite(text: str, what: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be {what} (finite), got {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number > 0."""
    v = _finite(text, "a positive number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return v


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    v = _finite(text, "a finite number >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    v = _finite(text, "a number in (0, 1]")
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return v


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer in ``low..high`` (``high=None``: no upper bound)."""
    what = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def check(text: str) -> int:
        try:
            v = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v

    return _typed(what, check)


port = int_in(1, 65535)
seed = int_in(0, SEED_MAX)


def host_port(text: str) -> str:
    """``HOST:PORT`` with a port in 1..65535 (``[v6]:PORT`` for IPv6)."""
    host, sep, p = str(text).rpartition(":")
    if not sep or not host.strip("[]") or not p.isdigit() or not 0 < int(p) < 65536:
        raise argparse.ArgumentTypeError(f"expects HOST:PORT with a port in 1..65535, got {text!r}")
    return text


def ray_address(text: str) -> str:
    """``auto`` or the ``HOST:PORT`` of a Ray cluster's head (its GCS port, 6379 by default)."""
    if text == "auto":
        return text
    try:
        return host_port(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expects 'auto' or HOST:PORT of a Ray head, got {text!r}") from None


def _check_parent(path: Path, text: str) -> None:
    """The nearest existing folder above ``path`` must be a folder we can write into."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {parent} is not a folder")
    import tempfile

    try:  # os.access says yes to root everywhere (even /proc): try it, leaving nothing behind
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {parent}") from None


def out_file(*suffixes: str) -> Callable[[str], str]:
    """An output file: one of ``suffixes`` (none: any), a writable folder above it, not a folder itself."""

    def check(text: str) -> str:
        if not str(text).strip():
            raise argparse.ArgumentTypeError("expects a file name, got ''")
        path = _path(text).expanduser()
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"expects a file ending in {', '.join(suffixes)}, got {text!r}")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
        _check_parent(path, text)
        return text

    return _typed("output file", check)


def out_dir(text: str) -> str:
    """An output folder: not an existing file, a writable folder above it."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("expects a folder name, got ''")
    path = _path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    _check_parent(path, text)
    return text


def existing_file(text: str) -> str:
    """An input file that exists."""
    if not _path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def existing_dir(text: str) -> str:
    """An input folder that exists."""
    if not _path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def refuse_existing(path, flag: str, overwrite: bool) -> None:
    """An output file that exists is replaced only with ``--overwrite``."""
    if path is not None and _path(path).exists() and not overwrite:
        raise FedsimError(f"{flag} {path} already exists; give another {flag} or --overwrite to replace it")


def fedprox_warning(strategy: str, local_steps: int) -> None:
    """FedProx with one local step equals FedAvg (its proximal term is zero at the anchor): say so."""
    import sys

    if strategy == "fedprox" and local_steps == 1:
        print("fedsim: warning: --strategy fedprox with --local-steps 1 equals fedavg (the proximal term is "
              "zero at the first step); use --local-steps > 1", file=sys.stderr)


def add_profile_flags(p: argparse.ArgumentParser, default_profile: str | None = "femnist") -> None:
    """Delay-model flags; ``default_profile=None`` leaves out ``--profile`` (commands that sweep profiles)."""
    g = p.add_argument_group("delay model (defaults: the published setting)")
    if default_profile is not None:
        g.add_argument("--profile", default=default_profile,
                       help=f"delay profile: {', '.join(PROFILE_NAMES)} (default: %(default)s)")
    g.add_argument("--upload-bps", type=positive_float,
                   help="access uplink capacity per silo, bit/s (default 1e10)")
    g.add_argument("--download-bps", type=positive_float,
                   help="access downlink capacity per silo, bit/s (default 1e10)")
    g.add_argument("--core-bps", type=positive_float, help="core link capacity, bit/s (default 1e9)")
    g.add_argument("--local-steps", type=int_in(1), help="local steps per round (default 1)")
    g = p.add_argument_group("calibration to a deployment (docs/deployment.md)")
    g.add_argument("--local-ms", type=positive_float,
                   help="measured round time of the deployment on unshaped links, used as the computation per round")
    g.add_argument("--round-trips", type=positive_float,
                   help="round trips of a silo's link that the deployment's protocol spends per round "
                        "(scales every latency; the published model: 1)")


def stragglers_spec(text: str) -> str:
    """``--stragglers lognormal:SIGMA``."""
    from fedsim.topologies.stragglers import parse_stragglers

    try:
        parse_stragglers(text)
    except FedsimError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--stragglers ")) from None
    return text


def add_straggler_flags(p: argparse.ArgumentParser) -> None:
    """Heterogeneous silos in the clock (:mod:`fedsim.topologies.stragglers`)."""
    g = p.add_argument_group("heterogeneous silos (stragglers)")
    g.add_argument("--stragglers", type=stragglers_spec, metavar="lognormal:SIGMA",
                   help="each silo's step time is the profile's times a seeded draw of exp(N(0, SIGMA^2)) "
                        "(--seed); e.g. lognormal:0.5")
    g.add_argument("--compute-ms-file", type=existing_file, metavar="CSV",
                   help="per-silo values: a CSV with a 'silo' column (index or name) and any of compute_ms "
                        "(ms per local step), upload_bps, download_bps")


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
                   help=f"{', '.join(STRATEGY_NAMES)} (default multigraph)")
    p.add_argument("--task", default="digits", help=f"local task: {', '.join(TASK_NAMES)} (default digits)")
    p.add_argument("--rounds", type=int_in(1), help="rounds (default 20; with --resume: the run's own)")
    p.add_argument("--local-steps", type=int_in(1), default=1, help="local steps per round (default 1)")
    p.add_argument("--seed", type=seed, default=0,
                   help=f"seed of every random choice: data partition, models, MATCHA (0..{SEED_MAX}; default 0)")
    p.add_argument("--t", type=int_in(1), default=5, help="multigraph maximum multiplicity (default 5)")
    p.add_argument("--base", default="ring", help=f"multigraph base overlay: {', '.join(BASE_NAMES)} (default ring)")
    p.add_argument("--budget", type=fraction, default=0.5, help="MATCHA communication budget in (0, 1] (default 0.5)")
    p.add_argument("--mu", type=nonneg_float, default=0.01, help="FedProx proximal weight, >= 0 (default 0.01)")
    p.add_argument("--alpha", type=positive_float,
                   help="Dirichlet label-skew alpha of the task's partition, > 0 (small: skewed)")
    p.add_argument("--lr", type=positive_float, help="local learning rate, > 0 (default: the task's)")
    p.add_argument("--task-option", action="append", metavar="KEY=VALUE",
                   help="task option (repeatable); the task checks the names and values")
    p.add_argument("--checkpoint-every", type=int_in(1), default=10, help="rounds between checkpoints (default 10)")
    p.add_argument("--compute-ms", type=_compute_ms, metavar="MS|measure",
                   help="compute time per local step for the simulated clock (default: the task's fixed "
                        "reference step time, the same on every machine; 'measure': measure it here)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (its config.json gives the rest)")
    p.add_argument("--data-plane", default="auto", choices=("auto", "hub", "grpc"),
                   help="how models travel: auto (decentralized strategies peer to peer over gRPC in a "
                        "deployment, in process in simulation; FedAvg/FedProx/STAR through the hub), hub, grpc")
    p.add_argument("--sync-every", type=int_in(1),
                   help="peer data plane: rounds the silos run between meetings with the ServerApp "
                        "(records, checkpoint; default: --checkpoint-every)")
    p.add_argument("--peer-timeout", type=positive_float, default=60.0,
                   help="peer data plane: seconds a silo waits for an in-neighbour's model before it "
                        "counts that silo lost and mixes without it (default 60)")
    add_straggler_flags(p)


def _compute_ms(value: str):
    """``--compute-ms``: a positive number of ms, or ``measure``."""
    if value == "measure":
        return value
    try:
        return positive_float(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a positive number of ms or 'measure', got {value!r}") from None


def training_config(args, network: str, **extra):
    """The :class:`~fedsim.apps.config.RunConfig` of a new run from :func:`add_training_flags`."""
    from fedsim.apps.config import RunConfig

    options = task_options(args.task_option)
    if args.alpha is not None:
        options["alpha"] = args.alpha
    if args.lr is not None:
        options["lr"] = args.lr
    if args.base not in BASE_NAMES:
        raise FedsimError(f"unknown multigraph base {args.base!r}; valid: {', '.join(BASE_NAMES)}")
    if args.rounds is not None:
        extra["rounds"] = args.rounds
    cfg = RunConfig(network=network, strategy=args.strategy, task=args.task, local_steps=args.local_steps,
                    seed=args.seed, t=args.t, base=args.base, budget=args.budget, mu=args.mu,
                    task_options=options, checkpoint_every=args.checkpoint_every, compute_ms=args.compute_ms,
                    stragglers=args.stragglers,
                    compute_ms_file=str(_path(args.compute_ms_file).resolve()) if args.compute_ms_file else None,
                    data_plane=args.data_plane, sync_every=args.sync_every, peer_timeout=args.peer_timeout,
                    **extra)
    cfg.validate()
    check_task_options(cfg.task, options)
    if not getattr(args, "warned", False):
        fedprox_warning(cfg.strategy, cfg.local_steps)
        args.warned = True
    return cfg


def resume_dir(path: str):
    """``--resume RUN_DIR``: a run folder with a config and a checkpoint to continue from."""
    run_dir = _path(path)
    if not run_dir.is_dir():
        raise FedsimError(f"cannot resume {path}: no such folder")
    if not (run_dir / "checkpoint.npz").exists():
        what = "no checkpoint" if (run_dir / "config.json").exists() else "not a fedsim run folder (no config.json)"
        raise FedsimError(f"cannot resume {path}: {what}; start it again with --out {path} --overwrite")
    return run_dir


# What a new run's flags default to: with --resume the run's own config.json decides these, so a flag given
# with another value would be ignored; it is refused instead (tests check these against the parser).
RESUME_FIXED = {"strategy": "multigraph", "task": "digits", "local_steps": 1, "seed": 0, "t": 5, "base": "ring",
                "budget": 0.5, "mu": 0.01, "alpha": None, "lr": None, "task_option": None, "checkpoint_every": 10,
                "compute_ms": None, "data_plane": "auto", "sync_every": None, "peer_timeout": 60.0,
                "topology": None, "network": None, "out": None, "silos": None, "inject_fault": None,
                "stragglers": None, "compute_ms_file": None}


def refuse_flags_with_resume(args) -> None:
    """``--resume`` continues a run as it was configured: a flag that would change it is an error."""
    given = [name for name, default in RESUME_FIXED.items()
             if hasattr(args, name) and getattr(args, name) != default]
    if given:
        flags = ", ".join("--" + g.replace("_", "-") for g in given)
        raise FedsimError(f"--resume continues the run as configured in its config.json; drop {flags} "
                          "(only --rounds and how it runs may change)")


def resumed_config(args, run_dir):
    """The configuration of the run in ``run_dir`` for ``--resume`` (``--rounds`` extends it)."""
    refuse_flags_with_resume(args)
    from fedsim.apps.config import RunConfig
    from fedsim.apps.records import check_resumable

    cfg = RunConfig.of_run(run_dir)
    try:
        cfg.validate()
    except (TypeError, ValueError) as exc:  # a config.json edited by hand
        raise FedsimError(f"cannot resume {run_dir}: its config.json is not a valid run configuration ({exc})") from None
    check_resumable(run_dir, cfg.key())  # before any process starts
    if args.rounds is not None:
        cfg.rounds = check_int_at_least("--rounds", args.rounds, 1)
    return cfg




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


MAX_TRANSFER_MS = 1e12  # one model over one link in more than ~30 years: a capacity typed wrong, not a network


def resolved_profile(args, name: str):
    """The delay profile ``name`` with the command line's overrides and calibration."""
    from fedsim.clients import (
        get_profile,  # published workloads and the tasks' profiles
    )
    from fedsim.timing.calibration import deployment_profile

    prof = get_profile(name, **profile_overrides(args))
    if args.local_ms is not None or args.round_trips is not None:
        local = prof.tc if args.local_ms is None else check_positive("--local-ms", args.local_ms)
        trips = 1.0 if args.round_trips is None else check_positive("--round-trips", args.round_trips)
        prof = deployment_profile(prof, local, trips)
    for flag, bps in (("--upload-bps", prof.upload_bps), ("--download-bps", prof.download_bps),
                      ("--core-bps", prof.core_bps)):
        ms = prof.model_bits / bps * 1e3
        if not ms < MAX_TRANSFER_MS:  # also inf and nan
            raise FedsimError(f"{flag} {bps:g} gives a transfer time of {ms:.3g} ms for one {prof.name} model "
                              f"({prof.model_bits:g} bit); give at least {prof.model_bits * 1e3 / MAX_TRANSFER_MS:.3g} "
                              "bit/s")
    return prof


def add_design_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("topology design")
    g.add_argument("--t", type=int_in(1), default=5, help="multigraph maximum multiplicity (default 5)")
    g.add_argument("--base", default="ring",
                   help=f"overlay a multigraph is built on: {', '.join(BASE_NAMES)} (default ring)")
    g.add_argument("--budget", type=fraction, default=0.5,
                   help="MATCHA communication budget Cb in (0, 1] (default 0.5)")
    g.add_argument("--seed", type=seed, default=0, help=f"seed of MATCHA's activations (0..{SEED_MAX}; default 0)")


def split_names(value: str, valid: Sequence[str], kind: str) -> tuple[str, ...]:

    if value == "all":
        return tuple(valid)
    items = tuple(x.strip() for x in value.split(",") if x.strip())
    if not items:
        raise FedsimError(f"no {kind} given; valid: all, {', '.join(valid)}")
    return items


def task_options(items: list[str] | None) -> dict:
    import json

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
