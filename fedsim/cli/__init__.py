"""The ``fedsim`` command line: one module per command, shared flags in :mod:`fedsim.cli.common`.

Every user mistake (a bad name, file or number) ends with one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from fedsim.cli import compare, cycle_time, deploy, networks, retrieve, run, topology
from fedsim.errors import FedsimError

COMMANDS = (networks, topology, cycle_time, run, compare, retrieve, deploy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedsim",
        description="Cross-silo federated learning on Flower with a WAN time simulator.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
