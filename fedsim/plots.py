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


# ----------------------------------------------------------------- group dance (gcd)
def stick_figure(frame: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Front-view line segments of one dancer-frame (physical units), for drawing.

    Pelvis at ``(root_x, 1 + bob)``; torso 0.55 m leaning by ``lean``; arms
    (0.3 + 0.28 m) raised sideways by the shoulder angle and bent by the elbow
    angle; legs (0.45 + 0.45 m) spread by the hip angle, the knee bend
    shortening the drawn shin.
    """
    import math

    x, _, bob, lean, ls, le, rs, re, lh, lk, rh, rk = (float(v) for v in frame)

    def ray(p, ang, length):
        return p + length * np.array([math.sin(ang), -math.cos(ang)])

    pelvis = np.array([x, 1.0 + bob])
    neck = pelvis + 0.55 * np.array([math.sin(lean), math.cos(lean)])
    head = neck + 0.18 * np.array([math.sin(lean), math.cos(lean)])
    segs = [(pelvis, neck), (neck, head)]
    for side, sh, el in ((-1, ls, le), (1, rs, re)):
        elbow = ray(neck, side * sh + lean, 0.3)
        segs += [(neck, elbow), (elbow, ray(elbow, side * (sh + el) + lean, 0.28))]
    for side, hp, kn in ((-1, lh, lk), (1, rh, rk)):
        hip = pelvis + np.array([side * 0.1, 0.0])
        knee = ray(hip, side * hp, 0.45)
        segs += [(pelvis, hip), (hip, knee), (knee, ray(knee, side * hp * 0.5, 0.45 * math.cos(kn)))]
    return segs


def render_strip(groups: list[np.ndarray], path, frames: int = 8, labels: list[str] | None = None,
                 title: str | None = None) -> None:
    """Draw groups ``(N, T, F)`` (physical units) as rows of ``frames`` evenly spaced stick-figure frames.

    Dancers are placed by ``root_x``; ``root_y`` (depth) raises a dancer
    slightly and sets its shade. A last column shows the floor plan: each
    dancer's root trajectory over the window (dot = start, circle radius =
    the 0.35 m collision radius of the intersection metric at the end).
    """
    rows = len(groups)
    fig, axes = plt.subplots(rows, frames + 1, figsize=(1.6 * (frames + 1), 1.9 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for r, grp in enumerate(groups):
        grp = np.asarray(grp)
        ts = np.linspace(0, grp.shape[1] - 1, frames).round().astype(int)
        xmin, xmax = grp[:, :, 0].min() - 0.8, grp[:, :, 0].max() + 0.8
        for k, t in enumerate(ts):
            ax = axes[r, k]
            for i in np.argsort(-grp[:, t, 1]):  # far dancers first
                depth = float(grp[i, t, 1])
                for a, b in stick_figure(grp[i, t]):
                    lift = np.array([0.0, 0.25 * depth])
                    ax.plot([a[0], b[0]], [(a + lift)[1], (b + lift)[1]], color=colors(i % 10), lw=1.6,
                            alpha=float(np.clip(0.95 - 0.15 * depth, 0.35, 1.0)))
            ax.set_xlim(xmin, xmax)
            ax.set_ylim(-0.4, 2.6)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if k == 0 and labels:
                ax.set_ylabel(labels[r], fontsize=8)
        ax = axes[r, frames]
        for i in range(grp.shape[0]):
            ax.plot(grp[i, :, 0], grp[i, :, 1], color=colors(i % 10), lw=1.2)
            ax.plot(grp[i, 0, 0], grp[i, 0, 1], "o", color=colors(i % 10), ms=3)
            ax.add_patch(plt.Circle((grp[i, -1, 0], grp[i, -1, 1]), 0.35, fill=False, color=colors(i % 10), lw=0.8))
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            ax.set_title("floor plan", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
