"""The round loop's contract: a Flower strategy that keeps one model per silo.

Every fedsim strategy is a :class:`flwr.serverapp.strategy.Strategy` whose
state is a matrix ``X`` of flat models, one row per silo. Round ``k``:

1. :meth:`configure_train` sends silo ``i`` its own row ``x_i`` (Flower sends a
   different message to each node natively);
2. silos train locally and reply with ``y_i``; every reply is checked
   (:func:`check_reply`) and one that fails is rejected, never mixed;
3. :meth:`aggregate` mixes, ``x_i ← Σ_j W_ij z_j`` with the round's
   mixing matrix ``W_k`` (``z_j = y_j``, or ``j``'s previous model where the
   design says that arrival is stale), and returns the round as a
   :class:`RoundResult` value; :meth:`commit` makes it the new state (the
   round loop commits a round only when the run goes on).

FedAvg-style strategies are the special case where every row of ``W_k`` is
the same. A subclass only defines :meth:`mixing`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsim.strategies.mixing import renormalise


@dataclass
class RoundOutcome:
    """What one round's silos reported, for the run records."""

    train: dict[int, dict[str, float]] = field(default_factory=dict)  # silo -> metrics
    failed: dict[int, str] = field(default_factory=dict)  # silo -> reason


@dataclass
class RoundResult(RoundOutcome):
    """One mixed round, as a value: the next models and what produced them."""

    round: int = 0
    models: np.ndarray | None = None  # (n, P) the silos' models after the round
    n_examples: np.ndarray | None = None  # the sample counts FedAvg weights with
    mixing: np.ndarray | None = None  # the mixing matrix applied (renormalised over the silos that answered)
    lost: dict[int, int] = field(default_factory=dict)  # silo -> round it was lost in (LostSiloTolerance)


class RejectedReply(ValueError):
    """A silo's reply that must not be mixed; the message says why."""


def check_reply(msg: Message, size: int, max_examples: int | None = None) -> tuple[np.ndarray, dict]:
    """The flat model and metrics of a training reply, or :class:`RejectedReply` (see :func:`check_update`)."""
    try:
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        metrics = dict(msg.content["metrics"])
    except Exception as exc:  # a malformed record from a remote silo
        raise RejectedReply(f"malformed reply ({type(exc).__name__}: {exc})") from None
    return check_update(arrays, metrics, size, max_examples), metrics


def check_update(arrays: list[np.ndarray], metrics: dict, size: int, max_examples: int | None = None) -> np.ndarray:
    """The one flat model of a silo's update, if it may be mixed; else :class:`RejectedReply`.

    An update is mixed only if it holds exactly one float32 array of the
    model's ``size`` values, all finite, a finite ``train_loss``, and a
    ``num-examples`` that is a whole number >= 1 (and <= ``max_examples``,
    the silo's partition size, where the strategy weights by it).

    Examples
    --------
    >>> ok = {"train_loss": 0.5, "num-examples": 10.0}
    >>> check_update([np.ones(3, np.float32)], ok, 3).tolist()
    [1.0, 1.0, 1.0]
    >>> check_update([np.array([1, np.nan, 0], np.float32)], ok, 3)
    Traceback (most recent call last):
    ...
    fedsim.strategies.base.RejectedReply: model has 1 non-finite value(s)
    >>> check_update([np.ones(4, np.float32)], ok, 3)
    Traceback (most recent call last):
    ...
    fedsim.strategies.base.RejectedReply: model array is float32[4], expected float32[3]
    >>> check_update([np.ones(3, np.float32)], ok | {"num-examples": 1e12}, 3, max_examples=100)
    Traceback (most recent call last):
    ...
    fedsim.strategies.base.RejectedReply: num-examples 1e+12 exceeds the silo's 100 training samples
    >>> check_update([np.ones(3, np.float32)], ok | {"num-examples": -5.0}, 3)
    Traceback (most recent call last):
    ...
    fedsim.strategies.base.RejectedReply: num-examples is -5.0, expected a whole number >= 1
    """
    if len(arrays) != 1:
        raise RejectedReply(f"expected one model array, got {len(arrays)}")
    a = arrays[0]
    if a.dtype != np.float32 or a.shape != (size,):
        raise RejectedReply(f"model array is {a.dtype}{list(a.shape)}, expected float32[{size}]")
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise RejectedReply(f"model has {bad} non-finite value(s)")
    loss = metrics.get("train_loss")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        raise RejectedReply(f"train_loss is {loss!r}, expected a finite number")
    n = metrics.get("num-examples", 1.0)
    if not isinstance(n, (int, float)) or not math.isfinite(n) or n < 1 or n != int(n):
        raise RejectedReply(f"num-examples is {n!r}, expected a whole number >= 1")
    if max_examples is not None and n > max_examples:
        raise RejectedReply(f"num-examples {n:g} exceeds the silo's {max_examples} training samples")
    return a


def as_flower(result: RoundResult) -> tuple[ArrayRecord, MetricRecord]:
    """Flower's ``aggregate_train`` answer for a round: the mean model and the mean training loss."""
    mean = {"train_loss": float(np.mean([m["train_loss"] for m in result.train.values()]))} if result.train else {}
    return ArrayRecord([result.models.mean(axis=0)]), MetricRecord(mean)


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
    max_examples : sequence of int, optional
        Each silo's training-set size: a reply claiming more samples is
        rejected (only strategies that weight by sample count use it).
    """

    name = "base"
    weights_by_examples = False  # FedAvg/FedProx: the mixing weights are the reported sample counts

    def __init__(self, n_silos: int, initial: np.ndarray, node_of_silo: dict[int, int],
                 max_examples=None) -> None:
        self.n = n_silos
        self.models = np.tile(np.asarray(initial, dtype=np.float32), (n_silos, 1))
        self.node_of_silo = dict(node_of_silo)
        self.silo_of_node = {v: k for k, v in node_of_silo.items()}
        self.n_examples = np.ones(n_silos)
        self.max_examples = None if max_examples is None else [int(m) for m in max_examples]

    # -- the only thing a design defines ------------------------------------
    def mixing(self, server_round: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W, stale)`` for round ``server_round`` (1-based); ``stale`` may be None."""
        raise NotImplementedError

    def mix_models(self, server_round: int, trained: np.ndarray, answered: np.ndarray,
                   n_examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(next models, W applied)`` from this round's trained models.

        Rows of silos that did not answer are renormalised over the silos that
        did (:func:`~fedsim.strategies.mixing.renormalise`'s rule: a silo that did
        not answer keeps its model); stale entries use the previous models.
        """
        w, stale = self.mixing(server_round, n_examples) if self.weights_by_examples else self.mixing(server_round)
        if not answered.all():
            w = renormalise(w, answered, stale)
        if stale is not None and stale.any():
            new = np.where(stale, 0.0, w) @ trained + np.where(stale, w, 0.0) @ self.models
        elif (w == w[0]).all():  # FedAvg/STAR with every silo answering: one average, n copies
            new = np.broadcast_to(w[0] @ trained, trained.shape)
        else:
            new = w @ trained
        return new.astype(np.float32), w

    def train_config(self, server_round: int) -> dict:
        """Extra per-round config for the silos (e.g. FedProx's ``prox-mu``)."""
        return {}

    # -- the round as a value -------------------------------------------------
    def aggregate(self, server_round: int, replies: Iterable[Message]) -> RoundResult:
        """Check and mix round ``server_round``'s replies; the strategy's state is not changed."""
        result = RoundResult(round=server_round)
        trained = self.models.copy()  # a silo that failed keeps its model
        n_examples = self.n_examples.copy()
        size = self.models.shape[1]
        for msg in replies:
            silo = self.silo_of_node.get(msg.metadata.src_node_id)
            if silo is None:
                continue
            if msg.has_error():
                result.failed[silo] = msg.error.reason or f"error code {msg.error.code}"
                continue
            cap = self.max_examples[silo] if (self.weights_by_examples and self.max_examples) else None
            try:
                trained[silo], metrics = check_reply(msg, size, cap)
            except RejectedReply as exc:
                result.failed[silo] = f"reply rejected: {exc}"
                continue
            result.train[silo] = metrics
            n_examples[silo] = metrics.get("num-examples", 1.0)
        for silo in range(self.n):
            if silo not in result.train and silo not in result.failed:
                result.failed[silo] = "no reply"
        answered = np.array([s in result.train for s in range(self.n)])
        result.models, result.mixing = self.mix_models(server_round, trained, answered, n_examples)
        result.n_examples = n_examples
        return result

    def commit(self, result: RoundResult) -> None:
        """Make ``result`` the strategy's state (the next round starts from its models)."""
        self.models, self.n_examples = result.models, result.n_examples

    def load_state(self, models: np.ndarray, n_examples) -> None:
        """Restore the state of a checkpoint."""
        self.models = np.asarray(models, dtype=np.float32)
        self.n_examples = np.asarray(n_examples, float)

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
        result = self.aggregate(server_round, replies)
        self.commit(result)
        return as_flower(result)

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
