"""Run the docstring examples of the whole ``fedsim`` package.

``pytest`` only collects ``--doctest-modules`` under ``testpaths`` (``tests``),
so the package's own examples would otherwise never run in ``pytest -q``.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import fedsim


def _modules() -> list[str]:
    """The package's modules whose source holds a docstring example (the others have nothing to run)."""
    names = []
    for info in pkgutil.walk_packages(fedsim.__path__, prefix="fedsim."):
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and spec.origin.endswith(".py") and ">>> " in Path(spec.origin).read_text():
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.attempted > 0, f"{name} has '>>> ' in its source but doctest found no example"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
