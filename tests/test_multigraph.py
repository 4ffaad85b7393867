"""Multigraph topology (SPEC-timing §4.6): construction, states, isolated silos, recursion."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import FedsimError
from fedsim.timing.simulate import multigraph_round_times, simulate
from fedsim.topologies import build_schedule, connectivity, get_profile
from fedsim.topologies.delay import DelayProfile
from fedsim.topologies.multigraph import build, multiplicities
from fedsim.topologies.networks import Network, builtin_network
from fedsim.topologies.schedule import Schedule


def test_multiplicities_round_half_to_even_and_cap():
    d = np.array([10.0, 25.0, 35.0, 45.0, 80.0, 12.0])
    # d / d_min = 1, 2.5, 3.5, 4.5, 8, 1.2 -> round half to even: 1, 2, 4, 4, 8, 1
    assert multiplicities(d, t=10).tolist() == [1, 2, 4, 4, 8, 1]
    # capped at t
    assert multiplicities(d, t=5).tolist() == [1, 2, 4, 4, 5, 1]
    assert multiplicities(d, t=3).tolist() == [1, 2, 3, 3, 3, 1]
    assert multiplicities(d, t=1).tolist() == [1] * 6
    with pytest.raises(FedsimError, match="t must be an integer >= 1"):
        multiplicities(d, t=0)


def _sched(arcs, mult, n=None) -> Schedule:
    arcs = np.asarray(arcs, dtype=np.int64)
    return Schedule("multigraph", n or int(arcs.max()) + 1, arcs, np.asarray(mult, dtype=np.int64))


def test_s_max_is_the_lcm():
    ring4 = [[0, 1], [1, 2], [2, 3], [3, 0]]
    assert _sched(ring4, [1, 2, 3, 1]).n_states == 6
    assert _sched(ring4, [2, 4, 5, 1]).n_states == 20
    assert _sched(ring4, [1, 1, 1, 1]).n_states == 1
    assert _sched(ring4, [4, 2, 4, 2]).n_states == 4


def test_strong_iff_state_mod_multiplicity_is_zero():
    s = _sched([[0, 1], [1, 2], [2, 3], [3, 0]], [1, 2, 3, 6])
    expected = {  # state: strong flags of the four arcs
        0: [True, True, True, True],
        1: [True, False, False, False],
        2: [True, True, False, False],
        3: [True, False, True, False],
        4: [True, True, False, False],
        5: [True, False, False, False],
    }
    for state, flags in expected.items():
        assert s.state_mask(state).tolist() == flags
    present, strong = s.round_masks(8)
    assert present.all()
    # round k uses state k mod 6
    assert strong[6].tolist() == expected[0] and strong[7].tolist() == expected[1]


def test_isolated_silos_on_a_toy_ring():
    # 0 -> 1 -> 2 -> 3 -> 0 with multiplicities 2, 2, 1, 2
    s = _sched([[0, 1], [1, 2], [2, 3], [3, 0]], [2, 2, 1, 2])
    assert s.isolated(0) == []  # state 0 is the base ring, all strong
    # state 1: only 2 -> 3 is strong, so silos 0 and 1 have no strong arc
    assert s.isolated(1) == [0, 1]
    # longer period: 3 -> 0 has multiplicity 4, state 2: 0->1, 1->2, 2->3 strong
    s2 = _sched([[0, 1], [1, 2], [2, 3], [3, 0]], [2, 2, 1, 4])
    assert s2.isolated(2) == []
    assert s2.isolated(3) == [0, 1]


def test_build_uses_unshared_delays_and_t():
    # Four silos on a line, 0 - 1 - 2 - 3, 1000 km apart; ring overlay arcs
    # given explicitly through a static base.
    from fedsim.topologies.schedule import static_schedule

    net = Network("line", tuple("abcd"), ((0, 1, 1000.0), (1, 2, 1000.0), (2, 3, 1000.0)), ())
    conn = connectivity(net)
    prof = DelayProfile("toy", 1e6, 2.0, upload_bps=1e10, download_bps=1e10, core_bps=1e9)
    base = static_schedule("ring", 4, [[0, 1], [1, 2], [2, 3], [3, 0]])
    s = build(conn, prof, base=base, t=5)
    # d = Tc + l + max(M/C_up, M/C_dn, M/A); M/C = 0.1 ms, M/A = hops * 1 ms
    # 0->1, 1->2, 2->3: 2 + 12.5 + 1 = 15.5;  3->0 (3000 km, 3 hops): 2 + 29.5 + 3 = 34.5
    # n = round(d / 15.5): 1, 1, 1, round(2.2258) = 2
    assert s.multiplicity.tolist() == [1, 1, 1, 2]
    assert s.n_states == 2 and s.info["s_max"] == 2 and s.base == "ring"


def test_t1_multigraph_is_the_ring_on_gaia():
    conn = connectivity(builtin_network("gaia"))
    for prof in (get_profile("femnist"), get_profile("inaturalist")):
        ring = build_schedule("ring", conn, prof)
        mg = build_schedule("multigraph", conn, prof, t=1)
        assert np.array_equal(mg.arcs, ring.arcs)
        assert mg.multiplicity.tolist() == [1] * len(ring.arcs)
        assert mg.n_states == 1
        assert simulate(mg, conn, prof).value == pytest.approx(simulate(ring, conn, prof).value)
        assert simulate(mg, conn, prof, rounds=50).value == pytest.approx(simulate(ring, conn, prof).value)


# A 3-silo ring with known full delays (see test_maxplus): Tc = 2 ms and
#   D0 = d(0->1) = 106.85, D1 = d(1->2) = 107.7, D2 = d(2->0) = 108.125 ms.
TRI = Network("tri", ("a", "b", "c"), ((0, 1, 100.0), (1, 2, 200.0), (0, 2, 250.0)), ())
TOY = DelayProfile("toy", 1e6, 2.0, upload_bps=1e7, download_bps=2e7, core_bps=1e9)
D0, D1, D2 = 106.85, 107.7, 108.125


def test_recursion_by_hand_multiplicities_1_1_2():
    conn = connectivity(TRI)
    s = _sched([[0, 1], [1, 2], [2, 0]], [1, 1, 2])
    assert s.delays(conn, TOY) == pytest.approx([D0, D1, D2])
    # k = 0: all strong, tau0 = (D0 + D1 + D2) / 3
    tau0 = (D0 + D1 + D2) / 3  # 107.558333
    # k = 1: arc 2 weak (1 mod 2 != 0) -> delay 0; tau1 = (D0 + D1 + 0) / 3
    tau1 = (D0 + D1) / 3  # 71.516667; arc 2 was strong -> its clock becomes tau1
    # k = 2: arc 2 strong again after a weak round: max(Tc, D2 - tau1)
    resumed = max(2.0, D2 - tau1)  # 108.125 - 71.516667 = 36.608333
    tau2 = (D0 + D1 + resumed) / 3  # 83.719444
    # k = 3 repeats k = 1 (arc 2 strong -> weak), k = 4 repeats k = 2, ...
    expected = [tau0, tau1, tau2, tau1, tau2, tau1]
    assert resumed == pytest.approx(36.608333, abs=1e-6)
    assert multigraph_round_times(s, conn, TOY, 6) == pytest.approx(expected)
    assert simulate(s, conn, TOY, rounds=6).value == pytest.approx(sum(expected) / 6)


def test_recursion_by_hand_weak_twice_and_compute_floor():
    conn = connectivity(TRI)
    s = _sched([[0, 1], [1, 2], [2, 0]], [1, 1, 3])
    a = (D0 + D1) / 3  # arc 2 weak: 71.516667
    # k = 0: tau0 = (D0 + D1 + D2) / 3
    # k = 1: arc 2 strong -> weak: tau1 = a, clock = a
    # k = 2: arc 2 weak -> weak: tau2 = a, clock = a + a = 143.033333
    # k = 3: weak -> strong: max(Tc, D2 - 143.033) = max(2, -34.9) = 2 (Tc floor)
    b = (D0 + D1 + 2.0) / 3  # 72.183333
    expected = [(D0 + D1 + D2) / 3, a, a, b, a, a, b, a, a, b, a, a]
    got = multigraph_round_times(s, conn, TOY, len(expected))
    assert got == pytest.approx(expected)
    # long runs take the periodic shortcut; it must agree with the recursion
    long = multigraph_round_times(s, conn, TOY, 3001)
    assert long[-1] == pytest.approx(b)  # round 3000 is state 0 after weak rounds
    assert long[:12] == pytest.approx(expected)
    # rounds 1 .. 3000 are 1000 periods (a, a, b)
    assert long.mean() == pytest.approx((expected[0] + a * 2000 + b * 1000) / 3001)


def test_star_multigraph_is_rescaled():
    conn = connectivity(builtin_network("gaia"))
    prof = get_profile("femnist")
    mg = build_schedule("multigraph", conn, prof, base="star")
    assert mg.server is not None and mg.base == "star"
    raw = multigraph_round_times(mg, conn, prof, 100)
    ct = simulate(mg, conn, prof, rounds=100)
    assert ct.round_ms == pytest.approx(2 * (raw - prof.tc) + prof.tc)


def test_unknown_multigraph_base_is_refused():
    conn = connectivity(builtin_network("gaia"))
    with pytest.raises(FedsimError, match="unknown multigraph base 'matcha'; valid: ring, mst"):
        build_schedule("multigraph", conn, get_profile("femnist"), base="matcha")
