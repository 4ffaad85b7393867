"""The exact Flower command lines of a fedsim deployment.

Each builder returns an argv list that a silo operator could also type by
hand; :func:`shell_line` renders it (with its environment) for printing. The
commands are Flower 1.42's own (``flower-superlink``, ``flower-supernode``,
``flwr``); fedsim only chooses their arguments:

* TLS is on unless ``insecure=True``: the SuperLink gets ``--ssl-ca-certfile``,
  ``--ssl-certfile`` and ``--ssl-keyfile``; SuperNodes and the CLI verify it
  with ``--root-certificates``/``root-certificates`` = the CA certificate.
* SuperNode authentication is on unless ``auth=False``: the SuperLink runs
  with ``--enable-supernode-auth`` (Flower requires TLS for it) and each
  SuperNode signs its requests with ``--auth-supernode-private-key``.
* A SuperNode's silo is its ``--node-config``: ``partition-id`` (the silo's
  index in the network, which the ClientApp reads), ``num-partitions``,
  ``silo-name`` and ``task``.
* Runtime dependency installation is off (``--disable-runtime-dependency-
  installation`` on the SuperLink; SuperNodes default to off).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedsim.errors import FedsimError

#: Environment every process of a deployment gets: no telemetry, no update
#: check, no runtime dependency installation.
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}

#: Flower 1.42's supported knob for how often a SuperExec asks for new
#: ClientApp/ServerApp tasks (default 1 s, allowed 0.01-60 s).
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


def _bin(name: str) -> str:
    """The console script next to this interpreter (the venv's), else ``name`` on PATH."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else name


def check_address(address: str, what: str = "--superlink") -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Examples
    --------
    >>> check_address("127.0.0.1:9092")
    ('127.0.0.1', 9092)
    >>> check_address("[::1]:9092")
    ('::1', 9092)
    """
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FedsimError(f"{what} expects HOST:PORT (e.g. 127.0.0.1:9092), got {address!r}")
    return host, int(port)


def node_config(silo: int, n_silos: int, name: str | None = None, task: str | None = None,
                state_dir=None, peer: dict | None = None) -> str:
    """The ``--node-config`` value for one silo (TOML values, space separated).

    ``state_dir``: a folder on the silo where the ClientApp keeps the
    parameters that never leave the silo (so that a resumed run continues
    with them).

    Examples
    --------
    >>> node_config(1, 3, "Brussels", "digits")
    'partition-id=1 num-partitions=3 silo-name="Brussels" task="digits"'
    >>> node_config(0, 3, state_dir="/srv/fedsim-state")
    'partition-id=0 num-partitions=3 state-dir="/srv/fedsim-state"'

    ``peer``: the silo's peer data plane settings (see :func:`peer_settings`).

    >>> node_config(0, 3, peer={"peer-port": 9300, "peer-address": "silo0.example.org:9300"})
    'partition-id=0 num-partitions=3 peer-port=9300 peer-address="silo0.example.org:9300"'
    """
    parts = [f"partition-id={int(silo)}", f"num-partitions={int(n_silos)}"]
    if name is not None:
        parts.append(f"silo-name={_toml_str(name)}")
    if task is not None:
        parts.append(f"task={_toml_str(task)}")
    if state_dir is not None:
        parts.append(f"state-dir={_toml_str(str(state_dir))}")
    for key, value in (peer or {}).items():
        parts.append(f"{key}={int(value)}" if isinstance(value, int) else f"{key}={_toml_str(str(value))}")
    return " ".join(parts)


def peer_settings(port: int, address: str, listen: str | None = None, cert=None, key=None, ca=None) -> dict:
    """A silo's peer data plane settings for its ``--node-config``.

    ``port``: where its peer server listens (``0.0.0.0:port`` unless
    ``listen`` says otherwise); ``address``: ``HOST:PORT`` at which the other
    silos reach it; ``cert``/``key``: its peer certificate and key from
    ``fedsim deploy certs --topology ...``; ``ca``: the deployment's CA
    certificate. Without ``cert`` the peer plane runs without TLS.

    Examples
    --------
    >>> sorted(peer_settings(9300, "10.0.0.5:9300", cert="s.pem", key="s.key", ca="ca.crt"))
    ['peer-address', 'peer-ca', 'peer-cert', 'peer-key', 'peer-port']
    """
    check_address(address, "--peer-address")
    if not 0 < int(port) < 65536:
        raise FedsimError(f"--peer-port must be within 1..65535, got {port}")
    out: dict = {"peer-port": int(port), "peer-address": address}
    if listen:
        check_address(listen, "--peer-listen")
        out["peer-listen"] = listen
    if cert or key or ca:
        if not (cert and key and ca):
            raise FedsimError("the peer TLS identity needs all of --peer-cert, --peer-key and the CA certificate")
        out |= {"peer-cert": str(Path(cert).resolve()), "peer-key": str(Path(key).resolve()),
                "peer-ca": str(Path(ca).resolve())}
    return out


def _toml_str(s: str) -> str:
    # Flower's --node-config parser takes "..." up to the next double quote and
    # has no escapes: keep values free of double quotes and backslashes.
    return '"' + s.replace('"', "'").replace("\\", "/") + '"'


def superlink_command(*, host: str = "127.0.0.1", port: int = 9092, ca_cert=None, server_cert=None,
                      server_key=None, insecure: bool = False, auth: bool = True,
                      database: str | None = None) -> list[str]:
    """``flower-superlink`` with TLS and SuperNode authentication (unless turned off)."""
    cmd = [_bin("flower-superlink")]
    if insecure:
        if auth:
            raise FedsimError("SuperNode authentication needs TLS: drop --insecure or add --no-auth")
        cmd.append("--insecure")
    else:
        if not (ca_cert and server_cert and server_key):
            raise FedsimError("TLS needs --certs DIR (from `fedsim deploy certs`) or explicit "
                              "--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile")
        cmd += ["--ssl-ca-certfile", str(ca_cert), "--ssl-certfile", str(server_cert),
                "--ssl-keyfile", str(server_key)]
        if auth:
            cmd.append("--enable-supernode-auth")
    cmd += ["--host", host, "--port", str(int(port)), "--disable-runtime-dependency-installation"]
    if database:
        cmd += ["--database", str(database)]
    return cmd


def supernode_command(*, superlink: str, silo: int, n_silos: int, name: str | None = None,
                      task: str | None = None, root_cert=None, private_key=None,
                      insecure: bool = False, runtime_port: int = 9094,
                      max_wait_time: float | None = None, fast: bool = False, state_dir=None,
                      peer: dict | None = None) -> list[str]:
    """``flower-supernode`` for one silo.

    ``fast=True`` starts the same SuperNode through :mod:`fedsim.deploy.fastnode`
    (``python -m fedsim.deploy.fastnode`` + the same arguments), which shortens
    two fixed waits of Flower 1.42's SuperNode loop for LAN deployments.
    """
    check_address(superlink)
    cmd = [sys.executable, "-m", "fedsim.deploy.fastnode"] if fast else [_bin("flower-supernode")]
    cmd += ["--superlink", superlink]
    if insecure:
        if private_key:
            raise FedsimError("SuperNode authentication needs TLS: drop --insecure or the private key")
        cmd.append("--insecure")
    else:
        if not root_cert:
            raise FedsimError("TLS needs the CA certificate: --root-certificates CA.crt "
                              "(or --insecure, not recommended)")
        cmd += ["--root-certificates", str(root_cert)]
        if private_key:
            cmd += ["--auth-supernode-private-key", str(private_key)]
    cmd += ["--node-config", node_config(silo, n_silos, name, task, state_dir, peer), "--port", str(int(runtime_port))]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", f"{max_wait_time:g}"]
    return cmd


def register_command(public_key, connection: str) -> list[str]:
    """``flwr supernode register`` of one SuperNode public key."""
    return [_bin("flwr"), "supernode", "register", str(public_key), connection, "--format", "json"]


def run_command(app_dir, connection: str) -> list[str]:
    """``flwr run`` of the fedsim app folder on a SuperLink connection."""
    return [_bin("flwr"), "run", str(app_dir), connection, "--format", "json"]


def shell_line(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A copy-pasteable shell line (``VAR=value ... command args``).

    Examples
    --------
    >>> shell_line(["flwr", "run", "app dir"], {"FLWR_HOME": "/tmp/h"})
    "FLWR_HOME=/tmp/h flwr run 'app dir'"
    """
    prefix = [f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    return " ".join(prefix + [shlex.quote(str(c)) for c in cmd])


def process_env(env: dict[str, str]) -> dict[str, str]:
    """The full environment of a started process: ours over the caller's, with this interpreter's
    scripts first on PATH (Flower starts its helpers, e.g. ``flwr-clientapp``, by name)."""
    full = dict(os.environ) | env
    full["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), full.get("PATH", "")])
    return full


def deployment_env(flwr_home: str | os.PathLike, superexec_poll_s: float | None = None) -> dict[str, str]:
    """The environment variables fedsim sets for every deployment process."""
    env = dict(QUIET_ENV)
    env["FLWR_HOME"] = str(flwr_home)
    if superexec_poll_s is not None:
        if not 0.01 <= superexec_poll_s <= 60:
            raise FedsimError(f"--superexec-poll must be within 0.01..60 s, got {superexec_poll_s}")
        env[SUPEREXEC_POLL_ENV] = f"{superexec_poll_s:g}"
    return env
