"""Rounds that lose a silo: mix over the silos that answered.

In a deployment a SuperNode can die mid-run. The round then ends after its
timeout with the replies that came, and each silo ``i`` that answered mixes
only over the models that arrived. With the round's mixing matrix ``W`` and
``A`` the set of silos that answered, the renormalised matrix is

.. math::

    \\tilde W_{ij} = \\frac{W_{ij}\\,[j \\in A]}{\\sum_{l \\in A} W_{il}}
    \\quad (i \\in A), \\qquad \\tilde W_{i\\cdot} = e_i \\quad (i \\notin A),

so every row still sums to one; a silo that did not answer keeps the model
the server holds for it. A row whose surviving weights sum to
``<= 1e-12`` (possible with FDLA/MATCHA weights, which may be negative) keeps
the silo's own freshly trained model (``e_i``). Stale arrivals of a
multigraph (the sender's previous-round model, already held by the server)
are kept: only fresh arrivals from a lost silo are dropped.

For FedAvg/FedProx/STAR (every row the sample weights ``n_j / Σ n``) this is
the sample-weighted average over the silos that answered.

A silo that sent no reply at all within the round timeout is *lost*: later
rounds no longer send to it (its SuperNode would only cost every round the
full timeout) and record it as failed with the round it was lost in. A silo
whose ClientApp replied with an error is left out of that round's mixing
only, and asked again the next round.
"""

from __future__ import annotations

import numpy as np

from fedsim.strategies.mixing import renormalise  # noqa: F401 - the rule lives with the mixing


class LostSiloTolerance:
    """Make a :class:`~fedsim.strategies.base.TopologyStrategy` tolerate lost silos.

    Wraps the instance's ``configure_train``, ``configure_evaluate``,
    ``aggregate_train`` and ``mixing`` (the class is untouched): messages are
    no longer sent to lost silos, and each round mixes with
    :func:`renormalise` over the silos that answered. ``lost`` maps each lost
    silo to the round it was lost in.
    """

    def __init__(self, strategy) -> None:
        self.strategy = strategy
        self.lost: dict[int, int] = {}
        self.answered: np.ndarray | None = None
        self._mixing = strategy.mixing
        self._configure_train = strategy.configure_train
        self._configure_evaluate = strategy.configure_evaluate
        self._aggregate_train = strategy.aggregate_train
        strategy.mixing = self.mixing
        strategy.configure_train = self.configure_train
        strategy.configure_evaluate = self.configure_evaluate
        strategy.aggregate_train = self.aggregate_train

    def _drop_lost(self, msgs):
        return [m for m in msgs if self.strategy.silo_of_node.get(m.metadata.dst_node_id) not in self.lost]

    def configure_train(self, server_round, arrays, config, grid):
        return self._drop_lost(self._configure_train(server_round, arrays, config, grid))

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self._drop_lost(self._configure_evaluate(server_round, arrays, config, grid))

    def mixing(self, server_round):
        w, stale = self._mixing(server_round)
        if self.answered is None or self.answered.all():
            return w, stale
        return renormalise(w, self.answered, stale), stale

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        s = self.strategy
        answered = np.zeros(s.n, dtype=bool)
        replied = set()
        for msg in replies:
            silo = s.silo_of_node.get(msg.metadata.src_node_id)
            if silo is not None:
                replied.add(silo)
                answered[silo] = not msg.has_error()
        self.answered = answered
        try:
            result = self._aggregate_train(server_round, replies)
        finally:
            self.answered = None
        for silo, reason in list(s.last.failed.items()):
            if silo in self.lost:
                s.last.failed[silo] = f"lost in round {self.lost[silo]}"
            elif silo not in replied:  # no reply within the timeout: the SuperNode is gone
                self.lost[silo] = server_round
                s.last.failed[silo] = f"lost: {reason} within the round timeout"
        return result
