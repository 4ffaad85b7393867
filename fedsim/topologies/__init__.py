"""Where silos are and how they could talk: networks, delay model, overlays.

The entry point most code needs is :func:`build_schedule`.
"""

from __future__ import annotations

from fedsim.errors import unknown_name
from fedsim.topologies.delay import Connectivity, DelayProfile, connectivity, get_profile
from fedsim.topologies.multigraph import build as build_multigraph
from fedsim.topologies.overlays import OVERLAYS
from fedsim.topologies.schedule import Schedule

TOPOLOGIES: tuple[str, ...] = (*OVERLAYS, "multigraph")
MULTIGRAPH_BASES: tuple[str, ...] = ("ring", "mst", "dmbst", "star")


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
    "Connectivity",
    "DelayProfile",
    "Schedule",
    "build_schedule",
    "connectivity",
    "get_profile",
]
