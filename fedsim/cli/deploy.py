"""``fedsim deploy ...``: certificates, keys, SuperLink, SuperNodes, runs, a local cluster.

Wired into the ``fedsim`` command by :func:`add_deploy_parser`; also runnable
TLS and SuperNode authentication are on by
default; ``--insecure`` must be given explicitly and prints a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fedsim.cli.common import (
    NETWORK_HELP,
    TASK_NAMES,
    check_silos,
    check_task_options,
    existing_dir,
    existing_file,
    holds_run,
    host_port,
    int_in,
    nonneg_float,
    out_dir,
    out_file,
    port,
    positive_float,
)
from fedsim.errors import FedsimError, check_positive

RUN_CONNECTION = "fedsim"  # the SuperLink connection `deploy run` writes into its FLWR_HOME
INSECURE_WARNING = ("WARNING: --insecure: TLS is off; models and metrics travel unencrypted and "
                    "SuperNodes cannot be authenticated. Use only on a trusted test network.")


def _warn_insecure(args) -> None:
    if getattr(args, "insecure", False):
        print(INSECURE_WARNING, file=sys.stderr)


def _network(args):
    from fedsim.topologies.networks import load_network

    name = getattr(args, "topology", None) or getattr(args, "network", None)
    if name is None:
        raise FedsimError("give the network with --topology NAME, e.g. --topology gaia")
    return load_network(name)


def _silo_index(net, silo: str) -> int:
    if silo.isdigit() and int(silo) < net.n_silos:
        return int(silo)
    if silo in net.silos:
        return net.silos.index(silo)
    raise FedsimError(f"unknown silo {silo!r} of network {net.name}; valid: "
                      f"{', '.join(net.silos)} (or an index 0..{net.n_silos - 1})")


def _exec(cmd: list[str], env: dict, dry_run: bool) -> int:
    """Print the exact command line, then become it (unless ``--dry-run``)."""
    from fedsim.deploy.commands import shell_line

    print(shell_line(cmd, env), flush=True)
    if dry_run:
        return 0
    from fedsim.deploy.commands import process_env

    try:
        os.execvpe(cmd[0], cmd, process_env(env))
    except OSError as exc:
        raise FedsimError(f"cannot run {cmd[0]}: {exc}") from None
    return 0  # not reached


# ----------------------------------------------------------------- certs, keys
def cmd_certs(args) -> int:
    from fedsim.deploy.certs import certificate_sans, generate_certificates

    names = list(_network(args).silos) if args.topology else None  # validated before anything is written
    if not [h for h in args.hosts.split(",") if h.strip()]:
        raise FedsimError(f"--hosts expects a comma list of names/IPs, got {args.hosts!r}")
    paths = generate_certificates(args.out, args.hosts, days=args.days, overwrite=args.overwrite)
    print(f"wrote {paths.ca_cert}, {paths.ca_key} (keep offline), {paths.server_cert}, {paths.server_key}")
    print(f"server certificate valid for: {', '.join(certificate_sans(paths.server_cert))}")
    print("SuperLink:  --ssl-ca-certfile {0} --ssl-certfile {1} --ssl-keyfile {2}".format(
        paths.ca_cert, paths.server_cert, paths.server_key))
    print(f"SuperNodes and the flwr CLI verify the SuperLink with: {paths.ca_cert}")
    if names:
        from fedsim.deploy.certs import generate_silo_certificates

        silos = generate_silo_certificates(args.out, names, days=args.days, overwrite=args.overwrite)
        print(f"peer identities: {len(silos)} silo certificates in {silos[0][0].parent} "
              f"(silo N: silo-N.pem + silo-N.key, give each silo its own pair and ca.crt)")
    return 0


def cmd_keys(args) -> int:
    from fedsim.deploy.commands import register_command, shell_line
    from fedsim.deploy.keys import generate_node_keys

    names = None
    if args.topology:
        names = list(_network(args).silos)
    elif args.nodes is None:
        raise FedsimError("give --nodes N or --topology NAME (one key pair per silo)")
    made = generate_node_keys(args.out, n=args.nodes, names=names, overwrite=args.overwrite)
    for k in made:
        print(f"{k.name}: private {k.private} (stays on the silo), public {k.public}")
    print(f"\nregister each public key with the SuperLink (connection {args.connection!r} in "
          "$FLWR_HOME/config.toml):")
    for k in made:
        print("  " + shell_line(register_command(k.public, args.connection)[:-2]))
    return 0


# ----------------------------------------------------------------- superlink / supernode
def _tls_files(args) -> tuple:
    if args.certs:
        d = Path(args.certs)
        return d / "ca.crt", d / "server.pem", d / "server.key"
    return args.ssl_ca_certfile, args.ssl_certfile, args.ssl_keyfile


def cmd_superlink(args) -> int:
    from fedsim.deploy.commands import deployment_env

    ca, cert, key = (None, None, None) if args.insecure else _tls_files(args)
    for p in (ca, cert, key):
        if p is not None and not Path(p).exists():
            raise FedsimError(f"{p} does not exist (make certificates with `fedsim deploy certs`)")
    from fedsim.deploy.gateway import superlink_main

    env = deployment_env(Path(args.flwr_home).resolve(), args.superexec_poll)
    _warn_insecure(args)  # after every check: a mistake gets one line
    return superlink_main(host=args.host, port=args.port, control_port=args.control_port, ca=ca, cert=cert,
                          key=key, insecure=args.insecure, auth=not (args.no_auth or args.insecure),
                          database=args.database, env=env, gateway=not args.no_gateway, dry_run=args.dry_run)


def _peer_flags(args, silo: int) -> dict:
    """The silo's peer data plane settings from ``fedsim deploy supernode``'s flags, checked."""
    import socket

    from fedsim.deploy.certs import silo_of_certificate
    from fedsim.deploy.commands import peer_settings

    address = args.peer_address or f"{socket.getfqdn()}:{args.peer_port}"
    if args.insecure:
        if args.peer_cert or args.peer_key:
            raise FedsimError("--insecure turns TLS off: drop --peer-cert/--peer-key")
        return peer_settings(args.peer_port, address, args.peer_listen)
    if not (args.peer_cert and args.peer_key):
        raise FedsimError("the peer data plane needs this silo's identity: --peer-cert silo-N.pem --peer-key "
                          "silo-N.key (from `fedsim deploy certs --topology NET`), or --insecure")
    for p in (args.peer_cert, args.peer_key):
        if not Path(p).exists():
            raise FedsimError(f"{p} does not exist")
    owner = silo_of_certificate(args.peer_cert)
    if owner != silo:
        raise FedsimError(f"--peer-cert {args.peer_cert} is silo {owner}'s identity, not silo {silo}'s")
    return peer_settings(args.peer_port, address, args.peer_listen, cert=args.peer_cert, key=args.peer_key,
                         ca=args.root_certificates)


def cmd_supernode(args) -> int:
    from fedsim.deploy.commands import deployment_env, supernode_command

    net = _network(args)
    silo = _silo_index(net, args.silo)
    if args.task not in TASK_NAMES:
        from fedsim.clients import TASKS
        from fedsim.errors import unknown_name

        if args.task not in TASKS:
            raise unknown_name("task", args.task, TASKS)
    key = None if (args.no_auth or args.insecure) else args.key
    if key is None and not (args.no_auth or args.insecure):
        raise FedsimError("SuperNode authentication is on: give --key SILO.key (from `fedsim deploy keys`) "
                          "or --no-auth")
    for p in (args.root_certificates, key):
        if p is not None and not Path(p).exists():
            raise FedsimError(f"{p} does not exist")
    peer = _peer_flags(args, silo)
    cmd = supernode_command(superlink=args.superlink, silo=silo, n_silos=net.n_silos, name=net.silos[silo],
                            task=args.task, root_cert=None if args.insecure else args.root_certificates,
                            private_key=key, insecure=args.insecure, runtime_port=args.port,
                            fast=args.fast, state_dir=Path(args.state_dir).resolve() if args.state_dir else None,
                            peer=peer)
    env = deployment_env(Path(args.flwr_home).resolve(), args.superexec_poll)
    if args.fast:
        from fedsim.deploy.fastnode import node_env
        from fedsim.deploy.local import Speed

        env |= node_env(args.node_poll, args.task, pull_backoff_s=Speed().pull_backoff_s)
    _warn_insecure(args)  # after every check: a mistake gets one line
    return _exec(cmd, env, args.dry_run)


# ----------------------------------------------------------------- run
def _run_config(args):
    from fedsim.cli.common import training_config

    net = _network(args)
    cfg = training_config(args, args.topology_spec, round_timeout=args.round_timeout)
    check_task_options(cfg.task, cfg.task_options, getattr(args, "silos", None) or net.n_silos)
    if args.max_failed_rounds is not None:
        cfg.max_failed_rounds = args.max_failed_rounds
    elif args.min_silos:  # with a silo minimum, failures alone never stop the run
        cfg.max_failed_rounds = cfg.rounds + 1
    cfg.validate()
    check_positive("--poll", args.poll)
    check_positive("--timeout", args.timeout)
    if args.min_silos and not 1 <= args.min_silos <= net.n_silos:
        raise FedsimError(f"--min-silos must be within 1..{net.n_silos}, got {args.min_silos}")
    return cfg, net


def _network_spec(args) -> None:
    """Absolute path for a GML network (the ServerApp may run elsewhere)."""
    spec = args.topology
    if spec and spec.lower().endswith(".gml") and Path(spec).exists():
        spec = str(Path(spec).resolve())
    args.topology_spec = spec


def _resumed(args):
    """``(cfg, net, out)`` of ``--resume RUN_DIR`` (its own config; ``--rounds`` and the silo
    minimum it ran with unless given again), or ``None``."""
    if not args.resume:
        return None
    from fedsim.cli.common import resumed_config
    from fedsim.topologies.networks import load_network

    from fedsim.cli.common import resume_dir

    if getattr(args, "overwrite", False):
        raise FedsimError("--resume continues a run and --overwrite replaces it: give one of them")
    out = resume_dir(args.resume).resolve()
    cfg = resumed_config(args, out)
    if not args.min_silos and (out / "deploy" / "serverapp.json").exists():
        args.min_silos = json.loads((out / "deploy" / "serverapp.json").read_text()).get("min_silos") or 0
    return cfg, load_network(cfg.network), out


def cmd_run(args) -> int:
    from fedsim.deploy import appdir, commands
    from fedsim.deploy.local import SuperLinkClient, _json_out
    from fedsim.deploy.serverapp import prepare_resume

    commands.check_address(args.superlink)
    if not args.insecure and not args.root_certificates:
        raise FedsimError("TLS is on: give --root-certificates CA.crt (or --insecure, not recommended)")
    if args.root_certificates:  # flwr run reads it from its own FLWR_HOME: an absolute path
        args.root_certificates = str(Path(args.root_certificates).resolve())
    resumed = _resumed(args)
    if resumed:
        cfg, net, out = resumed
    else:
        if not args.topology:
            raise FedsimError("give the network with --topology NAME (built-in, zoo:NAME or .gml), "
                              "or --resume RUN_DIR")
        _network_spec(args)
        cfg, net = _run_config(args)
        out = Path(args.out or f"runs/deploy-{net.name}-{cfg.strategy}-{cfg.task}-s{cfg.seed}").resolve()
        if holds_run(out) and not args.overwrite:
            raise FedsimError(f"{out} already holds a run; use --resume {out}, another --out or --overwrite")
        for name in ("trace.jsonl", "phases.jsonl"):  # progress is read from these
            (out / "deploy" / name).unlink(missing_ok=True)
    _warn_insecure(args)  # after every check: a mistake gets one line
    (out / "deploy" / "serverapp.json").unlink(missing_ok=True)
    skip = prepare_resume(out) if resumed else 0
    work = Path(args.workdir).resolve() if args.workdir else out / "deploy"
    home = work / "flwr-home"
    appdir.write_connection(home, RUN_CONNECTION, args.superlink, root_cert=args.root_certificates,
                            insecure=args.insecure)
    app = appdir.write_app(work / "app", cfg, out, args.poll, args.min_silos or 0, args.pull_backoff,
                           resume=bool(resumed))
    cmd = commands.run_command(app, RUN_CONNECTION)
    env = commands.deployment_env(home)
    print(commands.shell_line(cmd, env), flush=True)
    print(f"the ServerApp writes the run directory {out} on the SuperLink's machine")
    if args.dry_run:
        return 0
    res = subprocess.run(cmd, env=commands.process_env(env), capture_output=True, text=True, timeout=300)
    try:
        run_id = int(_json_out(res.stdout)["run-id"])
    except (ValueError, KeyError, TypeError):
        raise FedsimError("`flwr run` failed: " + (res.stdout + res.stderr).strip()[-800:]) from None
    print(f"run {run_id} started")
    if not args.follow:
        return 0
    client = SuperLinkClient(args.superlink, None if args.insecure else Path(args.root_certificates),
                             args.insecure, env)
    outcome = client.follow(run_id, out, cfg.rounds, timeout=args.timeout,
                            skip=skip)
    return _report(outcome, out)


def _report(outcome: dict, out: Path) -> int:
    server = outcome.get("serverapp", {})
    status = server.get("status") or outcome.get("sub_status")
    s = server.get("summary")
    if s:
        from fedsim.cli.common import print_summary

        print_summary(s, wall="measured")
    if server.get("lost"):
        print(f"  lost silos (silo: round): {server['lost']}")
    try:  # as the user would type it, when it is below the current folder
        shown = out.relative_to(Path.cwd())
    except ValueError:
        shown = out
    print(f"  run directory: {shown}")
    if status == "completed":
        return 0
    msg = server.get("message") or outcome.get("details") or "see the SuperLink log"
    print(f"fedsim: run {status}: {msg}", file=sys.stderr)
    return 1


# ----------------------------------------------------------------- local
def _local_network(args, work: Path) -> str:
    """The network spec: --topology, or its first --silos silos fully connected (a GML file)."""
    if not args.silos:
        return args.topology_spec
    from fedsim.topologies.networks import first_silos_gml

    return first_silos_gml(args.topology_spec, args.silos, work)


def cmd_local(args) -> int:
    import signal

    from fedsim.deploy.local import Speed, run_local

    auth_dropped = args.insecure and not args.no_auth
    if args.insecure:
        args.no_auth = True  # SuperNode authentication needs TLS
    resumed = _resumed(args)
    if resumed:
        cfg, net, out = resumed
    else:
        args.topology = args.topology or "gaia"
        _network_spec(args)
        out = Path(args.out or f"runs/local-{Path(args.topology_spec).stem}"
                   f"{'-' + str(args.silos) if args.silos else ''}-{args.strategy}-{args.task}").resolve()
        if holds_run(out) and not args.overwrite:
            raise FedsimError(f"{out} already holds a run; use --resume {out}, another --out or --overwrite")
        check_silos(_network(args), args.silos)
        if args.silos and args.min_silos and args.min_silos > args.silos:
            raise FedsimError(f"--min-silos must be within 1..{args.silos} (--silos), got {args.min_silos}")
        _run_config(args)  # every flag checked on the whole network before anything is written
        from fedsim.cli.common import RUN_FILES

        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "deploy" / "silo-state", ignore_errors=True)  # the silos' kept parameters
        args.topology_spec = _local_network(args, out / "deploy")
        args.topology = args.topology_spec
        cfg, net = _run_config(args)
    speed = Speed.preset(args.speed)
    _warn_insecure(args)  # after every check: a mistake gets one line
    if auth_dropped:
        print("(--insecure: SuperNode authentication needs TLS, so it is off too)", file=sys.stderr)

    def _term(signum, frame):  # teardown runs in run_local's finally
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited as ignored
    try:
        print(f"local deployment: {net.n_silos} silos of {net.name}, strategy {cfg.strategy}, "
              f"task {cfg.task}, {cfg.rounds} rounds")
        outcome = run_local(cfg, out, insecure=args.insecure, auth=not args.no_auth, speed=speed,
                            min_silos=args.min_silos or 0, timeout=args.timeout, resume=bool(resumed))
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    print(f"all processes stopped ({outcome.get('wall_s', float('nan')):.1f} s in total)")
    return _report(outcome, out)


# ----------------------------------------------------------------- parser
def _add_tls_client(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root-certificates", type=existing_file, metavar="CA.crt",
                   help="CA certificate that signed the SuperLink's")
    p.add_argument("--insecure", action="store_true", help="no TLS (prints a warning; not for real data)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    from fedsim.cli.common import add_training_flags

    add_training_flags(p)
    p.add_argument("--out", type=out_dir, help="run directory (on the SuperLink's machine)")
    g = p.add_argument_group("faults")
    g.add_argument("--round-timeout", type=positive_float, default=120.0,
                   help="seconds a round waits for replies (default 120)")
    g.add_argument("--min-silos", type=int_in(0), default=0,
                   help="complete rounds with the silos that answered; stop below this many (default 0: "
                        "any failure counts towards --max-failed-rounds, as in simulation)")
    g.add_argument("--max-failed-rounds", type=int_in(1),
                   help="stop after this many rounds with a failed silo (default 1; with --min-silos: never)")
    p.add_argument("--poll", type=positive_float, default=0.05,
                   help="seconds between reply polls of the round loop (default 0.05)")
    p.add_argument("--pull-backoff", type=nonneg_float, default=0.02,
                   help="first retry (s) of a reply object not uploaded yet (0: Flower's 1 s)")
    p.add_argument("--timeout", type=positive_float, default=3600,
                   help="give up following the run after this many s (default 3600)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``deploy {certs,keys,superlink,supernode,run,local}`` on a subparsers object."""
    d = subparsers.add_parser("deploy", help="run on Flower's deployment engine (SuperLink/SuperNodes)",
                              description="Deploy on Flower's deployment engine. TLS and SuperNode "
                                          "authentication are on by default.")
    sub = d.add_subparsers(dest="deploy_command", required=True, metavar="STEP")

    p = sub.add_parser("certs", help="CA + SuperLink certificate and key (cryptography, no openssl)")
    p.add_argument("--out", type=out_dir, required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument("--hosts", default="localhost,127.0.0.1",
                   help="comma list of names/IPs the SuperLink is reached at (default %(default)s)")
    p.add_argument("--days", type=int_in(1, 36500), default=365,
                   help="days the certificates are valid (1..36500; default %(default)s)")
    p.add_argument("--topology", help="also one peer certificate per silo of this network (silo-N.pem/.key in "
                                      "OUT/silos/), the identities of the peer data plane")
    p.add_argument("--overwrite", action="store_true", help="replace certificates already in --out")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("keys", help="SuperNode authentication key pairs, and how to register them")
    p.add_argument("--nodes", type=int_in(1), help="number of key pairs (silo-0 ...)")
    p.add_argument("--topology", help="one key pair per silo of this network, named after the silo")
    p.add_argument("--out", type=out_dir, required=True, help="folder for the key pairs")
    p.add_argument("--connection", default="fedsim", help="SuperLink connection name in the printed commands")
    p.add_argument("--overwrite", action="store_true", help="replace key pairs already in --out")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("superlink", help="print and run the flower-superlink command and its Fleet-only gateway")
    p.add_argument("--certs", type=existing_dir, help="folder from `fedsim deploy certs`")
    p.add_argument("--ssl-ca-certfile", type=existing_file, help="CA certificate (instead of --certs)")
    p.add_argument("--ssl-certfile", type=existing_file, help="SuperLink certificate (instead of --certs)")
    p.add_argument("--ssl-keyfile", type=existing_file, help="SuperLink private key (instead of --certs)")
    p.add_argument("--insecure", action="store_true", help="no TLS (prints a warning; implies --no-auth)")
    p.add_argument("--no-auth", action="store_true", help="accept any SuperNode (no authentication)")
    p.add_argument("--host", default="0.0.0.0", help="address SuperNodes reach (default %(default)s)")
    p.add_argument("--port", type=port, default=9092, help="Fleet API port, 1..65535 (default %(default)s)")
    p.add_argument("--control-port", type=port, default=9093,
                   help="the SuperLink's own port on 127.0.0.1 (Control API: flwr run/ls/stop, "
                        "supernode register); default %(default)s")
    p.add_argument("--no-gateway", action="store_true",
                   help="no Fleet-only gateway: every API on --host:--port, as flower-superlink alone "
                        "(anyone with the CA certificate can then submit runs)")
    p.add_argument("--database", type=out_file(), help="SQLite file for the SuperLink's state (default: in memory)")
    p.add_argument("--flwr-home", type=out_dir, default="flwr-home",
                   help="FLWR_HOME of the SuperLink (default ./flwr-home)")
    p.add_argument("--superexec-poll", type=positive_float, default=0.1,
                   help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL in s (Flower default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_superlink)

    p = sub.add_parser("supernode", help="print and run the flower-supernode command of one silo")
    p.add_argument("--silo", required=True, help="silo name or index in the network")
    p.add_argument("--superlink", type=host_port, required=True, metavar="HOST:PORT",
                   help="the SuperLink's Fleet API address")
    p.add_argument("--topology", required=True, help=f"the network (fixes silo indices): {NETWORK_HELP}")
    p.add_argument("--task", default="digits", help=f"local task: {', '.join(TASK_NAMES)} (default digits)")
    _add_tls_client(p)
    p.add_argument("--key", type=existing_file, help="this silo's private key (from `fedsim deploy keys`)")
    p.add_argument("--no-auth", action="store_true", help="the SuperLink does not authenticate SuperNodes")
    p.add_argument("--port", type=port, default=9094, help="local Runtime API port of the SuperNode (1..65535)")
    p.add_argument("--flwr-home", type=out_dir, default="flwr-home", help="FLWR_HOME of the SuperNode")
    p.add_argument("--superexec-poll", type=positive_float, default=0.1,
                   help="FLWR_SUPEREXEC_TASK_POLL_INTERVAL in s (Flower default 1)")
    p.add_argument("--fast", action="store_true",
                   help="run through fedsim.deploy.fastnode (short loop waits, warm ClientApps)")
    p.add_argument("--node-poll", type=positive_float, default=0.2, help="with --fast: loop wait cap in s")
    p.add_argument("--state-dir", type=out_dir, help="folder on this silo for parameters that never leave it "
                                       "(so that resumed runs continue with them)")
    g = p.add_argument_group("peer data plane (decentralized strategies)")
    g.add_argument("--peer-port", type=port, default=9300,
                   help="port of this silo's peer server; open it to the other silos (default %(default)s)")
    g.add_argument("--peer-address", type=host_port, metavar="HOST:PORT",
                   help="where the other silos reach this silo's peer server (default: this host's name and "
                        "--peer-port)")
    g.add_argument("--peer-listen", type=host_port, metavar="HOST:PORT",
                   help="address the peer server binds (default 0.0.0.0:PORT)")
    g.add_argument("--peer-cert", type=existing_file,
                   help="this silo's peer certificate (OUT/silos/silo-N.pem of `fedsim deploy "
                        "certs --topology`); the CA is --root-certificates")
    g.add_argument("--peer-key", type=existing_file, help="its private key (OUT/silos/silo-N.key)")
    p.add_argument("--dry-run", action="store_true", help="print the command only")
    p.set_defaults(func=cmd_supernode)

    p = sub.add_parser("run", help="submit a training run to a SuperLink (flwr run)")
    p.add_argument("--superlink", type=host_port, required=True, metavar="HOST:PORT",
                   help="the SuperLink's Control API address")
    p.add_argument("--topology", help=f"the network: {NETWORK_HELP}")
    _add_tls_client(p)
    _add_run_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--workdir", type=out_dir,
                   help="local folder for the app and the CLI's FLWR_HOME (default OUT/deploy)")
    p.add_argument("--no-follow", dest="follow", action="store_false", help="return after submitting")
    p.add_argument("--dry-run", action="store_true", help="print the flwr run command only")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("local", help="SuperLink + N SuperNodes on localhost (TLS, auth): run, tear down")
    p.add_argument("--silos", type=int_in(2), help="use the first N silos of --topology, fully connected (N >= 2)")
    p.add_argument("--topology", help=f"the network (default gaia): {NETWORK_HELP}")
    p.add_argument("--insecure", action="store_true", help="no TLS (prints a warning; implies --no-auth)")
    p.add_argument("--no-auth", action="store_true", help="SuperNodes are not authenticated")
    p.add_argument("--speed", default="fedsim", choices=("fedsim", "supported", "flower"),
                   help="polling settings (default fedsim; 'flower' = Flower's defaults)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_run_flags(p)
    p.set_defaults(func=cmd_local)
    return d
