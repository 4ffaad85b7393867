"""The fedsim ClientApp: the same object runs in simulation and on silo machines.

It knows nothing about topologies. It receives a flat model and a config,
evaluates the received model on its silo's test split, trains the silo's
task for the configured local steps, and replies with the trained model and
metrics. A silo's task and partition are built once per process and reused.
Parameters a task keeps local (e.g. CDL's sub-network) live in the node's
``context.state`` between rounds and in files of the silo's own
(:func:`save_local_state`), so that a resumed run continues with them
instead of a fresh copy.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.clients import get_task
from fedsim.io import atomic_write

app = ClientApp()


@lru_cache(maxsize=8)
def _task(name: str, options_json: str):
    return get_task(name, json.loads(options_json))


@lru_cache(maxsize=256)
def _partition(name: str, options_json: str, silo: int, n_silos: int, seed: int):
    return _task(name, options_json).partition(silo, n_silos, seed)


def _silo(context: Context, config) -> int:
    node = context.node_config
    if "partition-id" in node:
        return int(node["partition-id"])
    return int(config["silo"])


def _setup(msg: Message, context: Context):
    torch.set_num_threads(1)  # one thread per silo: silos share the machine's cores
    cfg = msg.content["config"]
    name, options = str(cfg["task"]), str(cfg.get("task-options", "{}"))
    task = _task(name, options)
    silo = _silo(context, cfg)
    data = _partition(name, options, silo, int(cfg["n-silos"]), int(cfg["seed"]))
    model = task.model()
    keys = task.exchanged_keys(model)
    state = model.state_dict()
    local_key = f"local-{silo}"
    if local_key not in context.state and len(keys) < len(state):  # a resumed run: the silo's own file
        restored = load_local_state(_state_dir(context, cfg), silo, int(cfg["round"]))
        if restored is not None:
            context.state[local_key] = ArrayRecord(restored)
    if local_key in context.state:  # parameters that never leave the silo
        saved = context.state[local_key].to_torch_state_dict()
        state.update({k: v for k, v in saved.items() if k not in keys})
    flat = msg.content["arrays"].to_numpy_ndarrays()[0]
    offset = 0
    for k in keys:
        n = state[k].numel()
        state[k] = torch.from_numpy(np.asarray(flat[offset:offset + n])).view_as(state[k]).to(state[k].dtype)
        offset += n
    model.load_state_dict(state)
    return task, silo, data, model, keys, cfg, local_key, flat


def _state_dir(context: Context, cfg) -> Path | None:
    """This silo's folder for the current run's local state: the node's ``state-dir``
    (deployment) or the server's ``local-state-dir`` (simulation), per run key."""
    base = context.node_config.get("state-dir") or cfg.get("local-state-dir")
    key = cfg.get("run-key")
    return Path(str(base)) / str(key) if base and key else None


def _state_files(folder: Path, silo: int) -> dict[int, Path]:
    """This silo's kept files by round."""
    prefix = f"silo-{silo}-round-"
    return {int(f.stem[len(prefix):]): f for f in folder.glob(f"{prefix}*.pt") if f.stem[len(prefix):].isdigit()}


def save_local_state(folder: Path | None, silo: int, rnd: int, every: int, state: dict) -> None:
    """Keep ``state``, the silo's local parameters after round ``rnd``.

    A run resumes from the server's last checkpoint: a multiple of ``every``
    (the server's may lag the silo's by one), the round before a failure, or
    the end of the run. So the files kept are this round's, the previous
    round's and those of checkpoint rounds since ``rnd - every``.
    """
    if folder is None:
        return
    atomic_write(folder / f"silo-{silo}-round-{rnd}.pt",
                 lambda tmp: torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp))
    every = max(every, 1)
    for r, f in _state_files(folder, silo).items():
        if r < rnd - 1 and not (r % every == 0 and r >= rnd - every):
            f.unlink(missing_ok=True)


def load_local_state(folder: Path | None, silo: int, before_round: int) -> dict | None:
    """The silo's latest kept local parameters from a round before ``before_round``, if any."""
    if folder is None or not folder.is_dir():
        return None
    older = {r: f for r, f in _state_files(folder, silo).items() if r < before_round}
    if not older:
        return None
    return torch.load(older[max(older)], weights_only=True)


def checksums(flat: np.ndarray) -> tuple[float, float]:
    """Two linear fingerprints of a flat model: its sum and a fixed ±1-weighted sum.

    Mixing is linear, so the fingerprints of a mixture are the same mixture of
    the fingerprints: tests use them to check what each silo received.
    """
    f = np.asarray(flat, dtype=np.float64)
    return float(f.sum()), float(f @ _signs(f.size))


@lru_cache(maxsize=8)
def _signs(size: int) -> np.ndarray:
    """The fixed ±1 weights of :func:`checksums` (drawn once per model size and process)."""
    signs = np.where(np.random.default_rng(12345).random(size) < 0.5, -1.0, 1.0)
    signs.flags.writeable = False
    return signs


def flatten(model: torch.nn.Module, keys: list[str]) -> np.ndarray:
    """The exchanged parameters as one float32 vector, in ``keys`` order."""
    sd = model.state_dict()
    return np.concatenate([sd[k].detach().reshape(-1).to(torch.float32).numpy() for k in keys])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the ServerApp which silo this node serves."""
    silo = int(context.node_config.get("partition-id", -1))
    return Message(RecordDict({"metrics": MetricRecord({"silo": silo})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    task, silo, data, model, keys, cfg, local_key, received_flat = _setup(msg, context)
    if int(cfg.get("fault-silo", -1)) == silo and int(cfg.get("fault-round", -1)) == int(cfg["round"]):
        raise RuntimeError(f"injected fault in silo {silo}, round {int(cfg['round'])}")
    received = checksums(received_flat)  # the received array, deserialised once in _setup
    metrics: dict[str, float] = {"silo": silo, "num-examples": data.n_train,
                                 "received_sum": received[0], "received_signed": received[1]}
    if bool(cfg.get("evaluate", True)):
        metrics |= {f"eval_{k}": v for k, v in task.evaluate(model, data).items()}
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(
        [int(cfg["seed"]), silo, int(cfg["round"])]).generate_state(1)[0]))
    mu = float(cfg.get("prox-mu", 0.0))
    anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    out = task.train(model, data, int(cfg["local-steps"]), gen, prox_mu=mu, anchor=anchor)
    metrics |= {f"train_{k}": v for k, v in out.items()}
    local = {k: v for k, v in model.state_dict().items() if k not in set(keys)}
    if local:
        context.state[local_key] = ArrayRecord(local)
        save_local_state(_state_dir(context, cfg), silo, int(cfg["round"]), int(cfg.get("checkpoint-every", 0)),
                         local)
    flat = flatten(model, keys)
    metrics["trained_sum"], metrics["trained_signed"] = checksums(flat)
    content = RecordDict({"arrays": ArrayRecord([flat]), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    task, silo, data, model, *_, received_flat = _setup(msg, context)
    received = checksums(received_flat)
    metrics = {"silo": silo, "received_sum": received[0], "received_signed": received[1]}
    metrics |= {f"eval_{k}": v for k, v in task.evaluate(model, data).items()}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
