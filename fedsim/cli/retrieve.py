"""``fedsim retrieve``: coarse-to-fine retrieval with a trained ``cfor`` run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedsim.clients.cfor.metrics import relevance
from fedsim.clients.cfor.retrieval import INDEX_KINDS, LEVELS
from fedsim.errors import FedsimError, check_int_at_least

if TYPE_CHECKING:
    from fedsim.clients.cfor.ontology import Ontology


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``fedsim retrieve RUN_DIR [...]`` to an argparse sub-parser collection."""
    p = subparsers.add_parser("retrieve", help="coarse-to-fine retrieval with a trained cfor run's model")
    p.add_argument("run_dir", help="a finished `fedsim run --task cfor` directory")
    p.add_argument("--image", action="append", help="query image file (repeatable); default: a test item")
    p.add_argument("--silo", type=int, default=0, help="take the query from this silo's test split (default 0)")
    p.add_argument("--item", type=int, default=0, help="index in that test split (default 0)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--index", choices=INDEX_KINDS, default="flat", help="flat (exact) or ivfpq (compressed)")
    p.add_argument("--level", choices=LEVELS, default="category",
                   help="ontology filter: predicted category (default), region, or none")
    p.add_argument("--expand", action="store_true", help="re-rank with mean-vector query expansion")
    p.add_argument("--save-index", metavar="DIR", help="also write the ontology-organised index tree here")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_retrieve)
    return p


def _names(onto: Ontology, attrs: np.ndarray) -> list[str]:
    return [onto.attribute_names[j] for j in np.flatnonzero(attrs)]


def cmd_retrieve(args) -> int:
    """Handler of ``fedsim retrieve``: print the query's predictions and its top-k."""

    from fedsim.clients.cfor.run import _cached_index, _cached_run, retrieve

    check_int_at_least("-k", args.k, 1)
    run = _cached_run(str(Path(args.run_dir).resolve()))
    onto = run.task.ontology
    truth = None
    if args.image:
        query, label = args.image, ", ".join(args.image)
    else:
        if not 0 <= args.silo < run.n_silos:
            raise FedsimError(f"--silo must be in 0..{run.n_silos - 1}, got {args.silo}")
        part = run.parts[args.silo]
        if not 0 <= args.item < len(part.y_test):
            raise FedsimError(f"--item must be in 0..{len(part.y_test) - 1} for silo {args.silo}, got {args.item}")
        query, truth = part.x_test[args.item], part.y_test[args.item].numpy()
        label = f"silo {args.silo} test item {args.item}"
    res = retrieve(args.run_dir, query, args.k, kind=args.index, level=args.level, expand=args.expand)
    if args.save_index:
        _cached_index(str(Path(args.run_dir).resolve()), args.index).save(args.save_index)
    rows = []
    for qi in range(len(res.ids)):
        q = res.query.take([qi])
        entry = {"query": label if len(res.ids) == 1 else args.image[qi],
                 "predicted": {"region": onto.regions[int(q.region[0])],
                               "category": onto.category_names[int(q.category[0])],
                               "attributes": _names(onto, q.attributes[0])},
                 "results": []}
        if truth is not None:
            entry["truth"] = {"category": onto.category_names[int(truth[1])], "attributes": _names(onto, truth[2:])}
        for rank, (i, s) in enumerate(zip(res.ids[qi], res.scores[qi]), 1):
            if i < 0:
                break
            y = run.db_labels[i]
            item = {"rank": rank, "id": int(i), "silo": int(run.db_origin[i, 0]), "item": int(run.db_origin[i, 1]),
                    "leaf": "/".join(onto.leaf(int(run.database.category[i]))), "score": float(s),
                    "category": onto.category_names[int(y[1])], "attributes": _names(onto, y[2:])}
            if truth is not None:
                item["match"] = bool(relevance(truth[None, 2:], y[None, None, 2:])[0, 0])
            entry["results"].append(item)
        rows.append(entry)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for e in rows:
        p = e["predicted"]
        print(f"query: {e['query']}")
        if "truth" in e:
            print(f"  truth:     {e['truth']['category']:<9} {' '.join(e['truth']['attributes'])}")
        print(f"  predicted: {p['region']}/{p['category']:<9} {' '.join(p['attributes'])}")
        print(f"  {'rank':>4} {'id':>6} {'silo:item':>9}  {'leaf':<14} {'score':>6}  attributes (ground truth)"
              + ("  match" if "truth" in e else ""))
        for r in e["results"]:
            print(f"  {r['rank']:>4} {r['id']:>6} {r['silo']:>4}:{r['item']:<4}  {r['leaf']:<14} {r['score']:>6.3f}  "
                  f"{r['category']}: {' '.join(r['attributes'])}" + (f"  {'yes' if r['match'] else 'no'}"
                                                                    if 'match' in r else ""))
    if truth is not None:
        m = [r["match"] for r in rows[0]["results"]]
        print(f"attribute matches in the top {len(m)}: {sum(m)}")
    return 0
