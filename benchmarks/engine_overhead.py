"""Per-round overhead of ``fedsim run`` (Flower Simulation Engine on Ray) vs a plain loop.

What is compared, per round, for the same silos of one network (default: Gaia,
11 silos), the same task (``digits``), 1 local step, strategies ``ring`` and
``fedavg``:

* ``plain``  - one process, one thread, no Flower: for every silo, load the
  silo's row of ``X`` into its model, evaluate it on the silo's test split
  (the ClientApp evaluates the model it receives every round), run the local
  steps with the task's own ``train`` and the ClientApp's generator seeds,
  flatten; then ``X = W @ Y`` with the strategy's mixing matrix (ring:
  :func:`fedsim.strategies.mixing.ring_weights` on the ring schedule of
  :func:`fedsim.topologies.build_schedule`; fedavg: every row ``n_j / sum n``).
* ``fedsim`` - :func:`fedsim.apps.simulation.run_simulation` (what ``fedsim run``
  calls): the real ServerApp and ClientApp on Flower's Simulation Engine (Ray).
  Per-round time is the ``wall_s`` column of ``rounds.csv`` (``send_and_receive``
  plus the strategy's ``aggregate``).
* ``inproc`` (breakdown only) - the same ServerApp round loop
  (:func:`fedsim.apps.server_app.serve`) and the same ClientApp object, but
  driven by a synchronous in-process Grid: no Ray, no threads, no polling, no
  serialisation. ``inproc - plain`` is what fedsim's ClientApp/ServerApp and
  Flower's Message/Record objects cost; ``fedsim - inproc`` is what the
  Simulation Engine (Ray transport, engine threads, waits) costs.

Each repetition runs plain, inproc and fedsim back to back for each strategy
(interleaved), all in this one process, and the headline ratio is
``median(fedsim wall_s) / median(plain round)`` over rounds ``skip+1..rounds``
of all repetitions. The plain loop does the same arithmetic as fedsim, so
its mean test accuracy per round must match ``rounds.csv`` (checked, printed).

The breakdown of a ``fedsim`` round comes from timestamps taken in this
(driver) process around Flower's ``RayBackend.process_message`` (one Ray actor
call per message), ``InMemoryGrid.send_and_receive`` and the strategy's
``aggregate`` (checking and mixing the replies), plus Ray's own task timeline for the actor side
(argument deserialisation, ClientApp execution, storing the reply). A
no-op Ray actor call with the same payload gives the transport floor.

Writes only under ``--out`` (default ``/tmp/fedsim-engine-overhead``):
``result.md``, ``result.json`` and the run directories.

Example::

    python benchmarks/engine_overhead.py                 # defaults used for RESULTS
    python benchmarks/engine_overhead.py --reps 1 --rounds 20 --strategies ring
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics as st
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from machine import describe  # benchmarks/machine.py (the script folder is on sys.path)


# --------------------------------------------------------------------------- plain loop
def plain_loop(network: str, strategy: str, rounds: int, seed: int, local_steps: int,
               task_name: str, profile, task_options: dict) -> tuple[list[float], list[float], list[float]]:
    """Same work as a fedsim run, one process, one thread; returns (round wall s, round CPU s, mean acc per row)."""
    import torch

    from fedsim.apps.client_app import flatten
    from fedsim.clients import get_task
    from fedsim.strategies.mixing import ring_weights
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.networks import load_network

    torch.set_num_threads(1)
    net = load_network(network)
    n = net.n_silos
    task = get_task(task_name, task_options)
    data = [task.partition(i, n, seed) for i in range(n)]
    if strategy == "ring":
        sched = build_schedule("ring", connectivity(net), profile.with_overrides(local_steps=local_steps))
        w = ring_weights(n, sched.arcs)
    elif strategy == "fedavg":
        sizes = np.array([d.n_train for d in data], float)
        w = np.tile(sizes / sizes.sum(), (n, 1))
    else:
        raise SystemExit(f"plain loop supports ring and fedavg, not {strategy}")
    torch.manual_seed(seed)
    m0 = task.model()
    keys = task.exchanged_keys(m0)
    if keys != list(m0.state_dict().keys()) or len(list(m0.buffers())):
        raise SystemExit("plain loop assumes every state entry is an exchanged parameter")
    x = np.tile(flatten(m0, keys), (n, 1)).astype(np.float32)
    models = [task.model() for _ in range(n)]
    times, cpu, acc = [], [], []
    for k in range(1, rounds + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        y = np.empty_like(x)
        accs = []
        for i in range(n):
            m = models[i]
            torch.nn.utils.vector_to_parameters(torch.from_numpy(x[i]), m.parameters())
            accs.append(task.evaluate(m, data[i])[task.metric])
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i, k]).generate_state(1)[0]))
            task.train(m, data[i], local_steps, gen)
            y[i] = flatten(m, keys)
        x = (w @ y).astype(np.float32)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        acc.append(float(np.mean(accs)))  # models after k-1 rounds (rounds.csv row k-1)
    return times, cpu, acc


# --------------------------------------------------------------------------- in-process grid
def inproc_run(cfg, run_dir: Path) -> list[dict]:
    """fedsim's ServerApp loop and ClientApp on a synchronous in-process Grid (no Ray)."""
    import secrets
    from uuid import uuid4

    from flwr.app import Context, Error, Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
    from flwr.serverapp import Grid
    from flwr.supercore.task_identity import TaskIdentity  # not public; run_simulation sets it too

    from fedsim.apps.client_app import app as client_app
    from fedsim.apps.records import read_rounds
    from fedsim.apps.server_app import serve
    from fedsim.topologies.networks import load_network

    n = load_network(cfg.network).n_silos
    run_id = secrets.randbits(63)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID

    class InProcessGrid(Grid):
        def __init__(self):
            self.contexts = {}
            for pid in range(n):
                nid = secrets.randbits(63)
                self.contexts[nid] = Context(run_id=run_id, node_id=nid, state=RecordDict(), run_config={},
                                             node_config={"partition-id": pid, "num-partitions": n})
            self.replies = {}

        def set_run(self, run):
            pass

        @property
        def run(self):
            raise NotImplementedError

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self):
            return list(self.contexts)

        def push_messages(self, messages):
            ids = []
            for msg in messages:
                mid = uuid4().hex
                msg.metadata.__dict__["_message_id"] = mid
                try:
                    reply = client_app(message=msg, context=self.contexts[msg.metadata.dst_node_id])
                except Exception as ex:  # noqa: BLE001 - mirrors the engine's error replies
                    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(ex)),
                                    reply_to=msg)
                reply.metadata.__dict__["_message_id"] = uuid4().hex
                self.replies[mid] = reply
                ids.append(mid)
            return ids

        def pull_messages(self, message_ids):
            return [self.replies.pop(m) for m in list(message_ids) if m in self.replies]

        def send_and_receive(self, messages, *, timeout=None):
            return self.pull_messages(self.push_messages(messages))

    serve(InProcessGrid(), cfg, run_dir, progress=False)
    return read_rounds(run_dir)


# --------------------------------------------------------------------------- engine probes
class EngineProbe:
    """Driver-side timestamps around Flower's engine internals (installed once per process)."""

    def __init__(self) -> None:
        from flwr.server.superlink.fleet.vce.backend import raybackend
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid

        from fedsim.apps import simulation
        from fedsim.strategies.base import TopologyStrategy

        simulation._fast_engine_poll()  # fedsim's own patches first; the probes wrap them
        self.calls: list[tuple[float, float]] = []
        self.sr: list[tuple[float, float]] = []
        self.agg: list[tuple[float, float]] = []
        self.timeline: list[dict] = []
        self.lock = threading.Lock()
        probe = self

        pm = raybackend.RayBackend.process_message

        def process_message(self, message, context):
            t0 = time.perf_counter()
            try:
                return pm(self, message, context)
            finally:
                with probe.lock:
                    probe.calls.append((t0, time.perf_counter()))

        sr = InMemoryGrid.send_and_receive

        def send_and_receive(self, messages, *, timeout=None):
            t0 = time.perf_counter()
            out = sr(self, messages, timeout=timeout)
            probe.sr.append((t0, time.perf_counter()))
            return out

        agg = TopologyStrategy.aggregate

        def aggregate(self, server_round, replies):
            t0 = time.perf_counter()
            out = agg(self, server_round, replies)
            probe.agg.append((t0, time.perf_counter()))
            return out

        term = raybackend.RayBackend.terminate

        def terminate(self):
            import ray

            try:
                time.sleep(1.0)  # let the task events of the last calls reach the GCS
                probe.timeline = ray.timeline()
            except Exception:  # noqa: BLE001 - the breakdown just lacks the actor side
                probe.timeline = []
            return term(self)

        raybackend.RayBackend.process_message = process_message
        InMemoryGrid.send_and_receive = send_and_receive
        TopologyStrategy.aggregate = aggregate
        raybackend.RayBackend.terminate = terminate
        # perf_counter -> epoch microseconds (Ray's timeline uses epoch time)
        self.epoch_offset = time.time() - time.perf_counter()

    def reset(self) -> None:
        self.calls, self.sr, self.agg, self.timeline = [], [], [], []

    def rounds(self, rounds: int, skip: int) -> dict:
        """Medians over rounds skip+1..rounds of the per-round components (ms)."""
        # sr[0] is the silo query, sr[k] round k, sr[-1] the final evaluation
        rows = []
        windows = []
        for k in range(skip + 1, rounds + 1):
            a, b = self.sr[k]
            calls = [c for c in self.calls if a <= c[0] <= b]
            ga, gb = self.agg[k - 1]
            rows.append({
                "send_and_receive": b - a,
                "dispatch_wait": min(c[0] for c in calls) - a,
                "collect_wait": b - max(c[1] for c in calls),
                "calls_in_flight": max(c[1] for c in calls) - min(c[0] for c in calls),
                "process_message_sum": sum(c[1] - c[0] for c in calls),
                "process_message_per_call": st.median(c[1] - c[0] for c in calls),
                "aggregate": gb - ga,
            })
            windows.append((a, b))
        out = {k: 1e3 * st.median(r[k] for r in rows) for k in rows[0]}
        # Ray's task timeline, actor side, for the calls in the measured rounds
        by_name: dict[str, list[float]] = {}
        spans = [((a + self.epoch_offset) * 1e6, (b + self.epoch_offset) * 1e6) for a, b in windows]
        for ev in self.timeline:
            if ev.get("ph") != "X" or "dur" not in ev:
                continue
            ts = float(ev["ts"])
            if any(lo <= ts <= hi for lo, hi in spans):
                by_name.setdefault(ev["name"], []).append(float(ev["dur"]) / 1e3)
        for name, key in (("run", "actor_task_per_call"), ("task:execute", "actor_execute_per_call"),
                          ("task:deserialize_arguments", "actor_deserialize_per_call"),
                          ("task:store_outputs", "actor_store_outputs_per_call")):
            if by_name.get(name):
                out[key] = st.median(by_name[name])
                out[key.replace("_per_call", "_n")] = len(by_name[name])
        return out


# --------------------------------------------------------------------------- micro benchmarks
def serialisation_ms(cfg) -> dict:
    """Pickle round trip of one train call's arguments and its reply (what Ray does per message)."""
    import secrets

    import ray.cloudpickle as cloudpickle
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from fedsim.apps.client_app import app as client_app
    from fedsim.apps.client_app import flatten
    from fedsim.clients import get_task

    task = get_task(cfg.task, cfg.task_options)
    flat = flatten(task.model(), task.exchanged_keys(task.model()))
    run_id = secrets.randbits(63)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    ctx = Context(run_id=run_id, node_id=7, node_config={"partition-id": 3, "num-partitions": 11},
                  state=RecordDict(), run_config={})
    conf = {"task": cfg.task, "task-options": json.dumps(cfg.task_options, sort_keys=True), "seed": 0,
            "n-silos": 11, "local-steps": 1, "evaluate": True, "round": 3, "silo": 3}
    msg = Message(RecordDict({"arrays": ArrayRecord([flat]), "config": ConfigRecord(conf)}), 7, "train",
                  group_id="3")
    msg.metadata.__dict__["_message_id"] = "probe"

    def app_fn():
        return client_app

    args = (app_fn, msg, "3", ctx)
    reply = client_app(message=msg, context=ctx)

    def med(f, reps=200):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return 1e3 * st.median(ts)

    a, r = cloudpickle.dumps(args), cloudpickle.dumps(("3", reply, ctx))
    return {"args_bytes": len(a), "reply_bytes": len(r),
            "args_dumps_ms": med(lambda: cloudpickle.dumps(args)), "args_loads_ms": med(lambda: cloudpickle.loads(a)),
            "reply_dumps_ms": med(lambda: cloudpickle.dumps(("3", reply, ctx))),
            "reply_loads_ms": med(lambda: cloudpickle.loads(r)),
            "handler_inprocess_ms": med(lambda: client_app(message=msg, context=ctx), 100),
            "payload": a}


def ray_noop_ms(payload: bytes, out: Path, calls: int = 300) -> dict:
    """Round trip of a Ray actor call that returns at once, with a payload like a train message."""
    import ray

    tmp = Path(__import__("tempfile").mkdtemp(prefix="fedsim-ray-"))
    try:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=str(tmp),
                 logging_level="ERROR", log_to_driver=False)

        @ray.remote(num_cpus=1)
        class Echo:
            def run(self, payload):
                return payload

        actor = Echo.remote()
        ray.get(actor.run.remote(b""))
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            ray.get(actor.run.remote(payload))
            ts.append(time.perf_counter() - t0)
        return {"noop_call_ms": 1e3 * st.median(ts), "noop_call_p90_ms": 1e3 * float(np.percentile(ts, 90))}
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def inproc_profile(cfg, run_dir: Path, top: int = 12) -> list[str]:
    """cProfile of the in-process run (ServerApp + ClientApp, no Ray): top functions by own time."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    inproc_run(cfg, run_dir)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    return lines[-(top + 1):]


def loadavg() -> float:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return v[3] + v[4], sum(v)  # idle + iowait, total


def wait_idle(threshold: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) for a 1 s window with ``threshold`` of the machine's CPU idle.

    Other people's jobs on the machine distort both timings; returns the idle
    fraction of the last window (recorded next to the numbers).
    """
    t_end = time.monotonic() + max_wait
    while True:
        i0, t0 = _cpu_times()
        time.sleep(1.0)
        i1, t1 = _cpu_times()
        idle = (i1 - i0) / max(1, t1 - t0)
        if idle >= threshold or time.monotonic() >= t_end:
            return idle


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and all its descendants (Ray's raylet, GCS, actors)."""
    tck = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(f[1])
        cpu[int(d)] = (int(f[11]) + int(f[12])) / tck
    me = os.getpid()
    total = 0.0
    for pid in cpu:
        p = pid
        while p > 1 and p != me:
            p = parent.get(p, 0)
        if p == me:
            total += cpu[pid]
    return total


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", default="gaia")
    ap.add_argument("--task", default="digits")
    ap.add_argument("--strategies", nargs="+", default=["ring", "fedavg"], choices=["ring", "fedavg"])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--skip", type=int, default=5, help="first rounds left out of the medians (default 5)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--local-steps", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="ClientApp actors, as fedsim run --workers (0: default)")
    ap.add_argument("--idle", type=float, default=0.8,
                    help="before each measurement wait for this idle CPU fraction (default 0.8) ...")
    ap.add_argument("--max-wait", type=float, default=30.0, help="... but at most this many seconds (default 30)")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the in-process run, profile and Ray floor")
    ap.add_argument("--out", default="/tmp/fedsim-engine-overhead", help="output folder (default %(default)s)")
    args = ap.parse_args(argv)
    if args.rounds <= args.skip:
        ap.error("--rounds must exceed --skip")

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from fedsim.apps.simulation import quiet_env

    quiet_env(out / ".flwr")
    import logging

    import torch

    from fedsim.apps.config import RunConfig
    from fedsim.apps.records import read_rounds
    from fedsim.apps.simulation import run_simulation
    from fedsim.clients import get_task

    torch.set_num_threads(1)
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.ERROR)
    task = get_task(args.task, {})
    profile = task.profile()  # measured once; every run below uses this profile (same ring, same clock)
    probe = EngineProbe()
    meas = {s: {"plain": [], "plain_cpu": [], "fedsim": [], "inproc": [], "cpu_driver": [], "cpu_tree": [],
                "breakdown": [], "acc_diff": [], "load": [], "idle": []} for s in args.strategies}

    def cfg_for(strategy):
        return RunConfig(network=args.network, strategy=strategy, task=args.task, rounds=args.rounds,
                         local_steps=args.local_steps, seed=args.seed, workers=args.workers,
                         checkpoint_every=args.rounds, profile=asdict(profile))

    lo = args.skip  # index of round skip+1
    for rep in range(args.reps):
        for s in args.strategies:
            m = meas[s]
            m["load"].append(loadavg())
            idle_plain = wait_idle(args.idle, args.max_wait)
            t_plain, c_plain, acc_plain = plain_loop(args.network, s, args.rounds, args.seed, args.local_steps, args.task,
                                            profile, {})
            m["plain"] += t_plain[lo:]
            m["plain_cpu"] += c_plain[lo:]
            if not args.no_breakdown:
                rows = inproc_run(cfg_for(s), out / f"inproc-{s}-{rep}")
                m["inproc"] += [r["wall_s"] for r in rows if r["round"] > args.skip]
            probe.reset()
            cpu: dict[int, float] = {}
            tree: dict[int, float] = {}

            def on_round(k, outcome, strategy, cpu=cpu, tree=tree):
                cpu[k] = time.process_time()
                if k in (args.skip, args.rounds):
                    tree[k] = tree_cpu_s()

            idle_fedsim = wait_idle(args.idle, args.max_wait)
            m["idle"].append((idle_plain, idle_fedsim))

            run_dir = out / f"fedsim-{s}-{rep}"
            t0 = time.perf_counter()
            run_simulation(cfg_for(s), run_dir, progress=False, on_round=on_round)
            total = time.perf_counter() - t0
            rows = read_rounds(run_dir)
            m["fedsim"] += [r["wall_s"] for r in rows if r["round"] > args.skip]
            m["cpu_driver"].append(1e3 * (cpu[args.rounds] - cpu[args.skip]) / (args.rounds - args.skip))
            m["cpu_tree"].append(1e3 * (tree[args.rounds] - tree[args.skip]) / (args.rounds - args.skip))
            m["breakdown"].append(probe.rounds(args.rounds, args.skip) | {"run_total_s": total})
            acc_fedsim = [r["eval_metric"] for r in rows][: args.rounds]
            m["acc_diff"].append(float(np.max(np.abs(np.array(acc_fedsim) - np.array(acc_plain)))))
            print(f"rep {rep} {s}: plain {1e3 * st.median(t_plain[lo:]):.1f} ms, fedsim "
                  f"{1e3 * st.median([r['wall_s'] for r in rows if r['round'] > args.skip]):.1f} ms/round "
                  f"(idle before: {idle_plain:.2f} / {idle_fedsim:.2f})", file=sys.stderr, flush=True)

    extra = {}
    if not args.no_breakdown:
        ser = serialisation_ms(cfg_for(args.strategies[0]))
        payload = ser.pop("payload")
        extra["serialisation"] = ser
        extra["ray_noop"] = ray_noop_ms(payload, out)
        extra["profile_top"] = inproc_profile(cfg_for(args.strategies[0]), out / "inproc-profile")

    mach = describe(("flwr", "ray", "torch")) | {"fedsim_source": str(Path(__import__("fedsim").__file__).parent)}
    res = {"args": vars(args), "machine": mach, "strategies": {}, **extra}
    for s, m in meas.items():
        b = {k: st.median(d[k] for d in m["breakdown"]) for k in m["breakdown"][0]}
        res["strategies"][s] = {
            "plain_ms": 1e3 * st.median(m["plain"]), "fedsim_ms": 1e3 * st.median(m["fedsim"]),
            "inproc_ms": 1e3 * st.median(m["inproc"]) if m["inproc"] else None,
            "ratio": st.median(m["fedsim"]) / st.median(m["plain"]),
            "driver_cpu_ms_per_round": st.median(m["cpu_driver"]),
            "fedsim_cpu_ms_per_round": st.median(m["cpu_tree"]), "plain_cpu_ms_per_round": 1e3 * st.median(m["plain_cpu"]),
            "cpu_ratio": st.median(m["cpu_tree"]) / (1e3 * st.median(m["plain_cpu"])),
            "idle_before_plain_fedsim": m["idle"], "breakdown_ms": b,
            "max_abs_acc_diff_plain_vs_fedsim": max(m["acc_diff"]), "loadavg_at_start": m["load"],
            "per_rep_fedsim_ms": [1e3 * st.median(m["fedsim"][i * (args.rounds - lo):(i + 1) * (args.rounds - lo)])
                                  for i in range(args.reps)],
            "per_rep_plain_ms": [1e3 * st.median(m["plain"][i * (args.rounds - lo):(i + 1) * (args.rounds - lo)])
                                 for i in range(args.reps)],
        }
    md = render(res, args)
    (out / "result.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "result.md").write_text(md)
    print(md)
    return 0


def render(res: dict, args) -> str:
    mach = res["machine"]
    cmd = "python benchmarks/engine_overhead.py " + " ".join(sys.argv[1:])
    lines = [f"### Engine overhead: `fedsim run` vs plain PyTorch loop ({args.network}, {args.task}, "
             f"{args.local_steps} local step)", "",
             f"`{cmd.strip()}` - {mach['date']}; {mach['nproc']} CPUs ({mach['cpu']}), Python {mach['python']}, "
             f"flwr {mach['flwr']}, ray {mach['ray']}, torch {mach['torch']}; fedsim from `{mach['fedsim_source']}`; "
             f"{args.reps} interleaved repetitions x {args.rounds} rounds, medians over rounds {args.skip + 1}-"
             f"{args.rounds}.", "",
             "| strategy | plain loop ms/round | fedsim in-process (no Ray) ms/round | `fedsim run` ms/round | "
             "**ratio** fedsim/plain (target <= 1.15) | per-rep plain / fedsim ms | CPU ms/round plain / fedsim "
             "(driver + Ray processes) | CPU ratio | max abs acc diff plain vs fedsim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s, r in res["strategies"].items():
        inproc = f"{r['inproc_ms']:.1f}" if r["inproc_ms"] is not None else "-"
        lines.append(f"| {s} | {r['plain_ms']:.1f} | {inproc} | {r['fedsim_ms']:.1f} | **{r['ratio']:.2f}** "
                     f"({'met' if r['ratio'] <= 1.15 else 'not met'}) | "
                     f"{', '.join(f'{p:.0f}/{v:.0f}' for p, v in zip(r['per_rep_plain_ms'], r['per_rep_fedsim_ms']))} | "
                     f"{r['plain_cpu_ms_per_round']:.1f} / {r['fedsim_cpu_ms_per_round']:.1f} | {r['cpu_ratio']:.2f} | "
                     f"{r['max_abs_acc_diff_plain_vs_fedsim']:.2g} |")
    lines += ["", "Breakdown of a `fedsim run` round (medians, ms; driver-side timestamps, Ray task timeline "
              "for the actor side):", "",
              "| strategy | round (send+recv) | dispatch wait (push -> first actor call) | calls in flight | "
              "collect wait (last reply -> returned) | aggregate (server) | actor calls/round x per-call ms | "
              "actor side per call: deserialise / execute ClientApp / store reply | Ray overhead per call "
              "(call - actor task) | driver CPU ms/round |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s, r in res["strategies"].items():
        b = r["breakdown_ms"]
        actor = (f"{b.get('actor_deserialize_per_call', float('nan')):.2f} / "
                 f"{b.get('actor_execute_per_call', float('nan')):.2f} / "
                 f"{b.get('actor_store_outputs_per_call', float('nan')):.2f}")
        rpc = b["process_message_per_call"] - b.get("actor_task_per_call", float("nan"))
        lines.append(f"| {s} | {b['send_and_receive']:.1f} | {b['dispatch_wait']:.2f} | {b['calls_in_flight']:.1f} | "
                     f"{b['collect_wait']:.2f} | {b['aggregate']:.2f} | 11 x {b['process_message_per_call']:.2f} "
                     f"(sum {b['process_message_sum']:.1f}) | {actor} | {rpc:.2f} | "
                     f"{r['driver_cpu_ms_per_round']:.1f} |")
    if "serialisation" in res:
        z, rn = res["serialisation"], res["ray_noop"]
        lines += ["", f"Per message, measured apart: ClientApp handler in-process {z['handler_inprocess_ms']:.2f} ms; "
                  f"pickling the call ({z['args_bytes']} B) {z['args_dumps_ms']:.3f} ms + unpickling "
                  f"{z['args_loads_ms']:.3f} ms; reply ({z['reply_bytes']} B) {z['reply_dumps_ms']:.3f} + "
                  f"{z['reply_loads_ms']:.3f} ms; a no-op Ray actor call with the same payload "
                  f"{rn['noop_call_ms']:.2f} ms (p90 {rn['noop_call_p90_ms']:.2f} ms).", "",
                  "Top functions by own time, in-process run (ServerApp + ClientApp, no Ray), cProfile:", "", "```"]
        lines += res["profile_top"] + ["```"]
    lines += ["", "Machine idle fraction in the 1 s before each measurement (plain / fedsim), and 1-min load "
              "average, per repetition: "
              + "; ".join(f"{s}: " + ", ".join(f"{a:.2f}/{b:.2f} (load {ld:.1f})" for (a, b), ld in
                                                zip(r["idle_before_plain_fedsim"], r["loadavg_at_start"]))
                          for s, r in res["strategies"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
