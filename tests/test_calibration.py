"""Calibrating the delay model to a deployment: fit and calibrated STAR prediction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.errors import FedsimError
from fedsim.timing.calibration import deployment_profile, fit_round_trips
from fedsim.timing.simulate import simulate
from fedsim.topologies import build_schedule, connectivity, get_profile
from fedsim.topologies.networks import load_network


@settings(max_examples=40, deadline=None)
@given(local=st.floats(10, 5000), k=st.floats(0.5, 30), noise=st.integers(0, 2**31 - 1))
def test_fit_recovers_a_noisy_line(local, k, noise):
    rng = np.random.default_rng(noise)
    rtt = np.repeat([0.0, 30.0, 90.0, 150.0], 25)
    y = local + k * rtt + rng.normal(0, 5.0, rtt.size)
    c = fit_round_trips(rtt, y)
    assert c.local_ms == pytest.approx(local, abs=5.0)
    assert c.round_trips == pytest.approx(k, abs=0.1)
    assert 2.5 < c.rms_ms < 7.5 and c.points == rtt.size
    assert c.round_ms(60.0) == pytest.approx(c.local_ms + 60.0 * c.round_trips)


def test_fit_needs_two_rtts_and_matching_lengths():
    with pytest.raises(FedsimError, match="two or more different RTTs"):
        fit_round_trips([40, 40, 40], [900, 910, 920])
    with pytest.raises(FedsimError, match="one RTT per round time"):
        fit_round_trips([0, 40], [900])


@pytest.mark.parametrize("network", ["gaia", "geant"])
def test_calibrated_star_is_local_plus_k_rtts_plus_transfers(network):
    conn = connectivity(load_network(network))
    prof = get_profile("femnist")
    sched = build_schedule("star", conn, prof)
    local, k = 812.5, 4.75
    cal = deployment_profile(prof, local, k)
    cal_sched = build_schedule("star", conn, cal)
    assert cal_sched.server == sched.server
    s, n, m = sched.server, conn.n, prof.model_bits
    lat, bw = conn.latency(prof), conn.bandwidth(prof)

    def transfer(u, v, out_deg, in_deg):  # ms; the access links are shared over the STAR degrees
        return max(out_deg * m / prof.upload_bps, in_deg * m / prof.download_bps, m / bw[u, v]) * 1e3

    expected = local + max(k * (lat[s, i] + lat[i, s]) + transfer(s, i, n - 1, 1) + transfer(i, s, 1, n - 1)
                           for i in range(n) if i != s)
    assert simulate(cal_sched, conn, cal).value == pytest.approx(expected, rel=1e-9)
    # with one round trip and the model's own Tc it is the published STAR time
    same = deployment_profile(prof, prof.tc, 1.0)
    assert simulate(build_schedule("star", conn, same), conn, same).value == pytest.approx(
        simulate(sched, conn, prof).value, rel=1e-12)


def test_deployment_profile_rejects_nonsense():
    prof = get_profile("femnist")
    with pytest.raises(FedsimError, match="round trips"):
        deployment_profile(prof, 500.0, 0.0)
    with pytest.raises(FedsimError, match="local time"):
        deployment_profile(prof, -1.0, 3.0)
