"""How models travel between silos: the transport interface and its in-process form.

A transport moves one flat float32 model along one arc for one round. The
silo loop (:mod:`fedsim.peer.loop`) only calls :meth:`Transport.send`,
:meth:`Transport.receive` and :meth:`Transport.flush`; the gRPC transport
(:mod:`fedsim.peer.grpc`) and the MPI transport (:mod:`fedsim.peer.mpi`)
carry the same calls between processes and machines.

Every arrival is checked before the loop may mix it: the right number of
values, all finite. A model that fails is *refused*: it counts as not
arrived, and the receiver records why.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

import numpy as np


def check_model(array: np.ndarray, size: int) -> str | None:
    """Why a received model must not be mixed (``None``: it may).

    Examples
    --------
    >>> check_model(np.zeros(3, np.float32), 3) is None
    True
    >>> check_model(np.array([0, np.nan, 0], np.float32), 3)
    'model has 1 non-finite value(s)'
    """
    if array.dtype != np.float32 or array.ndim != 1:
        return f"expected a flat float32 model, got {array.dtype} of shape {array.shape}"
    if array.size != size:
        return f"model of {array.size} values, expected {size}"
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        return f"model has {bad} non-finite value(s)"
    return None


class Mailbox:
    """Arrivals of one silo, keyed by ``(src, round, kind)``; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._items: dict[tuple[int, int, str], np.ndarray | str] = {}
        self._cond = threading.Condition()

    def put(self, src: int, rnd: int, kind: str, array: np.ndarray) -> str | None:
        """Store an arrival; returns why it was refused (``None``: accepted)."""
        reason = check_model(array, self.size)
        with self._cond:
            self._items[(int(src), int(rnd), kind)] = array if reason is None else reason
            self._cond.notify_all()
        return reason

    def take(self, wanted: dict[int, str], rnd: int, timeout: float
             ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Wait until every ``src -> kind`` of round ``rnd`` arrived or ``timeout`` passed.

        Returns ``(arrived, missing)``: the accepted models and, for every
        other sender, why it is missing (refused, or not arrived in time).
        """
        deadline = time.monotonic() + timeout
        keys = {src: (src, int(rnd), kind) for src, kind in wanted.items()}
        with self._cond:
            while True:
                if all(k in self._items for k in keys.values()):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            arrived, missing = {}, {}
            for src, key in keys.items():
                item = self._items.pop(key, None)
                if isinstance(item, np.ndarray):
                    arrived[src] = item
                else:
                    missing[src] = f"refused: {item}" if item else f"no model within {timeout:g} s"
        return arrived, missing


class Transport(ABC):
    """Moves models between silos for one silo (see the module docstring)."""

    silo: int
    bytes_sent: int = 0
    bytes_received: int = 0

    @abstractmethod
    def send(self, dst: int, rnd: int, kind: str, array: np.ndarray) -> None:
        """Start sending ``array`` to ``dst`` (may return before it arrived)."""

    @abstractmethod
    def receive(self, wanted: dict[int, str], rnd: int, timeout: float
                ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """The round's models from ``wanted`` (see :meth:`Mailbox.take`)."""

    def flush(self, timeout: float) -> dict[int, str]:
        """Wait for the sends started so far; returns ``dst -> reason`` of those that failed."""
        return {}

    def close(self) -> None:
        """Release sockets and threads."""


class InProcNetwork:
    """Mailboxes of silos that run as threads of one process (tests, notebooks)."""

    def __init__(self, n_silos: int, size: int) -> None:
        self.boxes = [Mailbox(size) for _ in range(n_silos)]

    def transport(self, silo: int) -> InProcTransport:
        return InProcTransport(self, silo)


class InProcTransport(Transport):
    """A silo's end of an :class:`InProcNetwork`: a send is a copy into the receiver's mailbox."""

    def __init__(self, network: InProcNetwork, silo: int) -> None:
        self.network, self.silo = network, int(silo)
        self.bytes_sent = self.bytes_received = 0

    def send(self, dst, rnd, kind, array):
        self.bytes_sent += array.nbytes
        self.network.boxes[dst].put(self.silo, rnd, kind, np.array(array, dtype=np.float32, copy=True))

    def receive(self, wanted, rnd, timeout):
        arrived, missing = self.network.boxes[self.silo].take(wanted, rnd, timeout)
        self.bytes_received += sum(a.nbytes for a in arrived.values())
        return arrived, missing
