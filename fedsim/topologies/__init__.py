"""Where silos are and how they could talk: networks, delay model, overlays.

The entry point most code needs is :func:`build_schedule`.
"""

from __future__ import annotations

from fedsim.errors import FedsimError, unknown_name
from fedsim.topologies.delay import Connectivity, DelayProfile, connectivity, get_profile
from fedsim.topologies.multigraph import build as build_multigraph
from fedsim.topologies.overlays import OVERLAYS
from fedsim.topologies.schedule import Schedule

TOPOLOGIES: tuple[str, ...] = (*OVERLAYS, "multigraph")
MULTIGRAPH_BASES: tuple[str, ...] = ("ring", "mst", "dmbst", "star")

# Largest network (silos) each design is built for, so that building and
# simulating it stays within about a minute on one core (measured in
# benchmarks/scale.py; the work grows as N^2 to N^3). Larger ones are refused
# up front by :func:`check_size`, before the connectivity graph is computed.
MAX_SILOS: dict[str, int] = {
    "star": 1000,
    "ring": 2000,
    "mst": 3000,
    "dmbst": 500,
    "matcha": 1000,
    "matcha_plus": 150,
    "multigraph": 2000,
}


def check_size(topology: str, n_silos: int, base: str = "ring") -> None:
    """Refuse a design on a network too large for the time simulator (one-line FedsimError).

    Examples
    --------
    >>> check_size("ring", 500)
    >>> check_size("matcha_plus", 400)
    Traceback (most recent call last):
    ...
    fedsim.errors.FedsimError: matcha_plus is simulated on at most 150 silos, the network has 400; use a smaller network or another strategy (limits: star 1000, ring 2000, mst 3000, dmbst 500, matcha 1000, matcha_plus 150, multigraph 2000)
    """
    limit = MAX_SILOS.get(topology)
    if topology == "multigraph" and base in MAX_SILOS:
        limit = min(MAX_SILOS["multigraph"], MAX_SILOS[base])
    if limit is not None and n_silos > limit:
        limits = ", ".join(f"{k} {v}" for k, v in MAX_SILOS.items())
        raise FedsimError(
            f"{topology} is simulated on at most {limit} silos, the network has {n_silos}; "
            f"use a smaller network or another strategy (limits: {limits})"
        )


def build_schedule(
    topology: str,
    conn: Connectivity,
    profile: DelayProfile,
    *,
    t: int = 5,
    base: str = "ring",
    budget: float = 0.5,
    centrality: str = "load",
) -> Schedule:
    """Build the schedule of a topology design by name.

    Parameters
    ----------
    topology : str
        One of :data:`TOPOLOGIES`.
    conn, profile
        Connectivity graph of the network and the delay profile.
    t : int
        Multigraph maximum multiplicity.
    base : str
        Overlay a multigraph is built on.
    budget : float
        MATCHA communication budget ``Cb``.
    centrality : str
        STAR server placement: ``load``, ``closeness`` or ``information``.

    Examples
    --------
    >>> from fedsim.topologies.networks import builtin_network
    >>> s = build_schedule("multigraph", connectivity(builtin_network("gaia")), get_profile("femnist"))
    >>> s.topology, s.base, s.n
    ('multigraph', 'ring', 11)
    """
    check_size(topology, conn.n, base)
    options = {
        "star": {"centrality": centrality},
        "matcha": {"budget": budget},
        "matcha_plus": {"budget": budget},
    }
    if topology == "multigraph":
        if base not in MULTIGRAPH_BASES:
            raise unknown_name("multigraph base", base, MULTIGRAPH_BASES)
        base_schedule = build_schedule(base, conn, profile, centrality=centrality)
        return build_multigraph(conn, profile, base=base_schedule, t=t)
    if topology not in OVERLAYS:
        raise unknown_name("topology", topology, TOPOLOGIES)
    return OVERLAYS[topology](conn, profile, **options.get(topology, {}))


__all__ = [
    "TOPOLOGIES",
    "MULTIGRAPH_BASES",
    "MAX_SILOS",
    "Connectivity",
    "DelayProfile",
    "Schedule",
    "build_schedule",
    "check_size",
    "connectivity",
    "get_profile",
]
