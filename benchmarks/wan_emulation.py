"""Predicted vs measured round time of a real deployment on an emulated WAN (STAR / FedAvg).

The first ``--silos`` silos of Gaia (fully connected, great-circle distances)
run FedAvg on the digits task on a real local deployment (SuperLink with TLS
and SuperNode authentication, one SuperNode per silo, fedsim's polling
settings). The SuperLink sits at the STAR server silo; every other silo's
SuperNode reaches it through its own link emulator
(:class:`fedsim.deploy.wanemu.LinkProxy`: this kernel has no ``tc netem``)
shaped with the one-way latency and rate that fedsim's delay model gives the
STAR arc ``server -> silo`` (:func:`fedsim.deploy.wanemu.star_links`), for
the digits task's profile with its compute time measured on this machine.

Recorded per round: the prediction of ``fedsim.timing`` for STAR with that
profile (the run's ``sim_round_ms``) and the measured round time (the run's
``wall_s``: push, the slowest silo's reply, aggregation). The same run on
the same proxies left unshaped (``--baseline``) gives the deployment's own
overhead on localhost, and ``(measured - baseline) / RTT_max`` the number of
sequential round trips a round costs on the slowest link.

``--core-bps`` / ``--access-bps`` change the delay model's capacities (for
the prediction and the emulated links alike), to study bandwidth-bound links.
Mind that SuperNode polls share the link: each is an HTTPS request of about
0.7 kB, five per second with fedsim's settings (about 28 kbit/s per node).

Usage::

    python benchmarks/wan_emulation.py                # the recorded run (Gaia rates)
    python benchmarks/wan_emulation.py --core-bps 2e5 --out /tmp/fedsim-wan-slow
    python benchmarks/wan_emulation.py --silos 3 --rounds 3 --no-baseline

Writes ``OUT/wan_emulation.json`` (default OUT: /tmp/fedsim-wan-emulation).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_overhead import gaia_subset, machine  # noqa: E402


def measured_profile(task_name: str, options: dict):
    from fedsim.clients import get_task

    return get_task(task_name, options).profile()


def run_once(network: str, cfg, shapes: dict, server: int, out: Path, shaped: bool) -> dict:
    from fedsim.deploy.local import LocalCluster, Speed
    from fedsim.deploy.procs import free_port
    from fedsim.deploy.wanemu import Emulator, LinkShape

    port = free_port()
    with Emulator() as emu:
        links = {}
        for silo, shape in shapes.items():
            use = shape if shaped else LinkShape(0.0)
            links[silo] = emu.add(silo, ("127.0.0.1", port), use)
        cluster = LocalCluster(out / "deploy", network, cfg.task, speed=Speed.preset("fedsim"), links=links,
                               verbose=False)
        try:
            cluster.start(port=port)
            run_id = cluster.submit(cfg, out)
            outcome = cluster.client.follow(run_id, out, cfg.rounds, timeout=3600)
        finally:
            cluster.stop()
        stats = emu.stats()
    rows = list(csv.DictReader(open(out / "rounds.csv")))[1:]
    return {"status": outcome.get("serverapp", {}).get("status"),
            "predicted_ms": [float(r["sim_round_ms"]) for r in rows],
            "measured_ms": [float(r["wall_s"]) * 1e3 for r in rows],
            "links": stats, "leftover_pids": cluster.procs.leftovers(), "loadavg_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--silos", type=int, default=5, help="first N silos of Gaia (default 5)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-baseline", dest="baseline", action="store_false")
    ap.add_argument("--out", default="/tmp/fedsim-wan-emulation")
    ap.add_argument("--core-bps", type=float, help="override the profile's core capacity (default 1e9)")
    ap.add_argument("--access-bps", type=float,
                    help="override the profile's access up/down capacities (default 1e10)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from fedsim.apps.config import RunConfig
    from fedsim.deploy.wanemu import star_links
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.networks import load_network

    out = Path(args.out)
    network = gaia_subset(args.silos, out / f"gaia-{args.silos}.gml")
    info = machine()
    options = {"lr": 0.3}
    profile = measured_profile("digits", options)
    overrides = {}
    if args.core_bps:
        overrides["core_bps"] = args.core_bps
    if args.access_bps:
        overrides["upload_bps"] = overrides["download_bps"] = args.access_bps
    if overrides:
        profile = profile.with_overrides(**overrides)
    conn = connectivity(load_network(network))
    schedule = build_schedule("star", conn, profile)
    server, shapes = star_links(conn, profile, schedule)
    names = load_network(network).silos
    print(f"digits profile: M = {profile.model_bits:.0f} bit, Tc = {profile.compute_ms:.2f} ms (measured here)")
    print(f"STAR server (hosts the SuperLink): {names[server]}")
    for silo, s in sorted(shapes.items()):
        print(f"  {names[silo]:>12} -> server: one-way {s.latency_ms:6.1f} ms, {s.rate_bps / 1e6:8.1f} Mbit/s")
    cfg = RunConfig(network=network, strategy="fedavg", task="digits", rounds=args.rounds, seed=0,
                    task_options=options, checkpoint_every=args.rounds, round_timeout=600,
                    profile=asdict(profile))
    from fedsim.deploy.wanemu import netem_available

    netem, detail = netem_available()
    print(f"tc netem: {'available' if netem else 'not available'} ({detail}); using the userspace link proxy")
    record = {"machine": info, "emulator": "fedsim.deploy.wanemu.LinkProxy (userspace asyncio TCP proxy per link)",
              "netem_available": netem, "netem_detail": detail,
              "network": f"gaia first {args.silos} silos, fully connected", "server": names[server],
              "profile": asdict(profile),
              "links": {names[s]: {"latency_ms": v.latency_ms, "rate_bps": v.rate_bps} for s, v in shapes.items()},
              "runs": {}}
    modes = [("wan", True)] + ([("baseline", False)] if args.baseline else [])
    for mode, shaped in modes:
        t0 = time.perf_counter()
        r = run_once(network, cfg, shapes, server, out / mode, shaped)
        r["run_wall_s"] = time.perf_counter() - t0
        record["runs"][mode] = r
        print(f"{mode}: predicted {statistics.fmean(r['predicted_ms']):.1f} ms/round, measured "
              f"{statistics.fmean(r['measured_ms']):.1f} ms/round (median "
              f"{statistics.median(r['measured_ms']):.1f}), status {r['status']}", flush=True)
    wan = record["runs"]["wan"]
    pred = statistics.fmean(wan["predicted_ms"])
    meas = statistics.median(wan["measured_ms"])
    summary = {"predicted_ms": pred, "measured_median_ms": meas, "measured_mean_ms": statistics.fmean(wan["measured_ms"]),
               "ratio_measured_over_predicted": meas / pred}
    if args.baseline:
        base = statistics.median(record["runs"]["baseline"]["measured_ms"])
        rtt = 2 * max(s.latency_ms for s in shapes.values())
        summary |= {"baseline_median_ms": base, "wan_minus_baseline_ms": meas - base,
                    "slowest_rtt_ms": rtt, "round_trips_per_round": (meas - base) / rtt,
                    "ratio_wan_part_over_predicted_network_part":
                        (meas - base) / (pred - profile.compute_ms * profile.local_steps)}
    record["summary"] = summary
    print(json.dumps(summary, indent=2))
    (out / "wan_emulation.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'wan_emulation.json'}")


if __name__ == "__main__":
    main()
