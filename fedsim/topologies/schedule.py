"""Schedules: which arcs are used, and which of them are strong, in each round.

A static overlay (STAR, RING, MST, δ-MBST) is a schedule of one state in which
every arc is strong. A multigraph is a periodic schedule of ``s_max`` states
over a fixed arc set, where weak arcs carry no fresh model that round. MATCHA
draws a random union of matchings every round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedsim.errors import FedsimError


@dataclass(frozen=True, eq=False)
class Schedule:
    """The graph states a topology design uses, round after round.

    Attributes
    ----------
    topology : str
        Design name (``star``, ``ring``, ``mst``, ``dmbst``, ``matcha``,
        ``matcha_plus``, ``multigraph``).
    n : int
        Number of silos.
    arcs : (A, 2) int array
        Every directed arc the design can use.
    multiplicity : (A,) int array
        Multigraph edge multiplicities ``n(i, j)``: arc ``a`` is strong in
        state ``s`` iff ``s mod n(a) = 0``. All ones for a static overlay.
    server : int or None
        The STAR server silo.
    latency_ms, bandwidth_bps : (A,) arrays or None
        Per-arc latency and core bandwidth when they are not the connectivity
        graph's (STAR routes a silo to the server along a multi-hop path).
    base : str or None
        The overlay a multigraph was built on.
    matchings : (A,) int array or None
        MATCHA: the matching each arc belongs to.
    probabilities : (K,) array or None
        MATCHA: activation probability of each matching.
    alpha : float or None
        MATCHA: mixing step, ``W_k = I - alpha * L_k``.
    """

    topology: str
    n: int
    arcs: np.ndarray
    multiplicity: np.ndarray
    server: int | None = None
    latency_ms: np.ndarray | None = None
    bandwidth_bps: np.ndarray | None = None
    base: str | None = None
    matchings: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    alpha: float | None = None
    info: dict = field(default_factory=dict)

    def delays(self, conn, profile, mask: np.ndarray | None = None, shared_access: bool = True) -> np.ndarray:
        """Arc delays (ms) of this schedule's arcs; see :func:`fedsim.topologies.delay.arc_delays`."""
        from fedsim.topologies.delay import arc_delays

        return arc_delays(
            conn, profile, self.arcs, mask, shared_access,
            latency_ms=self.latency_ms, bandwidth_bps=self.bandwidth_bps,
        )

    @property
    def is_random(self) -> bool:
        return self.probabilities is not None

    @property
    def n_states(self) -> int:
        """``s_max``: the lcm of the multiplicities (1 for a static overlay)."""
        return math.lcm(*self.multiplicity.tolist()) if len(self.multiplicity) else 1

    def state_mask(self, state: int) -> np.ndarray:
        """Strong arcs of periodic state ``state`` (``(A,)`` bool)."""
        return state % self.multiplicity == 0

    def round_masks(self, rounds: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Per-round ``(present, strong)`` arc masks, each ``(rounds, A)`` bool.

        Periodic schedules use state ``k mod S`` in round ``k`` with every arc
        present. MATCHA activates each matching independently with its
        probability, redrawing a round in which none is active; the draws come
        from ``numpy.random.RandomState(seed)``, the stream of the reference
        simulator's ``np.random.seed(seed)``.
        """
        if not self.is_random:
            # (k mod s_max) mod n = k mod n because n divides s_max.
            strong = (np.arange(rounds)[:, None] % self.multiplicity[None, :]) == 0
            return np.ones_like(strong), strong
        present = self.matching_draws(rounds, seed)[:, self.matchings]
        return present, present

    def matching_draws(self, rounds: int, seed: int = 0) -> np.ndarray:
        """MATCHA: which matchings are active in each round, ``(rounds, K)`` bool.

        Every matching is drawn Bernoulli(``p_j``) from
        ``numpy.random.RandomState(seed)``, one row of ``K`` draws per round; a
        row with no active matching is discarded and redrawn (the reference
        simulator's loop). Rows are drawn in blocks: the stream is consumed row
        by row exactly as with one call per row, so the kept rows are the same.
        """
        if not self.is_random:
            raise ValueError(f"{self.topology} is not a random (MATCHA) schedule")
        p = np.asarray(self.probabilities, dtype=float)
        idle = float(np.prod(1.0 - p))  # chance that a row has no active matching
        if idle >= 1.0:
            raise FedsimError("MATCHA: every matching has activation probability 0, so no round "
                              "can communicate; use a larger communication budget")
        rng = np.random.RandomState(seed)
        parts, got = [], 0
        while got < rounds:
            # Enough rows for the remaining rounds after discarding idle ones;
            # rows drawn beyond the need are simply unused (the generator is local).
            need = rounds - got
            size = int(min(max(need, need / (1.0 - idle) * 1.1 + 8), max(need, 4_000_000 // len(p))))
            block = rng.binomial(n=1, p=p, size=(size, len(p))).astype(bool)
            block = block[block.any(axis=1)][:need]
            parts.append(block)
            got += len(block)
        return np.concatenate(parts) if parts else np.zeros((0, len(p)), dtype=bool)

    def isolated(self, state: int) -> list[int]:
        """Silos none of whose arcs (in or out) is strong in ``state``."""
        strong = self.arcs[self.state_mask(state)]
        touched = np.zeros(self.n, dtype=bool)
        touched[strong[:, 0]] = True
        touched[strong[:, 1]] = True
        return [int(i) for i in np.flatnonzero(~touched)]


def static_schedule(topology: str, n: int, arcs: np.ndarray, **kwargs) -> Schedule:
    """A one-state schedule in which every arc is strong."""
    arcs = np.asarray(arcs, dtype=np.int64).reshape(-1, 2)
    return Schedule(topology, n, arcs, np.ones(len(arcs), dtype=np.int64), **kwargs)


def bidirect(edges) -> np.ndarray:
    """Arcs ``(u, v)`` and ``(v, u)`` for every undirected edge, in edge order."""
    out = []
    for u, v in edges:
        out.append((u, v))
        out.append((v, u))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
