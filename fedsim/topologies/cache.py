"""A small persistent cache for expensive, deterministic solver results.

Used for MATCHA's decomposition (edge colouring, activation-probability SDP
and mixing step; the SCS solve takes seconds per network), so that a fresh
process does not solve the same problem again.

Safety
------
* Entries are JSON (never pickle): a damaged or tampered file can at worst
  hold wrong numbers, and every caller validates what it reads (shape, range)
  before trusting it; anything unreadable or invalid is ignored and
  recomputed.
* The key is a SHA-256 of *everything* the result depends on: the exact
  inputs (arrays with their bytes, dtype and shape), the parameters, the
  source code that computes the result and the versions of the numerical
  packages. Changing any of them gives a new key, so a stale entry is never
  used.
* Files are written atomically (temp file + rename); a failed write (read-only
  home, full disk) is silently skipped: the cache only ever saves time.

Location and control
--------------------
``$FEDSIM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fedsim``, else
``~/.cache/fedsim``. Set ``FEDSIM_CACHE=off`` (or ``0``, ``false``, ``no``)
to disable reading and writing. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.io import atomic_write_text

_OFF = {"0", "off", "false", "no"}


def cache_dir() -> Path | None:
    """The cache folder, or ``None`` when caching is disabled (``FEDSIM_CACHE=off``)."""
    if os.environ.get("FEDSIM_CACHE", "").strip().lower() in _OFF:
        return None
    root = os.environ.get("FEDSIM_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fedsim"


def package_versions(*names: str) -> str:
    """``name=version`` of installed distributions (``?`` where absent), for keys."""
    out = []
    for name in names:
        try:
            out.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name}=?")
    return ";".join(out)


def digest(*parts: Any) -> str:
    """SHA-256 hex digest of strings, numbers and numpy arrays (with dtype and shape).

    Examples
    --------
    >>> digest("a", 1.5, np.zeros(2)) == digest("a", 1.5, np.zeros(2))
    True
    >>> digest(np.zeros(2)) == digest(np.zeros((1, 2)))
    False
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            head = f"ndarray:{arr.dtype.str}:{arr.shape}"
            body = arr.tobytes()
        else:
            head = f"{type(part).__name__}"
            body = repr(part).encode("utf-8")
        h.update(head.encode("utf-8") + b"\0" + len(body).to_bytes(8, "little") + body)
    return h.hexdigest()


def _path(kind: str, key: str) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    return root / kind / f"{key}.json"


def load(kind: str, key: str) -> dict | None:
    """The JSON entry stored under ``kind/key``, or ``None`` (missing, disabled, unreadable)."""
    path = _path(kind, key)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    return data


def store(kind: str, key: str, payload: dict) -> None:
    """Store ``payload`` (JSON-serialisable) under ``kind/key``; failures are ignored."""
    path = _path(kind, key)
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps({**payload, "key": key}, allow_nan=False) + "\n")
    except (OSError, ValueError, TypeError):
        pass
