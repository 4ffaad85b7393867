"""Calibrating the delay model to a real deployment's protocol.

The published delay model moves a model across an arc in one one-way latency
plus its transfer time, and a STAR round costs ``Tc + 2 l_max + 2 M/R``. A
Flower deployment moves it with a request/response protocol: a SuperNode polls
for its message, pulls the message's objects (two at a time), confirms, then
pushes the reply and its objects. Each of those exchanges costs a full round
trip on the silo's link, and the processes add a per-round local cost
(process start, (de)serialisation, the SuperLink's bookkeeping) that no
network term captures.

Two numbers, measured on the deployment itself, fold that into the model
without changing the simulator:

* ``local_ms``: the round time with the network taken out (the same
  deployment on unshaped local links), used as the per-round computation;
* ``round_trips``: how many sequential round trips of a silo's link a round
  costs, used to scale every latency (``l -> K l``, so a STAR round becomes
  ``local_ms + K * RTT_max + 2 M/R``).

:func:`fit_round_trips` gets both from runs on uniform links of known
latency (least squares of round time against RTT); :func:`deployment_profile`
returns the calibrated profile. ``benchmarks/wan_emulation.py`` calibrates on
uniform links and checks the prediction on Gaia's heterogeneous ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.errors import FedsimError, check_positive
from fedsim.topologies.delay import DelayProfile


@dataclass(frozen=True)
class Calibration:
    """Round time ``local_ms + round_trips * RTT`` fitted on uniform links."""

    local_ms: float
    round_trips: float
    rms_ms: float  # root-mean-square residual of the fit
    points: int

    def round_ms(self, rtt_ms: float) -> float:
        return self.local_ms + self.round_trips * rtt_ms


def fit_round_trips(rtt_ms, round_ms) -> Calibration:
    """Least-squares fit of measured round times against the links' round-trip time.

    Parameters
    ----------
    rtt_ms, round_ms : sequences of float
        One entry per measured round: the (uniform) round-trip time of the
        links during that round, and the round's measured time. At least two
        distinct RTTs are needed.

    Examples
    --------
    >>> c = fit_round_trips([0, 0, 20, 20, 80, 80], [500, 520, 680, 700, 1220, 1240])
    >>> round(c.local_ms, 1), round(c.round_trips, 2)
    (510.0, 9.0)
    """
    x = np.asarray(rtt_ms, dtype=float)
    y = np.asarray(round_ms, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise FedsimError(f"calibration needs one RTT per round time, got {x.shape} and {y.shape}")
    if len(np.unique(x)) < 2:
        raise FedsimError("calibration needs rounds measured at two or more different RTTs")
    a = np.stack([np.ones_like(x), x], axis=1)
    (local, k), *_ = np.linalg.lstsq(a, y, rcond=None)
    rms = float(np.sqrt(np.mean((a @ np.array([local, k]) - y) ** 2)))
    return Calibration(float(local), float(k), rms, len(x))


def deployment_profile(profile: DelayProfile, local_ms: float, round_trips: float) -> DelayProfile:
    """``profile`` with a deployment's measured local time per round and protocol round trips.

    The per-round computation becomes ``local_ms`` and every latency is scaled
    by ``round_trips`` (both terms of the latency law), so the simulator's
    STAR time is ``local_ms + round_trips * RTT_max + 2 M/R``.

    Examples
    --------
    >>> from fedsim.topologies import get_profile
    >>> p = deployment_profile(get_profile("femnist"), local_ms=900.0, round_trips=9)
    >>> p.tc, round(p.latency_ms_per_km, 4), p.latency_base_ms
    (900.0, 0.0765, 36.0)
    """
    check_positive("local time per round (ms)", local_ms)
    check_positive("round trips per round", round_trips)
    return profile.with_overrides(
        compute_ms=local_ms / profile.local_steps,
        latency_ms_per_km=profile.latency_ms_per_km * round_trips,
        latency_base_ms=profile.latency_base_ms * round_trips,
    )
