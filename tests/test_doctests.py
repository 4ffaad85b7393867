"""Run the docstring examples of the whole ``fedsim`` package.

``pytest`` only collects ``--doctest-modules`` under ``testpaths`` (``tests``),
so the package's own examples would otherwise never run in ``pytest -q``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fedsim


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(fedsim.__path__, prefix="fedsim."))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
