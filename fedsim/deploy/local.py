"""A SuperLink and N SuperNodes on this machine: ``fedsim deploy local``.

Everything runs on 127.0.0.1 with TLS and SuperNode authentication (unless
turned off); as in ``fedsim deploy superlink``, SuperNodes reach the SuperLink
through the Fleet-only gateway (:mod:`fedsim.deploy.gateway`) and the Control
API is on the SuperLink's own port. A watchdog (:class:`fedsim.guard.Watchdog`)
ends every process if ``fedsim deploy local`` itself is killed. The workspace
is ``RUN/deploy``::

    RUN/deploy/certs/      CA + SuperLink certificate (fedsim deploy certs)
    RUN/deploy/keys/       one key pair per silo (fedsim deploy keys)
    RUN/deploy/flwr-home/  FLWR_HOME of every process (config.toml: the connection)
    RUN/deploy/app/        the app folder submitted with ``flwr run``
    RUN/deploy/logs/       one log per process
    RUN/deploy/commands.sh the exact command lines that were run
    RUN/deploy/deploy.json ports, settings, timings, outcome

The run directory itself (``RUN/config.json``, ``rounds.csv``, ...) is the
one ``fedsim run`` writes, filled by the ServerApp that the SuperLink starts.
:class:`LocalCluster` starts, submits, follows and tears down; every process
is stopped by PID (:class:`~fedsim.deploy.procs.ProcessSet`), also on
failure and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedsim.apps.config import RunConfig
from fedsim.deploy import appdir, certs, commands, keys
from fedsim.deploy.procs import ProcessSet, free_port, listening_port
from fedsim.deploy.status import settle
from fedsim.errors import FedsimError
from fedsim.guard import Watchdog
from fedsim.io import atomic_write_text

CONNECTION = "fedsim-local"


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def _json_out(text: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in output")
    return json.JSONDecoder().raw_decode(text[start:])[0]


@dataclass
class Speed:
    """Polling settings of a deployment (seconds; ``None``: Flower's default).

    ``grid_poll_s``: how often the ServerApp asks for replies (Flower's
    ``send_and_receive``: 3 s). ``superexec_poll_s``: Flower's supported
    ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (1 s). ``node_poll_s``: cap on the
    SuperNode loop's fixed 3 s / 0.5 s waits via :mod:`fedsim.deploy.fastnode`
    (``None``: plain ``flower-supernode``). ``warm_clientapp``: fork ClientApp
    processes from a warm template (:mod:`fedsim.deploy.warmexec`; needs
    ``node_poll_s``). ``pull_backoff_s``: first retry of an object that is not
    uploaded yet, in the ServerApp and (with ``node_poll_s``) the SuperNodes
    (``None``: Flower's 1 s).

    Shorter waits cost CPU even when idle (every poll is an HTTPS request; on
    localhost with 3 SuperNodes, 0.1 s / 0.2 s polls keep about a quarter of
    a core busy, 0.05 s / 0.1 s about half a core), so the defaults stop at
    what keeps the polling part of a phase well under a second.
    """

    grid_poll_s: float = 0.05
    superexec_poll_s: float | None = 0.1
    node_poll_s: float | None = 0.2
    warm_clientapp: bool = True
    pull_backoff_s: float | None = 0.02

    @classmethod
    def preset(cls, name: str) -> Speed:
        if name == "fedsim":
            return cls()
        if name == "flower":  # Flower 1.42 as shipped
            return cls(grid_poll_s=3.0, superexec_poll_s=None, node_poll_s=None, warm_clientapp=False,
                       pull_backoff_s=None)
        if name == "supported":  # only settings Flower documents/exposes
            return cls(grid_poll_s=0.05, superexec_poll_s=0.1, node_poll_s=None, warm_clientapp=False,
                       pull_backoff_s=None)
        raise FedsimError(f"unknown speed preset {name!r}; valid: fedsim, supported, flower")


@dataclass
class SiloNode:
    index: int
    name: str
    key: keys.NodeKey | None
    runtime_port: int
    superlink: str  # the address this SuperNode dials (a link emulator's, with --wan)
    peer_port: int = 0  # where its peer data plane server listens (127.0.0.1)


class SuperLinkClient:
    """The operator's side of a SuperLink: its Control API, run status and progress.

    Parameters
    ----------
    address : str
        ``HOST:PORT`` of the SuperLink.
    ca_cert : path or None
        CA certificate that signed the SuperLink's (``None`` with ``insecure``).
    env : dict
        Environment of the ``flwr`` CLI (``FLWR_HOME`` ...).
    """

    def __init__(self, address: str, ca_cert=None, insecure: bool = False, env: dict | None = None,
                 verbose: bool = True) -> None:
        self.address = address
        self.ca_cert = ca_cert
        self.insecure = insecure
        self.env = dict(env or {})
        self.verbose = verbose
        self.timings: dict[str, float] = {}
        self.alive = lambda: True  # the local cluster checks its SuperLink process here

    def say(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def control(self):
        """A Control API client for this SuperLink (the ``flwr`` CLI's own), made once."""
        if getattr(self, "_control", None) is None:
            import contextlib
            import io

            for k in ("FLWR_HOME", "FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_UPDATE_CHECK"):
                if k in self.env:  # the client keeps its credential store under FLWR_HOME
                    os.environ[k] = self.env[k]
            from fedsim.flower_compat import control_client

            self._control = control_client(self.address, self.ca_cert, self.insecure, name=CONNECTION)
        return self._control

    def close(self) -> None:
        if getattr(self, "_control", None) is not None:
            self._control.close()
            self._control = None

    def node_status(self) -> list[dict]:
        """Nodes the SuperLink knows (``flwr supernode list``)."""
        from fedsim.flower_compat import list_nodes

        return list_nodes(self.control())

    def run_status(self, run_id: int):
        from fedsim.flower_compat import run_status

        return run_status(self.control(), run_id)

    def stop_run(self, run_id: int) -> bool:
        """Stop a run (``flwr stop``); its ServerApp ends at its next exchange with the SuperLink."""
        from fedsim.flower_compat import stop_run

        return stop_run(self.control(), run_id)

    def follow(self, run_id: int, out: Path, rounds: int, timeout: float = 3600,
               on_trace=None, skip: int = 0) -> dict:
        """Print progress until the run finishes (bounded by ``timeout``); returns its outcome.

        ``skip``: trace lines already there before the run (a resumed run's earlier rounds).
        """
        out = Path(out).resolve()
        trace = out / "deploy" / "trace.jsonl"
        self.metric, self.run_dir = None, out
        pos, to_skip = 0, skip  # bytes of the trace already read; old lines not to show
        t_submit = time.perf_counter()

        def drain() -> None:  # show the trace's new complete lines
            nonlocal pos, to_skip
            if not trace.exists():
                return
            with open(trace, "rb") as fh:
                fh.seek(pos)
                data = fh.read()
            end = data.rfind(b"\n") + 1
            pos += end
            for line in data[:end].decode().splitlines():
                if to_skip:
                    to_skip -= 1
                    continue
                rec = json.loads(line)
                self.timings.setdefault("first_round_after_submit_s", time.perf_counter() - t_submit)
                if on_trace:
                    on_trace(rec)
                self._progress(rec, rounds)

        deadline = time.monotonic() + timeout
        last_status = 0.0
        run = None
        status_file = out / "deploy" / "serverapp.json"
        while time.monotonic() < deadline:
            try:
                self.alive()
            except FedsimError as exc:  # the SuperLink died, and the ServerApp with it
                drain()
                settle(status_file, "crashed", str(exc).splitlines()[0])
                raise
            drain()
            if time.monotonic() - last_status > 1.0:
                last_status = time.monotonic()
                run = self.run_status(run_id)
                if run.status.status == "finished":
                    break
            time.sleep(0.1)
        else:
            raise FedsimError(f"run {run_id} did not finish within {timeout:.0f} s")
        self.timings["finished_after_submit_s"] = time.perf_counter() - t_submit
        drain()
        server = {}
        if status_file.exists():
            if run.status.sub_status == "stopped":  # stopped by the operator (`flwr stop`)
                server = settle(status_file, "stopped", run.status.details or "stopped by the operator")
            else:  # the run ended and its ServerApp recorded nothing: its process died
                server = settle(status_file, "crashed", "the ServerApp process ended without recording "
                                f"an outcome (SuperLink: {run.status.sub_status or 'no status'} "
                                f"{run.status.details or ''})".rstrip())
            if run.status.sub_status == "stopped" and server.get("status") not in ("completed", "stopped"):
                # what the ServerApp hit next (an expired push session, a run that is no longer
                # running) is a consequence of the operator's stop, not the outcome
                server = dict(server, status="stopped")
                atomic_write_text(status_file, json.dumps(server, indent=2, default=str))
        return {"run_id": run_id, "status": run.status.status, "sub_status": run.status.sub_status,
                "details": run.status.details, "bytes_sent": run.bytes_sent, "bytes_recv": run.bytes_recv,
                "clientapp_runtime_s": run.clientapp_runtime, "serverapp": server}

    def _progress(self, rec: dict, rounds: int) -> None:
        if self.metric is None:  # the run's config.json is written before its first trace line
            from fedsim.apps.config import RunConfig
            from fedsim.clients import get_task

            cfg = RunConfig.from_file(self.run_dir / "config.json")
            self.metric = get_task(cfg.task, cfg.task_options).metric
        k = rec["round"]
        train = rec["train"]
        fails = ",".join(sorted(rec["failed"])) or "-"
        metric = sorted({key for m in train.values() for key in m
                         if key.startswith("eval_") and key not in ("eval_loss", "eval_n")})
        if self.metric and f"eval_{self.metric}" in metric:  # the task's headline metric first
            metric.insert(0, f"eval_{self.metric}")
        mean_metric = _mean([m.get(metric[0]) for m in train.values()]) if metric else float("nan")
        label = metric[0][5:] if metric else "metric"
        phase = rec.get("phase_s")
        took = f", {phase:.2f} s" if phase is not None else ""
        if k > rounds:
            self.say(f"  final evaluation: {len(train)} silos, mean {label} {mean_metric:.4f}{took}")
            return
        self.say(f"  round {k}/{rounds}: {len(train)} silos answered{took}, mean train loss "
                 f"{_mean([m.get('train_loss') for m in train.values()]):.4f}, {label} before "
                 f"training {mean_metric:.4f}, failed: {fails}")



@dataclass
class LocalCluster:
    """One local deployment: SuperLink, SuperNodes, CLI connection, processes.

    Parameters
    ----------
    workspace : path
        ``RUN/deploy``.
    network : str
        fixes the silos (their names, count and indices).
    task : str
        written into each SuperNode's node config.
    insecure, auth : bool
        TLS (default on) and SuperNode authentication (default on).
    speed : Speed
        polling settings.
    links : dict, optional
        ``silo -> (host, port)`` the SuperNode of that silo dials instead of
        the SuperLink (a link emulator in front of it).
    gateway : bool
        SuperNodes reach the SuperLink through :mod:`fedsim.deploy.gateway`
        (Fleet API only) on its own port; the SuperLink's port (Control API)
        is the operator's. ``False``: they dial the SuperLink's port.
    """

    workspace: Path
    network: str
    task: str = "digits"
    insecure: bool = False
    auth: bool = True
    speed: Speed = field(default_factory=Speed)
    links: dict | None = None
    verbose: bool = True
    gateway: bool = True

    def __post_init__(self) -> None:
        from fedsim.topologies.networks import load_network

        if self.insecure and self.auth:
            raise FedsimError("SuperNode authentication needs TLS: with --insecure add --no-auth")
        self.workspace = Path(self.workspace).resolve()
        self.net = load_network(self.network)
        self.procs = ProcessSet(self.workspace / "logs")
        self.silo_certs: list | None = None
        self.home = self.workspace / "flwr-home"
        self.env = commands.deployment_env(self.home, self.speed.superexec_poll_s)
        if self.speed.node_poll_s is not None:
            from fedsim.deploy.fastnode import node_env

            self.env |= node_env(self.speed.node_poll_s, self.task, self.speed.warm_clientapp,
                                 self.speed.pull_backoff_s)
        self.run_env = commands.process_env(self.env)  # not printed in commands.sh
        self.port = 0  # the SuperLink's own port: Control, Runtime and Fleet APIs
        self.fleet_port = 0  # what SuperNodes dial: the gateway's port (the SuperLink's without it)
        self.nodes: list[SiloNode] = []
        self.cert_paths: certs.CertPaths | None = None
        self.lines: list[str] = []
        self.timings: dict[str, float] = {}
        self.client: SuperLinkClient | None = None

    # -- helpers -----------------------------------------------------------------
    @property
    def address(self) -> str:
        """The SuperLink's own address (the operator's: Control API)."""
        return f"127.0.0.1:{self.port}"

    @property
    def fleet_address(self) -> str:
        """The address SuperNodes dial (the gateway's, which passes the Fleet API only)."""
        return f"127.0.0.1:{self.fleet_port}"

    def say(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def _record(self, cmd: list[str]) -> None:
        self.lines.append(commands.shell_line(cmd))
        exports = [f"export {commands.shell_line([], {k: v})}" for k, v in self.env.items()]
        atomic_write_text(self.workspace / "commands.sh",
                          "#!/bin/sh\n# The commands this deployment ran, in order (each long-running one\n"
                          "# was started in the background).\n" + "\n".join(exports + self.lines) + "\n")

    def _cli(self, cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        self._record(cmd)
        try:
            return subprocess.run(cmd, env=self.run_env, cwd=self.workspace, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FedsimError(f"`{' '.join(cmd[:3])}` did not finish within {timeout:.0f} s") from None

    # -- start -------------------------------------------------------------------
    def start(self, port: int | None = None, ready_timeout: float = 90) -> LocalCluster:
        """Certificates, keys, SuperLink, gateway, node registration, SuperNodes.

        ``port``: the Fleet port SuperNodes dial (the gateway's; the SuperLink's without the gateway).
        """
        t0 = time.perf_counter()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        names = list(self.net.silos)
        if not self.insecure:
            self.cert_paths = certs.generate_certificates(self.workspace / "certs", overwrite=True)
        node_keys = keys.generate_node_keys(self.workspace / "keys", names=names, overwrite=True) \
            if self.auth else [None] * len(names)
        self.silo_certs = (certs.generate_silo_certificates(self.workspace / "certs", names, overwrite=True)
                           if not self.insecure else None)
        if self.gateway:
            self.fleet_port = port or free_port()
            self.port = free_port()
            while self.port == self.fleet_port:
                self.port = free_port()
        else:
            self.port = self.fleet_port = port or free_port()
        cp = self.cert_paths
        cmd = commands.superlink_command(
            host="127.0.0.1", port=self.port, insecure=self.insecure, auth=self.auth,
            ca_cert=cp and cp.ca_cert, server_cert=cp and cp.server_cert, server_key=cp and cp.server_key)
        self._record(cmd)
        self.procs.start("superlink", cmd, self.run_env, cwd=self.workspace)
        self.say(f"SuperLink starting on {self.address} ({'TLS' if not self.insecure else 'NO TLS'}"
                 f"{', SuperNode authentication' if self.auth else ''})"
                 + (f"; SuperNodes dial the Fleet-only gateway on {self.fleet_address}" if self.gateway else ""))
        self.wait_superlink(ready_timeout)
        if self.gateway:
            from fedsim.deploy.gateway import gateway_command, wait_listening

            gw = gateway_command(self.fleet_address, self.address, cp and cp.server_cert, cp and cp.server_key,
                                 cp and cp.ca_cert, insecure=self.insecure)
            self._record(gw)
            proc = self.procs.start("gateway", gw, self.run_env, cwd=self.workspace)
            try:
                wait_listening("127.0.0.1", self.fleet_port, proc, ready_timeout, "the Fleet gateway")
            except FedsimError as exc:
                raise FedsimError(f"{exc}:\n{self.procs.tail('gateway')}") from None
        self.timings["superlink_ready_s"] = time.perf_counter() - t0
        appdir.write_connection(self.home, CONNECTION, self.address,
                                root_cert=cp.ca_cert if cp else None, insecure=self.insecure)
        self.client = SuperLinkClient(self.address, cp.ca_cert if cp else None, self.insecure, self.env,
                                      self.verbose)
        self.client.alive = self._check_superlink
        self.client.timings = self.timings
        if self.auth:
            self.register([k.public for k in node_keys])
        self.timings["registered_s"] = time.perf_counter() - t0
        for i, (name, k) in enumerate(zip(names, node_keys)):
            dial = self.fleet_address
            if self.links and i in self.links:
                dial = "%s:%d" % tuple(self.links[i])
            peer_port = listening_port(taken={n.peer_port for n in self.nodes})  # bound only during runs
            node = SiloNode(i, name, k, free_port(), dial, peer_port)
            self.nodes.append(node)
            self.start_node(node)
        self.wait_nodes(len(names), ready_timeout)
        self.timings["nodes_ready_s"] = time.perf_counter() - t0
        self.say(f"{len(names)} SuperNodes connected ({self.timings['nodes_ready_s']:.1f} s)")
        return self

    def node_command(self, node: SiloNode, **overrides) -> list[str]:
        kw = dict(superlink=node.superlink, silo=node.index, n_silos=self.net.n_silos, name=node.name,
                  task=self.task, root_cert=self.cert_paths.ca_cert if self.cert_paths else None,
                  private_key=node.key.private if node.key else None, insecure=self.insecure,
                  runtime_port=node.runtime_port, fast=self.speed.node_poll_s is not None,
                  state_dir=self.workspace / "silo-state" / f"silo-{node.index}", peer=self.peer_config(node))
        kw.update(overrides)
        return commands.supernode_command(**kw)

    def peer_config(self, node: SiloNode) -> dict:
        """The silo's peer data plane settings: its own port on 127.0.0.1 and, with TLS, its certificate."""
        if not node.peer_port:  # a node without a peer server (e.g. one that only tests admission)
            return {}
        addr = f"127.0.0.1:{node.peer_port}"
        tls = {}
        if self.silo_certs is not None:
            cert, key = self.silo_certs[node.index]
            tls = {"cert": cert, "key": key, "ca": self.cert_paths.ca_cert}
        return commands.peer_settings(node.peer_port, addr, listen=addr, **tls)

    def start_node(self, node: SiloNode, name: str | None = None, **overrides):
        cmd = self.node_command(node, **overrides)
        self._record(cmd)
        return self.procs.start(name or f"supernode-{node.index}", cmd, self.run_env, cwd=self.workspace)

    def register(self, public_keys: list[Path], timeout: float = 120) -> list[int]:
        """``flwr supernode register`` each key (the commands run side by side)."""
        running = []
        for key in public_keys:
            cmd = commands.register_command(key, CONNECTION)
            self._record(cmd)
            running.append((key, subprocess.Popen(cmd, env=self.run_env, cwd=self.workspace, text=True,
                                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
        ids = []
        for key, proc in running:
            try:
                text = proc.communicate(timeout=timeout)[0]
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise FedsimError(f"registering {key.name} did not finish within {timeout:.0f} s") from None
            try:
                ids.append(int(_json_out(text)["node-id"]))
            except (ValueError, KeyError, TypeError):
                raise FedsimError(f"registering {key.name} failed: {text.strip()[-500:]}") from None
        return ids

    def wait_superlink(self, timeout: float) -> None:
        """Until the SuperLink accepts (TLS) connections, bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        ctx = None
        if not self.insecure:
            ctx = ssl.create_default_context(cafile=str(self.cert_paths.ca_cert))
        while time.monotonic() < deadline:
            if not self.procs.alive("superlink"):
                raise FedsimError("the SuperLink exited while starting:\n" + self.procs.tail("superlink"))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if ctx is not None:
                        with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
                            pass
                return
            except OSError:
                time.sleep(0.1)
        raise FedsimError(f"the SuperLink did not accept connections within {timeout:.0f} s:\n"
                          + self.procs.tail("superlink"))

    def wait_nodes(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not self.procs.alive(f"supernode-{node.index}"):
                    raise FedsimError(f"SuperNode of silo {node.index} ({node.name}) exited:\n"
                                      + self.procs.tail(f"supernode-{node.index}"))
            online = [x for x in self.client.node_status() if x["status"] == "online"]
            if len(online) >= n:
                return
            time.sleep(0.25)
        raise FedsimError(f"only some SuperNodes connected within {timeout:.0f} s; see {self.procs.log_dir}")

    def _check_superlink(self) -> None:
        if not self.procs.alive("superlink"):
            raise FedsimError("the SuperLink exited during the run:\n" + self.procs.tail("superlink"))
        if self.gateway and not self.procs.alive("gateway"):
            raise FedsimError("the Fleet gateway exited during the run:\n" + self.procs.tail("gateway"))

    # -- runs -----------------------------------------------------------------------
    def submit(self, cfg: RunConfig, out: Path, min_silos: int = 0, resume: bool = False,
               peer_links: dict | None = None) -> int:
        """Write the app folder and ``flwr run`` it; returns the run id."""
        out = Path(out).resolve()
        # progress is read from these; a resumed run appends to its trace
        for name in ("serverapp.json",) if resume else ("trace.jsonl", "phases.jsonl", "serverapp.json"):
            (out / "deploy" / name).unlink(missing_ok=True)
        app = appdir.write_app(self.workspace / "app", cfg, out, self.speed.grid_poll_s, min_silos,
                               self.speed.pull_backoff_s or 0.0, resume=resume, peer_links=peer_links)
        res = self._cli(commands.run_command(app, CONNECTION))
        try:
            run_id = int(_json_out(res.stdout)["run-id"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise FedsimError("`flwr run` failed: " + (res.stdout + res.stderr).strip()[-800:]) from None
        self.say(f"run {run_id} submitted")
        return run_id


    # -- teardown ----------------------------------------------------------------------
    def stop(self, grace: float = 3.0) -> None:
        """Stop every process (SIGTERM, ``grace`` s, SIGKILL)."""
        t0 = time.perf_counter()
        if self.client is not None:
            self.client.close()
        self.procs.stop(grace=grace)
        self.timings["teardown_s"] = time.perf_counter() - t0
        left = self.procs.leftovers()
        if left:
            print(f"warning: processes still alive after teardown: {left}", file=sys.stderr)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> dict:
        return {"superlink": self.address, "fleet": self.fleet_address, "gateway": self.gateway,
                "tls": not self.insecure, "auth": self.auth,
                "speed": asdict(self.speed), "nodes": [{"silo": n.index, "name": n.name,
                                                        "dials": n.superlink, "runtime_port": n.runtime_port}
                                                       for n in self.nodes],
                "timings": self.timings, "commands": self.lines}


def run_local(cfg: RunConfig, out: Path, *, insecure: bool = False, auth: bool = True,
              speed: Speed | None = None, min_silos: int = 0, timeout: float = 3600,
              verbose: bool = True, resume: bool = False, gateway: bool = True) -> dict:
    """Start a local deployment, run ``cfg`` on it, tear it down; returns the outcome.

    ``resume``: continue the run in ``out`` from its last checkpoint. ``gateway``: SuperNodes
    dial the Fleet-only gateway (default) instead of the SuperLink's own port.
    """
    from fedsim.deploy.serverapp import prepare_resume

    out = Path(out).resolve()
    status_file = out / "deploy" / "serverapp.json"
    # Ends every process of this deployment if this one dies (even by SIGKILL) and then records
    # that the run crashed; started first, so that every process inherits its tag.
    watchdog = Watchdog(after_death=[[sys.executable, "-m", "fedsim.deploy.status", str(status_file),
                                      "crashed", "fedsim deploy local was killed"]]).start()
    t0 = time.perf_counter()
    outcome: dict = {}
    ended = ("crashed", "the deployment failed")
    cluster = None
    try:
        cluster = LocalCluster(out / "deploy", cfg.network, cfg.task, insecure=insecure, auth=auth,
                               speed=speed or Speed(), verbose=verbose, gateway=gateway)
        cluster.start()
        skip = prepare_resume(out) if resume else 0
        run_id = cluster.submit(cfg, out, min_silos, resume=resume)
        outcome = cluster.client.follow(run_id, out, cfg.rounds, timeout, skip=skip)
    except KeyboardInterrupt:
        ended = ("stopped", "interrupted (Ctrl-C)")
        raise
    except FedsimError as exc:
        ended = ("stopped" if "did not finish within" in str(exc) else "crashed", str(exc).splitlines()[0])
        raise
    finally:
        try:
            if cluster is not None:
                cluster.stop(grace=1.0 if ended[0] == "stopped" else 3.0)
        finally:
            watchdog.stop()
        settle(status_file, *ended)  # only if the ServerApp could not record its outcome
        if cluster is not None:
            outcome["wall_s"] = time.perf_counter() - t0
            outcome["leftover_pids"] = cluster.procs.leftovers()
            record = cluster.describe() | {"outcome": outcome}
            atomic_write_text(out / "deploy" / "deploy.json", json.dumps(record, indent=2, default=str))
    return outcome
