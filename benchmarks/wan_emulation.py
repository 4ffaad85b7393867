"""Predicted vs measured round time of a real deployment on an emulated WAN (STAR / FedAvg).

The first ``--silos`` silos of Gaia (fully connected, great-circle distances)
run FedAvg on the digits task on a real local deployment (SuperLink with TLS
and SuperNode authentication, one SuperNode per silo, fedsim's polling
settings). The SuperLink sits at the STAR server silo; every other silo's
SuperNode reaches it through its own link emulator
(:class:`fedsim.deploy.wanemu.LinkProxy`: this kernel has no ``tc netem``).

Runs, each ``--rounds`` rounds on a fresh deployment:

1. ``cal-*``: every link shaped to the same one-way latency (``--cal-ms``,
   first one 0 = unshaped), no rate limit -> :func:`fedsim.timing.calibration.fit_round_trips`
   fits ``round = local_ms + K * RTT``: the deployment's local cost per round
   and the round trips its protocol spends per round.
2. ``wan``: each link shaped with the one-way latency and rate fedsim's delay
   model gives the STAR arc ``server -> silo`` (Gaia's heterogeneous
   latencies, :func:`fedsim.deploy.wanemu.star_links`), for the digits
   profile with its compute time measured on this machine.

Compared with the ``wan`` run's measured round times (median):

* the published model: ``fedsim.timing`` STAR with the digits profile;
* the calibrated model: ``fedsim.timing`` STAR with
  :func:`fedsim.timing.calibration.deployment_profile` (the calibration never
  saw Gaia's links).

``--core-bps`` / ``--access-bps`` change the delay model's capacities (for
the predictions and the emulated Gaia links alike), to study bandwidth-bound
links: the calibration never sees a rate limit, so the transfer term of the
prediction is the model's ``M / rate`` alone.
Mind that SuperNode polls share the link: each is an HTTPS request of about
0.7 kB, five per second with fedsim's settings (about 28 kbit/s per node).

Usage::

    python benchmarks/wan_emulation.py                 # the recorded run
    python benchmarks/wan_emulation.py --silos 5 --rounds 8
    python benchmarks/wan_emulation.py --cal-ms 0 40 --rounds 4 --out /tmp/quick

Writes ``OUT/wan_emulation.json`` (default OUT: /tmp/fedsim-wan-emulation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_overhead import gaia_subset  # noqa: E402
from machine import describe  # noqa: E402


def measured_profile(task_name: str, options: dict):
    from fedsim.clients import get_task

    return get_task(task_name, options).profile()


def run_once(network: str, cfg, shapes: dict, out: Path) -> dict:
    """One deployment with silo ``i``'s SuperNode dialling through a link shaped ``shapes[i]``."""
    from fedsim.deploy.local import LocalCluster, Speed
    from fedsim.deploy.procs import free_port
    from fedsim.deploy.wanemu import Emulator

    port = free_port()
    with Emulator() as emu:
        links = {}
        for silo, shape in shapes.items():
            links[silo] = emu.add(silo, ("127.0.0.1", port), shape)
        cluster = LocalCluster(out / "deploy", network, cfg.task, speed=Speed.preset("fedsim"), links=links,
                               verbose=False)
        try:
            cluster.start(port=port)
            run_id = cluster.submit(cfg, out)
            outcome = cluster.client.follow(run_id, out, cfg.rounds, timeout=3600)
        finally:
            cluster.stop()
        stats = emu.stats()
    from fedsim.apps.records import read_rounds

    rows = read_rounds(out)[1:]
    return {"status": outcome.get("serverapp", {}).get("status"),
            "predicted_ms": [float(r["sim_round_ms"]) for r in rows],
            "measured_ms": [float(r["wall_s"]) * 1e3 for r in rows],
            "links": stats, "leftover_pids": cluster.procs.leftovers(), "loadavg_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--silos", type=int, default=3, help="first N silos of Gaia (default 3)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cal-ms", type=float, nargs="+", default=[0.0, 20.0, 60.0],
                    help="uniform one-way latencies of the calibration runs (default 0 20 60)")
    ap.add_argument("--out", default="/tmp/fedsim-wan-emulation")
    ap.add_argument("--core-bps", type=float, help="override the profile's core capacity (default 1e9)")
    ap.add_argument("--access-bps", type=float,
                    help="override the profile's access up/down capacities (default 1e10)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from fedsim.apps.config import RunConfig
    from fedsim.deploy.wanemu import LinkShape, netem_available, star_links
    from fedsim.timing.calibration import deployment_profile, fit_round_trips
    from fedsim.timing.simulate import simulate
    from fedsim.topologies import build_schedule, connectivity
    from fedsim.topologies.networks import load_network

    out = Path(args.out)
    network = gaia_subset(args.silos, out / f"gaia-{args.silos}.gml")
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
    netem, detail = netem_available()
    print(f"tc netem: {'available' if netem else 'not available'} ({detail}); using the userspace link proxy")
    record = {"machine": describe(), "loadavg_start": os.getloadavg(),
              "emulator": "fedsim.deploy.wanemu.LinkProxy (userspace asyncio TCP proxy per link)",
              "netem_available": netem, "netem_detail": detail,
              "network": f"gaia first {args.silos} silos, fully connected", "server": names[server],
              "profile": asdict(profile),
              "links": {names[s]: {"latency_ms": v.latency_ms, "rate_bps": v.rate_bps} for s, v in shapes.items()},
              "runs": {}}
    # Calibration links have latency only: the transfer term M / rate is the model's own.
    modes = [(f"cal-{ms:g}ms", {s: LinkShape(ms) for s in shapes}) for ms in args.cal_ms] + [("wan", shapes)]
    for mode, link_shapes in modes:
        t0 = time.perf_counter()
        r = run_once(network, cfg, link_shapes, out / mode)
        r["run_wall_s"] = time.perf_counter() - t0
        r["rtt_ms"] = 2 * max(s.latency_ms for s in link_shapes.values())
        record["runs"][mode] = r
        print(f"{mode}: RTT {r['rtt_ms']:.1f} ms, measured median {statistics.median(r['measured_ms']):.1f} "
              f"ms/round ({', '.join(f'{x:.0f}' for x in r['measured_ms'])}), status {r['status']}", flush=True)
    cal_runs = [record["runs"][m] for m, _ in modes[:-1]]
    cal = fit_round_trips([r["rtt_ms"] for r in cal_runs for _ in r["measured_ms"]],
                          [x for r in cal_runs for x in r["measured_ms"]])
    calibrated = deployment_profile(profile, cal.local_ms, cal.round_trips)
    cal_sched = build_schedule("star", conn, calibrated)
    assert cal_sched.server == server, "the calibrated profile moved the STAR server"
    wan = record["runs"]["wan"]
    meas = statistics.median(wan["measured_ms"])
    published = statistics.fmean(wan["predicted_ms"])
    predicted = simulate(cal_sched, conn, calibrated).value
    summary = {"calibration": asdict(cal), "measured_median_ms": meas,
               "measured_mean_ms": statistics.fmean(wan["measured_ms"]),
               "published_model_ms": published, "ratio_measured_over_published": meas / published,
               "calibrated_model_ms": predicted, "ratio_measured_over_calibrated": meas / predicted,
               "within_15_percent": abs(meas / predicted - 1) <= 0.15}
    record["summary"] = summary
    record["loadavg_end"] = os.getloadavg()
    print(f"calibration: local {cal.local_ms:.0f} ms/round + {cal.round_trips:.2f} RTT "
          f"(rms residual {cal.rms_ms:.0f} ms over {cal.points} rounds)")
    print(json.dumps(summary, indent=2))
    (out / "wan_emulation.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {out / 'wan_emulation.json'}")


if __name__ == "__main__":
    main()
