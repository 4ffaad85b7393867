"""Figures: topology maps and training curves (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from fedsim.io import atomic_write  # noqa: E402


def _save(fig, path) -> None:
    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else "png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130, bbox_inches="tight", format=suffix))
    plt.close(fig)


def silo_positions(network) -> dict[int, tuple[float, float]]:
    """(lon, lat) per silo where every silo has coordinates, else a seeded spring layout."""
    if network.has_coords():
        return {i: (c[1], c[0]) for i, c in enumerate(network.coords)}
    return nx.spring_layout(network.graph(), seed=0, weight=None)


def topology_map(network, schedule, state: int, path, title: str = "") -> None:
    """Draw silos at their coordinates and the schedule's arcs in ``state``.

    Strong arcs are solid, weak arcs dashed and grey, isolated silos hollow
    red; the STAR server is a square.
    """
    pos = silo_positions(network)
    fig, ax = plt.subplots(figsize=(9, 6))
    strong = schedule.state_mask(state) if not schedule.is_random else np.ones(len(schedule.arcs), bool)
    for (u, v), s in zip(schedule.arcs.tolist(), strong):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        ax.annotate(
            "", xy=(x1, y1), xytext=(x0, y0),
            arrowprops=dict(arrowstyle="-|>", lw=1.6 if s else 0.9, color="tab:blue" if s else "0.6",
                            linestyle="-" if s else "--", shrinkA=4, shrinkB=4,
                            connectionstyle="arc3,rad=0.08"),
        )
    iso = set(schedule.isolated(state)) if not schedule.is_random else set()
    xs = np.array([pos[i][0] for i in range(network.n_silos)])
    ys = np.array([pos[i][1] for i in range(network.n_silos)])
    normal = [i for i in range(network.n_silos) if i not in iso and i != schedule.server]
    ax.scatter(xs[normal], ys[normal], s=28, c="black", zorder=3, label="silo")
    if iso:
        idx = sorted(iso)
        ax.scatter(xs[idx], ys[idx], s=60, facecolors="none", edgecolors="red", linewidths=1.5,
                   zorder=4, label="isolated this state")
    if schedule.server is not None:
        ax.scatter([xs[schedule.server]], [ys[schedule.server]], s=90, marker="s", c="tab:orange",
                   zorder=4, label="server")
    if network.n_silos <= 25:
        for i, name in enumerate(network.silos):
            ax.annotate(name, (xs[i], ys[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([], [], color="tab:blue", lw=1.6, label="strong arc")
    if not strong.all():
        ax.plot([], [], color="0.6", lw=0.9, ls="--", label="weak arc")
    if network.has_coords():
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_axis_off()
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    _save(fig, path)


def line_marker(points: int) -> str | None:
    """The marker of a line of ``points`` points: dots for short runs (<= 30 rounds + round 0), none else."""
    return "o" if points <= 31 else None


def curves(series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str, path,
           title: str = "") -> None:
    """One line per label: ``series[label] = (x, y)``; a line of at most 30 rounds (31 points)
    gets a marker on each point."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, lw=1.5, marker=line_marker(len(x)), ms=3.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    _save(fig, path)
