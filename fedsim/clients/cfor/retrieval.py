"""CFOR retrieval: ontology-organised faiss indexes and coarse-to-fine search.

Offline, every database image goes through the trained CFOR models
(:func:`extract`): its global feature (the backbone's pooled feature,
L2-normalised), its predicted region and category (coarse to fine), its
predicted attributes (above the per-attribute MCC thresholds) and the
attribute vector used for ranking: the attribute probabilities (``"soft"``,
default) or the 0/1 predicted attributes (``"binary"``).
:class:`OntologyIndex` stores them **one index per ontology leaf**
(region/category), exact (faiss ``IndexFlatL2``) or compressed (faiss
``IndexIVFPQ``: inverted lists + product quantisation, searched with asymmetric
distances) for large collections; on a machine with a faiss GPU build and a
GPU the indexes are moved to the GPU, otherwise they stay on the CPU.
:meth:`OntologyIndex.save` writes the storage tree ``ROOT/<region>/<category>/``.

Online, :meth:`OntologyIndex.search` runs the coarse-to-fine search for a query
``q`` with global feature ``f_q`` and attribute vector ``a_q``:

1. **filter**: keep the leaf of q's predicted category (``level="category"``;
   widened to the predicted region, then to everything, when that holds
   fewer than k items), or the predicted region's leaves (``"region"``), or
   every leaf (``"none"``);
2. **global ranking**: the ``m`` candidates nearest to ``f_q`` in L2
   (``d_g = ||f_q − f_i||²``) over the kept leaves;
3. **fine ranking**: sort the candidates by
   ``s_i = ||a_q − a_i||² + λ·d_g`` (λ = ``global_weight``, default 10; ties
   keep the global order) and keep the top k;
4. **query expansion** (``expand=True``; off by default): the mean vector of
   the query and its top-e results (e = ``expand_k``, default 3),
   ``q̄ = mean([f_q; a_q], [f_1; a_1], …, [f_e; a_e])``, re-scores the m
   candidates with the same score against ``q̄``; the top k are returned. (With
   ``m = e = k`` this re-ranks exactly the k results, as in the write-up.) On
   the synthetic benchmark it lowers MAP (``benchmarks/cfor_retrieval.py``),
   hence opt-in.

Evaluation: MAP@k for k = 1…K with attribute match between the query's and
the results' ground-truth attributes: per attribute of the query
(:func:`attribute_map_at_k`, the default, as in the write-up) or one relevance
per result (:func:`relevance`: the result has all the query's attributes, the
same set, or Jaccard ≥ τ; :func:`map_at_k`).

The ``retrieve`` sub-command (:func:`add_retrieve_parser`) runs a query against
a trained run's model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsim.clients.cfor.ontology import Ontology, predict_stages
from fedsim.errors import FedsimError

if TYPE_CHECKING:  # torch is imported lazily: the CLI starts fast
    import torch


INDEX_KINDS = ("flat", "ivfpq")
LEVELS = ("category", "region", "none")
RELEVANCE_MODES = ("contains", "equal", "jaccard")


def _faiss():
    import faiss  # a dependency (faiss-cpu); imported lazily: the CLI starts fast

    return faiss


# =============================================================== features
@dataclass
class Features:
    """What the CFOR models extract for each image (one row per image)."""

    feature: np.ndarray  # (N, D) float32 global feature, L2-normalised
    region: np.ndarray  # (N,) predicted region
    category: np.ndarray  # (N,) predicted category (global index)
    probs: np.ndarray  # (N, A) attribute probabilities
    attributes: np.ndarray  # (N, A) float32 0/1 predicted attributes (probs >= thresholds)
    vector: np.ndarray | None = None  # (N, A) attribute vector used for ranking (default: attributes)

    def __post_init__(self) -> None:
        if self.vector is None:
            self.vector = self.attributes

    def __len__(self) -> int:
        return len(self.feature)

    def take(self, idx) -> Features:
        return Features(*(a[idx] for a in (self.feature, self.region, self.category, self.probs,
                                           self.attributes, self.vector)))


ATTRIBUTE_SPACES = ("soft", "binary")


def extract(task: Any, model: torch.nn.Module, x: torch.Tensor, thresholds: np.ndarray | float = 0.5,
            attributes: str = "soft", batch_size: int = 1024) -> Features:
    """Run the stage classifiers and attribute heads on ``x`` (coarse to fine).

    ``attributes``: the attribute vector used for ranking, ``"soft"`` (the
    probabilities) or ``"binary"`` (the attributes above ``thresholds``).
    """
    if attributes not in ATTRIBUTE_SPACES:
        raise FedsimError(f"unknown attribute space {attributes!r}; valid: {', '.join(ATTRIBUTE_SPACES)}")
    out, p = task.predict(model, x, batch_size)
    region, category = predict_stages(out, task.ontology)
    f = out.feature.numpy().astype(np.float32)
    f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    p = p.astype(np.float32)
    hard = (p >= np.asarray(thresholds)).astype(np.float32)
    return Features(f, region.numpy(), category.numpy(), p, hard, p if attributes == "soft" else hard)


# =============================================================== indexes
class _FaissIndex:
    """A faiss index (CPU, or a GPU copy for search) plus its CPU copy for decoding."""

    def __init__(self, cpu, gpu=None) -> None:
        self.cpu, self.gpu = cpu, gpu
        self.ntotal = cpu.ntotal

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = (self.gpu or self.cpu).search(np.ascontiguousarray(q, np.float32), k)
        return d, i.astype(np.int64)

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        return self.cpu.reconstruct_batch(np.ascontiguousarray(ids, np.int64))


def ivfpq_shape(n: int, d: int, nlist: int | None = None, m: int | None = None) -> tuple[int, int]:
    """IVF-PQ parameters for ``n`` vectors of dimension ``d``: ``nlist`` inverted
    lists (default ``clip(4·√n, 1, n/39)``: faiss wants ≥ 39 training points per
    centroid) and ``m`` PQ sub-vectors (default the largest divisor of d ≤ d/4,
    i.e. ≥ 4 dimensions per 8-bit code)."""
    if nlist is None:
        nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
    if m is None:
        m = max(k for k in range(1, max(1, d // 4) + 1) if d % k == 0)
    return nlist, m


def make_index(vectors: np.ndarray, kind: str = "flat", *, backend: str = "auto", nlist: int | None = None,
               m: int | None = None, nbits: int = 8, nprobe: int | None = None, min_compress: int = 1000,
               use_gpu: bool | None = None, seed: int = 0):
    """An L2 index over ``vectors``.

    ``kind="flat"``: exact (faiss ``IndexFlatL2``). ``kind="ivfpq"``: faiss
    ``IndexIVFPQ`` (see :func:`ivfpq_shape`; ``nprobe`` default ``max(1,
    nlist/8)``), trained on a seeded sample of the vectors themselves
    (``max(64·nlist, 2⁸·39)`` of them: enough for both k-means); collections
    smaller than ``min_compress`` stay exact (compression does not pay there). ``use_gpu``
    None = use a GPU when faiss has one, False = never, True = require one.
    """
    if kind not in INDEX_KINDS:
        raise FedsimError(f"unknown index kind {kind!r}; valid: {', '.join(INDEX_KINDS)}")
    if backend not in ("auto", "faiss"):
        raise FedsimError(f"unknown index backend {backend!r}; valid: auto, faiss")
    x = np.ascontiguousarray(vectors, np.float32)
    faiss = _faiss()
    n, d = x.shape
    if kind == "flat" or n < max(min_compress, 2 ** nbits):
        cpu = faiss.IndexFlatL2(d)
    else:
        nl, mm = ivfpq_shape(n, d, nlist, m)
        cpu = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nl, mm, nbits)
        cpu.cp.seed = seed
        cpu.pq.cp.seed = seed
        n_train = max(64 * nl, (2 ** nbits) * 39)
        sample = x if n <= n_train else x[np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))]
        cpu.train(sample)
        cpu.nprobe = nprobe or max(1, nl // 8)
    cpu.add(x)
    if isinstance(cpu, faiss.IndexIVF):
        cpu.make_direct_map()  # lets re-ranking decode stored codes by id
    gpu = None
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu and n_gpus == 0:
        raise FedsimError("use_gpu=True but faiss sees no GPU (faiss-cpu build or no device)")
    if use_gpu is not False and n_gpus > 0:
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    return _FaissIndex(cpu, gpu)


# =============================================================== ontology-organised storage
@dataclass
class Leaf:
    """One ontology leaf's storage: the database ids, the global-feature index and attribute vectors."""

    region: str
    category: str
    ids: np.ndarray  # (n,) database ids
    index: Any
    attributes: np.ndarray  # (n, A) float32 attribute vectors used for ranking


@dataclass
class SearchResult:
    ids: np.ndarray  # (Q, k) database ids, -1 past the end
    scores: np.ndarray  # (Q, k) final scores (smaller = more similar)
    global_dist: np.ndarray  # (Q, k) ||f_q − f_i||² of the returned items


class OntologyIndex:
    """One index per ontology leaf (region/category) over a database's features.

    Parameters
    ----------
    ontology : Ontology
    features : Features
        The database; items are filed under ``features.category`` (the
        predicted category, as the offline phase does; pass true categories to
        file by ground truth).
    ids : array, optional
        Database ids (default ``0..N-1``).
    kind, **index_options
        See :func:`make_index`.

    Examples
    --------
    Two leaves (categories 0 and 2 of a 2-region ontology); the query predicted
    in category 2 only sees that leaf's items.

    >>> from fedsim.clients.cfor.ontology import AttributeGroup, Ontology
    >>> onto = Ontology("toy", ("a", "b"), (("a1",), ("b1", "b2")), (AttributeGroup("g", ("x", "y")),))
    >>> f = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, 0.6]], np.float32)
    >>> attrs = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], np.float32)
    >>> db = Features(f, np.array([0, 1, 1, 0]), np.array([0, 2, 2, 0]), attrs, attrs)
    >>> index = OntologyIndex(onto, db, use_gpu=False)
    >>> sorted(index.leaves)
    [0, 2]
    >>> q = Features(f[:1], np.array([1]), np.array([2]), attrs[:1], attrs[:1])
    >>> index.search(q, k=2, expand=False).ids.tolist()  # leaf 2 holds ids 1 and 2
    [[2, 1]]
    """

    def __init__(self, ontology: Ontology, features: Features, ids: np.ndarray | None = None,
                 kind: str = "flat", **index_options) -> None:
        self.ontology = ontology
        self.kind = kind
        self.index_options = index_options
        ids = np.arange(len(features)) if ids is None else np.asarray(ids, np.int64)
        self.dim = features.feature.shape[1]
        self.leaves: dict[int, Leaf] = {}
        for c in np.unique(features.category):
            sel = np.flatnonzero(features.category == c)
            r, name = ontology.leaf(int(c))
            self.leaves[int(c)] = Leaf(r, name, ids[sel], make_index(features.feature[sel], kind, **index_options),
                                       np.ascontiguousarray(features.vector[sel], np.float32))
        self.n = len(ids)

    # -- the leaves a query may search --------------------------------------------
    def _region_leaves(self, region: int) -> list[int]:
        return [c for c in self.leaves if self.ontology.category_region[c] == region]

    def candidate_leaves(self, region: int, category: int, k: int, level: str = "category") -> tuple[int, ...]:
        """Leaves searched for a query predicted in (region, category) (see the module doc)."""
        if level not in LEVELS:
            raise FedsimError(f"unknown search level {level!r}; valid: {', '.join(LEVELS)}")
        size = lambda cs: sum(self.leaves[c].ids.size for c in cs)  # noqa: E731
        if level == "category":
            if category in self.leaves and self.leaves[category].ids.size >= k:
                return (category,)
            level = "region"
        if level == "region":
            cs = self._region_leaves(region)
            if size(cs) >= k:
                return tuple(cs)
        return tuple(self.leaves)

    # -- search ---------------------------------------------------------------
    def search(self, query: Features, k: int = 10, *, m: int | None = None, level: str = "category",
               expand: bool = False, global_weight: float = 10.0, expand_k: int = 3,
               use_attributes: bool = True) -> SearchResult:
        """Coarse-to-fine search (filter → global ranking → attribute ranking → query expansion).

        ``m`` candidates from the global stage (default ``max(4k, 50)``),
        ``expand_k`` results averaged by query expansion.
        ``use_attributes=False`` drops the attribute term (score = global
        distance only; query expansion then averages global features only).
        """
        if not use_attributes:
            global_weight = 1.0
        if k < 1:
            raise FedsimError(f"k must be >= 1, got {k}")
        m = max(k, m if m is not None else max(4 * k, 50))
        nq = len(query)
        out_ids = np.full((nq, k), -1, np.int64)
        out_s = np.full((nq, k), np.inf, np.float32)
        out_g = np.full((nq, k), np.inf, np.float32)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in range(nq):
            key = self.candidate_leaves(int(query.region[i]), int(query.category[i]), k, level)
            groups.setdefault(key, []).append(i)
        for leaves, qs in groups.items():
            qs = np.array(qs)
            cand = self._global_stage(query.feature[qs], leaves, m)
            for row, qi in enumerate(qs):
                ids, s, g = self._fine_stage(query.feature[qi], query.vector[qi], cand, row, k,
                                             expand, global_weight, expand_k, float(use_attributes))
                out_ids[qi, :len(ids)], out_s[qi, :len(ids)], out_g[qi, :len(ids)] = ids, s, g
        return SearchResult(out_ids, out_s, out_g)

    def _global_stage(self, f: np.ndarray, leaves: Sequence[int], m: int):
        """Top-m by global distance over the kept leaves, per query (merged across leaves)."""
        dists, refs = [], []
        for c in leaves:
            leaf = self.leaves[c]
            d, i = leaf.index.search(f, min(m, leaf.ids.size))
            dists.append(d)
            refs.append(np.where(i >= 0, i, -1) + (np.int64(c) << 32) * (i >= 0))
        d, r = np.concatenate(dists, 1), np.concatenate(refs, 1)
        order = np.argsort(d, axis=1, kind="stable")[:, :m]
        return np.take_along_axis(d, order, 1), np.take_along_axis(r, order, 1)

    def _decode(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Database ids, (reconstructed) global features and attribute vectors of leaf refs."""
        ids = np.empty(len(refs), np.int64)
        feats = np.empty((len(refs), self.dim), np.float32)
        attrs = np.empty((len(refs), self.ontology.n_attributes), np.float32)
        leaf_of, local = refs >> 32, refs & 0xFFFFFFFF
        for c in np.unique(leaf_of):
            sel = leaf_of == c
            leaf = self.leaves[int(c)]
            ids[sel] = leaf.ids[local[sel]]
            feats[sel] = leaf.index.reconstruct_batch(local[sel])
            attrs[sel] = leaf.attributes[local[sel]]
        return ids, feats, attrs

    def _fine_stage(self, f_q, a_q, cand, row, k, expand, lam, expand_k, w_attr):
        d_all, r_all = cand
        ok = r_all[row] >= 0
        d, refs = d_all[row][ok], r_all[row][ok]
        ids, feats, attrs = self._decode(refs)
        s = w_attr * ((attrs - a_q) ** 2).sum(1) + lam * d
        order = np.argsort(s, kind="stable")
        if expand and len(order):
            top = order[:expand_k]
            fq = np.vstack([f_q[None], feats[top]]).mean(0)
            aq = np.vstack([a_q[None], attrs[top]]).mean(0)
            s = w_attr * ((attrs - aq) ** 2).sum(1) + lam * ((feats - fq) ** 2).sum(1)
            order = np.argsort(s, kind="stable")
        top = order[:k]
        return ids[top], s[top], d[top]

    # -- storage ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``ROOT/<region>/<category>/{index.faiss | vectors.npy, items.npz}`` + ``ROOT/ontology.json``."""
        faiss = _faiss()
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        (root / "ontology.json").write_text(json.dumps(
            {"ontology": self.ontology.to_dict(), "kind": self.kind, "dim": self.dim, "n": self.n}, indent=1))
        for c, leaf in self.leaves.items():
            d = root / leaf.region / leaf.category
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / "items.npz", ids=leaf.ids, attributes=leaf.attributes, category=np.array(c))
            faiss.write_index(leaf.index.cpu, str(d / "index.faiss"))
        return root

    @classmethod
    def load(cls, path: str | Path) -> OntologyIndex:
        """Read a tree written by :meth:`save`."""
        root = Path(path)
        try:
            meta = json.loads((root / "ontology.json").read_text())
        except (OSError, ValueError) as exc:
            raise FedsimError(f"{root} is not a CFOR index folder (ontology.json: {exc})") from None
        self = cls.__new__(cls)
        self.ontology = Ontology.from_dict(meta["ontology"], str(root / "ontology.json"))
        self.kind, self.dim, self.n, self.index_options = meta["kind"], meta["dim"], meta["n"], {}
        self.leaves = {}
        for items in sorted(root.glob("*/*/items.npz")):
            with np.load(items) as z:
                c, ids, attrs = int(z["category"]), z["ids"], z["attributes"]
            faiss = _faiss()
            if (items.parent / "index.faiss").exists():
                index = _FaissIndex(faiss.read_index(str(items.parent / "index.faiss")))
                if isinstance(index.cpu, faiss.IndexIVF):
                    index.cpu.make_direct_map()
            else:  # a tree written before exact leaves were faiss indexes too
                index = make_index(np.load(items.parent / "vectors.npy"), "flat", use_gpu=False)
            r, name = self.ontology.leaf(c)
            self.leaves[c] = Leaf(r, name, ids, index, attrs)
        return self
