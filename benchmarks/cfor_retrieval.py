"""CFOR retrieval: MAP@k (k = 1…30) and query latency, exact vs compressed index.

Trains the CFOR model on pooled synthetic garment images (or loads a saved
state dict with ``--model``), then embeds a database of ``--n-db`` (default
100,000) freshly generated images and ``--n-query`` query images, and
compares:

- MAP@k curves (k = 1…30) for: global-feature search only; the ontology filter
  + global ranking; coarse-to-fine search (filter → global ranking → attribute
  ranking) with 0/1 or soft (probability) attribute vectors; the same with
  mean-vector query expansion over the top 3 or top k; and on the compressed
  index. Relevance is attribute match of ground truths: per attribute of the
  query (the headline, as in the write-up: ``attribute_map_at_k``) and,
  stricter, a result is relevant only if it has every attribute of the query
  (``contains``, in brackets);
- latency per query: the raw index search over the whole database (faiss
  ``IndexFlatL2`` vs ``IndexIVFPQ``) and the end-to-end coarse-to-fine search on
  the ontology-organised indexes, one query at a time and batched;
- memory per stored vector.

faiss, BLAS and torch run single-threaded (``--threads`` for faiss) so that
numbers on a shared machine are comparable.

    python benchmarks/cfor_retrieval.py                  # the recorded numbers
    python benchmarks/cfor_retrieval.py --n-db 20000 --steps 300   # a quick look
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/faiss load BLAS
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fedsim.clients.cfor.data import CFORSiloData, generate  # noqa: E402
from fedsim.clients.cfor.metrics import map_of, relevance  # noqa: E402
from fedsim.clients.cfor.retrieval import Features, OntologyIndex, extract  # noqa: E402
from fedsim.clients.cfor.task import CFORTask  # noqa: E402


def embed(task: CFORTask, model, n: int, seed: int, thresholds, chunk: int = 5000) -> tuple[Features, np.ndarray]:
    """Generate ``n`` images in chunks and keep only their features and true labels."""
    feats, labels = [], []
    for a in range(0, n, chunk):
        x, y = generate(task.ontology, min(chunk, n - a), np.random.default_rng([seed, a]))
        feats.append(extract(task, model, torch.from_numpy(x), thresholds))
        labels.append(y)
    cat = lambda k: np.concatenate([getattr(f, k) for f in feats])  # noqa: E731
    return Features(cat("feature"), cat("region"), cat("category"), cat("probs"), cat("attributes"),
                    cat("vector")), np.concatenate(labels)


def search_map(index: OntologyIndex, q: Features, q_attrs, db_attrs, k: int, **kw) -> dict[str, np.ndarray]:
    """MAP@1…k of one search configuration: per attribute (headline) and strict (all attributes)."""
    ids = index.search(q, k, **kw).ids
    return {"attribute": map_of(ids, q_attrs, db_attrs, "attribute"),
            "contains": map_of(ids, q_attrs, db_attrs, "contains")}


def latency(fn, n: int) -> float:
    """Median wall time of ``fn(i)`` over ``i < n`` in ms."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-db", type=int, default=100_000)
    ap.add_argument("--n-query", type=int, default=500)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--steps", type=int, default=1000, help="training steps (ignored with --model)")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--model", help="load a CFORNet state dict instead of training")
    ap.add_argument("--save-model", default="/tmp/cfor_retrieval_model.pt")
    ap.add_argument("--nprobe", type=int, help="IVF lists probed (default nlist/8)")
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--out", default="/tmp/cfor_retrieval.json")
    ap.add_argument("--figure", default="benchmarks/figures/cfor_map_at_k.png")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t_start = time.perf_counter()
    task = CFORTask({"lr": args.lr})
    onto = task.ontology
    torch.manual_seed(0)
    model = task.model()
    # training / validation data (pooled, global priors)
    xs = [generate(onto, n, np.random.default_rng([7, i])) for i, n in enumerate((args.n_train, 1500))]
    t = torch.from_numpy
    data = CFORSiloData(t(xs[0][0]), t(xs[0][1]), t(xs[1][0][:1]), t(xs[1][1][:1]), t(xs[1][0]), t(xs[1][1]))
    if args.model:
        model.load_state_dict(torch.load(args.model))
        print(f"loaded {args.model}")
    else:
        t0 = time.perf_counter()
        loss = task.train(model, data, args.steps, torch.Generator().manual_seed(0))["loss"]
        print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s (last loss {loss:.3f})", flush=True)
        if args.save_model:
            torch.save(model.state_dict(), args.save_model)
    thr = task.thresholds(model, data)
    t0 = time.perf_counter()
    db, db_y = embed(task, model, args.n_db, 100, thr)
    q, q_y = embed(task, model, args.n_query, 200, thr)
    t_embed = time.perf_counter() - t0
    print(f"embedded {args.n_db} database + {args.n_query} query images in {t_embed:.0f} s", flush=True)
    db_attrs, q_attrs = db_y[:, 2:], q_y[:, 2:]
    n_rel = relevance(q_attrs, db_attrs).sum(1)  # items having every attribute of the query
    cat_acc = float((q.category == q_y[:, 1]).mean())

    # ---- indexes
    t0 = time.perf_counter()
    flat = OntologyIndex(onto, db, kind="flat")
    t_flat = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq = OntologyIndex(onto, db, kind="ivfpq", nprobe=args.nprobe)
    t_pq = time.perf_counter() - t0
    zeros = lambda f: np.zeros(len(f), int)  # noqa: E731
    one = Features(db.feature, zeros(db), zeros(db), db.probs, db.attributes, db.vector)
    q_one = Features(q.feature, zeros(q), zeros(q), q.probs, q.attributes, q.vector)
    # the same database with 0/1 predicted attributes as ranking vectors (the write-up's attribute vectors)
    hard = OntologyIndex(onto, Features(db.feature, db.region, db.category, db.probs, db.attributes))
    q_hard = Features(q.feature, q.region, q.category, q.probs, q.attributes)
    flat_all = OntologyIndex(onto, one, kind="flat")  # a single leaf: no ontology filter
    pq_all = OntologyIndex(onto, one, kind="ivfpq", nprobe=args.nprobe)
    print(f"indexes built: flat {t_flat:.1f} s, ivfpq {t_pq:.1f} s", flush=True)

    k = args.k
    curves = {
        "global feature only (exact)": search_map(flat_all, q_one, q_attrs, db_attrs, k,
                                                  use_attributes=False, expand=False),
        "ontology filter + global (exact)": search_map(flat, q, q_attrs, db_attrs, k,
                                                       use_attributes=False, expand=False),
        "coarse-to-fine, 0/1 attributes, λ=1 (exact)": search_map(hard, q_hard, q_attrs, db_attrs, k,
                                                                   global_weight=1.0),
        "coarse-to-fine, soft attributes, λ=10 (exact)": search_map(flat, q, q_attrs, db_attrs, k),
        "  + query expansion, e=3 (exact)": search_map(flat, q, q_attrs, db_attrs, k, expand=True),
        "  + query expansion, e=k (exact)": search_map(flat, q, q_attrs, db_attrs, k, expand=True, expand_k=k),
        "coarse-to-fine, soft attributes, λ=10 (IVF-PQ)": search_map(pq, q, q_attrs, db_attrs, k),
        "global feature only (IVF-PQ)": search_map(pq_all, q_one, q_attrs, db_attrs, k,
                                                   use_attributes=False, expand=False),
    }
    # ---- recall of the compressed index against the exact one (global features, whole database)
    raw_flat, raw_pq = flat_all.leaves[0].index, pq_all.leaves[0].index
    _, i_exact = raw_flat.search(q.feature, 10)
    _, i_pq = raw_pq.search(q.feature, 10)
    recall10 = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_exact, i_pq)]))

    # ---- latency
    nl = min(args.latency_queries, len(q))
    lat = {
        "raw search, whole database, exact": latency(lambda i: raw_flat.search(q.feature[i:i + 1], k), nl),
        "raw search, whole database, IVF-PQ": latency(lambda i: raw_pq.search(q.feature[i:i + 1], k), nl),
        "coarse-to-fine, exact": latency(lambda i: flat.search(q.take([i]), k), nl),
        "coarse-to-fine, IVF-PQ": latency(lambda i: pq.search(q.take([i]), k), nl),
        "coarse-to-fine + query expansion, exact": latency(lambda i: flat.search(q.take([i]), k, expand=True), nl),
        "global only, no filter, exact (same pipeline)": latency(
            lambda i: flat_all.search(q_one.take([i]), k, use_attributes=False, expand=False), nl),
    }
    batch = {}
    for name, fn in (("coarse-to-fine, exact", lambda: flat.search(q, k)),
                     ("coarse-to-fine, IVF-PQ", lambda: pq.search(q, k))):
        batch[name] = latency(lambda _: fn(), 3) / len(q)
    pq_leaf = [leaf.index.cpu for leaf in pq.leaves.values()]
    code = [getattr(ix, "code_size", ix.d * 4) for ix in pq_leaf]
    memory = {"exact bytes/vector": db.feature.shape[1] * 4,
              "IVF-PQ bytes/vector (code)": float(np.average(code, weights=[ix.ntotal for ix in pq_leaf])),
              "attribute vector bytes/item (stored as float32)": onto.n_attributes * 4}
    leaf_sizes = {"/".join(onto.leaf(c)): int(leaf.ids.size) for c, leaf in flat.leaves.items()}

    lines = [f"database {args.n_db} images, {args.n_query} queries, D = {db.feature.shape[1]}, "
             f"{len(flat.leaves)} ontology leaves {leaf_sizes}",
             f"query category accuracy (coarse-to-fine prediction): {cat_acc:.3f}; queries with >= 1 relevant "
             f"item: {(n_rel > 0).sum()} / {len(n_rel)}; median relevant items per query: {int(np.median(n_rel))}",
             f"IVF-PQ recall@10 vs exact (global features, whole database): {recall10:.3f}", "",
             "MAP@k, per-attribute match (strict all-attributes match in brackets):", "",
             "| search | MAP@1 | MAP@5 | MAP@10 | MAP@20 | MAP@30 |", "|---|---|---|---|---|---|"]
    for name, c in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{c['attribute'][j - 1]:.3f} ({c['contains'][j - 1]:.3f})"
                                                 for j in (1, 5, 10, 20, 30) if j <= k) + " |")
    lines += ["", "| latency (median ms / query, one query at a time) | ms |", "|---|---|"]
    lines += [f"| {n} | {v:.3f} |" for n, v in lat.items()]
    lines += [f"| batched ({len(q)} queries), {n} | {v:.3f} |" for n, v in batch.items()]
    lines += ["", f"memory: {memory}", f"index build: flat {t_flat:.1f} s, IVF-PQ (train + add) {t_pq:.1f} s"]
    text = "\n".join(lines)
    print(text)
    curves_json = {n: {m: v.tolist() for m, v in c.items()} for n, c in curves.items()}
    Path(args.out).write_text(json.dumps({"args": vars(args), "curves": curves_json, "latency_ms": lat, "batched_ms": batch, "memory": memory,
                                          "recall10_ivfpq": recall10, "report": text}, indent=1))
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, c in curves.items():
            ax.plot(np.arange(1, k + 1), c["attribute"], label=name, ls="--" if "IVF-PQ" in name else "-")
        ax.set_xlabel("k")
        ax.set_ylabel("MAP@k (per-attribute match)")
        ax.set_title(f"CFOR retrieval, {args.n_db:,} synthetic database images")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
    print(f"total {time.perf_counter() - t_start:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
