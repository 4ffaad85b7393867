"""Max-plus cycle time: Karp and CycleBasis against brute force and by hand."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.timing.maxplus import CycleBasis, karp_cycle_time, max_cycle_mean
from fedsim.timing.simulate import simulate
from fedsim.topologies.delay import DelayProfile, connectivity
from fedsim.topologies.networks import Network
from fedsim.topologies.schedule import bidirect, static_schedule


def brute_force_max_cycle_mean(n: int, arcs, delays) -> float:
    """Enumerate every elementary cycle with itertools; parallel arcs: the slowest binds."""
    w: dict[tuple[int, int], float] = {}
    for (u, v), d in zip(arcs, delays):
        w[(u, v)] = max(w.get((u, v), -np.inf), d)
    best = -np.inf
    for size in range(1, n + 1):
        for nodes in itertools.combinations(range(n), size):
            first, rest = nodes[0], nodes[1:]
            # each cycle once: start at its smallest silo
            for perm in itertools.permutations(rest):
                cyc = (first, *perm)
                hops = list(zip(cyc, cyc[1:] + cyc[:1]))
                if all(h in w for h in hops):
                    best = max(best, sum(w[h] for h in hops) / size)
    return best


@st.composite
def strongly_connected_digraphs(draw, max_n: int = 6):
    """A random Hamiltonian cycle (so the digraph is strongly connected) plus extra arcs."""
    n = draw(st.integers(1, max_n))
    order = draw(st.permutations(list(range(n))))
    arcs = {(order[k], order[(k + 1) % n]) for k in range(n)}
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))
    arcs |= set(extra)
    arcs = sorted(arcs)
    delays = draw(st.lists(st.floats(0, 100, allow_nan=False, allow_infinity=False),
                           min_size=len(arcs), max_size=len(arcs)))
    return n, arcs, delays


@settings(max_examples=300, deadline=None)
@given(strongly_connected_digraphs())
def test_karp_equals_brute_force(g):
    n, arcs, delays = g
    expected = brute_force_max_cycle_mean(n, arcs, delays)
    assert karp_cycle_time(n, arcs, delays) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Karp's answer does not depend on the source silo of a strongly connected digraph
    assert karp_cycle_time(n, arcs, delays, source=n - 1) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(strongly_connected_digraphs())
def test_cycle_basis_equals_karp(g):
    n, arcs, delays = g
    cb = CycleBasis(n, arcs)
    assert cb.ok
    assert cb.cycle_time(delays) == pytest.approx(karp_cycle_time(n, arcs, delays), rel=1e-9, abs=1e-9)
    # several delay vectors at once
    many = np.array([delays, list(reversed(delays))])
    got = cb.cycle_time(many)
    assert got.shape == (2,)
    assert got[1] == pytest.approx(karp_cycle_time(n, arcs, many[1]), rel=1e-9, abs=1e-9)


@st.composite
def bidirected_trees(draw, max_n: int = 9):
    n = draw(st.integers(2, max_n))
    parents = [draw(st.integers(0, k - 1)) for k in range(1, n)]
    perm = draw(st.permutations(list(range(n))))
    edges = [(perm[p], perm[k]) for k, p in enumerate(parents, start=1)]
    arcs = bidirect(edges)
    delays = draw(st.lists(st.floats(0, 100, allow_nan=False), min_size=len(arcs), max_size=len(arcs)))
    return n, arcs, delays


@settings(max_examples=200, deadline=None)
@given(bidirected_trees())
def test_cycle_basis_on_bidirected_trees(g):
    # The only elementary cycles of a bidirected tree are its 2-cycles, so the
    # cycle time is the largest (d(u, v) + d(v, u)) / 2.
    n, arcs, delays = g
    cb = CycleBasis(n, arcs)
    assert cb.matrix.shape[0] == n - 1 == len(list(nx.simple_cycles(_digraph(n, arcs))))
    d = np.asarray(delays)
    assert cb.cycle_time(d) == pytest.approx(((d[0::2] + d[1::2]) / 2).max())
    assert cb.cycle_time(d) == pytest.approx(karp_cycle_time(n, arcs, d))


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(7))), st.lists(st.floats(0, 50), min_size=7, max_size=7))
def test_cycle_basis_on_rings(order, delays):
    arcs = [(order[k], order[(k + 1) % 7]) for k in range(7)]
    cb = CycleBasis(7, arcs)
    assert cb.matrix.shape[0] == 1
    assert cb.cycle_time(delays) == pytest.approx(sum(delays) / 7)


def _digraph(n, arcs):
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(map(tuple, np.asarray(arcs).tolist()))
    return g


def test_small_cases_by_hand():
    # ring 0 -> 1 -> 2 -> 0 with delays 1, 2, 6: one cycle, mean 9 / 3 = 3
    assert karp_cycle_time(3, [[0, 1], [1, 2], [2, 0]], [1.0, 2.0, 6.0]) == 3.0
    # add the chord 1 -> 0 (delay 10): cycle 0-1-0 has mean (1 + 10) / 2 = 5.5
    arcs = [[0, 1], [1, 2], [2, 0], [1, 0]]
    assert karp_cycle_time(3, arcs, [1.0, 2.0, 6.0, 10.0]) == 5.5
    assert CycleBasis(3, arcs).cycle_time([1.0, 2.0, 6.0, 10.0]) == 5.5
    assert max_cycle_mean(3, arcs, [1.0, 2.0, 6.0, 10.0]) == 5.5
    # a self-loop is a cycle of length 1
    assert karp_cycle_time(2, [[0, 1], [1, 0], [1, 1]], [1.0, 1.0, 7.0]) == 7.0


def test_three_silo_ring_cycle_time_by_hand():
    # Triangle a-b 100 km, b-c 200 km, a-c 250 km (every direct link is the
    # shortest path, 1 hop). Profile: M = 1e6 bit, Tc = 2 ms, C_up = 1e7 bit/s
    # (100 ms per model), C_dn = 2e7 bit/s (50 ms), C_core = 1e9 bit/s (1 ms).
    net = Network("tri", ("a", "b", "c"), ((0, 1, 100.0), (1, 2, 200.0), (0, 2, 250.0)), ())
    prof = DelayProfile("toy", 1e6, 2.0, upload_bps=1e7, download_bps=2e7, core_bps=1e9)
    conn = connectivity(net)
    ring = static_schedule("ring", 3, [[0, 1], [1, 2], [2, 0]])
    # each arc: Tc + (0.0085 km + 4) + max(1*100, 1*50, 1)
    d01 = 2 + (0.0085 * 100 + 4) + 100  # 106.85
    d12 = 2 + (0.0085 * 200 + 4) + 100  # 107.7
    d20 = 2 + (0.0085 * 250 + 4) + 100  # 108.125
    assert ring.delays(conn, prof) == pytest.approx([d01, d12, d20])
    expected = (d01 + d12 + d20) / 3  # 322.675 / 3 = 107.558333...
    assert expected == pytest.approx(107.558333, rel=1e-7)
    assert simulate(ring, conn, prof).value == pytest.approx(expected)
    assert karp_cycle_time(3, ring.arcs, ring.delays(conn, prof)) == pytest.approx(expected)
