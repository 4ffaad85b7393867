"""Overlay builders (SPEC-timing §4): STAR, MST, δ-MBST, RING, MATCHA.

Hand-computed cases on tiny networks, and property tests (hypothesis) for the
graph invariants. Where fedsim replaces a networkx call by a faster equivalent
(Kruskal, load centrality on a complete latency graph), the tests compare it
with networkx itself.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedsim.errors import FedsimError
from fedsim.timing.simulate import matcha_round_times, simulate
from fedsim.topologies import build_schedule, connectivity, get_profile
from fedsim.topologies.delay import DelayProfile, arc_delays, pair_delay_matrix
from fedsim.topologies.networks import Network, builtin_network
from fedsim.topologies.overlays import dmbst, matcha, ring, star
from fedsim.topologies.overlays.mst import tree_edges
from fedsim.topologies.schedule import Schedule, bidirect

TRI = Network("tri", ("a", "b", "c"), ((0, 1, 100.0), (1, 2, 200.0), (0, 2, 250.0)), ())
# M = 1e6 bit, Tc = 2 ms: 100 ms per model up, 50 ms down, 1 ms per core hop.
TOY = DelayProfile("toy", 1e6, 2.0, upload_bps=1e7, download_bps=2e7, core_bps=1e9)


@pytest.fixture(scope="module")
def gaia():
    return connectivity(builtin_network("gaia"))


# ----------------------------------------------------------------------- STAR
def test_star_cycle_time_by_hand():
    conn = connectivity(TRI)
    s = build_schedule("star", conn, TOY)
    # Load centrality: every shortest latency path is a direct link, so all
    # loads are 0 and the first silo (a) is the server.
    assert s.server == 0
    assert sorted(map(tuple, s.arcs.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 0)]
    # Paths from the server by Tc + l + M/A: the direct links win
    # (a->b 2 + 4.85 + 1 = 7.85 < via c 9.125 + 8.7; a->c 9.125 < 7.85 + 8.7).
    l_ab, l_ac = 0.0085 * 100 + 4, 0.0085 * 250 + 4  # 4.85, 6.125
    # The server has out- and in-degree 2:
    #   a->b: 2 + 4.85 + max(2*100, 1*50, 1) = 206.85;  b->a: 2 + 4.85 + max(100, 2*50, 1) = 106.85
    #   a->c: 2 + 6.125 + 200 = 208.125;                c->a: 2 + 6.125 + 100 = 108.125
    # lambda = max((206.85 + 106.85) / 2, (208.125 + 108.125) / 2) = 158.125
    lam = max((2 + l_ab + 200 + 2 + l_ab + 100) / 2, (2 + l_ac + 200 + 2 + l_ac + 100) / 2)
    assert lam == pytest.approx(158.125)
    # reported: 2 (lambda - Tc) + Tc = 2 * 156.125 + 2 = 314.25
    assert simulate(s, conn, TOY).value == pytest.approx(2 * (lam - 2) + 2)
    assert simulate(s, conn, TOY).value == pytest.approx(314.25)


@st.composite
def small_networks(draw, min_n: int = 3, max_n: int = 9):
    n = draw(st.integers(min_n, max_n))
    order = draw(st.permutations(list(range(n))))
    links = {(min(order[k], order[k + 1]), max(order[k], order[k + 1])) for k in range(n - 1)}
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=2 * n))
    links |= {(min(u, v), max(u, v)) for u, v in extra if u != v}
    kms = draw(st.lists(st.sampled_from([0.0, 50.0, 100.0, 150.0, 300.0, 1234.5]),
                        min_size=len(links), max_size=len(links)))
    return Network("rand", tuple(f"s{i}" for i in range(n)),
                   tuple((u, v, km) for (u, v), km in zip(sorted(links), kms)), ())


@settings(max_examples=60, deadline=None)
@given(small_networks(), st.sampled_from([(0.0085, 4.0), (0.0085, 0.0), (1.0, 0.0), (0.0, 1.0)]))
def test_server_silo_matches_networkx_load_centrality(net, law):
    a, b = law
    conn = connectivity(net)
    g = nx.Graph()
    g.add_nodes_from(conn.graph.nodes)
    g.add_weighted_edges_from(((u, v, a * d["km"] + b) for u, v, d in conn.graph.edges(data=True)),
                              weight="latency")
    scores = nx.load_centrality(g, weight="latency")
    star.server_silo.cache_clear()
    assert star.server_silo(conn, a, b) == max(scores, key=scores.get)


# ----------------------------------------------------------------- MST, dMBST
def test_mst_and_dmbst_agree_on_gaia(gaia):
    for name in ("femnist", "inaturalist", "sent140"):
        prof = get_profile(name)
        m = build_schedule("mst", gaia, prof)
        d = build_schedule("dmbst", gaia, prof)
        as_edges = lambda s: {tuple(sorted(a)) for a in s.arcs.tolist()}  # noqa: E731
        assert as_edges(m) == as_edges(d)
        assert len(as_edges(m)) == 10
        assert simulate(m, gaia, prof).value == pytest.approx(simulate(d, gaia, prof).value)


def test_mst_is_the_minimum_spanning_tree_by_hand():
    # Triangle: weights Tc + l + M/A = 2 + l + 1 -> a-b 7.85, b-c 8.7, a-c 9.125:
    # the tree keeps a-b and b-c.
    conn = connectivity(TRI)
    s = build_schedule("mst", conn, TOY)
    assert {tuple(sorted(a)) for a in s.arcs.tolist()} == {(0, 1), (1, 2)}
    # cycle time: the slowest 2-cycle. b has out/in-degree 2:
    #   a<->b: (2 + 4.85 + max(100, 2*50, 1)) + (2 + 4.85 + max(2*100, 50, 1)) = 106.85 + 206.85
    #   b<->c: (2 + 5.7 + 200) + (2 + 5.7 + max(100, 2*50)) = 207.7 + 107.7
    assert simulate(s, conn, TOY).value == pytest.approx(max(313.7, 315.4) / 2)


@st.composite
def symmetric_matrices(draw, min_n: int = 2, max_n: int = 12, ties: bool = False):
    n = draw(st.integers(min_n, max_n))
    values = st.integers(1, 3).map(float) if ties else st.floats(0.5, 100.0)
    upper = draw(st.lists(values, min_size=n * (n - 1) // 2, max_size=n * (n - 1) // 2))
    w = np.zeros((n, n))
    w[np.triu_indices(n, 1)] = upper
    return w + w.T


@settings(max_examples=150, deadline=None)
@given(symmetric_matrices(ties=False) | symmetric_matrices(ties=True), st.integers(2, 13))
def test_delta_prim_respects_the_degree_bound(w, delta):
    n = len(w)
    edges = dmbst.delta_prim(w, delta)
    tree = nx.Graph()
    tree.add_nodes_from(range(n))
    tree.add_edges_from(edges)
    assert len(edges) == n - 1
    assert nx.is_tree(tree)
    assert max(d for _, d in tree.degree) <= delta


def test_delta_prim_by_hand():
    # silo 0 is the cheapest neighbour of everyone; with delta = 2 it takes
    # silos 1 and 2, then is full, so 3 joins through the cheapest open silo.
    w = np.array([[0, 1, 1, 1], [1, 0, 5, 4], [1, 5, 0, 5], [1, 4, 5, 0]], float)
    assert dmbst.delta_prim(w, 2) == [(0, 1), (0, 2), (1, 3)]
    assert dmbst.delta_prim(w, 3) == [(0, 1), (0, 2), (0, 3)]


@st.composite
def networks_with_weights(draw):
    net = draw(small_networks(min_n=2, max_n=10))
    w = draw(symmetric_matrices(min_n=net.n_silos, max_n=net.n_silos, ties=True))
    return net, w


@settings(max_examples=100, deadline=None)
@given(networks_with_weights())
def test_tree_edges_equal_networkx_kruskal(case):
    net, w = case
    conn = connectivity(net)
    g = nx.Graph()
    g.add_nodes_from(conn.graph.nodes)
    g.add_weighted_edges_from((u, v, w[u, v]) for u, v in conn.graph.edges)
    expected = [(u, v) for u, v in nx.minimum_spanning_tree(g, weight="weight").edges]
    assert tree_edges(conn, w) == expected  # same edges, same order (ties included)


def test_tree_edges_equal_networkx_on_builtin_networks():
    for name in ("nws", "geant", "exodus"):
        conn = connectivity(builtin_network(name))
        w = pair_delay_matrix(conn, get_profile("femnist"), access=False)
        g = nx.Graph()
        g.add_nodes_from(conn.graph.nodes)
        g.add_weighted_edges_from((u, v, w[u, v]) for u, v in conn.graph.edges)
        assert tree_edges(conn, w) == [(u, v) for u, v in nx.minimum_spanning_tree(g).edges]


# ----------------------------------------------------------------------- RING
@settings(max_examples=80, deadline=None)
@given(symmetric_matrices(min_n=2, max_n=14) | symmetric_matrices(min_n=2, max_n=14, ties=True))
def test_christofides_returns_a_permutation(w):
    tour = ring.christofides(w)
    assert sorted(tour) == list(range(len(w)))
    assert tour[0] == 0


def test_ring_schedules_visit_every_silo_once():
    for name in ("gaia", "geant", "ebone"):
        conn = connectivity(builtin_network(name))
        s = build_schedule("ring", conn, get_profile("femnist"))
        assert sorted(s.arcs[:, 0].tolist()) == list(range(conn.n))
        assert sorted(s.arcs[:, 1].tolist()) == list(range(conn.n))
        assert sorted(s.info["tour"]) == list(range(conn.n))


# --------------------------------------------------------------------- MATCHA
@st.composite
def edge_lists(draw):
    n = draw(st.integers(1, 12))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=40))
    seen, edges = set(), []
    for u, v in pairs:
        if u != v and (min(u, v), max(u, v)) not in seen:
            seen.add((min(u, v), max(u, v)))
            edges.append((u, v))
    return n, edges


@settings(max_examples=300, deadline=None)
@given(edge_lists())
def test_misra_gries_is_a_proper_colouring_with_at_most_delta_plus_one_colours(case):
    n, edges = case
    colour = matcha.misra_gries(n, edges)
    assert set(colour) == {(min(u, v), max(u, v)) for u, v in edges}
    degree = [0] * n
    for u, v in edges:
        degree[u] += 1
        degree[v] += 1
    max_deg = max(degree, default=0)
    assert all(0 <= c <= max_deg for c in colour.values())  # at most Δ + 1 colours
    at_node: dict[tuple[int, int], tuple[int, int]] = {}
    for (u, v), c in colour.items():
        for x in (u, v):
            assert (x, c) not in at_node, f"colour {c} twice at silo {x}"
            at_node[(x, c)] = (u, v)


def test_misra_gries_on_complete_graphs_needs_few_colours():
    for n in (4, 5, 8, 11):
        edges = [(u, v) for u in range(n) for v in range(u + 1, n)]
        colour = matcha.misra_gries(n, edges)
        # K_n needs n - 1 colours (n even) or n (n odd); Misra-Gries uses <= n
        assert n - 1 <= len(set(colour.values())) <= n


def test_matcha_probabilities_and_budget(gaia):
    prof = get_profile("femnist")
    for budget in (0.5, 0.3):
        s = build_schedule("matcha", gaia, prof, budget=budget)
        p = s.probabilities
        k = len(p)
        assert k == s.info["n_matchings"] == s.matchings.max() + 1
        assert np.all((p >= 0) & (p <= 1))
        assert p.sum() <= budget * k + 1e-6
        assert s.alpha > 0
        # every matching is a matching: no silo twice
        for j in range(k):
            ends = s.arcs[s.matchings == j][::2].ravel()
            assert len(ends) == len(set(ends.tolist()))


def test_matcha_is_deterministic_for_a_seed(gaia):
    prof = get_profile("femnist")
    s = build_schedule("matcha", gaia, prof)
    a = simulate(s, gaia, prof, seed=0)
    b = simulate(s, gaia, prof, seed=0)
    c = simulate(s, gaia, prof, seed=1)
    assert np.array_equal(a.round_ms, b.round_ms)
    assert a.value == b.value
    assert not np.array_equal(a.round_ms, c.round_ms)
    assert a.rounds == 1000
    assert a.value == pytest.approx(a.round_ms.sum() / 999)


def test_matcha_on_a_complete_underlay_uses_the_matcha_plus_edges(gaia):
    prof = get_profile("femnist")
    m = build_schedule("matcha", gaia, prof)
    mp = build_schedule("matcha_plus", gaia, prof)
    edges = lambda s: {tuple(sorted(a)) for a in s.arcs.tolist()}  # noqa: E731
    assert edges(m) == edges(mp)
    assert len(edges(m)) == 55  # gaia is complete: 11 * 10 / 2


def test_matcha_on_a_sparse_underlay_uses_its_links():
    conn = connectivity(builtin_network("geant"))
    s = build_schedule("matcha", conn, get_profile("femnist"))
    assert {tuple(sorted(a)) for a in s.arcs.tolist()} == {
        (min(u, v), max(u, v)) for u, v, _ in conn.network.links}


SQUARE = Network("square", tuple("abcd"),
                 ((0, 1, 100.0), (1, 2, 200.0), (2, 3, 300.0), (3, 0, 400.0)), ())


def _square_matcha(p) -> Schedule:
    edges = [(0, 1), (2, 3), (1, 2), (3, 0)]
    match = np.array([0, 0, 1, 1])
    arcs = bidirect(edges)
    return Schedule("matcha", 4, arcs, np.ones(len(arcs), dtype=np.int64),
                    matchings=np.repeat(match, 2), probabilities=np.asarray(p, float), alpha=0.3)


def test_matcha_round_time_by_hand():
    conn = connectivity(SQUARE)
    # Both matchings always on: every silo has out- and in-degree 2, each arc
    # costs 2 + l + max(2*100, 2*50, 1) = 202 + l; the slowest is d-a
    # (400 km, l = 7.4 ms): 209.4 ms every round. Reported: 10 * 209.4 / 9.
    both = simulate(_square_matcha([1.0, 1.0]), conn, TOY, rounds=10)
    assert both.round_ms == pytest.approx([209.4] * 10)
    assert both.value == pytest.approx(10 * 209.4 / 9)
    # Only matching 0 (a-b, c-d): degree 1, 2 + l + 100; slowest c-d (l = 6.55): 108.55
    first = simulate(_square_matcha([1.0, 0.0]), conn, TOY, rounds=10)
    assert first.round_ms == pytest.approx([108.55] * 10)
    assert first.value == pytest.approx(10 * 108.55 / 9)


@pytest.mark.parametrize("net,topo", [("gaia", "matcha"), ("geant", "matcha"), ("geant", "matcha_plus")])
def test_matcha_round_times_equal_the_dense_evaluation(net, topo):
    conn = connectivity(builtin_network(net))
    for prof in (get_profile("femnist"), get_profile("sent140", upload_bps=1e8, download_bps=3e8)):
        s = build_schedule(topo, conn, prof)
        present, _ = s.round_masks(300, seed=3)
        dense = np.where(present, arc_delays(conn, prof, s.arcs, mask=present), -np.inf).max(axis=1)
        assert np.array_equal(matcha_round_times(s, conn, prof, 300, seed=3), dense)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.02, 0.1, 0.5, 0.9, 1.0]), min_size=1, max_size=8),
       st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_matching_draws_follow_the_reference_stream(p, rounds, seed):
    assume(any(x > 0 for x in p))
    # The reference simulator draws one Bernoulli vector per round with
    # np.random.seed(seed) and redraws a round with no active matching.
    rng = np.random.RandomState(seed)
    expected = []
    for _ in range(rounds):
        act = rng.binomial(n=1, p=p)
        while act.sum() == 0:
            act = rng.binomial(n=1, p=p)
        expected.append(act.astype(bool))
    k = len(p)
    s = Schedule("matcha", 2 * k, np.zeros((k, 2), dtype=np.int64), np.ones(k, dtype=np.int64),
                 matchings=np.arange(k), probabilities=np.asarray(p), alpha=0.1)
    assert np.array_equal(s.matching_draws(rounds, seed), np.array(expected))


def test_matching_draws_with_rare_activations_and_none():
    p = [0.003, 0.0]
    rng = np.random.RandomState(7)
    expected = []
    for _ in range(40):  # about 330 draws per kept round
        act = rng.binomial(n=1, p=p)
        while act.sum() == 0:
            act = rng.binomial(n=1, p=p)
        expected.append(act.astype(bool))
    s = Schedule("matcha", 4, np.array([[0, 1], [2, 3]]), np.ones(2, dtype=np.int64),
                 matchings=np.arange(2), probabilities=np.asarray(p), alpha=0.1)
    assert np.array_equal(s.matching_draws(40, 7), np.array(expected))
    never = Schedule("matcha", 4, np.array([[0, 1], [2, 3]]), np.ones(2, dtype=np.int64),
                     matchings=np.arange(2), probabilities=np.zeros(2), alpha=0.1)
    with pytest.raises(FedsimError, match="no round can communicate"):
        never.matching_draws(10)


def test_matcha_decomposition_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE_DIR", str(tmp_path))
    conn = connectivity(builtin_network("gaia"))
    matcha.decomposition.cache_clear()
    first = matcha.decomposition(conn, False, 0.5)
    files = list((tmp_path / "matcha").glob("*.json"))
    assert len(files) == 1
    entry = json.loads(files[0].read_text())
    assert entry["p"] == first[2].tolist() and entry["match"] == first[1].tolist()

    # A second process (simulated by clearing the in-memory cache) reads it
    # back without solving.
    def boom(*args, **kwargs):
        raise AssertionError("solved again")

    monkeypatch.setattr(matcha, "_activation_probabilities", boom)
    matcha.decomposition.cache_clear()
    again = matcha.decomposition(conn, False, 0.5)
    assert again[0] == first[0] and np.array_equal(again[1], first[1])
    assert np.array_equal(again[2], first[2]) and again[3] == first[3]

    # Damaged or implausible entries are ignored (here: the solver is called).
    for bad in ("{not json", json.dumps({**entry, "p": [2.0] * len(entry["p"])}),
                json.dumps({**entry, "match": [0] * len(entry["match"])})):
        files[0].write_text(bad)
        matcha.decomposition.cache_clear()
        with pytest.raises(AssertionError, match="solved again"):
            matcha.decomposition(conn, False, 0.5)
    monkeypatch.undo()
    matcha.decomposition.cache_clear()


def test_matcha_disk_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FEDSIM_CACHE", "off")
    matcha.decomposition.cache_clear()
    matcha.decomposition(connectivity(builtin_network("gaia")), True, 0.5)
    assert not (tmp_path / "matcha").exists()
    matcha.decomposition.cache_clear()


# --- MATCHA's activation-probability problem and mixing step (numpy solver) ---


def _lam2(laps, p):
    return float(np.linalg.eigvalsh(sum(pj * lj for pj, lj in zip(p, laps)))[1])


def test_activation_probabilities_on_a_path_by_hand():
    # Path 0-1-2, matchings {0-1} and {1-2}, budget 0.5: p1 + p2 <= 1. The
    # weighted path's Laplacian has eigenvalues 0 and p1 + p2 ± sqrt(p1² + p2² − p1 p2);
    # by symmetry and concavity the optimum is p = (1/2, 1/2), λ₂ = 1 − 1/2 = 1/2.
    laps = [matcha.laplacian(3, [(0, 1)]), matcha.laplacian(3, [(1, 2)])]
    p = matcha.activation_probabilities(laps, 0.5)
    np.testing.assert_allclose(p, [0.5, 0.5], atol=1e-5)
    assert _lam2(laps, p) == pytest.approx(0.5, abs=1e-6)
    # Budget 0.9: p = (0.9, 0.9), λ₂ = 1.8 − sqrt(0.81) = 0.9.
    p = matcha.activation_probabilities(laps, 0.9)
    np.testing.assert_allclose(p, [0.9, 0.9], atol=1e-5)


def test_activation_probabilities_match_a_grid_search():
    # An asymmetric case: path 0-1-2-3 plus chord 0-2 as three matchings.
    laps = [matcha.laplacian(4, [(0, 1), (2, 3)]), matcha.laplacian(4, [(1, 2)]),
            matcha.laplacian(4, [(0, 2)])]
    p = matcha.activation_probabilities(laps, 0.5)
    assert np.all((p >= 0) & (p <= 1)) and p.sum() <= 1.5 + 1e-9
    grid = np.linspace(0, 1, 101)
    best = max(_lam2(laps, (a, b, 1.5 - a - b)) for a in grid for b in grid
               if 0 <= 1.5 - a - b <= 1)  # λ₂ grows with p: the budget binds
    assert _lam2(laps, p) >= best - 1e-9
    assert _lam2(laps, p) <= best + 2e-2  # the grid is 0.01 fine


def test_activation_probabilities_uniform_on_odd_complete_graphs():
    # K_5 coloured by Misra-Gries: 5 matchings of 2 edges; uniform p = budget
    # makes the expected Laplacian 0.5 L(K_5) = 2.5 (I − J/5): λ₂ = 2.5, the
    # trace bound 2 Σ p_j |M_j| / (N − 1) = 2 · 2.5 · 2 / 4.
    edges = list(nx.complete_graph(5).edges)
    colours = matcha.misra_gries(5, edges)
    laps = [matcha.laplacian(5, [e for e in edges if colours[e] == c]) for c in sorted(set(colours.values()))]
    p = matcha.activation_probabilities(laps, 0.5)
    np.testing.assert_allclose(p, 0.5, atol=1e-12)
    assert _lam2(laps, p) == pytest.approx(2.5)
    # Mixing step: a = 2.5 I and b = a² + 2 · 0.25 L(K_5) = (6.25 + 2.5) I on 1⊥,
    # ρ(α) = 1 − 5α + 8.75α², minimal at α = 5 / 17.5.
    assert matcha.mixing_step(laps, p) == pytest.approx(5 / 17.5, rel=1e-8)


def test_mixing_step_is_the_minimum_of_rho():
    laps = [matcha.laplacian(4, [(0, 1), (2, 3)]), matcha.laplacian(4, [(1, 2)]),
            matcha.laplacian(4, [(0, 2)])]
    p = np.array([0.9, 0.4, 0.2])
    alpha = matcha.mixing_step(laps, p)
    q = matcha._complement_basis(4)
    l_bar = sum(pj * lj for pj, lj in zip(p, laps))
    l_tilde = sum(pj * (1 - pj) * lj for pj, lj in zip(p, laps))
    a, b = q.T @ l_bar @ q, q.T @ (l_bar @ l_bar + 2 * l_tilde) @ q

    def rho(x):
        return np.linalg.eigvalsh(np.eye(3) - 2 * x * a + x * x * b)[-1]

    grid = np.linspace(0, 2, 20001)
    assert rho(alpha) <= min(rho(x) for x in grid) + 1e-9


# --- Prim variants against the straightforward search they replace ---


def _prim_reference(w, start=0, delta=None, skip_zero=False):
    """Textbook Prim: the argmin over (tree silos in joining order) x (outside silos)."""
    n = len(w)
    order, out, deg, edges = [start], [v for v in range(n) if v != start], np.zeros(n, int), []
    while out:
        rows = [u for u in order if delta is None or deg[u] < delta]
        sub = w[np.ix_(rows, out)].astype(float)
        if skip_zero:
            sub[sub == 0] = np.inf
        r, c = np.unravel_index(np.argmin(sub), sub.shape)
        u, v = rows[r], out[c]
        edges.append((u, v))
        deg[u] += 1
        deg[v] += 1
        order.append(v)
        out.remove(v)
    return edges


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 14), st.integers(0, 10_000), st.integers(2, 5))
def test_prim_variants_match_the_reference_with_ties(n, seed, delta):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 4, (n, n)).astype(float)  # few distinct weights: many ties
    w = np.minimum(w, w.T)
    np.fill_diagonal(w, 0)
    assert [tuple(map(int, e)) for e in dmbst.delta_prim(w, delta)] == _prim_reference(w, delta=delta)
    tree = np.zeros_like(w)
    for u, v in _prim_reference(w, skip_zero=True):
        tree[u, v] = tree[v, u] = w[u, v]
    np.testing.assert_array_equal(ring.prim_dense(w), tree)


def test_min_weight_perfect_matching_is_optimal():
    rng = np.random.default_rng(3)
    for n in (2, 4, 6, 8):
        x = rng.random((n, 2))
        w = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        got = ring.min_weight_perfect_matching(w)
        assert sorted(v for e in got for v in e) == list(range(n))
        best = min(sum(w[a, b] for a, b in m) for m in _perfect_matchings(list(range(n))))
        assert sum(w[a, b] for a, b in got) == pytest.approx(best)


def _perfect_matchings(nodes):
    if not nodes:
        yield []
        return
    a, rest = nodes[0], nodes[1:]
    for i, b in enumerate(rest):
        for m in _perfect_matchings(rest[:i] + rest[i + 1:]):
            yield [(a, b), *m]


def test_ring_tour_is_cached_on_disk(tmp_path, monkeypatch, gaia):
    monkeypatch.setenv("FEDSIM_CACHE_DIR", str(tmp_path))
    ring._cached_tour.cache_clear()
    first = ring.build(gaia, get_profile("femnist")).info["tour"]
    files = list((tmp_path / "ring").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["tour"] == first

    def boom(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(ring, "christofides", boom)
    ring._cached_tour.cache_clear()
    assert ring.build(gaia, get_profile("femnist")).info["tour"] == first
    files[0].write_text(json.dumps({**json.loads(files[0].read_text()), "tour": [0, 0, 1]}))
    ring._cached_tour.cache_clear()
    with pytest.raises(AssertionError, match="computed again"):
        ring.build(gaia, get_profile("femnist"))
    monkeypatch.undo()
    ring._cached_tour.cache_clear()


# --- size limits ---


def test_size_limits_refuse_before_any_work(monkeypatch, tmp_path, capsys):
    from fedsim.cli import main
    from fedsim.topologies import MAX_SILOS, check_size

    check_size("ring", MAX_SILOS["ring"])  # at the limit: accepted
    with pytest.raises(FedsimError, match=f"at most {MAX_SILOS['matcha_plus']} silos") as exc:
        check_size("matcha_plus", MAX_SILOS["matcha_plus"] + 1)
    assert "\n" not in str(exc.value)
    # A multigraph is limited by its base too.
    with pytest.raises(FedsimError, match=f"at most {MAX_SILOS['dmbst']} silos"):
        check_size("multigraph", MAX_SILOS["dmbst"] + 1, base="dmbst")

    n = MAX_SILOS["ring"] + 1
    gml = tmp_path / "big.gml"
    gml.write_text("graph [\n" + "".join(f"  node [ id {i} label \"s{i}\" ]\n" for i in range(n))
                   + "".join(f"  edge [ source {i - 1} target {i} distance 10 ]\n" for i in range(1, n))
                   + "]\n")

    def no_work(*args, **kwargs):
        raise AssertionError("the connectivity graph was computed")

    monkeypatch.setattr("fedsim.topologies.connectivity", no_work)
    monkeypatch.setattr("fedsim.topologies.delay.connectivity", no_work)
    code = main(["topology", "--topology", str(gml), "--strategy", "ring"])
    out, err = capsys.readouterr()
    assert code == 2
    line = (out + err).strip()
    assert f"ring is simulated on at most {MAX_SILOS['ring']} silos, the network has {n}" in line
    assert len(line.splitlines()) == 1


def test_connectivity_refuses_huge_networks_up_front():
    from fedsim.topologies.delay import MAX_CONNECTIVITY_SILOS

    n = MAX_CONNECTIVITY_SILOS + 1
    net = Network("huge", tuple(f"s{i}" for i in range(n)), tuple((i - 1, i, 1.0) for i in range(1, n)), ())
    with pytest.raises(FedsimError, match=f"at most {MAX_CONNECTIVITY_SILOS}"):
        connectivity(net)
