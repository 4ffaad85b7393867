"""Rounds that lose a silo: a strategy wrapping another, the way Flower's DP strategies wrap one.

In a deployment a SuperNode can die mid-run. The round then ends after its
timeout with the replies that came, and each silo ``i`` that answered mixes
only over the models that arrived. With the round's mixing matrix ``W`` and
``A`` the set of silos that answered, the renormalised matrix is

.. math::

    \\tilde W_{ij} = \\frac{W_{ij}\\,[j \\in A]}{\\sum_{l \\in A} W_{il}}
    \\quad (i \\in A), \\qquad \\tilde W_{i\\cdot} = e_i \\quad (i \\notin A),

so every row still sums to one; a silo that did not answer keeps the model
the server holds for it (:func:`~fedsim.strategies.mixing.renormalise`,
which every :class:`~fedsim.strategies.base.TopologyStrategy` applies).

What this wrapper adds is the *lost* silo: one that sent no reply at all
within the round timeout. Later rounds no longer send to it (its SuperNode
would only cost every round the full timeout) and record it as failed with
the round it was lost in. A silo whose ClientApp replied with an error, or
whose reply was rejected, is left out of that round's mixing only, and asked
again the next round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from flwr.serverapp.strategy import Strategy

from fedsim.strategies.base import RoundResult, TopologyStrategy, as_flower


class LostSiloTolerance(Strategy):
    """Wrap ``strategy`` so that silos that stop answering are dropped for the rest of the run.

    The wrapped strategy is not modified; the round loop talks to the wrapper
    through the same interface (``configure_*``, :meth:`aggregate`,
    :meth:`commit`, ``models``). :attr:`lost` maps each lost silo to the round
    it was lost in.
    """

    def __init__(self, strategy: TopologyStrategy) -> None:
        self.strategy = strategy
        self.lost: dict[int, int] = {}

    # -- the inner strategy's state, read through ------------------------------
    @property
    def n(self) -> int:
        return self.strategy.n

    @property
    def models(self):
        return self.strategy.models

    @property
    def n_examples(self):
        return self.strategy.n_examples

    def load_state(self, models, n_examples) -> None:
        self.strategy.load_state(models, n_examples)

    def consensus_distance(self) -> float:
        return self.strategy.consensus_distance()

    # -- rounds ------------------------------------------------------------------
    def _drop_lost(self, msgs: Iterable) -> list:
        silo_of = self.strategy.silo_of_node
        return [m for m in msgs if silo_of.get(m.metadata.dst_node_id) not in self.lost]

    def configure_train(self, server_round, arrays, config, grid):
        return self._drop_lost(self.strategy.configure_train(server_round, arrays, config, grid))

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self._drop_lost(self.strategy.configure_evaluate(server_round, arrays, config, grid))

    def aggregate(self, server_round: int, replies: Iterable) -> RoundResult:
        replies = list(replies)
        silo_of = self.strategy.silo_of_node
        replied = {silo_of.get(m.metadata.src_node_id) for m in replies}
        result = self.strategy.aggregate(server_round, replies)
        lost, failed = dict(self.lost), dict(result.failed)
        for silo, reason in result.failed.items():
            if silo in lost:
                failed[silo] = f"lost in round {lost[silo]}"
            elif silo not in replied:  # no reply within the timeout: the SuperNode is gone
                lost[silo] = server_round
                failed[silo] = f"lost: {reason} within the round timeout"
        return replace(result, failed=failed, lost=lost)

    def commit(self, result: RoundResult) -> None:
        self.strategy.commit(result)
        self.lost = dict(result.lost)

    def aggregate_train(self, server_round, replies):
        result = self.aggregate(server_round, replies)
        self.commit(result)
        return as_flower(result)

    def aggregate_evaluate(self, server_round, replies):
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        return None
