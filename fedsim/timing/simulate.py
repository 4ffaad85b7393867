"""Cycle time of a schedule: per-round simulated times and their summary.

Three definitions, each the one the published tables use (SPEC-timing §3.4,
§4.1, §4.5, §4.6):

* static overlays (RING, MST, δ-MBST): the max-plus cycle time, the maximum
  cycle mean of the delay digraph, every round;
* STAR: with ``λ`` the max-plus cycle time of the server-silo 2-cycles, the
  reported time ``2(λ − Tc) + Tc`` (one computation plus the worst upload and
  download through the server);
* multigraph: a per-round recursion over the states. A strong arc that was
  weak last round only waits for the rest of a transfer that started while it
  was weak, ``max(Tc, D − elapsed)``; weak arcs cost nothing this round
  (delay 0 in the round's max-plus cycle time ``τ_k``) and accumulate the
  elapsed time. Reported: the mean of ``τ_k``;
* MATCHA: each round's time is its slowest active arc; reported:
  ``Σ_k τ_k / (R − 1)`` over ``R = 1000`` rounds drawn with seed 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.errors import check_int_at_least
from fedsim.timing.maxplus import CycleBasis
from fedsim.topologies.delay import Connectivity, DelayProfile, arc_terms
from fedsim.topologies.schedule import Schedule

# Rounds simulated by default for the published workloads (SPEC-timing §4.6).
PUBLISHED_ROUNDS = {"femnist": 6400, "inaturalist": 1600, "sent140": 20000}
DEFAULT_MULTIGRAPH_ROUNDS = 6400
DEFAULT_MATCHA_ROUNDS = 1000


@dataclass(frozen=True)
class CycleTime:
    """Simulated round times of a schedule.

    Attributes
    ----------
    round_ms : (R,) array
        Simulated duration of each round, in ms.
    value : float
        The reported cycle time (ms), by the definition of the topology.
    definition : str
        How ``value`` is computed, in words.
    """

    topology: str
    round_ms: np.ndarray
    value: float
    definition: str

    @property
    def rounds(self) -> int:
        return int(self.round_ms.size)

    def summary(self) -> dict:
        """Reported value plus statistics of the per-round times (ms)."""
        r = self.round_ms
        return {
            "topology": self.topology,
            "cycle_time_ms": self.value,
            "definition": self.definition,
            "rounds": self.rounds,
            "mean_round_ms": float(r.mean()),
            "min_round_ms": float(r.min()),
            "max_round_ms": float(r.max()),
            "total_ms": float(r.sum()),
        }


def _star_rescale(x: np.ndarray | float, tc: float):
    return 2 * (x - tc) + tc


def static_cycle_time(schedule: Schedule, conn: Connectivity, profile: DelayProfile) -> float:
    """Max-plus cycle time of a static overlay (every arc strong)."""
    d = schedule.delays(conn, profile)
    return float(CycleBasis(schedule.n, schedule.arcs).cycle_time(d))


def multigraph_round_times(
    schedule: Schedule, conn: Connectivity, profile: DelayProfile, rounds: int
) -> np.ndarray:
    """Per-round max-plus times ``τ_k`` of a (multigraph) schedule, unscaled.

    The recursion is exact; once the arc clocks at the start of a period of
    ``s_max`` states equal those one period earlier, every later period
    repeats, and the remaining rounds are filled in without recomputation.
    """
    full = schedule.delays(conn, profile)  # degrees count strong and weak arcs
    basis = CycleBasis(schedule.n, schedule.arcs)
    tc = profile.tc_vector(schedule.n)[schedule.arcs[:, 0]] if profile.heterogeneous else profile.tc
    mult = schedule.multiplicity
    period = schedule.n_states
    taus = np.empty(rounds)
    prev = full.copy()
    prev_strong = np.ones(len(full), dtype=bool)
    marks: list[np.ndarray] = []
    k = 0
    while k < rounds:
        if period > 1 and k > 0 and k % period == 0:
            marks.append(prev.copy())
            if len(marks) >= 2 and np.array_equal(marks[-1], marks[-2]):
                last = taus[k - period : k]
                reps = rounds - k
                taus[k:] = np.resize(last, reps)
                break
        strong = k % mult == 0
        if k == 0:
            cur = full.copy()
        else:
            resumed = np.maximum(tc, full - prev)
            cur = np.where(strong, np.where(prev_strong, full, resumed), 0.0)
        tau = float(basis.cycle_time(cur))
        taus[k] = tau
        prev = np.where(strong, cur, np.where(prev_strong, tau, tau + prev))
        prev_strong = strong
        k += 1
    return taus


def matcha_round_times(
    schedule: Schedule, conn: Connectivity, profile: DelayProfile, rounds: int, seed: int = 0
) -> np.ndarray:
    """Per-round time of a MATCHA schedule: the slowest active arc.

    An active arc's delay is ``b + max(x, y, c)`` with ``b = Tc + l``, core
    term ``c = M/A`` and access terms ``x = outdeg(i)·M/C_up``, ``y =
    indeg(j)·M/C_dn`` counted over the round's active arcs. Floating-point
    addition is monotone, so the maximum over arcs equals the largest of
    ``max(b + c)`` (per matching, fixed), ``max_i (max b over i's active
    out-arcs) + x_i`` and the same for in-arcs. Each term is formed with the
    same operations as :func:`fedsim.topologies.delay.arc_delays`, so the
    result is bit-for-bit the dense ``(rounds × arcs)`` evaluation, without
    building it.
    """
    draws = schedule.matching_draws(rounds, seed)  # (R, K)
    r, k = draws.shape
    n = schedule.n
    arcs = schedule.arcs
    match = np.asarray(schedule.matchings, dtype=np.int64)
    lat, core = arc_terms(conn, profile, arcs, schedule.latency_ms, schedule.bandwidth_bps)
    base = (profile.tc_vector(n)[arcs[:, 0]] if profile.heterogeneous else profile.tc) + lat
    per_matching = np.full(k, -np.inf)
    np.maximum.at(per_matching, match, base + core)
    times = np.where(draws, per_matching, -np.inf).max(axis=1)
    drawsf = draws.astype(float)
    done = None
    units = ((profile.upload_ms_vector(n), profile.download_ms_vector(n)) if profile.heterogeneous
             else (profile.upload_ms, profile.download_ms))
    for end, unit_ms in ((0, units[0]), (1, units[1])):
        node = arcs[:, end]
        count = np.zeros((k, n))
        np.add.at(count, (match, node), 1.0)
        top = np.full((k, n), -np.inf)  # largest b among the node's arcs in each matching
        np.maximum.at(top, (match, node), base)
        if done is not None and np.array_equal(unit_ms, done[0]) and np.array_equal(count, done[1]) \
                and np.array_equal(top, done[2]):
            break  # symmetric overlay and equal access capacities: same term again
        deg = drawsf @ count  # (R, N) degrees over active arcs, exact integers
        best = np.full((r, n), -np.inf)  # largest b among each node's active arcs
        for j in range(k):
            np.maximum(best, np.where(draws[:, j, None], top[j], -np.inf), out=best)
        times = np.maximum(times, (best + deg * unit_ms).max(axis=1))
        done = (unit_ms, count, top)
    return times


def simulate(
    schedule: Schedule,
    conn: Connectivity,
    profile: DelayProfile,
    rounds: int | None = None,
    seed: int = 0,
) -> CycleTime:
    """Simulate ``rounds`` rounds of ``schedule`` and report its cycle time.

    Parameters
    ----------
    rounds : int, optional
        Defaults: 1000 for MATCHA, the published round count of the profile
        (else 6400) for a multigraph, 1 for a static overlay (whose rounds are
        all equal).
    seed : int
        Seed of MATCHA's activations (the only random part).

    Examples
    --------
    >>> from fedsim.topologies import build_schedule, connectivity, get_profile
    >>> from fedsim.topologies.networks import builtin_network
    >>> conn, p = connectivity(builtin_network("gaia")), get_profile("femnist")
    >>> round(simulate(build_schedule("ring", conn, p), conn, p).value, 1)
    57.2
    """
    topo = schedule.topology
    if schedule.is_random:
        r = check_int_at_least("rounds", rounds if rounds is not None else DEFAULT_MATCHA_ROUNDS, 2)
        times = matcha_round_times(schedule, conn, profile, r, seed)
        return CycleTime(topo, times, float(times.sum() / (r - 1)),
                         f"sum of {r} per-round max arc delays / {r - 1} (seed {seed})")
    is_star = schedule.server is not None
    if schedule.n_states > 1:
        default = PUBLISHED_ROUNDS.get(profile.name, DEFAULT_MULTIGRAPH_ROUNDS)
        r = check_int_at_least("rounds", rounds if rounds is not None else default, 1)
        times = multigraph_round_times(schedule, conn, profile, r)
        definition = f"mean over {r} rounds of the per-state max-plus cycle time"
    else:
        r = check_int_at_least("rounds", rounds if rounds is not None else 1, 1)
        times = np.full(r, static_cycle_time(schedule, conn, profile))
        definition = "max-plus cycle time (maximum cycle mean)"
    if is_star:  # 2(x - Tc) + Tc = 2x - Tc: with stragglers, Tc is the server's own (SPEC-timing §4.1)
        times = _star_rescale(times, float(profile.tc_vector(schedule.n)[schedule.server]))
        definition += ", STAR-rescaled 2(x - Tc) + Tc"
    return CycleTime(topo, times, float(times.mean()), definition)
