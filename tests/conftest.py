"""Shared test setup.

The MATCHA decomposition is cached on disk (``fedsim.topologies.cache``). Tests
must neither read a developer's cache (a test would then not exercise the
solver) nor write into it, so the whole session uses a fresh, temporary cache
folder, removed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_CACHE_DIR = tempfile.mkdtemp(prefix="fedsim-test-cache-")
_SAVED = {k: os.environ.get(k) for k in ("FEDSIM_CACHE_DIR", "FEDSIM_CACHE")}
os.environ["FEDSIM_CACHE_DIR"] = _CACHE_DIR
os.environ.pop("FEDSIM_CACHE", None)


def pytest_unconfigure(config) -> None:
    for key, value in _SAVED.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
