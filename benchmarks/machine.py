"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import importlib
import os
import platform
import time


def describe(packages: tuple[str, ...] = ()) -> dict:
    """CPU count and model, Python, UTC date, load average, and the versions of ``packages``.

    >>> sorted(describe(("numpy",)))
    ['cpu', 'date', 'loadavg', 'nproc', 'numpy', 'python']
    """
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {"nproc": nproc, "python": platform.python_version(), "cpu": cpu,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}
    for name in packages:
        info[name] = getattr(importlib.import_module(name), "__version__", "?")
    return info
