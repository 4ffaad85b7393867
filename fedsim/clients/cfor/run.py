"""A trained ``cfor`` run as a search engine: its final model, thresholds and database.

Used by ``fedsim retrieve`` and the retrieval benchmark; builds on the task
(:mod:`fedsim.clients.cfor`) and the index (:mod:`fedsim.clients.cfor.retrieval`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.clients.cfor.data import load_images
from fedsim.clients.cfor.metrics import mcc_thresholds
from fedsim.clients.cfor.retrieval import Features, OntologyIndex, extract
from fedsim.clients.cfor.task import CFORTask
from fedsim.errors import FedsimError


@dataclass
class TrainedRun:
    """A run's final model (the mean of the silo models) and its database."""

    task: CFORTask
    model: Any
    thresholds: np.ndarray
    n_silos: int
    database: Features | None = None
    db_labels: np.ndarray | None = None  # (N, 2 + A) ground truth of the database items
    db_origin: np.ndarray | None = None  # (N, 2): silo, index in that silo's training split
    parts: list | None = None  # the silos' data splits (queries may come from a test split)


def load_run(run_dir: str | Path) -> TrainedRun:
    """Rebuild the final model of a ``cfor`` run and its retrieval database.

    The model is the mean row of ``checkpoint.npz``'s ``models`` (one flat
    float32 row per silo, in ``exchanged_keys`` order; the last checkpoint,
    i.e. the final round of a finished run). Thresholds: MCC-optimal on the
    union of the silos' validation splits. Database: the union of the silos'
    training splits (regenerated from the run's seed and task options).
    """
    import torch

    from fedsim.clients import get_task

    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / "config.json", run_dir / "checkpoint.npz"
    if not cfg_path.exists() or not ckpt.exists():
        raise FedsimError(f"{run_dir} is not a finished fedsim run (needs config.json and checkpoint.npz)")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("task") != "cfor":
        raise FedsimError(f"{run_dir} trained task {cfg.get('task')!r}; retrieval needs a 'cfor' run")
    with np.load(ckpt, allow_pickle=False) as z:
        models = z["models"]
    task = get_task("cfor", cfg.get("task_options") or {})
    torch.manual_seed(int(cfg.get("seed", 0)))
    model = task.model()
    keys = task.exchanged_keys(model)
    state = model.state_dict()
    flat = models.astype(np.float64).mean(0).astype(np.float32)
    need = sum(state[k].numel() for k in keys)
    if flat.size != need:
        raise FedsimError(f"{ckpt}: models have {flat.size} values per silo, the cfor model needs {need} "
                          f"(was the run trained with other task options?)")
    off = 0
    for key in keys:
        n = state[key].numel()
        state[key] = torch.from_numpy(flat[off:off + n].copy()).view_as(state[key]).to(state[key].dtype)
        off += n
    model.load_state_dict(state)
    model.eval()
    n_silos, seed = models.shape[0], int(cfg.get("seed", 0))
    parts = [task.partition(s, n_silos, seed) for s in range(n_silos)]
    x_val = torch.cat([p.x_val for p in parts])
    y_val = torch.cat([p.y_val for p in parts])
    _, probs = task.predict(model, x_val)
    thr = mcc_thresholds(probs, y_val[:, 2:].numpy())
    run = TrainedRun(task, model, thr, n_silos)
    run.database = extract(task, model, torch.cat([p.x_train for p in parts]), thr)
    run.db_labels = torch.cat([p.y_train for p in parts]).numpy()
    run.db_origin = np.concatenate([np.stack([np.full(p.n_train, s), np.arange(p.n_train)], 1)
                                    for s, p in enumerate(parts)])
    run.parts = parts
    return run


@dataclass
class Retrieval:
    """Results of :func:`retrieve` for Q queries."""

    ids: np.ndarray  # (Q, k) database ids
    scores: np.ndarray  # (Q, k)
    query: Features  # what the models predicted for the queries
    run: TrainedRun | None = None


def _as_images(query, size: int):
    import torch

    if isinstance(query, (str, Path)) or (isinstance(query, (list, tuple)) and query
                                          and isinstance(query[0], (str, Path))):
        names = [query] if isinstance(query, (str, Path)) else list(query)
        return torch.from_numpy(load_images(".", [str(n) for n in names], size))
    x = torch.as_tensor(np.asarray(query, np.float32))
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise FedsimError(f"a query is an image (3, H, W) or a batch (Q, 3, H, W), got shape {tuple(x.shape)}")
    return x


def retrieve(run_dir_or_model, query, k: int = 10, *, task: CFORTask | None = None,
             database: OntologyIndex | None = None, kind: str = "flat", level: str = "category",
             expand: bool = False, thresholds: np.ndarray | float | None = None, **search_kw) -> Retrieval:
    """Retrieve the k most similar database items for one or more query images.

    Parameters
    ----------
    run_dir_or_model
        A ``cfor`` run directory (the final model is the mean of the silo
        models; the database is the union of the silos' training splits,
        indexed per ontology leaf) or a trained ``CFORNet`` (then ``task`` and
        ``database`` are required).
    query
        An image ``(3, H, W)``, a batch ``(Q, 3, H, W)`` (values in [0, 1]), or
        image file path(s).
    k, kind, level, expand, **search_kw
        See :meth:`OntologyIndex.search` and :func:`make_index`.
    """
    run = None
    if isinstance(run_dir_or_model, (str, Path)):
        run = _cached_run(str(Path(run_dir_or_model).resolve()))
        task, model = run.task, run.model
        thresholds = run.thresholds if thresholds is None else thresholds
        if database is None:
            database = _cached_index(str(Path(run_dir_or_model).resolve()), kind)
    else:
        model = run_dir_or_model
        if task is None or database is None:
            raise FedsimError("retrieve() with a model needs task= and database= (an OntologyIndex)")
    x = _as_images(query, task.options.image_size)
    q = extract(task, model, x, 0.5 if thresholds is None else thresholds)
    res = database.search(q, k, level=level, expand=expand, **search_kw)
    return Retrieval(res.ids, res.scores, q, run)


_RUNS: dict[str, TrainedRun] = {}
_INDEXES: dict[tuple[str, str], OntologyIndex] = {}


def _cached_run(path: str) -> TrainedRun:
    if path not in _RUNS:
        _RUNS[path] = load_run(path)
    return _RUNS[path]


def _cached_index(path: str, kind: str) -> OntologyIndex:
    if (path, kind) not in _INDEXES:
        run = _cached_run(path)
        _INDEXES[(path, kind)] = OntologyIndex(run.task.ontology, run.database, kind=kind)
    return _INDEXES[(path, kind)]
