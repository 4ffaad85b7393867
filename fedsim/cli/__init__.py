"""The ``fedsim`` command line: one module per command, shared flags in :mod:`fedsim.cli.common`.

Every user mistake (a bad name, file or number) ends with one line on stderr
and exit code 2, never a traceback; every command checks all of its input
before it writes a file or starts a process.

Only the command being run is imported (``fedsim --help`` imports no numpy,
torch, Flower or Ray): the others appear in the top-level help by their
one-line description.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from fedsim.cli.common import ArgumentParser
from fedsim.errors import FedsimError

# command -> (module, one-line help); the module's add_parser registers the full parser.
COMMANDS: dict[str, tuple[str, str]] = {
    "networks": ("fedsim.cli.networks", "list the built-in networks"),
    "topology": ("fedsim.cli.topology", "wire the silos of a network one way (a strategy) and print it"),
    "cycle-time": ("fedsim.cli.cycle_time", "sweep cycle times over topologies (networks) x strategies x profiles"),
    "run": ("fedsim.cli.run", "train on Flower's Simulation Engine (Ray), in-process, or on MPI ranks"),
    "compare": ("fedsim.cli.compare", "overlay runs on one plot (metric vs simulated time)"),
    "retrieve": ("fedsim.cli.retrieve", "coarse-to-fine retrieval with a trained cfor run's model"),
    "deploy": ("fedsim.cli.deploy", "run on Flower's deployment engine (SuperLink/SuperNodes)"),
    "advise": ("fedsim.cli.advise", "rank the strategies of a network by predicted time to a target metric"),
}


class _Version(argparse.Action):
    """``--version``: the installed package's version (read only when asked for)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("fedsim")
        except PackageNotFoundError:  # a source tree that is not installed
            from fedsim import __version__ as v
        print(f"fedsim {v}")
        parser.exit(0)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), if it is one."""
    for a in argv:
        if not a.startswith("-"):
            return a if a in COMMANDS else None
    return None


def build_parser(only: str | None = None, full: bool = True) -> argparse.ArgumentParser:
    """The ``fedsim`` parser. ``full``: every command's flags; else only those of command ``only``
    (the rest are listed by name and description, without importing their modules)."""
    parser = ArgumentParser(
        prog="fedsim",
        description="Cross-silo federated learning on Flower with a WAN time simulator.",
    )
    parser.add_argument("--version", action=_Version, help="print fedsim's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        if full or name == only:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=help_)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_of(argv), full=False)
    args = parser.parse_args(argv)
    args.argv = argv  # --engine mpi starts itself under mpiexec
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C works even if inherited as ignored
    try:
        return int(args.func(args) or 0)
    except FedsimError as exc:
        print(f"fedsim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedsim: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``fedsim`` program: :func:`main`, then exit without tearing the interpreter down.

    Every file a command writes is complete and closed when it returns, and
    the processes it started are ended; what is left is the interpreter's
    module teardown (torch, Ray, Flower: 1.4-2 s), which serves nothing.
    """
    code = main()
    if "mpi4py.MPI" in sys.modules:  # an MPI rank finalises MPI at exit: leave the normal way
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    entry()
