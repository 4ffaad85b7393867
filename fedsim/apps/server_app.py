"""The fedsim ServerApp: a :class:`~fedsim.apps.plan.RunPlan` and a round loop.

:func:`serve` runs inside Flower's ServerApp both in simulation (``fedsim
run``) and in deployment (``flwr run`` / ``fedsim deploy``). It builds the
plan once, finds which node serves which silo, then runs one of two loops:

* :func:`hub_rounds` — every round the strategy sends each silo its model,
  the silos train and reply, the strategy mixes (FedAvg, FedProx, STAR; and
  decentralized strategies in simulation, where the mixing runs silo by silo
  in this process: the ``inproc`` data plane);
* :func:`peer_rounds` — the peer data plane: the silos run ``--sync-every``
  rounds at a time themselves and exchange models peer to peer
  (:mod:`fedsim.peer`); this loop sends only control messages (rounds,
  plan, peer directory) and collects the silos' records.

Both record into the same :class:`Book` (``rounds.csv`` written after each
round or sync, checkpoints, failures, progress, summary), with the simulated
round time the topology would take on the WAN next to the measured time.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim import interrupt
from fedsim.apps.config import RunConfig
from fedsim.apps.plan import RunPlan, resolve_profile, timing_topology  # noqa: F401 - public names
from fedsim.apps.records import SILO_STATE_DIR, RunRecorder
from fedsim.errors import FedsimError


class RunStopped(FedsimError):
    """The run stopped early (failed silos); completed rounds are kept."""


# ----------------------------------------------------------------------------- nodes
def _wait_for_nodes(grid: Grid, n: int, timeout: float = 120.0) -> list[int]:
    t0 = time.monotonic()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.monotonic() - t0 > timeout:
            raise FedsimError(f"only {len(nodes)} of {n} SuperNodes connected within {timeout:.0f} s")
        time.sleep(0.01)


QUERY_TIMEOUT_S = 600.0  # generous: on a loaded machine the first message waits for ClientApp actors
QUERY_RETRY_S = 10.0


def _map_silos(grid: Grid, nodes: list[int], n: int, peers: dict | None = None,
               retry: float | None = None) -> dict[int, int]:
    """Ask every node which silo it serves (its ``partition-id``).

    In a deployment, a node that has not answered after ``retry`` seconds is
    asked again: a SuperNode that still held the reply of a stopped run's
    message sends a new run's reply only when it pulls its next message
    (Flower 1.42). The Simulation Engine has no such case (``retry=None``):
    there a late reply only means the ClientApp actors are still starting,
    and asking again would queue duplicate work for them.
    ``peers``, when given, is filled with each silo's peer data plane
    settings from its reply (address, certificate identity).
    """
    answers: dict[int, int] = {}  # node -> the silo it reported
    peer_of: dict[int, dict] = {}
    errors: dict[int, str] = {}  # nodes that answered with an error (a dead node the SuperLink still lists)
    pending = list(nodes)
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while pending and (left := deadline - time.monotonic()) > 0:
        msgs = [Message(RecordDict({"config": ConfigRecord({})}), nid, "query") for nid in pending]
        unplaced: list[str] = []  # error replies the SuperLink wrote for a node (their source is not the node)
        for reply in grid.send_and_receive(msgs, timeout=left if retry is None else min(retry, left)):
            node = reply.metadata.src_node_id
            if reply.has_error():
                why = reply.error.reason or f"error code {reply.error.code}"
                if node in pending:
                    errors[node] = why
                else:
                    unplaced.append(why)
                continue
            answers[node] = int(reply.content["metrics"]["silo"])
            if "peer" in reply.content:
                peer_of[node] = dict(reply.content["peer"])
        silent = [nid for nid in pending if nid not in answers and nid not in errors]
        if unplaced and len(unplaced) >= len(silent):  # every silent node got an error reply
            errors.update({nid: unplaced[0] for nid in silent})
        pending = [nid for nid in pending if nid not in answers and nid not in errors]
    mapping: dict[int, int] = {}
    free = []
    for node in (nd for nd in nodes if nd in answers):
        silo = answers[node]
        if 0 <= silo < n and silo not in mapping:
            mapping[silo] = node
        else:
            free.append(node)
    missing = [s for s in range(n) if s not in mapping]
    if len(free) < len(missing):
        answered = len(mapping) + len(free)
        why = "; ".join(f"node {nd}: {e}" for nd, e in sorted(errors.items()))[:500]
        raise FedsimError(f"silos {missing} have no SuperNode: {answered} of {len(nodes)} nodes "
                          f"answered the silo query in time (need {n})" + (f"; {why}" if why else ""))
    mapping.update(zip(missing, sorted(free)))
    if peers is not None:
        peers.update({silo: peer_of.get(node, {}) for silo, node in mapping.items()})
    return mapping


def build_strategy(plan: RunPlan, initial: np.ndarray, node_of_silo, tolerate_lost: bool = False):
    """The run's strategy; with ``tolerate_lost`` wrapped in :class:`LostSiloTolerance`."""
    from fedsim.strategies import CENTRALIZED, Decentralized, FedProx
    from fedsim.strategies.tolerance import LostSiloTolerance

    cfg = plan.cfg
    if cfg.strategy in CENTRALIZED:
        cls = CENTRALIZED[cfg.strategy]
        caps = plan.train_sizes() if cls.weights_by_examples else None
        kwargs = {"mu": cfg.mu} if cls is FedProx else {}
        strategy = cls(plan.n, initial, node_of_silo, max_examples=caps, **kwargs)
    else:
        strategy = Decentralized(plan.n, initial, node_of_silo, schedule=plan.schedule, rounds=cfg.rounds,
                                 seed=cfg.seed, self_weight=cfg.self_weight, plan=plan.mixing)
    return LostSiloTolerance(strategy) if tolerate_lost else strategy


# ----------------------------------------------------------------------------- records
class Book:
    """The run's records: rows, checkpoints, failures, progress bar, failure policy, summary."""

    def __init__(self, plan: RunPlan, run_dir: Path, data_plane: str, progress: bool = True,
                 min_silos: int | None = None) -> None:
        from tqdm import tqdm

        self.plan, self.cfg, self.dir = plan, plan.cfg, Path(run_dir)
        self.data_plane, self.min_silos = data_plane, min_silos
        self.rec = RunRecorder(self.dir, plan.n, plan.task.metric)
        self.start, self.sim_cum, self.wall_total, self.failed_rounds = 1, 0.0, 0.0, 0
        self.bytes = {"hub_array_bytes": 0, "peer_array_bytes": 0}
        self.extra_summary: dict = {}
        self.stop_reason: str | None = None
        self.bar = tqdm(total=self.cfg.rounds, desc=f"{self.cfg.strategy}/{plan.net.name}/{self.cfg.task}",
                        unit="round", disable=not progress, leave=False)

    def resume(self) -> tuple[np.ndarray, dict] | None:
        state = self.rec.load_checkpoint()
        if state is None:
            return None
        last, models, meta = state
        self.start, self.sim_cum = last + 1, float(meta["sim_cum_ms"])
        self.wall_total, self.failed_rounds = float(meta["wall_total_s"]), int(meta["failed_rounds"])
        self.bytes = {k: int(meta.get(k, 0)) for k in self.bytes}
        self.bar.update(last)
        return models, meta

    def meta(self, **extra) -> dict:
        return {"sim_cum_ms": self.sim_cum, "wall_total_s": self.wall_total, "failed_rounds": self.failed_rounds,
                "data_plane": self.data_plane, "run_key": self.cfg.key(), **self.bytes, **extra}

    def add_round(self, k: int, train: dict[int, dict], failed: dict[int, str], wall: float,
                  consensus: float) -> str | None:
        """Record round ``k``: ``train`` holds each silo's metrics (with ``eval_*`` of the model
        the round started from, which close row ``k - 1``). Returns why the run must stop, if so."""
        n, cfg = self.plan.n, self.cfg
        evals = {s: m for s, m in train.items() if "eval_loss" in m}
        if k == 1:
            self.rec.open_round({"round": 0, "sim_round_ms": 0.0, "sim_cum_ms": 0.0, "wall_s": 0.0,
                                 "train_loss": float("nan"), "consensus": 0.0, "failed": ""})
        self.rec.close_pending(evals)
        if failed:
            self.failed_rounds += 1
            self.rec.record_failure(k, failed)
            answered = n - len(failed)
            reasons = "; ".join(sorted(set(failed.values())))[:300]
            if self.min_silos is not None and answered < self.min_silos:
                return (f"round {k}: only {answered} of {n} silos answered (--min-silos {self.min_silos}); "
                        f"failed: silo(s) {sorted(failed)} ({reasons})")
            if self.failed_rounds >= cfg.max_failed_rounds:
                return (f"round {k}: silo(s) {sorted(failed)} failed ({reasons}); stopping after "
                        f"{self.failed_rounds} failed round(s) (--max-failed-rounds {cfg.max_failed_rounds})")
        sim_ms = float(self.plan.clock.round_ms[k - 1])
        self.sim_cum += sim_ms
        self.wall_total += wall
        row = {"round": k, "sim_round_ms": sim_ms, "sim_cum_ms": self.sim_cum, "wall_s": wall,
               "train_loss": float(np.mean([m["train_loss"] for m in train.values()])) if train else float("nan"),
               "consensus": consensus, "failed": " ".join(str(s) for s in sorted(failed))}
        for s, m in train.items():
            row[f"train_loss_s{s}"] = m["train_loss"]
        self.rec.open_round(row)
        self.bar.update(1)
        self.show_progress(row["train_loss"])
        return None

    def show_progress(self, train_loss: float | None = None) -> None:
        """The bar's numbers: the newest evaluated round's metric, under its full name and first (a narrow
        terminal cuts the end of the line), then the simulated clock and the last training loss."""
        done = self.rec.rows[-1] if self.rec.rows else None
        post = {}
        if done is not None:
            post[self.plan.task.metric] = f"{done['eval_metric']:.4f} (round {done['round']})"
        post["sim"] = f"{self.sim_cum / 1e3:.2f}s"
        if train_loss is not None:
            post["loss"] = f"{train_loss:.3f}"
        self.bar.set_postfix(post)

    def checkpoint(self, k: int, models: np.ndarray, **extra) -> None:
        self.rec.checkpoint(k, models, self.meta(**extra))

    def finish(self, evals: dict[int, dict]) -> None:
        """Close the last row with the final evaluation; keep the final models' fingerprints."""
        self.rec.close_pending(evals)
        self.show_progress()  # the bar ends on the final round's metric, as the summary does
        self.extra_summary["final_fingerprints"] = {
            str(s): [m["received_sum"], m["received_signed"]] for s, m in sorted(evals.items()) if "received_sum" in m}
        self.rec.write_rounds()

    def summary(self) -> dict:
        self.bar.close()
        last = self.rec.rows[-1] if self.rec.rows else {}
        clock, cfg = self.plan.clock, self.cfg
        done = int(last.get("round", 0))
        s = {
            "network": self.plan.net.name, "silos": self.plan.n, "strategy": cfg.strategy, "task": cfg.task,
            "timing_topology": self.plan.topology, "rounds_completed": done, "rounds_requested": cfg.rounds,
            "final_eval_metric": last.get("eval_metric"), "final_eval_loss": last.get("eval_loss"),
            "metric": self.plan.task.metric, "simulated_total_ms": last.get("sim_cum_ms", 0.0),
            "simulated_cycle_time_ms": clock.value, "cycle_time_definition": clock.definition,
            "wall_total_s": self.wall_total, "mean_wall_round_s": self.wall_total / max(1, done),
            "weights_method": self.plan.mixing.weights_method if self.plan.mixing else None,
            "stopped": self.stop_reason, "failed_rounds": self.failed_rounds,
            "data_plane": self.data_plane, **self.bytes, **self.extra_summary,
        }
        self.rec.write_summary(s)
        self.rec.plot(f"{cfg.strategy} on {self.plan.net.name}, {cfg.task}")
        return s


def _array_bytes(messages) -> int:
    total = 0
    for m in messages:
        if not m.has_error():
            for rec in m.content.array_records.values():
                total += sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in rec.values())
    return total


def _final_evaluation(book: Book, replies, on_round=None, strategy=None, expected=None) -> None:
    """Close the last row with the silos' evaluation of their final models.

    A silo whose evaluation failed is recorded as failed in round
    ``rounds + 1``; when no silo could evaluate, the run stops with that
    reason (it never ends as completed with a NaN metric).
    """
    from fedsim.strategies.base import RoundOutcome

    replies = list(replies)
    evals, failed = {}, {}
    for r in replies:
        if r.has_error():
            failed[r.metadata.src_node_id] = r.error.reason or f"error code {r.error.code}"
            continue
        m = dict(r.content["metrics"])
        evals[int(m["silo"])] = m
    k = book.cfg.rounds + 1
    silent = sorted(set(expected if expected is not None else range(book.plan.n)) - set(evals))
    if silent:
        reasons = "; ".join(sorted(set(failed.values()))) or "no reply"
        book.rec.record_failure(k, {s: f"final evaluation failed: {reasons}" for s in silent})
        if not evals:
            book.stop_reason = f"the final evaluation failed on every silo ({reasons[:300]})"
    book.finish(evals)
    if on_round:
        on_round(k, RoundOutcome(train=evals, failed={s: "final evaluation failed" for s in silent}), strategy)


# ----------------------------------------------------------------------------- the hub loop
def hub_rounds(grid: Grid, plan: RunPlan, book: Book, strategy, base_cfg: dict, on_round=None,
               resumed: tuple | None = None) -> None:
    """Rounds through the hub: the strategy sends each silo its model and mixes the replies.

    Each round's :class:`~fedsim.strategies.base.RoundResult` is committed to
    the strategy only when the run goes on, so a round that stops the run is
    not applied and the checkpoint is the state before it.
    """
    cfg = plan.cfg
    if resumed is not None:
        models, meta = resumed
        strategy.load_state(models, meta["n_examples"])

    def keep(k: int) -> None:
        book.checkpoint(k, strategy.models, n_examples=strategy.n_examples.tolist())

    for k in range(book.start, cfg.rounds + 1):
        if interrupt.requested():
            book.stop_reason = f"interrupted after round {k - 1}"
            keep(k - 1)
            return
        msgs = list(strategy.configure_train(k, None, ConfigRecord(base_cfg | {"round": k}), grid))
        t0 = time.perf_counter()
        replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout))
        if interrupt.requested():  # the replies of an interrupted round are not applied
            book.stop_reason = f"interrupted during round {k}"
            keep(k - 1)
            return
        book.bytes["hub_array_bytes"] += _array_bytes(msgs) + _array_bytes(replies)
        result = strategy.aggregate(k, replies)
        if on_round:
            on_round(k, result, strategy)
        consensus = float(((result.models - result.models.mean(axis=0)) ** 2).sum(axis=1).mean())
        stop = book.add_round(k, result.train, result.failed, time.perf_counter() - t0, consensus)
        if stop is not None:
            book.stop_reason = stop
            keep(k - 1)
            return
        strategy.commit(result)
        book.rec.append_rounds()
        if k % cfg.checkpoint_every == 0:
            keep(k)
    # Evaluate the final models to close the last row.
    msgs = list(strategy.configure_evaluate(cfg.rounds, None, ConfigRecord(base_cfg | {"round": cfg.rounds + 1}),
                                            grid))
    book.bytes["hub_array_bytes"] += _array_bytes(msgs)
    lost = getattr(strategy, "lost", {})
    _final_evaluation(book, grid.send_and_receive(msgs, timeout=cfg.round_timeout), on_round, strategy,
                      expected=[s for s in range(plan.n) if s not in lost])
    keep(cfg.rounds)


# ----------------------------------------------------------------------------- the peer loop
def _exchange(grid: Grid, msgs: list[Message], timeout: float | None, grace: float,
              poll: float = 0.05) -> list[Message]:
    """Send ``msgs`` and collect replies (Flower's public push/pull API).

    Stops when every reply came, after ``timeout``, or ``grace`` seconds after
    the latest reply: the silos of a segment finish within a peer timeout of
    each other, so a silo still silent then is gone.
    """
    pending = {m for m in grid.push_messages(msgs) if m}
    replies: list[Message] = []
    t0 = last = time.monotonic()
    while pending:
        got = list(grid.pull_messages(pending))
        now = time.monotonic()
        if got:
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            last = now
        if not pending or (timeout is not None and now - t0 > timeout) or (replies and now - last > grace):
            break
        time.sleep(poll)
    return replies


def peer_rounds(grid: Grid, plan: RunPlan, book: Book, node_of_silo: dict[int, int], directory: dict,
                base_cfg: dict, on_round=None) -> None:
    """Rounds on the peer data plane: the silos run ``sync_every`` rounds at a time themselves.

    ``directory``: ``silo -> {dst: HOST:PORT}``, where each silo reaches its
    out-neighbours. No model array goes through this loop.
    """
    cfg, n = plan.cfg, plan.n
    size = int(plan.initial_model().size)
    lost: dict[int, str] = {}
    lost_round: dict[int, int] = {}
    session = f"{cfg.key()}-{uuid.uuid4().hex[:12]}"  # peers of another run (or its stopped ClientApps) are refused
    k = book.start
    while k <= cfg.rounds:
        if interrupt.requested():
            book.stop_reason = f"interrupted after round {k - 1}"
            return
        last = min(cfg.rounds, ((k - 1) // cfg.sync_interval + 1) * cfg.sync_interval)
        msgs, sent_to = [], []
        for silo in range(n):
            if silo in lost:
                continue
            rows = {r: row.to_json() for r, row in plan.silo_rows(silo, k, last).items()}
            c = base_cfg | {"round": k, "first": k, "last": last, "rows": json.dumps(rows), "peer-run": session,
                            "directory": json.dumps({str(d): a for d, a in directory[silo].items()}),
                            "lost": json.dumps(sorted(lost)), "peer-timeout": cfg.peer_timeout,
                            "model-size": size}
            msgs.append(Message(RecordDict({"config": ConfigRecord(c)}), node_of_silo[silo], "train.peer",
                                group_id=f"peer-{k}-{last}"))
            sent_to.append(silo)
        t0 = time.perf_counter()
        t_epoch = time.time()
        seg_timeout = None if cfg.round_timeout is None else cfg.round_timeout * (last - k + 1)
        replies = _exchange(grid, msgs, seg_timeout, grace=2 * cfg.peer_timeout + 5.0)
        seg_wall = time.perf_counter() - t0
        reports: dict[int, dict] = {}
        errors: dict[int, str] = {}
        silo_of_node = {v: s for s, v in node_of_silo.items()}
        for reply in replies:
            silo = silo_of_node.get(reply.metadata.src_node_id)
            if silo is None:
                continue
            if reply.has_error():
                errors[silo] = reply.error.reason or f"error code {reply.error.code}"
            else:
                reports[silo] = json.loads(str(reply.content["report"]["json"]))
        for silo in sent_to:
            if silo not in reports:
                why = errors.get(silo, "no reply within the segment")
                # lost in the first round a neighbour missed it, else the segment's first round
                missed = [int(rec["round"]) for rep in reports.values() for rec in rep["records"]
                          if str(silo) in rec["missing"]]
                lost[silo], lost_round[silo] = why, min(missed) if missed else k
        for rep in reports.values():
            book.bytes["peer_array_bytes"] += int(rep["bytes_sent"])
        stamps = {s: {int(r["round"]): r for r in rep["records"]} for s, rep in reports.items()}
        prev_done = t_epoch
        for r in range(k, last + 1):
            train = {s: {key: v for key, v in st[r].items() if isinstance(v, (int, float))}
                     for s, st in stamps.items() if r in st}
            failed = {s: f"lost in round {lost_round[s]}: {lost[s]}" for s in lost if lost_round[s] <= r}
            done = max((st[r]["t_done"] for st in stamps.values() if r in st), default=prev_done)
            wall = max(0.0, done - prev_done) if len(stamps) else seg_wall / (last - k + 1)
            prev_done = done
            if on_round:
                from fedsim.strategies.base import RoundOutcome

                on_round(r, RoundOutcome(train=train, failed=failed), None)
            stop = book.add_round(r, train, failed, wall, float("nan"))
            if stop is not None:
                book.stop_reason = stop
                book.checkpoint(r - 1, np.zeros((0, 0), np.float32), lost=lost)
                return
        _write_times(book.dir, reports)
        book.rec.append_rounds()
        book.checkpoint(last, np.zeros((0, 0), np.float32), lost={str(s): w for s, w in lost.items()})
        k = last + 1
    msgs = [Message(RecordDict({"config": ConfigRecord(base_cfg | {"round": cfg.rounds + 1})}), node_of_silo[s],
                    "evaluate.peer", group_id="peer-final") for s in range(n) if s not in lost]
    _final_evaluation(book, _exchange(grid, msgs, cfg.round_timeout, grace=2 * cfg.peer_timeout + 5.0), on_round,
                      expected=[s for s in range(n) if s not in lost])
    book.checkpoint(cfg.rounds, np.zeros((0, 0), np.float32), lost={str(s): w for s, w in lost.items()})
    if lost:
        book.extra_summary["lost"] = {str(s): lost_round[s] for s in lost}
    times = _read_times(book.dir)
    if times:
        book.extra_summary["measured_cycle_ms"] = measured_cycle_ms(times)


TIMES_FILE = "peer_times.csv"


def _write_times(run_dir: Path, reports: dict[int, dict]) -> None:
    """Append each silo's per-round timestamps (``RUN/peer_times.csv``)."""
    path = Path(run_dir) / TIMES_FILE
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write("round,silo,t_start,t_trained,t_done,waited_for\n")
        for s, rep in sorted(reports.items()):
            for r in rep["records"]:
                fh.write(f"{r['round']},{s},{r['t_start']:.6f},{r['t_trained']:.6f},{r['t_done']:.6f},"
                         f"{r['waited_for']}\n")


def _read_times(run_dir: Path) -> dict[int, dict[int, float]]:
    path = Path(run_dir) / TIMES_FILE
    if not path.exists():
        return {}
    out: dict[int, dict[int, float]] = {}
    for line in path.read_text().splitlines()[1:]:
        r, s, _, _, done, _ = line.split(",")
        out.setdefault(int(s), {})[int(r)] = float(done)
    return out


def measured_cycle_ms(times: dict[int, dict[int, float]], skip: int = 1) -> float:
    """Mean over silos of the time per round after the first ``skip`` rounds (each silo's own clock).

    Examples
    --------
    >>> measured_cycle_ms({0: {1: 0.0, 2: 0.1, 3: 0.2}, 1: {1: 0.05, 2: 0.25, 3: 0.45}})
    150.0
    """
    per = []
    for rounds in times.values():
        ks = sorted(rounds)
        if len(ks) > skip + 1:
            a, b = ks[skip - 1] if skip else ks[0], ks[-1]
            per.append((rounds[b] - rounds[a]) / (b - a) * 1e3)
    return float(np.mean(per)) if per else math.nan


# ----------------------------------------------------------------------------- serve
def serve(grid: Grid, cfg: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
          on_round=None, tolerate_lost: bool = False, min_silos: int | None = None,
          silo_state_dir: Path | None = None, deployed: bool = False,
          peer_links: dict | None = None) -> dict:
    """Run (or resume) a training run on ``grid``; returns the summary dict.

    ``on_round(k, outcome, strategy)`` is called after round ``k`` is mixed
    (``k = cfg.rounds + 1`` for the final evaluation, whose ``outcome.train``
    holds the evaluation replies; ``strategy`` is ``None`` on the peer data
    plane; on the hub ``outcome`` is the round's
    :class:`~fedsim.strategies.base.RoundResult`). ``tolerate_lost``: wrap the
    hub strategy in :class:`~fedsim.strategies.tolerance.LostSiloTolerance`
    (a deployment's silos that stop answering are dropped). With
    ``min_silos``, a round in which fewer silos answered stops the run.
    ``silo_state_dir``: where silos without a ``state-dir`` of their own keep
    the parameters that never leave them (simulation). ``deployed``: the
    grid is a real deployment's (decentralized strategies then default to
    the gRPC peer data plane). ``peer_links``: ``"SRC>DST" -> HOST:PORT``
    overrides of where a silo reaches another (a link emulator in between).
    """
    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    plan = RunPlan.build(cfg)
    plane = cfg.resolved_plane(deployed)
    if plane == "grpc" and not deployed:
        raise FedsimError("the gRPC peer data plane needs a deployment (fedsim deploy); "
                          "in simulation decentralized strategies mix in process")
    from fedsim.apps.records import check_resumable
    from fedsim.io import atomic_write_text

    if resume:  # before anything is written or any silo is asked
        shape = None if plane in ("grpc", "mpi") else (plan.n, int(plan.initial_model().size))
        check_resumable(run_dir, cfg.key(), shape)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", cfg.to_json())
    nodes = _wait_for_nodes(grid, plan.n)
    peers: dict[int, dict] = {}
    node_of_silo = _map_silos(grid, nodes, plan.n, peers, retry=QUERY_RETRY_S if deployed else None)
    book = Book(plan, run_dir, plane, progress, min_silos)
    resumed = book.resume() if resume else None
    base_cfg = {"run-key": cfg.key(), "checkpoint-every": cfg.checkpoint_every,
                "task": cfg.task, "task-options": json.dumps(cfg.task_options, sort_keys=True),
                "seed": cfg.seed, "n-silos": plan.n, "local-steps": cfg.local_steps, "evaluate": True}
    if cfg.inject_fault:
        silo, rnd = (int(x) for x in cfg.inject_fault.split(":"))
        base_cfg |= {"fault-silo": silo, "fault-round": rnd}
    if silo_state_dir is not None:
        base_cfg["local-state-dir"] = str(Path(silo_state_dir).resolve())
    try:
        if plane == "grpc":
            if resumed is None and book.start == 1:
                (run_dir / TIMES_FILE).unlink(missing_ok=True)
            directory = peer_directory(peers, plan.n, peer_links)
            peer_rounds(grid, plan, book, node_of_silo, directory, base_cfg, on_round)
        else:
            strategy = build_strategy(plan, plan.initial_model(), node_of_silo, tolerate_lost)
            hub_rounds(grid, plan, book, strategy, base_cfg, on_round, resumed)
    finally:
        book.bar.close()
    summary = book.summary()
    if book.stop_reason:
        raise RunStopped(book.stop_reason)
    return summary


def peer_directory(peers: dict[int, dict], n: int, links: dict | None = None) -> dict[int, dict[int, str]]:
    """``silo -> {dst: HOST:PORT}`` from the silos' advertised peer addresses and link overrides."""
    addr = {}
    for s in range(n):
        a = peers.get(s, {}).get("address")
        if not a:
            raise FedsimError(f"silo {s} has no peer address: its SuperNode needs peer-address in its "
                              "--node-config (fedsim deploy supernode sets it)")
        addr[s] = str(a)
    out = {s: {d: addr[d] for d in range(n) if d != s} for s in range(n)}
    for key, a in (links or {}).items():
        src, dst = (int(x) for x in str(key).split(">"))
        out[src][dst] = str(a)
    return out


def make_server_app(cfg: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
                    result: dict | None = None, on_round=None) -> ServerApp:
    """A ServerApp bound to one run (used by ``fedsim run``)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        summary = serve(grid, cfg, run_dir, progress=progress, resume=resume, on_round=on_round,
                        silo_state_dir=Path(run_dir) / SILO_STATE_DIR)
        if result is not None:
            result.update(summary)

    return app


# `flwr run .` entry point: the run config comes from pyproject's [tool.flwr.app.config].
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    rc = dict(context.run_config)
    cfg = RunConfig(
        network=str(rc.get("network", "gaia")), strategy=str(rc.get("strategy", "multigraph")),
        task=str(rc.get("task", "digits")), rounds=int(rc.get("rounds", 20)),
        local_steps=int(rc.get("local-steps", 1)), seed=int(rc.get("seed", 0)),
        t=int(rc.get("t", 5)), base=str(rc.get("base", "ring")),
        task_options=json.loads(str(rc.get("task-options", "{}"))),
    )
    serve(grid, cfg, Path(str(rc.get("out", "runs/flwr-run"))), progress=False)
