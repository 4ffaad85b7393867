"""The fedsim ClientApp: the same object runs in simulation and on silo machines.

Hub rounds (``train`` / ``evaluate``): it receives a flat model and a config,
evaluates the received model on its silo's test split, trains the silo's task
for the configured local steps (:meth:`fedsim.peer.silo.Silo.local_round`),
and replies with the trained model and metrics.

Peer rounds (``train.peer`` / ``evaluate.peer``): it receives only control
data (rounds, the silo's part of the plan, where its out-neighbours listen)
and runs the silo loop (:mod:`fedsim.peer.loop`) over gRPC with mutual TLS:
its model never leaves through the SuperLink. Between segments the model
lives in the node's ``context.state`` and in the silo's ``state-dir``.

A silo's task and partition are built once per process and reused.
Parameters a task keeps local (e.g. CDL's sub-network) live in the node's
``context.state`` between rounds and in files of the silo's own
(:func:`save_local_state`), so that a resumed run continues with them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedsim.clients import get_task
from fedsim.errors import FedsimError
from fedsim.io import atomic_write
from fedsim.peer.silo import Silo, checksums, flatten  # noqa: F401 - flatten/checksums: public names

app = ClientApp()


@lru_cache(maxsize=8)
def _task(name: str, options_json: str):
    return get_task(name, json.loads(options_json))


@lru_cache(maxsize=4096)  # one Ray actor serves many silos, round after round: keep every one's data
def _partition(name: str, options_json: str, silo: int, n_silos: int, seed: int):
    return _task(name, options_json).partition(silo, n_silos, seed)


@lru_cache(maxsize=4096)
def _hub_silo(name: str, options_json: str, silo: int, n_silos: int, seed: int) -> tuple[Silo, dict]:
    """A silo's model object for hub messages, and its initial local (never exchanged) state.

    Built once per process: a hub message overwrites the exchanged parameters
    (``set_flat``) and the local ones (from the node state, or these initial
    values), so reusing the object changes no result and saves building the
    model on every message (a third of a ClientApp actor's time at 300 silos).
    """
    s = Silo(silo, n_silos, seed, _task(name, options_json), _partition(name, options_json, silo, n_silos, seed))
    return s, s.local_state()


def _silo_index(context: Context, config) -> int:
    node = context.node_config
    if "partition-id" in node:
        return int(node["partition-id"])
    return int(config["silo"])


def _silo(context: Context, cfg, hub: bool = False) -> Silo:
    """This node's silo, with the parameters it kept from earlier rounds.

    ``hub``: the caller loads the exchanged parameters from the message
    (``train``/``evaluate``), so a silo object kept from an earlier message
    serves (:func:`_hub_silo`); otherwise the model is built afresh.
    """
    torch.set_num_threads(1)  # one thread per silo: silos share the machine's cores
    name, options = str(cfg["task"]), str(cfg.get("task-options", "{}"))
    index = _silo_index(context, cfg)
    n, seed = int(cfg["n-silos"]), int(cfg["seed"])
    initial_local = None
    if hub:
        silo, initial_local = _hub_silo(name, options, index, n, seed)
    else:
        silo = Silo(index, n, seed, _task(name, options), _partition(name, options, index, n, seed))
    local_key = f"local-{index}"
    if local_key not in context.state and len(silo.keys) < len(silo.model.state_dict()):
        restored = load_local_state(_state_dir(context, cfg), index, int(cfg["round"]))  # a resumed run
        if restored is not None:
            context.state[local_key] = ArrayRecord(restored)
    if local_key in context.state:  # parameters that never leave the silo
        silo.set_local_state(context.state[local_key].to_torch_state_dict())
    elif initial_local:  # a kept object may hold another round's local state: start from the initial one
        silo.set_local_state(initial_local)
    return silo


def _keep_local(context: Context, cfg, silo: Silo, rnd: int) -> None:
    local = silo.local_state()
    if local:
        context.state[f"local-{silo.silo}"] = ArrayRecord(local)
        save_local_state(_state_dir(context, cfg), silo.silo, rnd, int(cfg.get("checkpoint-every", 0)), local)


def _state_dir(context: Context, cfg) -> Path | None:
    """This silo's folder for the current run's local state: the node's ``state-dir``
    (deployment) or the server's ``local-state-dir`` (simulation), per run key."""
    base = context.node_config.get("state-dir") or cfg.get("local-state-dir")
    key = cfg.get("run-key")
    return Path(str(base)) / str(key) if base and key else None


def _state_files(folder: Path, silo: int, prefix: str = "silo") -> dict[int, Path]:
    """This silo's kept files by round."""
    head = f"{prefix}-{silo}-round-"
    return {int(f.stem[len(head):]): f for f in folder.glob(f"{head}*.pt") if f.stem[len(head):].isdigit()}


def save_local_state(folder: Path | None, silo: int, rnd: int, every: int, state: dict,
                     prefix: str = "silo") -> None:
    """Keep ``state``, the silo's local parameters after round ``rnd``.

    A run resumes from the server's last checkpoint: a multiple of ``every``
    (the server's may lag the silo's by one), the round before a failure, or
    the end of the run. So the files kept are this round's, the previous
    round's and those of checkpoint rounds since ``rnd - every``.
    """
    if folder is None:
        return
    atomic_write(folder / f"{prefix}-{silo}-round-{rnd}.pt",
                 lambda tmp: torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp))
    every = max(every, 1)
    for r, f in _state_files(folder, silo, prefix).items():
        if r < rnd - 1 and not (r % every == 0 and r >= rnd - every):
            f.unlink(missing_ok=True)


def load_local_state(folder: Path | None, silo: int, before_round: int, prefix: str = "silo") -> dict | None:
    """The silo's latest kept local parameters from a round before ``before_round``, if any."""
    if folder is None or not folder.is_dir():
        return None
    older = {r: f for r, f in _state_files(folder, silo, prefix).items() if r < before_round}
    if not older:
        return None
    return torch.load(older[max(older)], weights_only=True)


# ----------------------------------------------------------------------------- hub rounds
@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the ServerApp which silo this node serves, and where its peer server listens."""
    node = context.node_config
    silo = int(node.get("partition-id", -1))
    content = RecordDict({"metrics": MetricRecord({"silo": silo})})
    if "peer-address" in node:
        identity = _peer_identity(context)
        if identity is not None and identity != silo:
            raise FedsimError(f"this SuperNode claims silo {silo} (partition-id) but its peer certificate "
                              f"is silo {identity}'s: refusing to serve")
        content["peer"] = ConfigRecord({"address": str(node["peer-address"]),
                                        "tls": identity is not None})
    return Message(content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    silo = _silo(context, cfg, hub=True)
    received = msg.content["arrays"].to_numpy_ndarrays()[0]
    silo.set_flat(received)
    if int(cfg.get("fault-silo", -1)) == silo.silo and int(cfg.get("fault-round", -1)) == int(cfg["round"]):
        raise RuntimeError(f"injected fault in silo {silo.silo}, round {int(cfg['round'])}")
    metrics = silo.local_round(int(cfg["round"]), int(cfg["local-steps"]), bool(cfg.get("evaluate", True)),
                               float(cfg.get("prox-mu", 0.0)))
    _keep_local(context, cfg, silo, int(cfg["round"]))
    content = RecordDict({"arrays": ArrayRecord([silo.get_flat()]), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    silo = _silo(context, cfg, hub=True)
    silo.set_flat(msg.content["arrays"].to_numpy_ndarrays()[0])
    s, g = checksums(silo.get_flat())
    metrics = {"silo": silo.silo, "received_sum": s, "received_signed": g} | silo.evaluate()
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


# ----------------------------------------------------------------------------- peer rounds
def _peer_identity(context: Context) -> int | None:
    """The silo index in this node's peer certificate (``None`` without TLS)."""
    from fedsim.peer.identity import silo_of_certificate

    cert = context.node_config.get("peer-cert")
    if not cert:
        return None
    return silo_of_certificate(str(cert))


def _peer_tls(context: Context):
    from fedsim.peer.grpc import PeerTLS

    node = context.node_config
    if not node.get("peer-cert"):
        return None
    return PeerTLS.from_files(str(node["peer-cert"]), str(node["peer-key"]), str(node["peer-ca"]))


PEER_MODEL = "peer-model"  # context.state: the model the next round starts from, and its round


def _peer_start(context: Context, cfg, silo: Silo, first: int) -> None:
    """Load the model round ``first`` starts from: the initial one, the node's state, or the silo's file."""
    if first == 1:
        return
    state = context.state.get(PEER_MODEL)
    if state is not None and int(context.state["peer-round"]["after"]) == first - 1:
        silo.set_flat(state.to_numpy_ndarrays()[0])
        return
    saved = load_local_state(_state_dir(context, cfg), silo.silo, first, prefix="peer")
    if saved is None or int(saved["round"]) != first - 1:
        raise FedsimError(f"silo {silo.silo} has no model after round {first - 1} to resume from "
                          f"(state-dir {_state_dir(context, cfg)})")
    silo.set_flat(saved["model"].numpy())
    silo.set_local_state({k: v for k, v in saved.items() if k not in ("model", "round")})


def _peer_keep(context: Context, cfg, silo: Silo, last: int) -> None:
    flat = silo.get_flat()
    context.state[PEER_MODEL] = ArrayRecord([flat])
    context.state["peer-round"] = ConfigRecord({"after": last})
    _keep_local(context, cfg, silo, last)
    state = {"model": torch.from_numpy(flat.copy()), "round": torch.tensor(last)} | silo.local_state()
    # segments end on multiples of their length: keep this sync's file and the previous one's
    save_local_state(_state_dir(context, cfg), silo.silo, last, last - int(cfg["first"]) + 1, state, prefix="peer")


@app.train("peer")
def peer_train(msg: Message, context: Context) -> Message:
    """Run rounds ``first..last`` of this silo on the peer data plane."""
    from fedsim.peer.grpc import GrpcTransport
    from fedsim.peer.loop import SiloLoop
    from fedsim.strategies.mixing import SiloRound

    cfg = msg.content["config"]
    first, last = int(cfg["first"]), int(cfg["last"])
    silo = _silo(context, cfg)
    identity = _peer_identity(context)
    if identity is not None and identity != silo.silo:
        raise FedsimError(f"partition-id {silo.silo} but the peer certificate is silo {identity}'s")
    _peer_start(context, cfg, silo, first)
    rows = {int(k): SiloRound.from_json(v) for k, v in json.loads(str(cfg["rows"])).items()}

    def allowed(src: int, rnd: int, kind: str) -> bool:
        row = rows.get(rnd)
        return row is not None and any(j == src and stale == (kind == "stale") for j, _, stale in row.inbound)

    node = context.node_config
    listen = str(node.get("peer-listen") or f"0.0.0.0:{int(node['peer-port'])}")
    directory = {int(k): v for k, v in json.loads(str(cfg["directory"])).items()}
    transport = GrpcTransport(silo.silo, str(cfg["peer-run"]), int(cfg["model-size"]), listen, directory,
                              _peer_tls(context), allowed, send_timeout=float(cfg["peer-timeout"]),
                              bind_timeout=float(cfg["peer-timeout"]))
    try:
        loop = SiloLoop(silo, rows.__getitem__, transport, int(cfg["local-steps"]), bool(cfg.get("evaluate", True)),
                        float(cfg["peer-timeout"]))
        loop.lost.update({int(j): "lost before this segment" for j in json.loads(str(cfg.get("lost", "[]")))})
        fault = int(cfg.get("fault-silo", -1)) == silo.silo
        records = []
        for k in range(first, last + 1):
            if fault and int(cfg.get("fault-round", -1)) == k:
                raise RuntimeError(f"injected fault in silo {silo.silo}, round {k}")
            records.append(loop.step(k))
        for dst, why in transport.flush(loop.peer_timeout).items():
            loop.lost.setdefault(dst, f"send failed: {why}")
    finally:
        transport.close()
    _peer_keep(context, cfg, silo, last)
    report = {"silo": silo.silo, "records": records, "lost": {str(j): w for j, w in loop.lost.items()},
              "bytes_sent": transport.bytes_sent, "bytes_received": transport.bytes_received,
              "refusals": transport.refusals[-20:]}
    return Message(RecordDict({"report": ConfigRecord({"json": json.dumps(report)})}), reply_to=msg)


@app.evaluate("peer")
def peer_evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the silo's final model (it stays on the silo)."""
    cfg = msg.content["config"]
    silo = _silo(context, cfg)
    _peer_start(context, cfg, silo, int(cfg["round"]))
    s, g = checksums(silo.get_flat())
    metrics = {"silo": silo.silo, "received_sum": s, "received_signed": g} | silo.evaluate()
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
