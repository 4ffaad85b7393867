"""Heterogeneous silos: each silo's own step time and access capacities in the clock.

Two ways to give them, combinable (the file wins where it gives a value):

* ``--compute-ms-file silos.csv``: a CSV with a header row, a ``silo`` column
  (the silo's index or its name in the network) and any of
  ``compute_ms`` (ms per local step), ``upload_bps``, ``download_bps``.
  Silos the file leaves out keep the profile's values.
* ``--stragglers lognormal:SIGMA``: every silo's step time is the profile's
  times a draw of ``exp(N(0, SIGMA^2))`` (median 1), seeded: the same seed
  gives the same silos.

The result is a :class:`~fedsim.topologies.delay.DelayProfile` with
``silo_compute_ms`` / ``silo_upload_bps`` / ``silo_download_bps``: every
strategy's arc delays, the max-plus simulator, ``fedsim topology``,
``fedsim cycle-time`` and a run's simulated clock use them.

Examples
--------
>>> from fedsim.topologies.delay import get_profile
>>> p = heterogeneous(get_profile("femnist"), ["a", "b", "c"], stragglers="lognormal:0.5", seed=1)
>>> [round(x, 2) for x in p.silo_compute_ms]
[5.47, 6.94, 5.43]
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedsim.errors import FedsimError
from fedsim.topologies.delay import DelayProfile

DISTRIBUTIONS = ("lognormal",)
COLUMNS = {"compute_ms": "silo_compute_ms", "upload_bps": "silo_upload_bps", "download_bps": "silo_download_bps"}


def parse_stragglers(spec: str) -> tuple[str, float]:
    """``"lognormal:0.5"`` -> ``("lognormal", 0.5)``; a one-line error otherwise."""
    kind, sep, value = str(spec).partition(":")
    try:
        sigma = float(value)
    except ValueError:
        sigma = math.nan
    if kind not in DISTRIBUTIONS or not sep or not math.isfinite(sigma) or not 0 < sigma <= 5:
        raise FedsimError(f"--stragglers expects lognormal:SIGMA with 0 < SIGMA <= 5, got {spec!r}")
    return kind, sigma


def read_silo_file(path: str | Path, names: list[str]) -> dict[str, dict[int, float]]:
    """``column -> {silo index: value}`` from a per-silo CSV (see the module docstring)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FedsimError(f"cannot read --compute-ms-file {path}: {exc}") from None
    given = [c for c in COLUMNS if c in header]
    if "silo" not in header or not given:
        raise FedsimError(f"--compute-ms-file {path} needs a header with 'silo' and any of "
                          f"{', '.join(COLUMNS)}")
    index = {name: i for i, name in enumerate(names)}
    out: dict[str, dict[int, float]] = {c: {} for c in given}
    for line, row in enumerate(rows, start=2):
        key = (row.get("silo") or "").strip()
        silo = int(key) if key.isdigit() and int(key) < len(names) else index.get(key)
        if silo is None:
            raise FedsimError(f"--compute-ms-file {path}, line {line}: no silo {key!r} in the network "
                              f"(give an index 0..{len(names) - 1} or a silo name)")
        for c in given:
            cell = (row.get(c) or "").strip()
            if not cell:
                continue
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not (math.isfinite(v) and v > 0):
                raise FedsimError(f"--compute-ms-file {path}, line {line}: {c} must be a positive number, "
                                  f"got {cell!r}")
            out[c][silo] = v
    return out


def heterogeneous(profile: DelayProfile, names: list[str], compute_file: str | Path | None = None,
                  stragglers: str | None = None, seed: int = 0) -> DelayProfile:
    """``profile`` with per-silo step times and capacities for a network of silos ``names``."""
    if compute_file is None and stragglers is None:
        return profile
    n = len(names)
    compute = np.full(n, float(profile.compute_ms))
    if stragglers is not None:
        _, sigma = parse_stragglers(stragglers)
        compute = compute * np.random.default_rng(seed).lognormal(0.0, sigma, n)
    fields = {"silo_compute_ms": compute}
    if compute_file is not None:
        given = read_silo_file(compute_file, list(names))
        defaults = {"silo_upload_bps": profile.upload_bps, "silo_download_bps": profile.download_bps}
        for column, values in given.items():
            name = COLUMNS[column]
            vec = fields.get(name, np.full(n, defaults.get(name, 0.0)))
            for silo, v in values.items():
                vec[silo] = v
            fields[name] = vec
    what = [f"stragglers {stragglers} (seed {seed})"] if stragglers else []
    what += [f"per-silo values from {Path(compute_file).name}"] if compute_file else []
    return replace(profile, description=(profile.description + "; " if profile.description else "") + ", ".join(what),
                   **{k: tuple(float(x) for x in v) for k, v in fields.items()})
