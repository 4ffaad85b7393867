"""Topology maps: co-located silos stay apart, isolated silos are named, the title names the drawn state."""

from __future__ import annotations

import numpy as np
import pytest

import fedsim.plots as plots
from fedsim.cli import main
from fedsim.plots import spread_positions
from fedsim.timing.simulate import multigraph_round_times
from fedsim.topologies import build_schedule, connectivity, get_profile
from fedsim.topologies.networks import load_network

ROUNDS = 300  # a few periods of exodus's 60 states: quick, and every state is simulated


@pytest.fixture
def saved(monkeypatch):
    """Figures fedsim.plots saves, kept (and still written)."""
    kept = []
    real = plots._save

    def keep(fig, path):
        kept.append(fig)
        real(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return kept


def _map(capsys, saved, tmp_path, *argv):
    png = tmp_path / "map.png"
    code = main(["topology", *argv, "--plot", str(png)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(saved) == 1
    return saved[0].axes[0], out


def _markers(ax) -> np.ndarray:
    """Pixel positions of every drawn silo marker (silos, isolated silos, server)."""
    pts = [c.get_offsets() for c in ax.collections
           if c.get_label().startswith(("silo", "isolated", "server"))]
    return ax.transData.transform(np.concatenate(pts))


def _reference(network: str, rounds: int, state: int):
    net = load_network(network)
    conn, prof = connectivity(net), get_profile("femnist")
    sched = build_schedule("multigraph", conn, prof)
    taus = multigraph_round_times(sched, conn, prof, rounds)
    own = float(np.mean([taus[k] for k in range(rounds) if k % sched.n_states == state]))
    return net, sched, own, float(taus.mean())


def test_spread_keeps_colocated_silos_apart_and_lone_silos_in_place():
    pts = np.array([[10.0, 50.0]] * 6 + [[10.0001, 50.0]] + [[-70.0, 40.0], [100.0, 20.0]])
    out = spread_positions(pts)
    assert np.array_equal(out, spread_positions(pts))  # deterministic
    assert np.array_equal(out[7:], pts[7:])  # alone at their site: unmoved
    # in map units (width 1, height 1/1.5) every pair is at least the separation apart
    span = pts.max(axis=0) - pts.min(axis=0)
    q = (out - pts.min(axis=0)) / span * [1.0, 1 / plots.MAP_ASPECT]
    d = np.hypot(*(q[:, None] - q[None]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= plots.SPREAD_SEP * 0.999
    # the spread silos stay near their site (within a few separations)
    assert np.abs(q[:7] - q[0:1].mean(axis=0)).max() < 0.1


@pytest.mark.parametrize("network", ["exodus", "ebone", "geant"])
def test_spread_separates_every_silo_of_a_builtin_network(network):
    net = load_network(network)
    true = np.array([(c[1], c[0]) for c in net.coords])
    if network != "geant":  # exodus and ebone put many silos at one city point
        assert len(np.unique(true, axis=0)) < net.n_silos / 3
    out = spread_positions(true)
    assert len(np.unique(np.round(out, 6), axis=0)) == net.n_silos


def test_exodus_multigraph_map_shows_every_silo_arc_and_isolated_silo(capsys, saved, tmp_path):
    state = 1
    net, sched, own_ms, cycle_ms = _reference("exodus", ROUNDS, state)
    ax, out = _map(capsys, saved, tmp_path, "--topology", "exodus", "--strategy", "multigraph",
                   "--rounds", str(ROUNDS))
    # every silo has its own marker, no two at the same pixel
    px = _markers(ax)
    assert len(px) == net.n_silos
    assert len(np.unique(np.round(px), axis=0)) == net.n_silos
    # every isolated silo of the state is labelled with its name and listed in the legend
    iso = [net.silos[i] for i in sched.isolated(state)]
    assert iso  # the case that was unreadable: isolated silos in state 1
    labels = [t.get_text() for t in ax.texts]
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    for name in iso:
        assert name in labels
        assert name in legend
    # strong arcs solid, weak ones dashed; each strong arc is drawn between two distinct pixels
    arrows = [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == len(sched.arcs)
    solid = [a for a in arrows if a.arrow_patch.get_linestyle() in ("-", "solid")]
    assert len(solid) == int(sched.state_mask(state).sum()) < len(sched.arcs)
    for a in solid:
        p0, p1 = ax.transData.transform([a.xyann, a.xy])
        assert np.hypot(*(p1 - p0)) >= 8
    # the title: which state of how many, its own round time, and the cycle time
    title = ax.get_title()
    assert f"state {state} of {sched.n_states}" in title
    assert f"{own_ms:.1f} ms" in title and f"cycle time {cycle_ms:.1f} ms" in title
    assert f"{own_ms:.1f}" != f"{cycle_ms:.1f}"  # the check tells the two apart
    assert "exodus" in title and "multigraph" in title


def test_a_state_beyond_the_simulated_rounds_gets_its_own_time(capsys, saved, tmp_path):
    state = 7
    _, sched, own_ms, _ = _reference("gaia", state + 1, state)
    ax, _ = _map(capsys, saved, tmp_path, "--topology", "gaia", "--strategy", "multigraph",
                 "--rounds", "2", "--state", str(state))
    assert f"state {state} of {sched.n_states}, {own_ms:.1f} ms" in ax.get_title()
    assert len(ax.texts) >= 11  # gaia's 11 silos are all named


def test_static_overlay_title_has_no_states(capsys, saved, tmp_path):
    ax, out = _map(capsys, saved, tmp_path, "--topology", "gaia", "--strategy", "ring")
    cycle = out.split("cycle time: ")[1].split(" ms")[0]
    assert "state" not in ax.get_title()
    assert f"cycle time {float(cycle):.1f} ms" in ax.get_title()
    assert not any(t.get_label().startswith("isolated") for t in ax.collections)
