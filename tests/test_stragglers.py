"""Heterogeneous silos in the clock, checked against cycle times derived by hand.

The 3-silo network of conftest (Paris, Brussels, Montreal) with a profile of
M = 1e6 bit, a 1 Gbps core and 10 Gbps access links: an arc's transfer term
is M/A = 1 ms (the access terms, at most 2 x 0.1 ms, never win) unless a
silo's own link is made slow. Every underlay path is its direct link, so
l(i, j) = 0.0085 km + 4 ms.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import FedsimError
from fedsim.timing.simulate import simulate
from fedsim.topologies import build_schedule, connectivity
from fedsim.topologies.delay import DelayProfile
from fedsim.topologies.networks import load_network
from fedsim.topologies.stragglers import heterogeneous, parse_stragglers

PARIS, BRUSSELS, MONTREAL = (48.86, 2.35), (50.85, 4.35), (45.50, -73.57)


def _km(a, b) -> float:
    (la1, lo1), (la2, lo2) = (np.radians(a), np.radians(b))
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * 6371.0088 * np.arcsin(np.sqrt(h)))


L01 = 0.0085 * _km(PARIS, BRUSSELS) + 4
L12 = 0.0085 * _km(BRUSSELS, MONTREAL) + 4
L02 = 0.0085 * _km(PARIS, MONTREAL) + 4
BASE = DelayProfile("toy", 1e6, 2.0)


@pytest.fixture
def tri(tri_network):
    net = load_network(tri_network)
    return net, connectivity(net)


def _write(tmp_path, text):
    path = tmp_path / "silos.csv"
    path.write_text(text)
    return str(path)


def _cycle(strategy, net, conn, prof):
    sched = build_schedule(strategy, conn, prof)
    return simulate(sched, conn, prof).value, sched


def test_ring_takes_the_mean_step_time_of_its_tour(tri, tmp_path):
    """ring: one 3-cycle through every silo, tau = (sum of u Tc(i) + sum of l + 3 M/A) / 3."""
    net, conn = tri
    prof = heterogeneous(BASE, list(net.silos), _write(tmp_path, "silo,compute_ms\n0,2\n1,60\n2,7\n"))
    got, _ = _cycle("ring", net, conn, prof)
    assert got == pytest.approx((2 + 60 + 7 + L01 + L12 + L02 + 3 * 1.0) / 3, rel=1e-9)


def test_star_waits_for_its_slowest_silo(tri, tmp_path):
    """star (server Paris: every load centrality is 0, silo 0 wins the tie): the slowest silo's own step plus
    its round trip, max_i (u Tc(i) + 2 (l(0, i) + M/A)); the server's own step time does not count."""
    net, conn = tri
    prof = heterogeneous(BASE, list(net.silos), _write(tmp_path, "silo,compute_ms\nParis,500\nBrussels,150\n"))
    got, sched = _cycle("star", net, conn, prof)
    assert sched.server == 0
    assert got == pytest.approx(max(150 + 2 * (L01 + 1.0), 2 + 2 * (L02 + 1.0)), rel=1e-9)
    assert got == pytest.approx(150 + 2 * (L01 + 1.0), rel=1e-9)  # Brussels, the straggler, decides


def test_a_slow_uplink_slows_only_its_arcs(tri, tmp_path):
    """Montreal's uplink at 1 Mbit/s: its out-arc moves M in 1000 ms, the rest of the tour is unchanged."""
    net, conn = tri
    prof = heterogeneous(BASE, list(net.silos), _write(tmp_path, "silo,upload_bps\n2,1e6\n"))
    got, sched = _cycle("ring", net, conn, prof)
    assert sorted(sched.arcs[:, 0].tolist()) == [0, 1, 2]  # Montreal sends on exactly one arc
    assert got == pytest.approx((3 * 2.0 + L01 + L12 + L02 + 1.0 + 1.0 + 1000.0) / 3, rel=1e-9)


def test_homogeneous_silos_give_the_published_clock(tri, tmp_path):
    """Every silo at the profile's own values: bit for bit the clock without per-silo values."""
    net, conn = tri
    same = heterogeneous(BASE, list(net.silos), _write(tmp_path, "silo,compute_ms,upload_bps\n0,2,1e10\n1,2,1e10\n"
                                                                 "2,2,1e10\n"))
    for strategy in ("ring", "star", "multigraph", "matcha", "mst"):
        a, _ = _cycle(strategy, net, conn, BASE)
        b, _ = _cycle(strategy, net, conn, same)
        assert a == b, strategy


def test_lognormal_stragglers_are_seeded(tri):
    net, _ = tri
    a = heterogeneous(BASE, list(net.silos), stragglers="lognormal:0.8", seed=3)
    b = heterogeneous(BASE, list(net.silos), stragglers="lognormal:0.8", seed=3)
    c = heterogeneous(BASE, list(net.silos), stragglers="lognormal:0.8", seed=4)
    assert a.silo_compute_ms == b.silo_compute_ms != c.silo_compute_ms
    draws = np.random.default_rng(3).lognormal(0.0, 0.8, 3)
    np.testing.assert_allclose(a.silo_compute_ms, 2.0 * draws)


def test_stragglers_change_the_multigraph_clock(tri):
    """Stragglers (seeded draws with a slow silo among them) slow the ring and the multigraph down."""
    net, conn = tri
    slow = heterogeneous(BASE, list(net.silos), stragglers="lognormal:1.0", seed=0)
    for strategy in ("ring", "multigraph"):
        assert _cycle(strategy, net, conn, slow)[0] > _cycle(strategy, net, conn, BASE)[0]


@pytest.mark.parametrize("spec", ["lognormal", "lognormal:0", "lognormal:-1", "lognormal:nan", "pareto:1",
                                  "lognormal:9"])
def test_bad_straggler_specs(spec):
    with pytest.raises(FedsimError, match="--stragglers expects lognormal:SIGMA"):
        parse_stragglers(spec)


@pytest.mark.parametrize("text, match", [
    ("name,compute_ms\n0,1\n", "needs a header with 'silo'"),
    ("silo,speed\n0,1\n", "needs a header with 'silo'"),
    ("silo,compute_ms\nAtlantis,3\n", "no silo 'Atlantis'"),
    ("silo,compute_ms\n7,3\n", "no silo '7'"),
    ("silo,compute_ms\n0,-3\n", "compute_ms must be a positive number"),
    ("silo,upload_bps\n0,fast\n", "upload_bps must be a positive number"),
])
def test_bad_silo_files(tri, tmp_path, text, match):
    net, _ = tri
    with pytest.raises(FedsimError, match=match):
        heterogeneous(BASE, list(net.silos), _write(tmp_path, text))


def test_cli_cycle_time_with_a_silo_file(tri_network, tmp_path, capsys):
    from fedsim.cli import main

    path = _write(tmp_path, "silo,compute_ms\n1,150\n")
    out = tmp_path / "t.csv"
    code = main(["cycle-time", "--topologies", tri_network, "--strategies", "ring,star", "--profiles", "femnist",
                 "--compute-ms-file", path, "--out", str(out), "--no-progress"])
    assert code == 0
    import csv

    rows = {r["topology"]: float(r["cycle_time_ms"]) for r in csv.DictReader(open(out))}
    m_over_a = 4_843_243 / 1e9 * 1e3  # femnist's M over the 1 Gbps core
    assert rows["ring"] == pytest.approx((4.6 + 150 + 4.6 + L01 + L12 + L02 + 3 * m_over_a) / 3, rel=1e-6)
    assert rows["star"] == pytest.approx(max(150 + 2 * (L01 + m_over_a), 4.6 + 2 * (L02 + m_over_a)), rel=1e-6)


def test_a_runs_clock_uses_the_silos_own_step_times(tri_network, tmp_path):
    """fedsim run's simulated clock (RunPlan): a ring round with Brussels at 150 ms per step, from the file;
    the resolved per-silo values are kept in the run's config."""
    from fedsim.apps.config import RunConfig
    from fedsim.apps.plan import RunPlan

    path = _write(tmp_path, "silo,compute_ms\n1,150\n")
    cfg = RunConfig(network=tri_network, strategy="ring", rounds=2, compute_ms=2.0, compute_ms_file=path)
    plan = RunPlan.build(cfg)
    m_over_a = plan.profile.model_bits / 1e9 * 1e3
    np.testing.assert_allclose(plan.clock.round_ms, (2 + 150 + 2 + L01 + L12 + L02 + 3 * m_over_a) / 3, rtol=1e-9)
    assert cfg.profile["silo_compute_ms"] == (2.0, 150.0, 2.0)
