"""Local learning tasks, one package each; the registry maps the names users type.

A task is a package ``fedsim/clients/<name>/`` with ``options.py`` (a frozen
dataclass of its typed options, no torch), ``data.py``, ``model.py``,
``task.py`` (the :class:`~fedsim.clients.base.Task` subclass) and, where it has
some, ``metrics.py``; adding one is that package plus one line in :data:`TASKS`
and :data:`OPTIONS`.

Nothing is registered elsewhere on import: a task's delay profile is asked for
explicitly (:func:`task_profile`, :func:`get_profile`).

Examples
--------
>>> parse_options("digits", {"lr": "0.1"}).lr
0.1
>>> check_silos("digits", {}, 500)
Traceback (most recent call last):
...
fedsim.errors.FedsimError: digits can serve at most 449 silos with min_size=4, got 500; use fewer silos or a task with per-silo data (--task cdl, cfor or gcd)
>>> "cdl" in profile_names() and "femnist" in profile_names()
True
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from fedsim.errors import unknown_name

# name -> "module:Class"; imported lazily so the CLI starts fast.
TASKS: dict[str, str] = {
    "digits": "fedsim.clients.digits.task:DigitsTask",
    "cdl": "fedsim.clients.cdl.task:CDLTask",
    "gcd": "fedsim.clients.gcd.task:GCDTask",
    "cfor": "fedsim.clients.cfor.task:CFORTask",
    "sac": "fedsim.clients.sac.task:SACTask",
}
# name -> "module:Class" of the task's options (light modules: no torch, no data).
OPTIONS: dict[str, str] = {
    "digits": "fedsim.clients.digits.options:DigitsOptions",
    "cdl": "fedsim.clients.cdl.options:CDLOptions",
    "gcd": "fedsim.clients.gcd.options:GCDOptions",
    "cfor": "fedsim.clients.cfor.options:CFOROptions",
    "sac": "fedsim.clients.sac.options:SACOptions",
}


def _load(table: dict[str, str], name: str):
    if name not in table:
        raise unknown_name("task", name, TASKS)
    module, cls = table[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_task(name: str, config: Mapping | None = None):
    """Instantiate a task by name; ``config`` (option name -> value) is checked first."""
    return _load(TASKS, name)(config)


def parse_options(name: str, mapping: Mapping | None = None):
    """Task ``name``'s options from ``mapping`` (e.g. ``--task-option`` pairs), checked.

    Unknown keys, values of the wrong type, non-finite numbers and values out
    of range are refused with one-line :class:`~fedsim.errors.FedsimError`.
    Builds no model and reads no data.
    """
    from fedsim.clients.options import parse

    return parse(_load(OPTIONS, name), mapping, name)


def check_silos(name: str, options: Mapping | object | None, n_silos: int) -> None:
    """Refuse, with one line naming the limit, a silo count that task ``name`` cannot serve
    with ``options`` (decided from the count alone; no data is read)."""
    from fedsim.clients.options import check_silos as _check

    _check(name, parse_options(name, options), n_silos)


def task_profile(name: str, options: Mapping | None = None, measure: bool = False):
    """The delay profile of task ``name`` with ``options``: its real exchanged size and its
    reference step time (measured on this machine with ``measure``)."""
    return get_task(name, options).profile(measure=measure)


def profile_names() -> list[str]:
    """Every delay profile name: the published workloads, then the tasks."""
    from fedsim.topologies.delay import PUBLISHED_PROFILES

    return list(PUBLISHED_PROFILES) + [n for n in TASKS if n not in PUBLISHED_PROFILES]


def get_profile(name: str, **overrides):
    """A delay profile by name, published workload or task (default options), with overrides."""
    from fedsim.topologies.delay import PUBLISHED_PROFILES
    from fedsim.topologies.delay import get_profile as published

    if name in PUBLISHED_PROFILES or name not in TASKS:
        if name not in PUBLISHED_PROFILES:
            raise unknown_name("profile", name, profile_names())
        return published(name, **overrides)
    return task_profile(name).with_overrides(**overrides)
