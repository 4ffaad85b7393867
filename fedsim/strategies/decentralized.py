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

The arithmetic is :class:`~fedsim.strategies.mixing.MixingPlan` and
:func:`~fedsim.strategies.mixing.mix_row`, silo by silo: the very functions
each silo of the peer data plane runs, so both give the same models.
"""

from __future__ import annotations

import numpy as np

from fedsim.strategies.base import TopologyStrategy
from fedsim.strategies.mixing import MixingPlan, mix_row, renormalise
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
                 self_weight: float = 0.7, plan: MixingPlan | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule
        self.name = schedule.topology
        self.plan = plan or MixingPlan(schedule, rounds, seed, self_weight)
        self.weights_method = self.plan.weights_method

    def mixing(self, server_round):
        return self.plan.matrix(server_round)

    def mix_models(self, server_round: int, trained: np.ndarray, answered: np.ndarray,
                   n_examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new = np.empty_like(self.models)
        for i in range(self.n):
            if not answered[i]:
                new[i] = self.models[i]
                continue
            row = self.plan.silo_round(i, server_round)
            arrivals = {j: (self.models[j] if stale else trained[j]) for j, _, stale in row.inbound
                        if answered[j] or stale}
            new[i] = mix_row(row, trained[i], arrivals)
        w, stale = self.mixing(server_round)
        return new, (w if answered.all() else renormalise(w, answered, stale))
