"""The user's Ctrl-C, as an event every long-running loop checks.

A ``KeyboardInterrupt`` reaches only the main thread, while Flower's
Simulation Engine runs the ServerApp's round loop in another thread (and a
Ctrl-C in a terminal also ends the Ray workers that would have answered its
messages). :func:`request` sets :data:`STOP`; the round loops end at the next
round boundary with a checkpoint, and fedsim's reply loop stops waiting, so
the process ends within seconds with every completed round on disk.
"""

from __future__ import annotations

import threading

STOP = threading.Event()


def request() -> None:
    """Ask every fedsim loop of this process to stop."""
    STOP.set()


def requested() -> bool:
    return STOP.is_set()


def reset() -> None:
    """Clear a previous request (a new run in the same process)."""
    STOP.clear()
