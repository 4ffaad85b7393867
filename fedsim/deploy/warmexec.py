"""``flower-superexec`` whose ClientApp processes start warm.

Flower 1.42 runs every message a SuperNode receives in a fresh
``flwr-clientapp`` process, which imports Flower, torch and the task
(seconds of CPU per message, every round, on every silo). This SuperExec is
Flower's own (``flwr.supercore.cli.flower_superexec``) with one change: a
ClientApp task is not started as a new ``flwr-clientapp`` program but as a
``fork()`` of a *template* process that already imported Flower's
``flwr-clientapp`` entry point and the modules in ``FEDSIM_WARM_PRELOAD``
(default: fedsim's ClientApp, the digits task and what its first
optimiser step imports). The forked child runs
``flwr-clientapp`` with the very arguments Flower would have passed (Runtime
API address, one-time token, TLS options): the same code path, the same
isolation (one process per message, state only through the SuperNode's
context), minus the imports. The template is single-threaded and never runs
a task itself, so forking it is safe; it exits when its parent does.

A ClientApp whose task asks for suppressed output (``spec.suppress_output``)
gets its stdout and stderr on ``/dev/null``, as Flower's own launch does; the
patch of Flower's SuperExec is :func:`fedsim.flower_compat.warm_executor`.

With ``FEDSIM_PULL_BACKOFF_S`` set, the ClientApps retry a message object
their SuperNode has not finished downloading after that many seconds rather
than Flower's 1 s (see :func:`fedsim.flower_compat.quick_pulls`).

Used by :mod:`fedsim.deploy.fastnode` (``FEDSIM_WARM_CLIENTAPP=1``).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback

from fedsim import flower_compat
from fedsim.errors import FedsimError

PULL_ENV = "FEDSIM_PULL_BACKOFF_S"  # set for the SuperNode by fedsim.deploy.fastnode; inherited here
PRELOAD_ENV = "FEDSIM_WARM_PRELOAD"
DEFAULT_PRELOAD = ("fedsim.apps.client_app,fedsim.clients.digits,sklearn.datasets,"
                   "torch.optim,torch._dynamo")


def preload_for(task: str) -> str:
    """``FEDSIM_WARM_PRELOAD`` for a SuperNode serving ``task``: the defaults plus the task's module."""
    from fedsim.clients import TASKS

    module = TASKS.get(task, "").split(":")[0]
    return DEFAULT_PRELOAD + (f",{module}" if module and module not in DEFAULT_PRELOAD else "")


def _template() -> None:
    """The template process: import, then fork one child per line on stdin.

    A line is ``{"argv": [...], "quiet": bool}``: the ``flwr-clientapp``
    command line, and whether the child's stdout and stderr go to
    ``/dev/null``.
    """
    flwr_clientapp = flower_compat.entry_point("flwr-clientapp")
    backoff = float(os.environ.get(PULL_ENV, "0"))
    if backoff > 0:  # the ClientApp pulls its message from the SuperNode, maybe mid-download
        flower_compat.quick_pulls(flower_compat.clientapp_runtime_module(), backoff,
                                  name="pull_and_inflate_object_from_tree")

    for name in filter(None, os.environ.get(PRELOAD_ENV, DEFAULT_PRELOAD).split(",")):
        try:
            importlib.import_module(name.strip())
        except Exception:  # noqa: BLE001 - a failed preload only costs warmth
            traceback.print_exc()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    commands = sys.stdin.buffer
    while True:
        line = commands.readline()
        if not line:  # the SuperExec is gone
            return
        command = json.loads(line)
        sys.stdout.flush()  # a child must not repeat the template's buffered output
        sys.stderr.flush()
        if os.fork() != 0:
            continue
        code = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # the child must not read the template's commands
            if command["quiet"]:  # as Flower's launch: stdout and stderr to DEVNULL
                sink = os.open(os.devnull, os.O_WRONLY)
                os.dup2(sink, 1)
                os.dup2(sink, 2)
            sys.argv = list(command["argv"])
            flwr_clientapp()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - report and exit like a failed program
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


class Template:
    """The running template process of one SuperExec."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "fedsim.deploy.warmexec", "--template"],
                                     stdin=subprocess.PIPE)

    def launch(self, argv: list[str], suppress_output: bool = False) -> None:
        """Fork a child that runs ``flwr-clientapp`` with ``argv`` (output on ``/dev/null`` if suppressed)."""
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.start()
            line = json.dumps({"argv": list(argv), "quiet": bool(suppress_output)})
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def patch_executor() -> Template:
    """Start a template and route ClientApp launches of Flower's SubprocessExecutor to it."""
    template = Template()
    flower_compat.warm_executor(template)
    return template


def main() -> None:
    if sys.argv[1:2] == ["--template"]:
        _template()
        return
    try:
        flower_superexec = flower_compat.entry_point("flower-superexec")
        patch_executor()
    except FedsimError as exc:
        sys.exit(str(exc))

    sys.argv[0] = "flower-superexec"
    flower_superexec()


if __name__ == "__main__":
    main()
