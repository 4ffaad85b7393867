"""``fedsim run --ray-address``: the Simulation Engine on an existing two-node Ray cluster.

The cluster is two real Ray nodes started on this machine with ``ray start``:
a head with **no CPUs** and a second node with 2. A ClientApp actor needs a
CPU, so a run that completes has run every silo on the second node. Every
process of the cluster is ended by PID at the end (the watchdog tags what
``ray start`` spawns), never with ``ray stop``, which would end any other Ray
on the machine.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedsim.deploy.procs import free_port
from fedsim.guard import RAY_LOOPBACK_ENV, Watchdog, cluster_ray

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def two_node_cluster():
    temp = tempfile.mkdtemp(prefix="fedsim-rc-")  # short: Ray's socket paths are length-limited
    port = free_port()
    # a clean environment for the cluster: an earlier test's loopback-only switch would refuse a second node
    env = {k: v for k, v in os.environ.items() if k != RAY_LOOPBACK_ENV} | {"RAY_USAGE_STATS_ENABLED": "0",
                                                                           "RAY_ADDRESS": ""}
    common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    watchdog = Watchdog(remove=[temp]).start()  # ends every process `ray start` leaves behind
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard=false",
                        "--temp-dir", temp, *common], env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([RAY, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        watchdog.stop()
        shutil.rmtree(temp, ignore_errors=True)


def test_run_on_an_existing_two_node_cluster(two_node_cluster, tri_network, tmp_path):
    import ray

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fedsim", "run", "--ray-address", two_node_cluster, "--topology", tri_network,
           "--strategy", "ring", "--rounds", "2", "--compute-ms", "2", "--out", str(out), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != RAY_LOOPBACK_ENV} | {"RAY_ADDRESS": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert [r["round"] for r in rows] == ["0", "1", "2"] and all(r["eval_metric"] != "nan" for r in rows)
    # The cluster outlives the run (it is not fedsim's to end) and has the two nodes, CPUs only on the second.
    cluster_ray()  # this test process may have run a loopback-only Ray before
    ray.init(address=two_node_cluster, logging_level="ERROR", log_to_driver=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert sorted(n["Resources"].get("CPU", 0) for n in nodes) == [0, 2]
    finally:
        ray.shutdown()


def test_cycle_time_on_the_cluster_equals_the_local_table(two_node_cluster, tmp_path):
    """The sweep's tasks run on the cluster's second node (the head has no CPU); same table as in process."""
    base = [sys.executable, "-m", "fedsim", "cycle-time", "--topologies", "gaia,nws", "--strategies", "ring,mst,star",
            "--profiles", "femnist", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k != RAY_LOOPBACK_ENV} | {"RAY_ADDRESS": ""}
    remote = subprocess.run(base + ["--ray-address", two_node_cluster, "--out", str(tmp_path / "remote.csv")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = subprocess.run(base + ["--out", str(tmp_path / "local.csv")], capture_output=True, text=True,
                           timeout=600, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    a = list(csv.DictReader(open(tmp_path / "local.csv")))
    b = list(csv.DictReader(open(tmp_path / "remote.csv")))
    assert len(a) == 6 and a == b
