"""``flower-supernode`` tuned for LAN deployments: shorter loop waits, warm ClientApps.

Flower 1.42's SuperNode loop (``flwr.supernode.start_client_internal``)
sleeps a fixed 3 s after every poll that found no message, and 0.5 s between
checks for the ClientApp's reply; neither has a setting. On a LAN those
waits dominate a round (each phase waits up to 3 s before a SuperNode even
sees its message). This launcher runs the unmodified ``flower-supernode``
entry point with those sleeps capped at ``FEDSIM_NODE_POLL_S`` seconds
(default 0.2): it gives that one module a ``time`` whose ``sleep(s)`` sleeps
``min(s, cap)`` (:func:`fedsim.flower_compat.cap_supernode_sleeps`);
everything else (TLS, authentication, node config, isolation, heartbeats) is
Flower's own code path.

With ``FEDSIM_PULL_BACKOFF_S=0.02`` an object that is not uploaded yet is
asked for again after 20 ms (doubling, at most 50 ms) instead of Flower's
1 s (doubling, at most 10 s), by the SuperNode and by warm ClientApps: see
:func:`fedsim.flower_compat.quick_pulls`.

With ``FEDSIM_WARM_CLIENTAPP=1`` the SuperNode starts
:mod:`fedsim.deploy.warmexec` instead of ``flower-superexec`` (same
arguments): ClientApp processes are forked from a process that already
imported Flower, torch and the task.

Usage is exactly ``flower-supernode``'s::

    FEDSIM_NODE_POLL_S=0.2 FEDSIM_WARM_CLIENTAPP=1 FEDSIM_PULL_BACKOFF_S=0.02 \\
        python -m fedsim.deploy.fastnode --superlink HOST:PORT ...
"""

from __future__ import annotations

import os
import sys

from fedsim import flower_compat
from fedsim.deploy.warmexec import PRELOAD_ENV, PULL_ENV, preload_for
from fedsim.errors import FedsimError
from fedsim.flower_compat import quick_pulls  # noqa: F401 - re-exported for fedsim.deploy.serverapp

ENV = "FEDSIM_NODE_POLL_S"
WARM_ENV = "FEDSIM_WARM_CLIENTAPP"
DEFAULT_CAP_S = 0.2
WARM_SUPEREXEC = (sys.executable, "-m", "fedsim.deploy.warmexec")  # started instead of flower-superexec


def node_env(cap_s: float, task: str, warm: bool = True, pull_backoff_s: float | None = None) -> dict[str, str]:
    """The environment that makes this launcher shorten a SuperNode's waits (see the module doc)."""
    env = {ENV: f"{cap_s:g}"}
    if warm:
        env |= {WARM_ENV: "1", PRELOAD_ENV: preload_for(task)}
    if pull_backoff_s:
        env[PULL_ENV] = f"{pull_backoff_s:g}"
    return env


def patch(cap_s: float, warm: bool = False, pull_backoff_s: float | None = None) -> None:
    """Cap the SuperNode loop's fixed sleeps at ``cap_s`` s; optionally warm ClientApps
    and retry early object pulls after ``pull_backoff_s``."""
    flower_compat.cap_supernode_sleeps(cap_s)
    if warm:
        flower_compat.warm_supernode_subprocess(WARM_SUPEREXEC)
    if pull_backoff_s:
        flower_compat.quick_pulls(flower_compat.supernode_module(), pull_backoff_s)


def main() -> None:
    cap = float(os.environ.get(ENV, DEFAULT_CAP_S))
    if not 0.001 <= cap <= 3:
        sys.exit(f"{ENV} must be within 0.001..3 s, got {cap}")
    backoff = float(os.environ.get(PULL_ENV, "0")) or None
    try:
        patch(cap, warm=os.environ.get(WARM_ENV, "0") == "1", pull_backoff_s=backoff)
        flower_supernode = flower_compat.entry_point("flower-supernode")
    except FedsimError as exc:
        sys.exit(str(exc))
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
