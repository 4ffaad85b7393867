"""Multigraph topology (Do et al., ICCV 2023), SPEC-timing §4.6.

Every arc of a base overlay (RING by default) becomes ``n(i, j)`` parallel
edges, ``n(i, j) = min(t, round(d(i, j) / d_min))`` with the unshared arc delay
``d = Tc + l + max(M/C_up, M/C_dn, M/A)`` and Python's round-half-to-even: the
slower a link, the more edges. Exactly one of an arc's edges is strong. Parsing
gives ``s_max = lcm(n)`` states; in state ``s`` arc ``a`` is strong iff
``s mod n(a) = 0`` (state 0 is the base overlay). A silo with no strong arc in
a state is *isolated*: it aggregates only with itself and waits for no one.
"""

from __future__ import annotations

import math

import numpy as np

from fedsim.errors import check_int_at_least
from fedsim.topologies.delay import Connectivity, DelayProfile
from fedsim.topologies.schedule import Schedule


def multiplicities(delays: np.ndarray, t: int) -> np.ndarray:
    """``min(t, round(d / d_min))`` per arc, rounding half to even.

    Examples
    --------
    >>> multiplicities(np.array([10.0, 25.0, 35.0, 80.0]), t=5).tolist()
    [1, 2, 4, 5]
    """
    check_int_at_least("multigraph t", t, 1)
    d_min = float(np.min(delays))
    return np.array([min(t, round(float(d) / d_min)) for d in delays], dtype=np.int64)


def build(
    conn: Connectivity, profile: DelayProfile, base: Schedule | None = None, t: int = 5
) -> Schedule:
    """Build the multigraph schedule on ``base`` (default: the RING overlay).

    Examples
    --------
    With ``t = 1`` every arc has one edge, and the multigraph is its base:

    >>> from fedsim.topologies.networks import builtin_network
    >>> from fedsim.topologies.delay import connectivity, get_profile
    >>> s = build(connectivity(builtin_network("gaia")), get_profile("femnist"), t=1)
    >>> s.n_states, s.base
    (1, 'ring')
    """
    check_int_at_least("multigraph t", t, 1)
    if base is None:
        from fedsim.topologies.overlays import ring

        base = ring.build(conn, profile)
    if base.is_random:
        from fedsim.errors import FedsimError

        raise FedsimError("a multigraph needs a static base overlay (star, ring, mst or dmbst)")
    d = base.delays(conn, profile, shared_access=False)
    mult = multiplicities(d, t)
    return Schedule(
        "multigraph", conn.n, base.arcs, mult, server=base.server,
        latency_ms=base.latency_ms, bandwidth_bps=base.bandwidth_bps, base=base.topology,
        info={"t": t, "s_max": math.lcm(*mult.tolist())},
    )
