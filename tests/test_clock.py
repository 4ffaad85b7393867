"""The simulated clock is reproducible: a task's profile uses its fixed reference step time.

Same command and seed, same simulated times, whatever the machine's load;
measuring the step on this machine is an explicit choice (``--compute-ms
measure``), and options that change the model or the step fall back to a
measurement (a reference measured for other options would be wrong).
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.apps.config import RunConfig
from fedsim.apps.plan import RunPlan
from fedsim.clients import TASKS, get_task
from fedsim.errors import FedsimError


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_has_a_reference_step(name):
    task = get_task(name)
    assert task.reference_step_ms is not None and task.reference_step_ms > 0
    prof = task.profile()
    assert prof.compute_ms == task.reference_step_ms
    assert "reference step" in prof.description and prof.model_bits == 32 * task.exchanged_values()


def test_measuring_is_explicit_and_options_that_change_the_step_measure(monkeypatch):
    from fedsim.clients.digits.task import DigitsTask

    calls = []
    monkeypatch.setattr(DigitsTask, "measure_step_ms", lambda self, steps=5: calls.append(steps) or 7.5)
    assert get_task("digits", {"lr": 0.3, "alpha": 2.0}).profile().compute_ms == DigitsTask.reference_step_ms
    assert calls == []
    measured = get_task("digits").profile(measure=True)
    assert measured.compute_ms == 7.5 and "measured on this machine" in measured.description
    assert get_task("digits", {"batch_size": 8}).profile().compute_ms == 7.5  # not a clock-neutral option
    assert len(calls) == 2


def test_same_config_same_clock(tri_network, monkeypatch):
    from fedsim.clients.digits.task import DigitsTask

    monkeypatch.setattr(DigitsTask, "measure_step_ms", lambda self, steps=5: pytest.fail("measured"))
    plans = [RunPlan.build(RunConfig(network=tri_network, strategy="multigraph", rounds=12, seed=4)) for _ in range(2)]
    np.testing.assert_array_equal(plans[0].clock.round_ms, plans[1].clock.round_ms)
    assert plans[0].cfg.profile == plans[1].cfg.profile
    assert plans[0].cfg.profile["compute_ms"] == DigitsTask.reference_step_ms
    fixed = RunPlan.build(RunConfig(network=tri_network, strategy="ring", rounds=3, compute_ms=5.0))
    assert fixed.profile.compute_ms == 5.0 and "step fixed at 5 ms" in fixed.cfg.profile["description"]
    # a fixed step time is never measured, even with options that change the step
    other = RunPlan.build(RunConfig(network=tri_network, strategy="ring", rounds=3, compute_ms=5.0,
                                    task_options={"batch_size": 8}))
    assert other.profile.compute_ms == 5.0


def test_same_command_same_records(tri_network, tmp_path, task_identity):
    """Two runs of one configuration write the same rounds.csv, byte for byte, but for the wall_s column."""
    import csv

    from conftest import ClientAppGrid

    from fedsim.apps.server_app import serve

    tables = []
    for name in ("a", "b"):
        cfg = RunConfig(network=tri_network, strategy="multigraph", rounds=4, seed=7, task_options={"lr": 0.3})
        serve(ClientAppGrid(3), cfg, tmp_path / name, progress=False)
        with open(tmp_path / name / "rounds.csv") as fh:
            tables.append([{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)])
    assert len(tables[0]) == 5 and tables[0] == tables[1]
    assert float(tables[0][-1]["sim_cum_ms"]) > 0


@pytest.mark.parametrize("value", ["fast", -1.0, 0.0])
def test_bad_compute_ms(value):
    with pytest.raises(FedsimError, match="--compute-ms"):
        RunConfig(compute_ms=value).validate()


def test_a_kept_silo_object_changes_no_result(tri_network, tmp_path, task_identity):
    """The ClientApp keeps each silo's model object between hub messages (one actor serves many silos);
    a second run in the same process, whose silos start from their initial local state again, must write
    the same records as the first (CDL keeps parameters that never leave the silo)."""
    import csv

    from conftest import ClientAppGrid
    from fedsim.apps.client_app import _hub_silo
    from fedsim.apps.server_app import serve

    _hub_silo.cache_clear()
    tables = []
    for name in ("first", "again"):
        cfg = RunConfig(network=tri_network, strategy="ring", task="cdl", rounds=2, seed=5, compute_ms=5.0,
                        task_options={"n_per_silo": 12})
        serve(ClientAppGrid(3), cfg, tmp_path / name, progress=False)
        with open(tmp_path / name / "rounds.csv") as fh:
            tables.append([{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(fh)])
    assert _hub_silo.cache_info().hits > 0  # the second run did reuse the objects
    assert tables[0] == tables[1]
