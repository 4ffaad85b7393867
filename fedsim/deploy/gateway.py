"""The SuperLink's public face: a TLS gateway that passes the Fleet API only.

Flower 1.42's SuperLink serves three APIs over one HTTPS port: the Fleet API
(``/v1/fleet/...``, what SuperNodes use), the Control API
(``/v1/control/...``, what ``flwr run``, ``flwr supernode register|list``,
``flwr ls``, ``flwr stop`` use) and the Runtime API (``/v1/runtime/...``, what
its own ServerApp/SuperExec use). The Control API has no account
authentication in Flower 1.42 (``--control-api-address`` is deprecated and
ignored), so anybody who reaches that port and holds the CA certificate
(every silo has it) could register SuperNode keys, list nodes and submit runs,
i.e. run code on the SuperLink host and on every SuperNode.

fedsim therefore binds the SuperLink itself to ``127.0.0.1`` and puts this
gateway on the public address: it terminates TLS with the SuperLink's own
certificate, passes ``POST /v1/fleet/*`` (and ``/health``) on to the SuperLink
over loopback TLS, headers and body unchanged (SuperNode signatures stay
valid), and answers everything else with ``403``. The operator runs ``flwr``
on the SuperLink host (or through an SSH tunnel to its loopback port).

Run it with ``python -m fedsim.deploy.gateway --listen 0.0.0.0:9092
--upstream 127.0.0.1:9093 --certfile server.pem --keyfile server.key
--ca-certfile ca.crt``; :func:`gateway_command` builds that line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence

from fedsim.errors import FedsimError

FLEET_PREFIX = "/v1/fleet/"
HEALTH_PATHS = ("/health",)
#: headers that describe one hop of a connection, not the request (RFC 9110 7.6.1)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}


def allowed(method: str, path: str) -> bool:
    """Whether the gateway passes ``method path`` on to the SuperLink.

    Examples
    --------
    >>> allowed("POST", "/v1/fleet/pull-messages"), allowed("GET", "/health")
    (True, True)
    >>> allowed("POST", "/v1/control/start-run"), allowed("POST", "/v1/runtime/push-messages")
    (False, False)
    >>> allowed("POST", "/v1/fleet/../control/list-nodes"), allowed("GET", "/v1/fleet/pull-messages")
    (False, False)
    """
    if path in HEALTH_PATHS:
        return method in ("GET", "HEAD")
    if method != "POST" or not path.startswith(FLEET_PREFIX):
        return False
    rest = path[len(FLEET_PREFIX):]
    return bool(rest) and all(c.isalnum() or c in "-_" for c in rest)


def is_public(host: str) -> bool:
    """Whether a listen address is reachable from other machines (anything but loopback).

    Examples
    --------
    >>> is_public("0.0.0.0"), is_public("127.0.0.1"), is_public("localhost"), is_public("10.1.2.3")
    (True, False, False, True)
    """
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True  # a name: assume it resolves to an outward address


class FleetGateway:
    """The ASGI application: Fleet routes are passed to ``upstream``, the rest refused."""

    def __init__(self, upstream: str, ca_cert: str | None = None, insecure: bool = False,
                 log=None) -> None:
        import httpx

        if insecure:
            base, verify = f"http://{upstream}", False
        else:
            ctx = ssl.create_default_context(cafile=ca_cert)
            ctx.check_hostname = False  # loopback hop: the chain is still checked against the CA
            base, verify = f"https://{upstream}", ctx
        self.client = httpx.AsyncClient(base_url=base, verify=verify, timeout=httpx.Timeout(300.0, connect=10.0),
                                        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.refused = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if not allowed(method, path) or scope.get("query_string"):
            self.refused += 1
            client = scope.get("client") or ("?", 0)
            self.log(f"fedsim gateway: refused {method} {path} from {client[0]} (only the Fleet API is public)")
            body = b"forbidden: this address serves the Fleet API only\n"
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP]
        try:
            req = self.client.build_request(method, path, headers=headers, content=b"".join(chunks))
            resp = await self.client.send(req, stream=True)
        except Exception as exc:  # the SuperLink is down or restarting: SuperNodes retry on 502
            body = f"bad gateway: {type(exc).__name__}\n".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            out_headers = [(k, v) for k, v in resp.headers.raw
                           if k.decode("latin-1").lower() not in HOP_BY_HOP - {"content-length"}]
            await send({"type": "http.response.start", "status": resp.status_code, "headers": out_headers})
            async for part in resp.aiter_raw():
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()


def serve(listen: str, upstream: str, certfile: str | None = None, keyfile: str | None = None,
          ca_certfile: str | None = None, insecure: bool = False) -> None:
    """Run the gateway until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    from fedsim.deploy.commands import check_address

    host, port = check_address(listen, "--listen")
    check_address(upstream, "--upstream")
    if not insecure and not (certfile and keyfile and ca_certfile):
        raise FedsimError("the gateway needs --certfile, --keyfile and --ca-certfile (or --insecure)")
    app = FleetGateway(upstream, ca_certfile, insecure)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on", ssl_certfile=None if insecure else certfile,
                            ssl_keyfile=None if insecure else keyfile, timeout_keep_alive=30)
    uvicorn.Server(config).run()


def gateway_command(listen: str, upstream: str, certfile=None, keyfile=None, ca_certfile=None,
                    insecure: bool = False) -> list[str]:
    """``python -m fedsim.deploy.gateway ...`` for a SuperLink at ``upstream``."""
    cmd = [sys.executable, "-m", "fedsim.deploy.gateway", "--listen", listen, "--upstream", upstream]
    if insecure:
        cmd.append("--insecure")
    else:
        cmd += ["--certfile", str(certfile), "--keyfile", str(keyfile), "--ca-certfile", str(ca_certfile)]
    return cmd


def wait_listening(host: str, port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    """Until something accepts TCP connections on ``host:port`` (``proc`` must stay alive)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FedsimError(f"{what} exited while starting (code {proc.returncode})")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise FedsimError(f"{what} did not accept connections on {host}:{port} within {timeout:.0f} s")


def run_superlink(superlink_cmd: Sequence[str], gateway_cmd: Sequence[str] | None, env: dict,
                  control: tuple[str, int]) -> int:
    """``fedsim deploy superlink``: the SuperLink on loopback and the gateway in front of it.

    Both run as children of this process; when one of them ends, or this
    process gets SIGINT/SIGTERM, both are stopped. A watchdog
    (:class:`fedsim.guard.Watchdog`) ends them if this process is killed.
    Returns the SuperLink's exit code (130 after Ctrl-C).
    """
    from fedsim.deploy.commands import process_env
    from fedsim.deploy.procs import ProcessSet
    from fedsim.guard import Watchdog

    stop = {"sig": None}

    def _on_signal(signum, frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = ProcessSet(None)
    full_env = process_env(env)
    try:
        with Watchdog():
            try:
                sl = procs.adopt("superlink", subprocess.Popen(list(superlink_cmd), env=full_env,
                                                               start_new_session=True, stdin=subprocess.DEVNULL))
                wait_listening(control[0], control[1], sl, 90, "the SuperLink")
                if gateway_cmd:
                    procs.adopt("gateway", subprocess.Popen(list(gateway_cmd), env=full_env,
                                                            start_new_session=True, stdin=subprocess.DEVNULL))
                while stop["sig"] is None and all(p.poll() is None for p in procs.procs.values()):
                    time.sleep(0.2)
            finally:
                procs.stop(grace=3.0)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop["sig"] == signal.SIGINT:
        return 130
    code = procs.procs["superlink"].returncode
    return 0 if stop["sig"] is not None else (code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fedsim.deploy.gateway",
                                 description="TLS gateway that passes only a SuperLink's Fleet API")
    ap.add_argument("--listen", required=True, metavar="HOST:PORT", help="public address (SuperNodes dial it)")
    ap.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the SuperLink's loopback address")
    ap.add_argument("--certfile", help="the SuperLink's certificate (server.pem)")
    ap.add_argument("--keyfile", help="its private key (server.key)")
    ap.add_argument("--ca-certfile", help="the CA certificate (ca.crt)")
    ap.add_argument("--insecure", action="store_true", help="plain HTTP on both sides")
    a = ap.parse_args(argv)
    try:
        serve(a.listen, a.upstream, a.certfile, a.keyfile, a.ca_certfile, a.insecure)
    except FedsimError as exc:
        print(f"fedsim gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def public_warning(host: str, port: int, control_port: int | None) -> str | None:
    """The one line ``fedsim deploy superlink`` prints about what a public address exposes.

    Examples
    --------
    >>> public_warning("127.0.0.1", 9092, 9093) is None
    True
    >>> public_warning("0.0.0.0", 9092, None).startswith("WARNING: the Control API is public")
    True
    """
    if not is_public(host):
        return None
    if control_port is None:
        return (f"WARNING: the Control API is public on {host}:{port}: anyone who reaches it with the CA "
                "certificate can register SuperNode keys, list nodes and run code on this host and on every "
                "SuperNode (no account authentication in Flower 1.42); drop --no-gateway")
    return (f"note: {host}:{port} serves the Fleet API only (SuperNodes); the Control API is on "
            f"127.0.0.1:{control_port}: run flwr on this host or through `ssh -L {control_port}:127.0.0.1:"
            f"{control_port}`")


def superlink_main(*, host: str, port: int, control_port: int, ca, cert, key, insecure: bool, auth: bool,
                   database, env: dict, gateway: bool = True, dry_run: bool = False) -> int:
    """``fedsim deploy superlink``: print the command lines, then run them (see :func:`run_superlink`)."""
    from fedsim.deploy.commands import shell_line, superlink_command

    if gateway and control_port == port:
        raise FedsimError(f"--control-port must differ from --port (both {port})")
    if gateway:
        sl = superlink_command(host="127.0.0.1", port=control_port, ca_cert=ca, server_cert=cert,
                               server_key=key, insecure=insecure, auth=auth, database=database)
        public = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        gw = gateway_command(public, f"127.0.0.1:{control_port}", cert, key, ca, insecure)
        probe = ("127.0.0.1", control_port)
    else:
        sl = superlink_command(host=host, port=port, ca_cert=ca, server_cert=cert, server_key=key,
                               insecure=insecure, auth=auth, database=database)
        gw = None
        probe = ("127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host.strip("[]"), port)
    print(shell_line(sl, env), flush=True)
    if gw:
        print(shell_line(gw), flush=True)
    line = public_warning(host, port, control_port if gateway else None)
    if line:
        print(line, file=sys.stderr, flush=True)
    if dry_run:
        return 0
    return run_superlink(sl, gw, env, probe)
