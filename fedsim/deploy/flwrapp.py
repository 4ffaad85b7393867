"""``flwr run .`` on this project (the Flower-App way), with nothing installed and nothing left running.

Flower 1.42's ``flwr run APP CONNECTION`` reads SuperLink connections from
``$FLWR_HOME/config.toml``. A connection whose ``address`` is
``":local-in-memory:"`` makes ``flwr`` start a *detached* local SuperLink in
simulation mode (ports ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` and
``FLWR_LOCAL_CONTROL_API_PORT``, default 39091/39093), which runs the app's
ServerApp and ``options.num-supernodes`` virtual SuperNodes. Three things go
wrong with a hand-written setup, and this module fixes each:

* ``num-supernodes`` must be the network's silo count (fedsim's ServerApp
  waits for one SuperNode per silo): :func:`federation_config` derives it
  from the network (``flwr run --federation-config``; the connection's
  ``options.num-supernodes`` is deprecated in 1.42).
* The SuperLink installs the app's dependencies with ``uv sync`` unless
  ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` is in its environment
  (``flower-superlink --disable-runtime-dependency-installation`` is the same
  switch); the SuperLink ``flwr`` starts inherits ``flwr``'s environment, so
  :data:`ENV` sets it (with telemetry and update checks off).
* ``flwr run`` without ``--stream`` returns after submitting; a failure shows
  only in ``flwr log``. With ``--stream`` it follows the run's log until the
  run ends. The detached SuperLink stays after ``flwr`` exits:
  ``python -m fedsim.deploy.flwrapp`` runs ``flwr`` under a
  :class:`fedsim.guard.Watchdog` (the SuperLink inherits its tag) on ports of
  its own, and ends it when the run ends.

Usage (from the project folder)::

    python -m fedsim.deploy.flwrapp --topology gaia -- --run-config 'rounds=5'
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import tomli_w

from fedsim.errors import FedsimError

CONNECTION = "fedsim-sim"
#: environment of ``flwr`` and so of the local SuperLink it starts
ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
       "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def federation_config(network: str, cpus: int | None = None) -> str:
    """The ``--federation-config`` value for ``network``: one virtual SuperNode per silo.

    Examples
    --------
    >>> federation_config("gaia", cpus=2)
    'num-supernodes=11 client-resources-num-cpus=1 init-args-num-cpus=2'
    """
    from fedsim.topologies.networks import load_network

    n = load_network(network).n_silos
    cpus = cpus or os.cpu_count() or 1
    return f"num-supernodes={n} client-resources-num-cpus=1 init-args-num-cpus={int(cpus)}"


def write_connection(flwr_home: str | os.PathLike) -> Path:
    """Add the ``fedsim-sim`` connection (a local SuperLink that ``flwr`` starts) to
    ``FLWR_HOME/config.toml``; other connections are kept.

    Examples
    --------
    >>> import tempfile, tomllib
    >>> p = write_connection(tempfile.mkdtemp())
    >>> tomllib.loads(p.read_text())["superlink"]["fedsim-sim"]
    {'address': ':local-in-memory:'}
    """
    import tomllib

    from fedsim.io import atomic_write_text

    path = Path(flwr_home) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    links = doc.setdefault("superlink", {})
    links.setdefault("default", CONNECTION)
    links[CONNECTION] = {"address": ":local-in-memory:"}
    atomic_write_text(path, tomli_w.dumps(doc))
    return path


def flwr_command(app: str, network: str, extra: Sequence[str] = (), cpus: int | None = None) -> list[str]:
    """``flwr run APP fedsim-sim --stream`` with the network's federation and run configuration."""
    from fedsim.deploy.commands import _bin

    return [_bin("flwr"), "run", app, CONNECTION, "--stream",
            "--federation-config", federation_config(network, cpus),
            "--run-config", f'network="{network}"', *extra]


def main(argv: Sequence[str] | None = None) -> int:
    from fedsim.deploy.commands import process_env, shell_line
    from fedsim.deploy.procs import listening_port
    from fedsim.guard import Watchdog

    ap = argparse.ArgumentParser(prog="python -m fedsim.deploy.flwrapp", description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="gaia", help="the network of the run (sets num-supernodes)")
    ap.add_argument("--app", default=".", help="the Flower App folder (default: .)")
    ap.add_argument("--flwr-home", default=".flwr", help="FLWR_HOME (default ./.flwr)")
    ap.add_argument("flwr_args", nargs="*", help="more `flwr run` arguments, after --")
    a = ap.parse_args(argv)
    home = Path(a.flwr_home).resolve()
    try:
        cmd = flwr_command(a.app, a.topology, a.flwr_args)
    except FedsimError as exc:
        print(f"fedsim: {exc}", file=sys.stderr)
        return 2
    write_connection(home)
    http = listening_port()
    control = listening_port(taken={http})
    env = ENV | {"FLWR_HOME": str(home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http),
                 "FLWR_LOCAL_CONTROL_API_PORT": str(control)}
    print(shell_line(cmd, env), flush=True)
    with Watchdog():  # the detached local SuperLink inherits the tag and ends with the run
        return subprocess.run(cmd, env=process_env(env)).returncode  # flwr starts flower-superlink by name


if __name__ == "__main__":
    sys.exit(main())
