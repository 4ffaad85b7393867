"""The run directory: config, per-round records, checkpoints, summary, plots.

Layout::

    RUN/config.json       resolved RunConfig (with the measured delay profile)
    RUN/rounds.csv        one row per completed round (see :data:`BASE_COLUMNS`)
    RUN/failures.json     silos that failed, per round
    RUN/checkpoint.npz    silo models + pending records at the last checkpoint
    RUN/summary.json      final metrics, simulated and wall-clock totals
    RUN/metric_vs_round.png, RUN/metric_vs_time.png

Row ``k`` describes the models *after* ``k`` rounds of training and mixing:
``sim_cum_ms`` is the simulated wall clock at that point and the ``eval_*``
columns evaluate those models (each silo on its own test split;
``eval_metric`` is the mean over silos, ``eval_metric_pooled`` the mean
weighted by test-split size). Row 0 is the initial model. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from fedsim.io import atomic_write, atomic_write_text

BASE_COLUMNS = ("round", "sim_round_ms", "sim_cum_ms", "wall_s", "train_loss", "eval_loss",
                "eval_metric", "eval_metric_pooled", "consensus", "failed")


SILO_STATE_DIR = "silos"  # RUN/silos/: simulated silos' own kept parameters (fedsim.apps.client_app)


def _read_checkpoint(path: Path, models: bool = True) -> tuple[np.ndarray | None, dict]:
    with np.load(path, allow_pickle=False) as z:
        return (z["models"].copy() if models else None), json.loads(str(z["meta"]))


def check_resumable(run_dir: str | Path, run_key: str | None = None, models_shape: tuple | None = None) -> int:
    """Check that the run in ``run_dir`` can continue exactly; returns its checkpoint's round.

    Refuses (:class:`~fedsim.errors.FedsimError`, one line) a folder with no
    checkpoint, a damaged checkpoint, a checkpoint of another run (its
    ``run_key`` differs: task, network, strategy or seed changed), models of
    the wrong shape (``models_shape``, when the caller knows it) and a
    ``rounds.csv`` that lacks rows the checkpoint counts or whose rounds are
    not 0, 1, 2, ... in order.
    """
    from fedsim.errors import FedsimError

    run_dir = Path(run_dir)
    path = run_dir / "checkpoint.npz"
    again = "start it again with --overwrite"
    if not path.exists():
        raise FedsimError(f"cannot resume {run_dir}: it has no checkpoint.npz (no round was checkpointed); {again}")
    try:
        models, meta = _read_checkpoint(path)
        rnd, n_rows = int(meta["round"]), int(meta["rows"])
        meta["pending"], meta["extra"]  # noqa: B018 - present in every checkpoint
    except Exception as exc:  # numpy/zipfile/json raise many types for a damaged file
        raise FedsimError(f"cannot resume {run_dir}: checkpoint.npz is damaged ({type(exc).__name__}); {again}") from None
    if run_key is not None and meta.get("run_key", run_key) != run_key:
        raise FedsimError(f"cannot resume {run_dir}: its checkpoint belongs to another run configuration "
                          f"(config.json was changed after the checkpoint); {again}")
    if models_shape is not None and models.size and tuple(models.shape) != tuple(models_shape):
        raise FedsimError(f"cannot resume {run_dir}: the checkpoint holds models of shape {list(models.shape)}, "
                          f"this run needs {list(models_shape)} (another task or network?); {again}")
    rows = _read_rows(run_dir / "rounds.csv")
    if len(rows) < n_rows:
        raise FedsimError(f"cannot resume {run_dir}: rounds.csv has {len(rows)} complete row(s) but the checkpoint "
                          f"after round {rnd} counts {n_rows}; {again}")
    if [r.get("round") for r in rows[:n_rows]] != list(range(n_rows)):
        raise FedsimError(f"cannot resume {run_dir}: the rounds in rounds.csv are not 0..{n_rows - 1} in order; {again}")
    return rnd


def checkpoint_round(run_dir: Path) -> int:
    """The round of a run directory's last checkpoint (0: none)."""
    path = Path(run_dir) / "checkpoint.npz"
    return int(_read_checkpoint(path, models=False)[1]["round"]) if path.exists() else 0


class RunRecorder:
    """Accumulates round rows and writes the run directory."""

    def __init__(self, run_dir: Path, n_silos: int, metric: str) -> None:
        self.dir = Path(run_dir)
        self.n = n_silos
        self.metric = metric
        self.rows: list[dict] = []
        self.pending: dict | None = None  # the last round, waiting for its evaluation
        self.failures: list[dict] = []
        self.extra: list[str] = []  # the task's other eval_* metrics, as silo means

    @property
    def columns(self) -> list[str]:
        per_silo = [f"{self.metric}_s{i}" for i in range(self.n)] + [f"train_loss_s{i}" for i in range(self.n)]
        return [*BASE_COLUMNS, *self.extra, *per_silo]

    # -- rows -----------------------------------------------------------------
    def open_round(self, row: dict) -> None:
        """Start row ``row['round']`` (train metrics known; eval comes next round)."""
        self.pending = row

    def close_pending(self, eval_by_silo: dict[int, dict]) -> dict | None:
        """Attach evaluation of the pending row's models and commit it."""
        row = self.pending
        if row is None:
            return None
        vals = [m for m in eval_by_silo.values()]
        row["eval_loss"] = float(np.mean([m["eval_loss"] for m in vals])) if vals else float("nan")
        key = f"eval_{self.metric}"
        row["eval_metric"] = float(np.mean([m[key] for m in vals])) if vals else float("nan")
        # Pooled over the union of the silos' test splits: the test-size-weighted mean.
        sizes = np.array([m.get("eval_n", 1.0) for m in vals], float)
        row["eval_metric_pooled"] = (float(np.dot(sizes, [m[key] for m in vals]) / sizes.sum())
                                     if vals else float("nan"))
        if vals and not self.extra:
            skip = {"eval_loss", key, "eval_n"}
            self.extra = sorted(k for k in vals[0] if k.startswith("eval_") and k not in skip)
        for k in self.extra:
            row[k] = float(np.mean([m[k] for m in vals if k in m])) if vals else float("nan")
        for silo, m in eval_by_silo.items():
            row[f"{self.metric}_s{silo}"] = m[key]
        self.rows.append(row)
        self.pending = None
        return row

    def record_failure(self, rnd: int, failed: dict[int, str]) -> None:
        self.failures.append({"round": rnd, "silos": {str(k): v for k, v in failed.items()}})
        atomic_write_text(self.dir / "failures.json", json.dumps(self.failures, indent=2))

    # -- files ----------------------------------------------------------------
    def write_rounds(self) -> None:
        """Rewrite ``rounds.csv`` atomically with every committed row."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        atomic_write_text(self.dir / "rounds.csv", buf.getvalue())
        self._written = (len(self.rows), self.columns)

    def append_rounds(self) -> None:
        """Add the rows committed since the last write (every round: linear, not quadratic, in the
        rounds). Falls back to a full rewrite when the file or its columns are not the ones written."""
        path = self.dir / "rounds.csv"
        written = getattr(self, "_written", None)
        if written is None or written[1] != self.columns or not path.exists():
            self.write_rounds()
            return
        new = self.rows[written[0]:]
        if not new:
            return
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        for r in new:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(buf.getvalue())
        self._written = (len(self.rows), self.columns)

    def checkpoint(self, rnd: int, models: np.ndarray, extra: dict) -> None:
        """Save everything needed to continue after round ``rnd``."""
        self.write_rounds()
        meta = json.dumps({"round": rnd, "pending": self.pending, "rows": len(self.rows), "extra": self.extra,
                           "failures": self.failures, **extra})
        atomic_write(self.dir / "checkpoint.npz",
                     lambda tmp: _savez(tmp, models=models, meta=np.array(meta)))

    def load_checkpoint(self) -> tuple[int, np.ndarray, dict] | None:
        path = self.dir / "checkpoint.npz"
        if not path.exists():
            return None
        models, meta = _read_checkpoint(path)
        self.rows = _read_rows(self.dir / "rounds.csv")[: meta["rows"]]
        self._written = None  # rows after the checkpoint are dropped: the next write rewrites the file
        self.extra = list(meta.get("extra", []))
        self.pending = meta["pending"]
        self.failures = meta.get("failures", [])
        return int(meta["round"]), models, meta

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))

    def plot(self, title: str) -> None:
        from fedsim.plots import curves

        if not self.rows:
            return
        r = np.array([row["round"] for row in self.rows], float)
        t = np.array([row["sim_cum_ms"] for row in self.rows], float) / 1e3
        m = np.array([row["eval_metric"] for row in self.rows], float)
        curves({title: (r, m)}, "round", f"mean test {self.metric}", self.dir / "metric_vs_round.png",
               title=title)
        curves({title: (t, m)}, "simulated wall clock (s)", f"mean test {self.metric}",
               self.dir / "metric_vs_time.png", title=title)


def _savez(tmp: str, **arrays) -> None:
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as fh:
        for raw in csv.DictReader(fh):
            if None in raw.values() or None in raw:  # fewer or more cells than columns: a row cut short
                break
            row = {}
            try:
                for k, v in raw.items():
                    if k == "failed":
                        row[k] = v
                    elif k == "round":
                        row[k] = int(v)
                    elif v not in ("", None):  # an empty cell stays empty when the rows are written again
                        row[k] = float(v)
            except (TypeError, ValueError):  # a last row cut short by a kill mid-append
                break
            rows.append(row)
    return rows


def read_rounds(run_dir: str | Path) -> list[dict]:
    """The committed rows of a run directory's ``rounds.csv``."""
    return _read_rows(Path(run_dir) / "rounds.csv")
