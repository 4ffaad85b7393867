"""Local learning tasks, one module each; the registry maps the names users type.

Adding a task is one module with a :class:`~fedsim.clients.base.Task`
subclass plus one line in :data:`TASKS`.
"""

from __future__ import annotations

import importlib

from fedsim.errors import unknown_name
from fedsim.topologies.delay import register_profile

# name -> "module:Class"; imported lazily so the CLI starts fast.
TASKS: dict[str, str] = {
    "digits": "fedsim.clients.digits:DigitsTask",
    "cdl": "fedsim.clients.cdl:CDLTask",
    "gcd": "fedsim.clients.gcd:GCDTask",
    "cfor": "fedsim.clients.cfor:CFORTask",
    "sac": "fedsim.clients.sac:SACTask",
}


def get_task(name: str, config: dict | None = None):
    """Instantiate a task by name."""
    if name not in TASKS:
        raise unknown_name("task", name, TASKS)
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(config)


def _profile_factory(name: str):
    return lambda: get_task(name).profile()


for _name in TASKS:
    register_profile(_name, _profile_factory(_name))
