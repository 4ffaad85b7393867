"""The WAN delay model (SPEC-timing §3): latency law, core bandwidth, access sharing.

Every expected value is worked out by hand in the comments from the model's
definition, on small networks built here.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.errors import FedsimError
from fedsim.topologies.delay import (
    DelayProfile,
    arc_delays,
    connectivity,
    degrees,
    get_profile,
    pair_delay_matrix,
)
from fedsim.topologies.networks import Network

# A profile with round numbers: M = 1e6 bit, Tc = 2 ms, so
#   M / C_up   = 1e6 / 1e7 s = 100 ms,
#   M / C_dn   = 1e6 / 2e7 s =  50 ms,
#   M / C_core = 1e6 / 1e9 s =   1 ms  (per hop: A = C_core / hops).
TOY = DelayProfile("toy", model_bits=1e6, compute_ms=2.0, upload_bps=1e7,
                   download_bps=2e7, core_bps=1e9)


def path_network() -> Network:
    """a - b - c - d with 100, 200 and 300 km links."""
    return Network("path", ("a", "b", "c", "d"),
                   ((0, 1, 100.0), (1, 2, 200.0), (2, 3, 300.0)), ())


def test_latency_law_on_a_path():
    conn = connectivity(path_network())
    p = get_profile("femnist")
    lat = conn.latency(p)
    # l = 0.0085 ms/km * D + 4 ms along the km-shortest path
    assert lat[0, 1] == pytest.approx(0.0085 * 100 + 4)  # 4.85
    assert lat[0, 2] == pytest.approx(0.0085 * 300 + 4)  # 6.55
    assert lat[0, 3] == pytest.approx(0.0085 * 600 + 4)  # 9.1
    assert lat[3, 0] == pytest.approx(9.1)
    assert lat[1, 3] == pytest.approx(0.0085 * 500 + 4)  # 8.25
    assert np.all(np.diag(lat) == 0)


def test_latency_law_follows_profile_overrides():
    conn = connectivity(path_network())
    p = get_profile("femnist", latency_ms_per_km=0.01, latency_base_ms=1.0)
    assert conn.latency(p)[0, 3] == pytest.approx(0.01 * 600 + 1.0)  # 7 ms


def test_core_bandwidth_is_capacity_over_hops():
    conn = connectivity(path_network())
    p = get_profile("femnist")  # C_core = 1e9 bit/s
    assert conn.hops[0, 1] == 1 and conn.hops[0, 2] == 2 and conn.hops[0, 3] == 3
    bw = conn.bandwidth(p)
    assert bw[0, 1] == pytest.approx(1e9)
    assert bw[0, 2] == pytest.approx(1e9 / 2)
    assert bw[0, 3] == pytest.approx(1e9 / 3)
    assert bw[3, 0] == pytest.approx(1e9 / 3)


def test_arc_delay_end_to_end_on_a_path():
    conn = connectivity(path_network())
    p = get_profile("femnist")  # M = 4,843,243 bit, Tc = 4.6 ms, access 1e10 bit/s
    d = arc_delays(conn, p, np.array([[0, 3], [3, 0]]))
    # Tc + l + max(M/C_up, M/C_dn, M/A):
    #   l    = 0.0085 * 600 + 4           = 9.1 ms
    #   M/A  = 4,843,243 / (1e9 / 3) s    = 14.529729 ms  (3 hops)
    #   M/C  = 4,843,243 / 1e10 s         = 0.4843243 ms  (access, smaller)
    expected = 4.6 + 9.1 + 4_843_243 * 3 / 1e9 * 1e3
    assert expected == pytest.approx(28.229729)
    assert d == pytest.approx([expected, expected])


def test_access_links_are_shared_by_degree():
    # Four silos 10 km apart, all linked (1 hop, l = 0.085 + 4 = 4.085 ms).
    net = Network("k4", ("s", "a", "b", "c"),
                  tuple((i, j, 10.0) for i in range(4) for j in range(i + 1, 4)), ())
    conn = connectivity(net)
    # Overlay: s -> a, s -> b, s -> c, a -> s (out-degree of s is 3, in-degree 1).
    arcs = np.array([[0, 1], [0, 2], [0, 3], [1, 0]])
    d = arc_delays(conn, TOY, arcs)
    lat = 0.0085 * 10 + 4
    # s -> a: max(outdeg(s)*100, indeg(a)*50, 1) = max(300, 50, 1) = 300
    # a -> s: max(outdeg(a)*100, indeg(s)*50, 1) = max(100, 50, 1) = 100
    assert d == pytest.approx([2 + lat + 300, 2 + lat + 300, 2 + lat + 300, 2 + lat + 100])
    # Without sharing every arc pays one model per access link: max(100, 50, 1).
    d1 = arc_delays(conn, TOY, arcs, shared_access=False)
    assert d1 == pytest.approx([2 + lat + 100] * 4)


def test_download_sharing_dominates_when_download_is_slow():
    net = Network("k3", ("a", "b", "c"), ((0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0)), ())
    conn = connectivity(net)
    slow_down = TOY.with_overrides(download_bps=2.5e6)  # M/C_dn = 1e6/2.5e6 s = 400 ms
    arcs = np.array([[0, 2], [1, 2]])  # c receives two models
    d = arc_delays(conn, slow_down, arcs)
    lat = 0.0085 * 10 + 4
    # max(outdeg*100 = 100, indeg(c)*400 = 800, 1) = 800
    assert d == pytest.approx([2 + lat + 800, 2 + lat + 800])


def test_degrees_with_round_masks():
    arcs = np.array([[0, 1], [1, 2], [2, 0], [0, 2]])
    out, inn = degrees(3, arcs)
    assert out.tolist() == [2, 1, 1] and inn.tolist() == [1, 1, 2]
    mask = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)
    out, inn = degrees(3, arcs, mask)
    # round 0: arcs 0->1 and 0->2; round 1: arcs 1->2 and 2->0
    assert out.tolist() == [[2, 0, 0], [0, 1, 1]]
    assert inn.tolist() == [[0, 1, 1], [1, 0, 1]]


def test_masked_delays_count_only_present_arcs():
    net = Network("k3", ("a", "b", "c"), ((0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0)), ())
    conn = connectivity(net)
    arcs = np.array([[0, 1], [0, 2]])
    lat = 0.0085 * 10 + 4
    both = arc_delays(conn, TOY, arcs, mask=np.array([True, True]))
    one = arc_delays(conn, TOY, arcs, mask=np.array([True, False]))
    assert both[0] == pytest.approx(2 + lat + 200)  # a uploads two models
    assert one[0] == pytest.approx(2 + lat + 100)  # only one is present


def test_pair_delay_matrix_with_and_without_access():
    conn = connectivity(path_network())
    w = pair_delay_matrix(conn, TOY, access=True)
    w0 = pair_delay_matrix(conn, TOY, access=False)
    # a -> d: 3 hops, core term 3 ms; access term 100 ms dominates only with access
    assert w[0, 3] == pytest.approx(2 + 9.1 + 100)
    assert w0[0, 3] == pytest.approx(2 + 9.1 + 3)
    assert np.all(np.diag(w) == 0)


def test_hop_count_on_ties_uses_dijkstra_from_the_later_silo():
    # Two 10 km routes between silo 0 and silo 3:
    #   0 -1- 3     (6 + 4 km, 2 hops)
    #   0 -2- 4- 3  (2 + 3 + 5 km, 3 hops)
    # Dijkstra from 0 settles 2 (2 km), 4 (5 km) and reaches 3 at 10 km through
    # 4 before it settles 1 (6 km); the later equal route does not replace it:
    # 3 hops. From 3 it settles 1 (4 km) and reaches 0 at 10 km through 1 first:
    # 2 hops. The rule keeps the later silo's (3's) path: 2 hops.
    net = Network("tie", tuple("01234"),
                  ((0, 1, 6.0), (1, 3, 4.0), (0, 2, 2.0), (2, 4, 3.0), (4, 3, 5.0)), ())
    conn = connectivity(net)
    assert conn.km[0, 3] == conn.km[3, 0] == 10.0
    assert conn.hops[0, 3] == conn.hops[3, 0] == 2
    assert conn.bandwidth(TOY)[0, 3] == pytest.approx(1e9 / 2)
    # no tie elsewhere: 0 -> 4 is 0-2-4 (5 km) against 0-1-3-4 (15 km)
    assert conn.hops[0, 4] == 2 and conn.km[0, 4] == 5.0


def test_published_profiles_and_units():
    p = get_profile("femnist")
    assert (p.model_bits, p.compute_ms, p.local_steps) == (4_843_243, 4.6, 1)
    assert p.upload_ms == pytest.approx(4_843_243 / 1e10 * 1e3)  # 0.4843243 ms
    assert get_profile("inaturalist").compute_ms == 25.4
    assert get_profile("sent140", local_steps=3).tc == pytest.approx(3 * 9.8)


@pytest.mark.parametrize("field", ["upload_bps", "download_bps", "core_bps", "model_bits", "compute_ms"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_profile_rejects_non_positive_numbers(field, value):
    with pytest.raises(FedsimError, match="positive"):
        get_profile("femnist", **{field: value})


def test_profile_rejects_bad_local_steps_and_unknown_names():
    with pytest.raises(FedsimError, match="local steps"):
        get_profile("femnist", local_steps=0)
    with pytest.raises(FedsimError, match="unknown profile 'mnist'; valid: .*femnist"):
        get_profile("mnist")


def test_connectivity_on_arrays_equals_the_networkx_path():
    # A network without km ties: both computations must give the same km, hop
    # counts and pair order (the array path is the one used above 300 silos).
    from fedsim.topologies.delay import _connectivity_arrays, _connectivity_networkx

    rng = np.random.default_rng(7)
    n = 40
    xy = rng.random((n, 2)) * 1000
    links = {(i, i + 1) for i in range(n - 1)}  # connected
    links |= {(int(a), int(b)) for a, b in rng.integers(0, n, (60, 2)) if a < b}
    net = Network("rand", tuple(f"s{i}" for i in range(n)),
                  tuple((a, b, float(np.hypot(*(xy[a] - xy[b])))) for a, b in sorted(links)), ())
    ref, arr = _connectivity_networkx(net), _connectivity_arrays(net)
    np.testing.assert_allclose(arr.km, ref.km, rtol=1e-12)
    np.testing.assert_array_equal(arr.hops, ref.hops)
    np.testing.assert_array_equal(arr.edges, ref.edges)
    assert sorted(arr.graph.edges) == sorted(ref.graph.edges)
    assert arr.graph.edges[0, 1]["hops"] == ref.graph.edges[0, 1]["hops"]
