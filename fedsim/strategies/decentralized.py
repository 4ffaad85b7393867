"""Decentralized FL driven by a topology schedule (DPASGD, Marfoq et al., 2020).

One model per silo; each round silo ``i`` trains, then mixes the models of its
in-neighbours in that round's graph state:

* ``ring``: ``W = ½(I + P)``;
* ``mst``, ``dmbst``: FDLA-optimal symmetric weights (Metropolis weights if
  the SDP fails; the method used is in :attr:`Decentralized.weights_method`);
* ``matcha``, ``matcha_plus``: ``W_k = I − α L_k`` of the round's matchings;
* ``multigraph``: self weight 0.7, the rest shared over strong in-neighbours;
  isolated silos keep their model; arrivals over an arc that was weak in the
  previous round are the sender's previous-round model.
"""

from __future__ import annotations

from fedsim.strategies import mixing as mx
from fedsim.strategies.base import TopologyStrategy
from fedsim.topologies.schedule import Schedule


class Decentralized(TopologyStrategy):
    """A decentralized strategy for any schedule.

    Parameters
    ----------
    schedule : Schedule
        The topology design.
    rounds : int
        Total rounds (MATCHA draws its activations for all of them up front).
    seed : int
        Seed of MATCHA's activations (the simulated clock uses the same draws).
    """

    def __init__(self, *args, schedule: Schedule, rounds: int, seed: int = 0,
                 self_weight: float = 0.7, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule
        self.name = schedule.topology
        self.self_weight = self_weight
        self.weights_method = None
        self._static = None
        self._present = None
        if schedule.is_random:
            self._present, _ = schedule.round_masks(rounds, seed)
        elif schedule.topology == "ring":
            self._static = mx.ring_weights(schedule.n, schedule.arcs)
            self.weights_method = "ring"
        elif schedule.topology != "multigraph":
            self._static, self.weights_method = mx.fdla_weights(schedule.n, schedule.arcs)

    def mixing(self, server_round):
        k = server_round - 1
        if self._present is not None:
            return mx.matcha_weights(self.schedule, self._present[k]), None
        if self._static is not None:
            return self._static, None
        return mx.multigraph_weights(self.schedule, k, self.self_weight)
