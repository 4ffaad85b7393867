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


# Map layout, in units of the map's width (the height is MAP_ASPECT times smaller):
MAP_ASPECT = 1.5  # width / height of the drawn map (figure 9 x 6 in)
SPREAD_SEP = 0.022  # distance kept between two drawn silos
SPREAD_MERGE = 0.012  # silos closer than this are one site, spread around its centre


def spread_positions(points, sep: float = SPREAD_SEP, merge: float = SPREAD_MERGE,
                     aspect: float = MAP_ASPECT) -> np.ndarray:
    """Drawn positions ``(N, 2)`` of silos at ``points`` ``(N, 2)`` (x, y), co-located ones spread out.

    Silos are not aggregated: every silo keeps its own marker so that each of
    its arcs (and its being isolated) stays visible. Working in map units
    (x scaled to width 1, y to height ``1/aspect``, so that distances are
    about proportional to pixels on an unequal-aspect lon/lat map):

    1. silos closer than ``merge`` (chained) form one site;
    2. the ``m`` silos of a site are laid out, in silo order, on a sunflower
       (Vogel) spiral around the site's centre, radius ``sep * sqrt(k + 0.5)``
       for the k-th, so neighbours on the spiral are about ``sep`` apart;
    3. a few deterministic repulsion passes push apart any two drawn silos of
       different sites still closer than ``sep``.

    A silo alone at its site stays exactly where it is. The result is
    deterministic (no randomness) and returned in the input's units.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    n = len(pts)
    if n < 2:
        return pts.copy()
    lo = pts.min(axis=0)
    span = pts.max(axis=0) - lo
    sx = 1.0 / span[0] if span[0] > 0 else None
    sy = 1.0 / aspect / span[1] if span[1] > 0 else None
    # a line of silos (one span 0) takes the other axis's scale; one point, a unit map
    scale = np.array([sx or sy or 1.0, sy or sx or 1.0])
    p = (pts - lo) * scale
    # 1. sites: connected components of "closer than merge" (single linkage, one row at a time)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        d = np.hypot(*(p[i + 1:] - p[i]).T)
        for j in np.flatnonzero(d < merge) + i + 1:
            a, b = find(i), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(n)])
    out = p.copy()
    golden = np.pi * (3.0 - np.sqrt(5.0))
    for r in np.unique(roots):
        members = np.flatnonzero(roots == r)
        if len(members) < 2:
            continue
        centre = p[members].mean(axis=0)
        k = np.arange(len(members))
        rad = sep * np.sqrt(k + 0.5)
        ang = np.pi / 2 + k * golden
        out[members] = centre + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
    # 3. repulsion between sites (the members of one site are already sep apart)
    if n <= 3000:
        for _ in range(60):
            diff = out[:, None, :] - out[None, :, :]
            dist = np.hypot(diff[..., 0], diff[..., 1])
            np.fill_diagonal(dist, 2 * sep)  # a silo does not push itself
            close = dist < sep
            if not close.any():
                break
            push = np.where(close, (sep - dist) / 2 / np.where(dist > 0, dist, 1.0), 0.0)
            same = dist == 0  # exactly on top of each other: a fixed direction by index
            move = (diff * push[..., None]).sum(axis=1)
            if same.any():
                i, j = np.nonzero(np.triu(same))
                move[i] += [sep / 2, 0.0]
                move[j] -= [sep / 2, 0.0]
            out += move
    return out / scale + lo


def _site_offsets(drawn: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Unit directions (x, y) from a silo's true position to its drawn one; up-right where unmoved."""
    d = drawn - true
    norm = np.hypot(d[:, 0], d[:, 1])
    unit = np.tile([0.7071, 0.7071], (len(d), 1))
    moved = norm > 0
    unit[moved] = d[moved] / norm[moved, None]
    return unit


def state_time_ms(round_ms, n_states: int, state: int) -> float:
    """Time (ms) of one round in periodic state ``state``: the mean of the simulated rounds
    ``k`` with ``k mod n_states == state`` (a static overlay has one state: the cycle time's mean)."""
    r = np.asarray(round_ms, dtype=float)
    picked = r[state % max(n_states, 1)::max(n_states, 1)]
    if picked.size == 0:
        raise ValueError(f"no simulated round is in state {state}: simulate at least {state + 1} rounds")
    return float(picked.mean())


def map_title(network_name: str, schedule, state: int, profile_name: str, round_ms, cycle_ms: float,
              design: str | None = None) -> str:
    """Title of a topology map: which state of how many is drawn, its own round time and the cycle time.

    e.g. ``multigraph (ring, t=5) on exodus, femnist: state 1 of 60, 10.1 ms (cycle time 12.1 ms)``.
    """
    name = design or schedule.topology
    head = f"{name} on {network_name}, {profile_name}"
    if schedule.is_random:
        return f"{head}: every arc drawn, {len(schedule.probabilities)} matchings (cycle time {cycle_ms:.1f} ms)"
    if schedule.n_states == 1:
        return f"{head}: cycle time {cycle_ms:.1f} ms"
    t = state_time_ms(round_ms, schedule.n_states, state)
    return f"{head}: state {state} of {schedule.n_states}, {t:.1f} ms (cycle time {cycle_ms:.1f} ms)"


def topology_map(network, schedule, state: int, path, title: str = ""):
    """Draw the silos and the schedule's arcs in ``state``; returns the (closed) figure's Axes.

    Silos sharing a site (the same or nearly the same coordinates) are
    spread around it by :func:`spread_positions`, each keeping its own
    marker, with a thin grey spoke to the true site and a count label.
    Strong arcs are solid blue arrows, weak arcs dashed grey, isolated
    silos hollow red diamonds labelled with their names (listed in the
    legend); the STAR server is a square. Networks of at most 25 silos get
    every silo's name.
    """
    raw = silo_positions(network)
    true = np.array([raw[i] for i in range(network.n_silos)], dtype=float)
    drawn = spread_positions(true)
    xs, ys = drawn[:, 0], drawn[:, 1]
    fig, ax = plt.subplots(figsize=(9, 6))
    # sites: spokes from the true position and the number of silos there
    moved = np.flatnonzero(np.hypot(*(drawn - true).T) > 0)
    for i in moved:
        ax.plot([true[i, 0], xs[i]], [true[i, 1], ys[i]], color="0.8", lw=0.6, zorder=1)
    if len(moved):
        sites, counts = np.unique(true[moved], axis=0, return_counts=True)
        ax.scatter(sites[:, 0], sites[:, 1], s=6, c="0.55", marker="+", zorder=2)
        for (sx, sy), c in zip(sites, counts):
            if c > 1:
                ax.annotate(str(c), (sx, sy), fontsize=6, color="0.45", ha="center", va="top",
                            xytext=(0, -3), textcoords="offset points", zorder=2)
    strong = schedule.state_mask(state) if not schedule.is_random else np.ones(len(schedule.arcs), bool)
    for (u, v), s in zip(schedule.arcs.tolist(), strong):
        ax.annotate(
            "", xy=(xs[v], ys[v]), xytext=(xs[u], ys[u]),
            arrowprops=dict(arrowstyle="-|>", lw=1.3 if s else 0.8, color="tab:blue" if s else "0.6",
                            linestyle="-" if s else (0, (3, 2)), shrinkA=3, shrinkB=3,
                            mutation_scale=8, connectionstyle="arc3,rad=0.08", alpha=1.0 if s else 0.8),
            zorder=3 if s else 2,
        )
    iso = sorted(set(schedule.isolated(state))) if not schedule.is_random else []
    normal = [i for i in range(network.n_silos) if i not in set(iso) and i != schedule.server]
    ax.scatter(xs[normal], ys[normal], s=16, c="black", zorder=4, label=f"silo ({network.n_silos})")
    if iso:
        ax.scatter(xs[iso], ys[iso], s=55, marker="D", facecolors="white", edgecolors="red", linewidths=1.5,
                   zorder=5, label=f"isolated in state {state} ({len(iso)}): " + _legend_names(
                       [network.silos[i] for i in iso]))
    if schedule.server is not None:
        ax.scatter([xs[schedule.server]], [ys[schedule.server]], s=90, marker="s", c="tab:orange",
                   zorder=5, label="server")
    direction = _site_offsets(drawn, true)
    named = range(network.n_silos) if network.n_silos <= 25 else iso
    for i in named:
        dx, dy = direction[i]
        ax.annotate(network.silos[i], (xs[i], ys[i]), fontsize=7 if i in iso else 6,
                    color="darkred" if i in iso else "black", xytext=(6 * dx, 6 * dy),
                    textcoords="offset points", ha="left" if dx >= 0 else "right",
                    va="bottom" if dy >= 0 else "top", zorder=6,
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.7) if i in iso else None)
    ax.plot([], [], color="tab:blue", lw=1.3, label=f"strong arc ({int(strong.sum())})")
    if not strong.all():
        ax.plot([], [], color="0.6", lw=0.8, ls=(0, (3, 2)), label=f"weak arc ({int((~strong).sum())})")
    if network.has_coords():
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_axis_off()
    ax.margins(0.04)
    ax.set_title(title, fontsize=10)
    # below the map, so that it hides no silo
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=7, frameon=False)
    _save(fig, path)
    return ax


def _legend_names(names: list[str], limit: int = 6) -> str:
    """``a, b, c`` or ``a, b, ... (+3 more)`` for a legend entry."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


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
