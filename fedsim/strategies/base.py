"""The round loop's contract: a Flower strategy that keeps one model per silo.

Every fedsim strategy is a :class:`flwr.serverapp.strategy.Strategy` whose
state is a matrix ``X`` of flat models, one row per silo. Round ``k``:

1. :meth:`configure_train` sends silo ``i`` its own row ``x_i`` (Flower sends a
   different message to each node natively);
2. silos train locally and reply with ``y_i``;
3. :meth:`aggregate_train` mixes, ``x_i ← Σ_j W_ij z_j`` with the round's
   mixing matrix ``W_k`` (``z_j = y_j``, or ``j``'s previous model where the
   design says that arrival is stale).

FedAvg-style strategies are the special case where every row of ``W_k`` is
the same. A subclass only defines :meth:`mixing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.strategies.mixing import renormalise


@dataclass
class RoundOutcome:
    """What one round produced, for the run records."""

    train: dict[int, dict[str, float]] = field(default_factory=dict)  # silo -> metrics
    failed: dict[int, str] = field(default_factory=dict)  # silo -> reason


class TopologyStrategy(Strategy):
    """Base class: per-silo models mixed by a per-round matrix.

    Parameters
    ----------
    n_silos : int
        Number of silos.
    initial : (P,) array
        The initial flat model, sent to every silo in round 1.
    node_of_silo : dict
        Flower node id of each silo index.
    """

    name = "base"

    def __init__(self, n_silos: int, initial: np.ndarray, node_of_silo: dict[int, int]) -> None:
        self.n = n_silos
        self.models = np.tile(np.asarray(initial, dtype=np.float32), (n_silos, 1))
        self.node_of_silo = dict(node_of_silo)
        self.silo_of_node = {v: k for k, v in node_of_silo.items()}
        self.n_examples = np.ones(n_silos)
        self.last = RoundOutcome()
        self.last_mixing: np.ndarray | None = None

    # -- the only thing a design defines ------------------------------------
    def mixing(self, server_round: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W, stale)`` for round ``server_round`` (1-based); ``stale`` may be None."""
        raise NotImplementedError

    def mix_models(self, server_round: int, trained: np.ndarray, answered: np.ndarray) -> np.ndarray:
        """The silos' next models from this round's trained ones.

        Rows of silos that did not answer are renormalised over the silos that
        did (:func:`~fedsim.strategies.mixing.renormalise`'s rule: a silo that did
        not answer keeps its model); stale entries use the previous models.
        """
        w, stale = self.mixing(server_round)
        if not answered.all():
            w = renormalise(w, answered, stale)
        if stale is not None and stale.any():
            new = np.where(stale, 0.0, w) @ trained + np.where(stale, w, 0.0) @ self.models
        else:
            new = w @ trained
        return new.astype(np.float32)

    def train_config(self, server_round: int) -> dict:
        """Extra per-round config for the silos (e.g. FedProx's ``prox-mu``)."""
        return {}

    # -- Flower Strategy API ------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord | None, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        cfg = dict(config) | self.train_config(server_round)
        msgs = []
        for silo in range(self.n):
            content = RecordDict({
                "arrays": ArrayRecord([self.models[silo]]),
                "config": ConfigRecord(cfg | {"silo": silo}),
            })
            msgs.append(Message(content, self.node_of_silo[silo], "train", group_id=str(server_round)))
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        outcome = RoundOutcome()
        trained = self.models.copy()  # a silo that failed keeps its model
        for msg in replies:
            silo = self.silo_of_node.get(msg.metadata.src_node_id)
            if silo is None:
                continue
            if msg.has_error():
                outcome.failed[silo] = msg.error.reason or f"error code {msg.error.code}"
                continue
            trained[silo] = msg.content["arrays"].to_numpy_ndarrays()[0]
            metrics = dict(msg.content["metrics"])
            outcome.train[silo] = metrics
            self.n_examples[silo] = metrics.get("num-examples", 1.0)
        for silo in range(self.n):
            if silo not in outcome.train and silo not in outcome.failed:
                outcome.failed[silo] = "no reply"
        answered = np.array([s in outcome.train for s in range(self.n)])
        self.models = self.mix_models(server_round, trained, answered)
        self.last_mixing, _ = self.mixing(server_round)
        self.last = outcome
        mean = {k: float(np.mean([m[k] for m in outcome.train.values()]))
                for k in ("train_loss",) if outcome.train}
        return ArrayRecord([self.models.mean(axis=0)]), MetricRecord(mean)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord | None, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return [
            Message(RecordDict({"arrays": ArrayRecord([self.models[s]]),
                                "config": ConfigRecord(dict(config) | {"silo": s})}),
                    self.node_of_silo[s], "evaluate", group_id=f"eval-{server_round}")
            for s in range(self.n)
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        vals = [dict(m.content["metrics"]) for m in replies if not m.has_error()]
        if not vals:
            return None
        return MetricRecord({k: float(np.mean([v[k] for v in vals])) for k in vals[0]})

    def summary(self) -> None:  # the run directory holds the summary
        return None

    # -- helpers -------------------------------------------------------------
    def consensus_distance(self) -> float:
        """Mean squared distance of the silo models to their average."""
        return float(((self.models - self.models.mean(axis=0)) ** 2).sum(axis=1).mean())
