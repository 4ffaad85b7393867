"""The fedsim ServerApp: config -> network, topology schedule, strategy, task.

:func:`serve` is the round loop. It runs inside Flower's ServerApp both in
simulation (``fedsim run``) and in deployment (``flwr run`` / ``fedsim deploy``).
Each round it asks the strategy for one message per silo, waits for the
replies, mixes, and records the simulated round time the topology would take
on the WAN next to the measured wall time.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedsim.apps.config import RunConfig
from fedsim.apps.records import SILO_STATE_DIR, RunRecorder
from fedsim.errors import FedsimError


class RunStopped(FedsimError):
    """The run stopped early (failed silos); completed rounds are kept."""


def timing_topology(strategy: str) -> str:
    """The topology whose cycle time a strategy's rounds take."""
    return "star" if strategy in ("fedavg", "fedprox", "star") else strategy


def resolve_profile(cfg: RunConfig, task):
    """The task's delay profile: measured once per run, then read from the config."""
    from fedsim.topologies.delay import DelayProfile

    if cfg.profile is None:
        measured = task.profile()
        if cfg.compute_ms is not None:
            measured = measured.with_overrides(compute_ms=cfg.compute_ms)
        cfg.profile = asdict(measured)
    prof = DelayProfile(**{k: v for k, v in cfg.profile.items() if k != "description"})
    return prof.with_overrides(local_steps=cfg.local_steps)


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


def _map_silos(grid: Grid, nodes: list[int], n: int) -> dict[int, int]:
    """Ask every node which silo it serves (its ``partition-id``).

    A node that has not answered after ``QUERY_RETRY_S`` is asked again: a
    SuperNode that still held the reply of a stopped run's message sends a
    new run's reply only when it pulls its next message (Flower 1.42).
    """
    answers: dict[int, int] = {}  # node -> the silo it reported
    pending = list(nodes)
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while pending and (left := deadline - time.monotonic()) > 0:
        msgs = [Message(RecordDict({"config": ConfigRecord({})}), nid, "query") for nid in pending]
        for reply in grid.send_and_receive(msgs, timeout=min(QUERY_RETRY_S, left)):
            if reply.has_error():
                raise FedsimError(f"node {reply.metadata.src_node_id} failed to report its silo: "
                                  f"{reply.error.reason}")
            answers[reply.metadata.src_node_id] = int(reply.content["metrics"]["silo"])
        pending = [nid for nid in pending if nid not in answers]
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
        raise FedsimError(f"silos {missing} have no SuperNode: {answered} of {len(nodes)} nodes "
                          f"answered the silo query in time (need {n})")
    mapping.update(zip(missing, sorted(free)))
    return mapping


def build_strategy(cfg: RunConfig, n: int, initial: np.ndarray, node_of_silo, schedule):
    from fedsim.strategies import CENTRALIZED, Decentralized, FedProx

    if cfg.strategy in CENTRALIZED:
        cls = CENTRALIZED[cfg.strategy]
        if cls is FedProx:
            return FedProx(n, initial, node_of_silo, mu=cfg.mu)
        return cls(n, initial, node_of_silo)
    return Decentralized(n, initial, node_of_silo, schedule=schedule, rounds=cfg.rounds,
                         seed=cfg.seed, self_weight=cfg.self_weight)


def serve(grid: Grid, cfg: RunConfig, run_dir: Path, progress: bool = True, resume: bool = False,
          on_round=None, adapt_strategy=None, min_silos: int | None = None,
          silo_state_dir: Path | None = None) -> dict:
    """Run (or resume) a training run on ``grid``; returns the summary dict.

    ``on_round(k, outcome, strategy)`` is called after round ``k`` is mixed
    (``k = cfg.rounds + 1`` for the final evaluation, whose ``outcome.train``
    holds the evaluation replies); tests use it to check what each silo
    received. ``adapt_strategy(strategy)`` is called once on the new strategy
    (deployment uses it to mix over the silos that answered). With
    ``min_silos``, a round in which fewer silos answered stops the run.
    ``silo_state_dir``: where silos without a ``state-dir`` of their own keep
    the parameters that never leave them (only for silos that share this
    machine's disk, i.e. simulation).
    """
    from tqdm import tqdm

    from fedsim.clients import get_task
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.networks import load_network

    torch.set_num_threads(1)
    cfg.validate()
    run_dir = Path(run_dir)
    net = load_network(cfg.network)
    n = net.n_silos
    conn = connectivity(net)
    task = get_task(cfg.task, cfg.task_options)
    profile = resolve_profile(cfg, task)
    topo = timing_topology(cfg.strategy)
    schedule = build_schedule(topo, conn, profile, t=cfg.t, base=cfg.base, budget=cfg.budget)
    clock = simulate(schedule, conn, profile, rounds=cfg.rounds, seed=cfg.seed)
    (run_dir / "config.json").parent.mkdir(parents=True, exist_ok=True)
    from fedsim.io import atomic_write_text

    atomic_write_text(run_dir / "config.json", cfg.to_json())

    nodes = _wait_for_nodes(grid, n)
    node_of_silo = _map_silos(grid, nodes, n)
    torch.manual_seed(cfg.seed)
    model = task.model()
    from fedsim.apps.client_app import flatten

    initial = flatten(model, task.exchanged_keys(model))
    strategy = build_strategy(cfg, n, initial, node_of_silo, schedule)
    if adapt_strategy is not None:
        adapt_strategy(strategy)
    rec = RunRecorder(run_dir, n, task.metric)
    start, sim_cum, wall_total = 1, 0.0, 0.0
    failed_rounds = 0
    if resume:
        state = rec.load_checkpoint()
        if state is not None:
            last, models, meta = state
            strategy.models = models.astype(np.float32)
            start, sim_cum = last + 1, float(meta["sim_cum_ms"])
            wall_total, failed_rounds = float(meta["wall_total_s"]), int(meta["failed_rounds"])
            strategy.n_examples = np.asarray(meta["n_examples"], float)
    base_cfg = {"run-key": cfg.key(), "checkpoint-every": cfg.checkpoint_every,
                "task": cfg.task, "task-options": json.dumps(cfg.task_options, sort_keys=True),
                "seed": cfg.seed, "n-silos": n, "local-steps": cfg.local_steps, "evaluate": True}
    if cfg.inject_fault:
        silo, rnd = (int(x) for x in cfg.inject_fault.split(":"))
        base_cfg |= {"fault-silo": silo, "fault-round": rnd}
    if silo_state_dir is not None:
        base_cfg["local-state-dir"] = str(Path(silo_state_dir).resolve())
    bar = tqdm(total=cfg.rounds, initial=start - 1, desc=f"{cfg.strategy}/{net.name}/{cfg.task}",
               unit="round", disable=not progress, leave=False)
    stop_reason = None
    try:
        for k in range(start, cfg.rounds + 1):
            msgs = strategy.configure_train(k, None, ConfigRecord(base_cfg | {"round": k}), grid)
            t0 = time.perf_counter()
            replies = list(grid.send_and_receive(msgs, timeout=cfg.round_timeout))
            before = strategy.models
            strategy.aggregate_train(k, replies)
            wall = time.perf_counter() - t0
            wall_total += wall
            out = strategy.last
            evals = {s: m for s, m in out.train.items() if "eval_loss" in m}
            if k == start and start == 1:
                rec.open_round({"round": 0, "sim_round_ms": 0.0, "sim_cum_ms": 0.0, "wall_s": 0.0,
                                "train_loss": float("nan"), "consensus": 0.0, "failed": ""})
            rec.close_pending(evals)
            if on_round:
                on_round(k, out, strategy)
            if out.failed:
                failed_rounds += 1
                rec.record_failure(k, out.failed)
                answered = n - len(out.failed)
                reasons = "; ".join(sorted(set(out.failed.values())))[:300]
                if min_silos is not None and answered < min_silos:
                    stop_reason = (f"round {k}: only {answered} of {n} silos answered "
                                   f"(--min-silos {min_silos}); failed: silo(s) {sorted(out.failed)} "
                                   f"({reasons})")
                elif failed_rounds >= cfg.max_failed_rounds:
                    stop_reason = (f"round {k}: silo(s) {sorted(out.failed)} failed ({reasons}); "
                                   f"stopping after {failed_rounds} failed round(s) "
                                   f"(--max-failed-rounds {cfg.max_failed_rounds})")
                if stop_reason is not None:
                    strategy.models = before  # the failed round is not applied
                    rec.checkpoint(k - 1, before, _meta(sim_cum, wall_total, failed_rounds, strategy))
                    break
            sim_ms = float(clock.round_ms[k - 1])
            sim_cum += sim_ms
            row = {"round": k, "sim_round_ms": sim_ms, "sim_cum_ms": sim_cum, "wall_s": wall,
                   "train_loss": float(np.mean([m["train_loss"] for m in out.train.values()])),
                   "consensus": strategy.consensus_distance(),
                   "failed": " ".join(str(s) for s in sorted(out.failed))}
            for s, m in out.train.items():
                row[f"train_loss_s{s}"] = m["train_loss"]
            rec.open_round(row)
            bar.update(1)
            if rec.rows:
                last = rec.rows[-1]
                bar.set_postfix(sim=f"{sim_cum / 1e3:.2f}s", loss=f"{row['train_loss']:.3f}",
                                **{task.metric[:3]: f"{last['eval_metric']:.3f}"})
            if k % cfg.checkpoint_every == 0:
                rec.checkpoint(k, strategy.models, _meta(sim_cum, wall_total, failed_rounds, strategy))
        if stop_reason is None:
            # Evaluate the final models to close the last row.
            msgs = strategy.configure_evaluate(cfg.rounds, None, ConfigRecord(base_cfg | {"round": cfg.rounds + 1}),
                                               grid)
            evals = {}
            for reply in grid.send_and_receive(msgs, timeout=cfg.round_timeout):
                if not reply.has_error():
                    m = dict(reply.content["metrics"])
                    evals[int(m["silo"])] = m
            rec.close_pending(evals)
            if on_round:
                from fedsim.strategies.base import RoundOutcome

                on_round(cfg.rounds + 1, RoundOutcome(train=evals), strategy)
            rec.checkpoint(cfg.rounds, strategy.models, _meta(sim_cum, wall_total, failed_rounds, strategy))
    finally:
        bar.close()
    last = rec.rows[-1] if rec.rows else {}
    summary = {
        "network": net.name, "silos": n, "strategy": cfg.strategy, "task": cfg.task,
        "timing_topology": topo, "rounds_completed": int(last.get("round", 0)),
        "rounds_requested": cfg.rounds, "final_eval_metric": last.get("eval_metric"),
        "final_eval_loss": last.get("eval_loss"), "metric": task.metric,
        "simulated_total_ms": last.get("sim_cum_ms", 0.0),
        "simulated_cycle_time_ms": clock.value, "cycle_time_definition": clock.definition,
        "wall_total_s": wall_total,
        "mean_wall_round_s": wall_total / max(1, int(last.get("round", 0))),  # resumed runs count all rounds
        "weights_method": getattr(strategy, "weights_method", None),
        "stopped": stop_reason, "failed_rounds": failed_rounds,
    }
    rec.write_summary(summary)
    rec.plot(f"{cfg.strategy} on {net.name}, {cfg.task}")
    if stop_reason:
        raise RunStopped(stop_reason)
    return summary


def _meta(sim_cum: float, wall_total: float, failed_rounds: int, strategy) -> dict:
    return {"sim_cum_ms": sim_cum, "wall_total_s": wall_total, "failed_rounds": failed_rounds,
            "n_examples": strategy.n_examples.tolist()}


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
