"""Per-phase overhead of a real Flower deployment on localhost: Flower's defaults vs fedsim's settings.

A SuperLink (TLS + SuperNode authentication) and 3 SuperNodes on 127.0.0.1
run the same FedAvg training on the digits task (3 silos of Gaia, fully
connected) under each polling preset of :class:`fedsim.deploy.local.Speed`:

``flower``     Flower 1.42 as shipped: the round loop polls for replies every
               3 s (``Grid.send_and_receive``), SuperExecs poll for tasks every
               1 s, SuperNodes wait 3 s after an empty poll, and every message
               runs in a freshly started ``flwr-clientapp`` process;
``supported``  only what Flower exposes: the round loop pulls replies every
               50 ms through the public ``Grid`` API and
               ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1``;
``fedsim``     ``supported`` + :mod:`fedsim.deploy.fastnode` (the SuperNode
               loop's fixed 3 s / 0.5 s waits capped at 0.2 s) and
               :mod:`fedsim.deploy.warmexec` (ClientApp processes forked from a
               warm template instead of started cold).

A *phase* is one send-and-receive of the round loop (train or evaluate: the
ServerApp pushes one message per silo and waits for all replies). Its
overhead is the phase's wall time minus the ClientApp's own compute for that
message, measured here by calling fedsim's ClientApp in-process on the same
message (warm, median of 5; the slowest silo counts). The query phase (each
node reports its silo once) and the run's start-up are reported separately.

Usage::

    python benchmarks/deploy_overhead.py                 # the recorded run
    python benchmarks/deploy_overhead.py --presets fedsim --rounds 3
    python benchmarks/deploy_overhead.py --presets fedsim,fedsim/direct   # gateway vs none

Every preset runs with SuperNodes behind the Fleet-only gateway
(:mod:`fedsim.deploy.gateway`, the default of ``fedsim deploy local``);
``NAME/direct`` lets them dial the SuperLink's own port instead.

Writes ``OUT/deploy_overhead.json`` (default OUT: /tmp/fedsim-deploy-overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe  # benchmarks/machine.py (the script folder is on sys.path)

GML_SILOS = 3


def gaia_subset(n: int, path: Path) -> str:
    from fedsim.topologies.networks import load_network

    g = load_network("gaia")
    lines = ["graph ["]
    for i in range(n):
        lat, lon = g.coords[i]
        lines.append(f'  node [ id {i} label "{g.silos[i]}" Latitude {lat} Longitude {lon} ]')
    lines += [f"  edge [ source {i} target {j} ]" for i in range(n) for j in range(i + 1, n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines + ["]"]) + "\n")
    return str(path)


def clientapp_compute(network: str, cfg, repeats: int = 5) -> dict[str, float]:
    """Median in-process time (s) of fedsim's ClientApp train / evaluate, slowest silo."""
    import numpy as np
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    import fedsim.apps.client_app as ca
    from fedsim.clients import get_task
    from fedsim.topologies.networks import load_network

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    n = load_network(network).n_silos
    task = get_task(cfg.task, cfg.task_options)
    model = task.model()
    flat = ca.flatten(model, task.exchanged_keys(model))
    out = {"train": 0.0, "evaluate": 0.0}
    for silo in range(n):
        ctx = Context(run_id=1, node_id=10 + silo, node_config={"partition-id": silo, "num-partitions": n},
                      state=RecordDict(), run_config={})
        for kind, fn in (("train", ca.train), ("evaluate", ca.evaluate)):
            times = []
            for r in range(repeats + 1):
                conf = {"task": cfg.task, "task-options": json.dumps(cfg.task_options, sort_keys=True),
                        "seed": cfg.seed, "n-silos": n, "local-steps": cfg.local_steps, "evaluate": True,
                        "round": r + 1, "silo": silo}
                msg = Message(RecordDict({"arrays": ArrayRecord([np.array(flat)]), "config": ConfigRecord(conf)}),
                              10 + silo, kind)
                msg.metadata.__dict__["_message_id"] = f"m{r}"
                t0 = time.perf_counter()
                fn(msg, ctx)
                if r:  # the first call builds the silo's data and warms up
                    times.append(time.perf_counter() - t0)
            out[kind] = max(out[kind], statistics.median(times))
    return out


def run_preset(spec: str, network: str, rounds: int, out: Path, compute: dict) -> dict:
    """``spec``: a preset name, ``NAME/direct`` for SuperNodes dialling the SuperLink's own port
    (no Fleet-only gateway in front of it; the default is the gateway)."""
    name, _, how = spec.partition("/")
    from fedsim.apps.config import RunConfig
    from fedsim.deploy.local import Speed, run_local

    cfg = RunConfig(network=network, strategy="fedavg", task="digits", rounds=rounds, seed=0,
                    compute_ms=2.0, task_options={"lr": 0.3}, checkpoint_every=rounds, round_timeout=300)
    run_dir = out / spec.replace("/", "-")
    t0 = time.perf_counter()
    outcome = run_local(cfg, run_dir, speed=Speed.preset(name), verbose=False, timeout=3600,
                        gateway=how != "direct")
    wall = time.perf_counter() - t0
    phases = [json.loads(x) for x in (run_dir / "deploy" / "phases.jsonl").read_text().splitlines()]
    deploy = json.loads((run_dir / "deploy" / "deploy.json").read_text())
    rows = []
    for p in phases:
        c = compute.get(p["type"], 0.0)
        rows.append({"type": p["type"], "group": p["group"], "total_s": p["total_s"], "compute_s": c,
                     "overhead_s": p["total_s"] - c, "first_reply_s": min(p["reply_s"]) if p["reply_s"] else None,
                     "replies": p["replies"]})
    work = [r for r in rows if r["type"] in ("train", "evaluate")]
    ov = [r["overhead_s"] for r in work]
    return {"preset": spec, "gateway": how != "direct", "status": outcome.get("serverapp", {}).get("status"), "phases": rows,
            "overhead_median_s": statistics.median(ov), "overhead_mean_s": statistics.fmean(ov),
            "overhead_max_s": max(ov), "query_s": next(r["total_s"] for r in rows if r["type"] == "query"),
            "timings": deploy["timings"], "run_wall_s": wall, "leftover_pids": outcome.get("leftover_pids"),
            "loadavg_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="flower,supported,fedsim")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="/tmp/fedsim-deploy-overhead")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from fedsim.apps.config import RunConfig

    out = Path(args.out)
    network = gaia_subset(GML_SILOS, out / "gaia-3.gml")
    info = describe()
    info["loadavg_start"] = info.pop("loadavg")
    compute = clientapp_compute(network, RunConfig(network=network, strategy="fedavg", task="digits",
                                                   task_options={"lr": 0.3}))
    print(f"ClientApp compute (in-process, warm, slowest silo): train {compute['train'] * 1e3:.1f} ms, "
          f"evaluate {compute['evaluate'] * 1e3:.1f} ms")
    results = []
    for name in args.presets.split(","):
        r = run_preset(name.strip(), network, args.rounds, out, compute)
        results.append(r)
        print(f"{r['preset']:>9}: per-phase overhead median {r['overhead_median_s']:.2f} s, mean "
              f"{r['overhead_mean_s']:.2f} s, max {r['overhead_max_s']:.2f} s; query phase {r['query_s']:.2f} s; "
              f"run {r['run_wall_s']:.0f} s; status {r['status']}; load {r['loadavg_end'][0]:.1f}", flush=True)
    record = {"machine": info, "silos": GML_SILOS, "rounds": args.rounds, "compute_s": compute,
              "flwr": subprocess.run([sys.executable, "-c", "import flwr; print(flwr.__version__)"],
                                     capture_output=True, text=True).stdout.strip(),
              "results": results}
    (out / "deploy_overhead.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'deploy_overhead.json'}")


if __name__ == "__main__":
    main()
