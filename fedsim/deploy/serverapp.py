"""The ServerApp of a deployment: fedsim's round loop on a SuperLink's grid.

It is :func:`fedsim.apps.server_app.serve` — the same loop, strategies,
simulated clock and run directory as ``fedsim run`` — with three deployment
settings read from the run config (``[tool.flwr.app.config]`` of the app
folder that ``fedsim deploy run`` submits):

``fedsim-config``
    the :class:`~fedsim.apps.config.RunConfig` as JSON;
``out``
    the run directory (on the SuperLink's machine);
``poll-s``
    how often the round loop asks the SuperLink for replies. Flower 1.42's
    ``Grid.send_and_receive`` sleeps 3 s between polls; :class:`PollingGrid`
    does the same push-then-pull through the public ``Grid`` API with a
    shorter wait and records each phase's timing;
``pull-backoff-s``
    0: Flower's retry of a reply object that is not uploaded yet (1 s,
    doubling). ``b > 0``: retry after ``b`` seconds, doubling up to 50 ms
    (:func:`fedsim.flower_compat.quick_pulls`);
``resume``
    continue the run directory from its last checkpoint (``fedsim deploy run
    --resume``), appending to its records;
``min-silos``
    0: a silo that fails stops the run after ``max_failed_rounds`` rounds,
    as in simulation. ``m > 0``: a round completes with the silos that
    answered within ``round_timeout`` (mixing renormalised over them, see
    :mod:`fedsim.strategies.tolerance`) and the run stops only when fewer than
    ``m`` silos answered.

Besides the usual records it writes ``RUN/deploy/phases.jsonl`` (one line
per send-and-receive phase: type, messages, replies, push time, reply
arrival times, total), ``RUN/deploy/trace.jsonl`` (per round: every silo's
metrics and model fingerprints, the mixing matrix used, failed silos) and
``RUN/deploy/serverapp.json`` (status, lost silos).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedsim.apps.config import RunConfig
from fedsim.apps.records import checkpoint_round
from fedsim.io import atomic_write_text

DEFAULT_POLL_S = 0.05


class PollingGrid(Grid):
    """A :class:`Grid` whose ``send_and_receive`` polls every ``poll_s`` seconds.

    Every other call goes to the wrapped grid. Each ``send_and_receive`` is
    one *phase*; its timing is appended to ``log`` (JSON lines) when given.
    """

    def __init__(self, grid: Grid, poll_s: float = DEFAULT_POLL_S, log: Path | None = None) -> None:
        self._grid = grid
        self.poll_s = float(poll_s)
        self.log = Path(log) if log else None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        self.phases: list[dict] = []

    # -- delegation -------------------------------------------------------------
    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    # -- the phase --------------------------------------------------------------
    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None
                         ) -> Iterable[Message]:
        msgs = list(messages)
        kind = msgs[0].metadata.message_type if msgs else ""
        group = msgs[0].metadata.group_id if msgs else ""
        t0 = time.perf_counter()
        pending = {m for m in self._grid.push_messages(msgs) if m}
        t_push = time.perf_counter() - t0
        n_pushed = len(pending)
        deadline = None if timeout is None else t0 + timeout
        replies: list[Message] = []
        arrivals: list[float] = []
        while pending:
            got = list(self._grid.pull_messages(pending))
            if got:
                now = time.perf_counter() - t0
                replies.extend(got)
                arrivals.extend([now] * len(got))
                pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (deadline is not None and time.perf_counter() >= deadline):
                break
            time.sleep(self.poll_s)
        phase = {"type": kind, "group": group, "sent": len(msgs), "pushed": n_pushed,
                 "replies": len(replies), "push_s": t_push, "reply_s": arrivals,
                 "total_s": time.perf_counter() - t0, "timeout": timeout, "t_start": time.time() - (time.perf_counter() - t0)}
        self.phases.append(phase)
        if self.log is not None:
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(phase) + "\n")
        return replies


def _jsonable(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, (int, float)) else str(v)) for k, v in metrics.items()}


def keep_trace_until(out: Path, until: int) -> int:
    """Drop the trace lines of rounds after ``until`` (they are run again on resume); returns
    how many lines are left. The operator's side calls it before submitting a resumed run (so
    that its progress view never shows a dropped line), the ServerApp again when it starts."""
    trace = Path(out) / "deploy" / "trace.jsonl"
    if not trace.exists():
        return 0
    lines = [line for line in trace.read_text().splitlines() if json.loads(line)["round"] <= until]
    atomic_write_text(trace, "".join(line + "\n" for line in lines))
    return len(lines)


def prepare_resume(out: Path) -> int:
    """Trim a run directory's trace to its last checkpoint; returns the rounds kept."""
    return keep_trace_until(out, checkpoint_round(out))


def run_deployed(grid: Grid, run_config: dict) -> dict:
    """Run the configured training on ``grid``; returns the ``serverapp.json`` record."""
    from fedsim.apps.server_app import RunStopped, serve

    cfg = RunConfig(**json.loads(str(run_config["fedsim-config"])))
    out = Path(str(run_config["out"]))
    work = out / "deploy"
    work.mkdir(parents=True, exist_ok=True)
    resume = bool(run_config.get("resume", False))
    if resume:  # rounds after the checkpoint are run again
        prepare_resume(out)
    else:
        for name in ("phases.jsonl", "trace.jsonl"):
            (work / name).unlink(missing_ok=True)
    poll = float(run_config.get("poll-s", DEFAULT_POLL_S))
    backoff = float(run_config.get("pull-backoff-s", 0.0))
    if backoff > 0:
        from fedsim.flower_compat import http_grid_module, quick_pulls

        quick_pulls(http_grid_module(), backoff)
    min_silos = int(run_config.get("min-silos", 0)) or None
    pgrid = PollingGrid(grid, poll, work / "phases.jsonl")
    holder: dict = {}

    def on_round(k, outcome, strategy) -> None:
        mixing = getattr(outcome, "mixing", None)  # a hub round's RoundResult
        if getattr(outcome, "lost", None):
            holder["lost"] = dict(outcome.lost)
        hub = strategy is not None  # the peer data plane's rounds are not hub phases
        rec = {"round": k, "time": time.time(),
               "phase_s": pgrid.phases[-1]["total_s"] if (hub and pgrid.phases) else None,
               "train": {str(s): _jsonable(m) for s, m in outcome.train.items() if isinstance(m, dict)},
               "failed": {str(s): r for s, r in outcome.failed.items()},
               "mixing": mixing.tolist() if (mixing is not None and k <= cfg.rounds) else None}
        with open(work / "trace.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")

    result = {"status": "running", "poll_s": poll, "min_silos": min_silos, "resumed": resume}
    atomic_write_text(work / "serverapp.json", json.dumps(result, indent=2))
    try:
        summary = serve(pgrid, cfg, out, progress=False, resume=resume, on_round=on_round,
                        tolerate_lost=bool(min_silos), min_silos=min_silos, deployed=True,
                        peer_links=json.loads(str(run_config.get("peer-links", "{}"))))
        result.update(status="completed", summary=summary)
    except RunStopped as exc:
        result.update(status="stopped", message=str(exc))
    except Exception as exc:
        result.update(status="failed", message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        result["lost"] = {str(s): r for s, r in holder.get("lost", {}).items()}
        result["phases"] = len(pgrid.phases)
        atomic_write_text(work / "serverapp.json", json.dumps(result, indent=2, default=str))
    return result


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_deployed(grid, dict(context.run_config))
