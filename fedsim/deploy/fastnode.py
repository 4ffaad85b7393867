"""``flower-supernode`` tuned for LAN deployments: shorter loop waits, warm ClientApps.

Flower 1.42's SuperNode loop (``flwr.supernode.start_client_internal``)
sleeps a fixed 3 s after every poll that found no message, and 0.5 s between
checks for the ClientApp's reply; neither has a setting. On a LAN those
waits dominate a round (each phase waits up to 3 s before a SuperNode even
sees its message). This launcher runs the unmodified ``flower-supernode``
entry point with those sleeps capped at ``FEDSIM_NODE_POLL_S`` seconds
(default 0.2): it gives that one module a ``time`` whose ``sleep(s)`` sleeps
``min(s, cap)``; everything else (TLS, authentication, node config,
isolation, heartbeats) is Flower's own code path.

With ``FEDSIM_PULL_BACKOFF_S=0.02`` an object that is not uploaded yet is
asked for again after 20 ms (doubling, at most 50 ms) instead of Flower's
1 s (doubling, at most 10 s), by the SuperNode and by warm ClientApps: see
:func:`quick_pulls`.

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
import time as _time
import types

ENV = "FEDSIM_NODE_POLL_S"
WARM_ENV = "FEDSIM_WARM_CLIENTAPP"
PULL_ENV = "FEDSIM_PULL_BACKOFF_S"
DEFAULT_CAP_S = 0.2


def capped_time(cap_s: float) -> types.ModuleType:
    """A stand-in for the ``time`` module whose ``sleep`` never exceeds ``cap_s``."""
    mod = types.ModuleType("time")
    mod.__dict__.update({k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})

    def sleep(seconds: float) -> None:
        _time.sleep(min(float(seconds), cap_s))

    mod.sleep = sleep
    return mod


def warm_subprocess() -> types.ModuleType:
    """A stand-in for ``subprocess`` that starts :mod:`fedsim.deploy.warmexec` for ``flower-superexec``."""
    import subprocess

    mod = types.ModuleType("subprocess")
    mod.__dict__.update({k: getattr(subprocess, k) for k in dir(subprocess) if not k.startswith("__")})

    def popen(args, *a, **kw):
        if isinstance(args, (list, tuple)) and args and os.path.basename(str(args[0])) == "flower-superexec":
            args = [sys.executable, "-m", "fedsim.deploy.warmexec", *args[1:]]
        return subprocess.Popen(args, *a, **kw)

    mod.Popen = popen
    return mod


PULL_CAP_S = 0.05


def quick_pulls(module, initial_s: float, cap_s: float = PULL_CAP_S, name: str = "pull_objects") -> None:
    """Make ``module``'s object pulls (its ``name`` from Flower's ``inflatable_utils``)
    retry after ``initial_s`` (doubling up to ``cap_s``).

    Flower 1.42 retries an object that is not uploaded yet after 1 s (doubling
    up to 10 s). A message is listed as soon as its sender registered it, and
    its objects follow in separate requests, so a receiver that polls quickly
    often asks a moment too early and then waits a whole second. That happens
    to SuperNodes (pulling from the SuperLink) and to ClientApps (pulling from
    their SuperNode, which may still be downloading the message over a WAN).
    The object is already on its way, so the retries stay short (at most
    ``cap_s``): a doubling backoff would overshoot its arrival by up to the
    whole download time.
    """
    import functools

    from flwr.supercore.inflatable import inflatable_utils

    setattr(module, name, functools.partial(getattr(inflatable_utils, name), initial_backoff=initial_s,
                                            backoff_cap=cap_s))


def node_env(cap_s: float, task: str, warm: bool = True, pull_backoff_s: float | None = None) -> dict[str, str]:
    """The environment that makes this launcher shorten a SuperNode's waits (see the module doc)."""
    env = {ENV: f"{cap_s:g}"}
    if warm:
        from fedsim.deploy.warmexec import PRELOAD_ENV, preload_for

        env |= {WARM_ENV: "1", PRELOAD_ENV: preload_for(task)}
    if pull_backoff_s:
        env[PULL_ENV] = f"{pull_backoff_s:g}"
    return env


def patch(cap_s: float, warm: bool = False, pull_backoff_s: float | None = None) -> None:
    """Cap the SuperNode loop's fixed sleeps at ``cap_s`` s; optionally warm ClientApps
    and retry early object pulls after ``pull_backoff_s``."""
    from flwr.supernode import start_client_internal as sci

    sci.time = capped_time(cap_s)
    if warm:
        sci.subprocess = warm_subprocess()
    if pull_backoff_s:
        quick_pulls(sci, pull_backoff_s)


def main() -> None:
    cap = float(os.environ.get(ENV, DEFAULT_CAP_S))
    if not 0.001 <= cap <= 3:
        sys.exit(f"{ENV} must be within 0.001..3 s, got {cap}")
    backoff = float(os.environ.get(PULL_ENV, "0")) or None
    patch(cap, warm=os.environ.get(WARM_ENV, "0") == "1", pull_backoff_s=backoff)
    from flwr.supernode.cli import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
