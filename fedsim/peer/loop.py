"""The silo loop of decentralized training: one module, three transports.

A silo runs its rounds itself, with the max-plus semantics the time
simulator models (:mod:`fedsim.timing`):

1. at the start of round ``k`` it sends the model it starts from along the
   arcs whose receivers take a *stale* arrival (a multigraph arc that was
   weak in round ``k - 1``: that model has been in flight since);
2. it evaluates that model and trains it (:meth:`fedsim.peer.silo.Silo.local_round`);
3. it sends the trained model along the round's other strong out-arcs;
4. it waits for the round's models of its strong in-neighbours only, at most
   ``peer_timeout`` seconds — an isolated silo does not wait at all — and
   mixes them (:func:`fedsim.strategies.mixing.mix_row`).

It then starts round ``k + 1`` at once: it never waits for silos it does not
receive from. A sender whose model did not come in time is *lost* for the
rest of the segment (its weight is renormalised away, it is sent nothing);
a model that fails the arrival check (wrong size, non-finite values) is left
out of that round only.

The same loop runs over the in-process transport (threads), gRPC with mutual
TLS (a Flower deployment, :mod:`fedsim.apps.client_app`) and MPI
(:mod:`fedsim.apps.mpi`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fedsim.peer.silo import Silo, checksums
from fedsim.peer.transport import Transport
from fedsim.strategies.mixing import SiloRound, mix_row

DEFAULT_PEER_TIMEOUT_S = 60.0


class SiloLoop:
    """Run rounds of one silo over a transport.

    Parameters
    ----------
    silo : Silo
        The silo's task, data and model (the model the next round starts from).
    rows : callable
        ``rows(k)``: the silo's :class:`~fedsim.strategies.mixing.SiloRound` of round ``k``.
    transport : Transport
    local_steps : int
    evaluate : bool
        Evaluate the model each round starts from (the ``eval_*`` records).
    peer_timeout : float
        Seconds to wait for an in-neighbour's model before counting it lost.
    """

    def __init__(self, silo: Silo, rows: Callable[[int], SiloRound], transport: Transport, local_steps: int,
                 evaluate: bool = True, peer_timeout: float = DEFAULT_PEER_TIMEOUT_S) -> None:
        self.silo, self.rows, self.transport = silo, rows, transport
        self.local_steps, self.evaluate, self.peer_timeout = int(local_steps), bool(evaluate), float(peer_timeout)
        self.lost: dict[int, str] = {}  # silo -> why

    def step(self, k: int) -> dict:
        """Run round ``k``; returns its record (metrics, fingerprints, timings, what was missing)."""
        t0 = time.time()
        row = self.rows(k)
        start = self.silo.get_flat()
        for dst in row.stale_to:
            if dst not in self.lost:
                self.transport.send(dst, k, "stale", start)
        rec = self.silo.local_round(k, self.local_steps, self.evaluate)
        trained = self.silo.get_flat()
        for dst in row.fresh_to:
            if dst not in self.lost:
                self.transport.send(dst, k, "fresh", trained)
        t_trained = time.time()
        wanted = {j: ("stale" if stale else "fresh") for j, _, stale in row.inbound if j not in self.lost}
        arrived, missing = self.transport.receive(wanted, k, self.peer_timeout) if wanted else ({}, {})
        for j, why in missing.items():
            if not why.startswith("refused"):
                self.lost[j] = f"lost in round {k}: {why}"
        mixed = mix_row(row, trained, arrived)
        self.silo.set_flat(mixed)
        rec.update(round=k, t_start=t0, t_trained=t_trained, t_done=time.time(),
                   waited_for=len(wanted), missing={str(j): why for j, why in missing.items()})
        return rec

    def run(self, first: int, last: int, on_round: Callable[[dict], None] | None = None) -> list[dict]:
        """Rounds ``first..last``; then waits for this silo's sends to be delivered."""
        records = []
        for k in range(first, last + 1):
            rec = self.step(k)
            records.append(rec)
            if on_round is not None:
                on_round(rec)
        for dst, why in self.transport.flush(self.peer_timeout).items():
            self.lost.setdefault(dst, f"send failed: {why}")
        return records

    def final(self) -> dict:
        """Evaluation of the current model, with its fingerprints (the run's end)."""
        flat = self.silo.get_flat()
        s, g = checksums(flat)
        return {"silo": self.silo.silo, "received_sum": s, "received_signed": g} | self.silo.evaluate()
