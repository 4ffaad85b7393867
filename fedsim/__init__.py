"""fedsim: cross-silo federated learning on Flower with a WAN time simulator.

The Python API (:mod:`fedsim.api`) is importable from here; it is loaded on
first use, so ``import fedsim`` (and ``fedsim --help``) imports no numpy,
pandas, torch, Flower or Ray:

- ``fedsim.cycle_times(topologies, strategies, profiles, ...)`` -> DataFrame
- ``fedsim.run(topology, strategy, task, rounds, ...)`` -> :class:`fedsim.api.RunResult`
- ``fedsim.load_run(dir)`` -> :class:`fedsim.api.RunResult`
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("cycle_times", "run", "load_run", "RunResult")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from fedsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
