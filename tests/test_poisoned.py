"""No silo's reply is mixed unchecked: NaN, wrong-shaped and over-weighted updates are rejected.

The silos here run fedsim's real ClientApp in this process; one silo's reply
is then tampered with on its way back, as a broken or malicious SuperNode
would send it. The run must reject that reply, record the silo as failed
with the reason, and either go on with the others (``min_silos``) or stop
with one line; the other silos' models must never be touched by it.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from conftest import ClientAppGrid as TamperingGrid

from fedsim.apps.config import RunConfig


def _cfg(net, strategy="fedavg", **kw) -> RunConfig:
    return RunConfig(network=net, strategy=strategy, rounds=3, seed=1, compute_ms=2.0, task_options={"lr": 0.3},
                     checkpoint_every=1, **kw)


def _rows(run_dir):
    return list(csv.DictReader(open(run_dir / "rounds.csv")))


def _failures(run_dir) -> dict[int, dict[str, str]]:
    return {f["round"]: f["silos"] for f in json.loads((run_dir / "failures.json").read_text())}


def _nan_model(silo, k, arrays, metrics):
    if silo == 2 and k == 2:
        bad = arrays[0].copy()
        bad[::7] = np.nan
        return [bad], metrics
    return None


@pytest.mark.parametrize("strategy", ["fedavg", "ring"])
def test_nan_reply_is_rejected_and_the_run_goes_on(tri_network, tmp_path, task_identity, strategy):
    from fedsim.apps.server_app import serve

    seen = {}

    def on_round(k, outcome, _strategy):
        if k <= 3:
            seen[k] = outcome.models.copy()

    summary = serve(TamperingGrid(3, _nan_model), _cfg(tri_network, strategy, max_failed_rounds=99),
                    tmp_path / "run", progress=False, on_round=on_round, tolerate_lost=True, min_silos=2)
    failed = _failures(tmp_path / "run")
    assert list(failed) == [2] and "reply rejected: model has" in failed[2]["2"] and "non-finite" in failed[2]["2"]
    assert all(np.isfinite(m).all() for m in seen.values())  # 0 x NaN never reached a model
    assert [r["failed"] for r in _rows(tmp_path / "run")] == ["", "", "2", ""]
    assert math.isfinite(summary["final_eval_metric"]) and summary["rounds_completed"] == 3


def test_rejected_reply_leaves_the_silo_out_of_that_round_only(tri_network, tmp_path, task_identity):
    """FedAvg of round 2 is the sample-weighted mean of silos 0 and 1 alone (weights built here)."""
    from fedsim.apps.server_app import serve

    trained = {}

    def record(silo, k, arrays, metrics):
        trained[(silo, k)] = (arrays[0].copy(), metrics["num-examples"])
        return _nan_model(silo, k, arrays, metrics)

    seen = {}
    serve(TamperingGrid(3, record), _cfg(tri_network, max_failed_rounds=99), tmp_path / "run", progress=False,
          on_round=lambda k, o, s: k <= 3 and seen.__setitem__(k, o.models.copy()), tolerate_lost=True, min_silos=2)
    (y0, n0), (y1, n1) = trained[(0, 2)], trained[(1, 2)]
    expected = (n0 * y0.astype(np.float64) + n1 * y1) / (n0 + n1)
    for silo in (0, 1):  # the silos that answered restart from the mean of the valid replies
        np.testing.assert_allclose(seen[2][silo], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(seen[2][2], seen[1][2])  # the rejected silo keeps the model it had


@pytest.mark.parametrize("tamper, reason", [
    (lambda a, m: ([a[0][:-1]], m), "expected float32"),
    (lambda a, m: ([a[0], a[0]], m), "expected one model array, got 2"),
    (lambda a, m: ([a[0].astype(np.float64)], m), "model array is float64"),
    (lambda a, m: (a, m | {"num-examples": 1e12}), "exceeds the silo's"),
    (lambda a, m: (a, m | {"num-examples": -3.0}), "expected a whole number >= 1"),
    (lambda a, m: (a, m | {"train_loss": float("inf")}), "train_loss is inf"),
], ids=["short", "two-arrays", "float64", "1e12-examples", "negative-examples", "inf-loss"])
def test_broken_reply_stops_the_run_with_one_line(tri_network, tmp_path, task_identity, tamper, reason):
    """Without a silo minimum, the failed round stops the run (--max-failed-rounds 1) and is not applied."""
    from fedsim.apps.server_app import RunStopped, serve

    def at_round_2(silo, k, arrays, metrics):
        return tamper(arrays, metrics) if (silo == 1 and k == 2) else None

    with pytest.raises(RunStopped) as err:
        serve(TamperingGrid(3, at_round_2), _cfg(tri_network, max_failed_rounds=1), tmp_path / "run",
              progress=False)
    message = str(err.value)
    assert "\n" not in message and "silo(s) [1]" in message and reason in message
    assert [int(r["round"]) for r in _rows(tmp_path / "run")] == [0, 1]
    assert reason in _failures(tmp_path / "run")[2]["1"]
