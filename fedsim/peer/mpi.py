"""The peer data plane over MPI: one rank per silo, for clusters.

The overlay becomes a distributed-graph communicator
(``MPI_Dist_graph_create_adjacent``): each rank names the silos it ever
receives from and sends to, so an MPI implementation may place neighbours
close together. A model travels as one non-blocking send of its float32
values, tagged with the round and its kind; receives poll with ``Iprobe``
and sleep briefly in between, so ranks oversubscribing a machine's cores
do not spin (MPICH's blocking receive busy-waits).

Arrivals get the same check as over gRPC (:func:`fedsim.peer.transport.check_model`).
MPI has no per-peer identity of its own: the cluster's launcher is the trust
boundary (use the gRPC plane across organisations).
"""

from __future__ import annotations

import time

import numpy as np

from fedsim.peer.transport import Transport, check_model

KINDS = {"fresh": 0, "stale": 1}
POLL_S = 0.0005


def tag(rnd: int, kind: str) -> int:
    """The MPI tag of a model of round ``rnd`` and ``kind`` (below MPI's guaranteed 32767 tag bound
    for runs of up to 16383 rounds).

    Examples
    --------
    >>> tag(3, "stale")
    7
    """
    return 2 * int(rnd) + KINDS[kind]


def graph_communicator(comm, sources: list[int], destinations: list[int]):
    """The overlay as a distributed-graph communicator (ranks kept: ``reorder=False``)."""
    return comm.Create_dist_graph_adjacent(sorted(set(sources)), sorted(set(destinations)), reorder=False)


class MpiTransport(Transport):
    """One rank's end of the overlay (``comm``: the graph communicator)."""

    def __init__(self, comm, size: int) -> None:
        self.comm, self.size = comm, int(size)
        self.silo = comm.Get_rank()
        self.bytes_sent = self.bytes_received = 0
        self._pending: list[tuple[int, object, np.ndarray]] = []

    def send(self, dst, rnd, kind, array):
        buf = np.ascontiguousarray(array, dtype=np.float32).copy()
        self._pending.append((int(dst), self.comm.Isend(buf, dest=int(dst), tag=tag(rnd, kind)), buf))
        self.bytes_sent += buf.nbytes
        self._pending = [p for p in self._pending if not p[1].Test()]

    def receive(self, wanted, rnd, timeout):
        from mpi4py import MPI

        deadline = time.monotonic() + timeout
        arrived, missing = {}, {}
        left = dict(wanted)
        status = MPI.Status()
        while left:
            for src, kind in list(left.items()):
                if self.comm.Iprobe(source=src, tag=tag(rnd, kind), status=status):
                    n = status.Get_count(MPI.FLOAT)
                    buf = np.empty(n, dtype=np.float32)
                    self.comm.Recv(buf, source=src, tag=tag(rnd, kind))
                    self.bytes_received += buf.nbytes
                    why = check_model(buf, self.size)
                    if why is None:
                        arrived[src] = buf
                    else:
                        missing[src] = f"refused: {why}"
                    del left[src]
            if left:
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_S)
        missing |= {src: f"no model within {timeout:g} s" for src in left}
        return arrived, missing

    def flush(self, timeout):
        from mpi4py import MPI

        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            self._pending = [p for p in self._pending if not p[1].Test()]
            if self._pending:
                time.sleep(POLL_S)
        failed = {dst: f"not delivered within {timeout:g} s" for dst, _, _ in self._pending}
        for _, req, _ in self._pending:
            req.Cancel()
        MPI.Request.Waitall([req for _, req, _ in self._pending])
        self._pending = []
        return failed
