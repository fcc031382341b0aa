"""Approximate top-K (faiss IVF) against exact retrieval: recall@K and query time.

    .venv/bin/python benchmarks/bench_index.py [--k 10]

1. ALS (defaults) on ml-1m-implicit train + valid: for every user, the top-K unseen items
   from the IVF index against the exact top-K (recall@K = share of the exact list found),
   at several ``n_probe``; milliseconds per single-user query.
2. A large generated catalogue (500,000 items, 64 dimensions, clustered vectors): the same
   against exact brute force (one matrix product and ``torch.topk``), 1,000 queries.

Prints tables and writes ``benchmarks/results/index.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recforge._fs import atomic_write_text  # noqa: E402
from recforge.serving.index import IVFIndex  # noqa: E402


def exact_top(users: np.ndarray, items: np.ndarray, k: int, seen=None) -> np.ndarray:
    s = torch.from_numpy(users) @ torch.from_numpy(items).T
    if seen is not None:
        rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))
        s[torch.from_numpy(rows), torch.from_numpy(seen.indices.astype(np.int64))] = -np.inf
    return torch.topk(s, k, dim=1).indices.numpy()


def approx_top(index: IVFIndex, users: np.ndarray, k: int, seen=None) -> tuple[np.ndarray, float]:
    out = np.full((len(users), k), -1)
    t = time.perf_counter()
    for i, u in enumerate(users):  # single-user queries, as the server makes them
        extra = 0 if seen is None else seen.indptr[i + 1] - seen.indptr[i]
        idx, _ = index.search(u, k + extra)
        row = idx[0]
        if seen is not None:
            row = row[~np.isin(row, seen.indices[seen.indptr[i]:seen.indptr[i + 1]])]
        row = row[row >= 0][:k]
        out[i, :len(row)] = row
    return out, (time.perf_counter() - t) / len(users) * 1000


def recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "index.json")
    args = ap.parse_args(argv)
    console, k, result = Console(), args.k, {}
    torch.set_num_threads(1)

    from recforge.data.readers import read_many
    from recforge.models import create_model

    base = Path(os.environ.get("RECFORGE_TEST_DATA", REPO.parent / "shared" / "data"))
    d = base / "ml-1m-implicit"
    train, valid = read_many([d / "train.txt", d / "valid.txt"])
    model = create_model("als").fit(train.concat(valid))
    users, items = (t.numpy() for t in model.dot_factors())
    seen = model.seen_.tocsr()
    truth = exact_top(users, items, k, seen)
    t = time.perf_counter()
    for u in range(1000):
        exact_top(users[u:u + 1], items, k, seen[u:u + 1])
    exact_ms = (time.perf_counter() - t)
    table = Table(title=f"ALS on ml-1m-implicit ({items.shape[0]:,} items, {users.shape[0]:,} "
                        f"users): recall@{k} of the IVF index against exact top-{k}")
    for c in ("n_lists", "n_probe", f"recall@{k}", "ms / query"):
        table.add_column(c, justify="right")
    rows = []
    for n_probe in (1, 4, 8, 16):
        index = IVFIndex(items, n_probe=n_probe)
        got, ms = approx_top(index, users, k, seen)
        rows.append({"n_lists": index.n_lists, "n_probe": index.n_probe,
                     "recall": recall(truth, got), "ms_per_query": ms})
        table.add_row(str(index.n_lists), str(index.n_probe), f"{rows[-1]['recall']:.4f}",
                      f"{ms:.3f}")
    table.add_row("exact", "", "1.0000", f"{exact_ms:.3f}")
    console.print(table)
    result["ml-1m-implicit"] = {"rows": rows, "exact_ms_per_query": exact_ms}

    rng = np.random.default_rng(0)
    n_items, dim, n_q = 500_000, 64, 1000
    centers = rng.normal(size=(256, dim)).astype(np.float32)
    items = (centers[rng.integers(0, 256, n_items)]
             + 0.5 * rng.normal(size=(n_items, dim))).astype(np.float32)
    queries = (centers[rng.integers(0, 256, n_q)]
               + 0.5 * rng.normal(size=(n_q, dim))).astype(np.float32)
    t = time.perf_counter()
    truth = np.concatenate([exact_top(queries[i:i + 1], items, k) for i in range(n_q)])
    exact_ms = (time.perf_counter() - t) / n_q * 1000
    table = Table(title=f"generated catalogue: {n_items:,} items x {dim} dims, {n_q} queries")
    for c in ("n_lists", "n_probe", f"recall@{k}", "ms / query", "build s"):
        table.add_column(c, justify="right")
    rows = []
    for n_probe in (4, 16, 64):
        t = time.perf_counter()
        index = IVFIndex(items, n_probe=n_probe)
        build = time.perf_counter() - t
        got, ms = approx_top(index, queries, k)
        rows.append({"n_lists": index.n_lists, "n_probe": index.n_probe,
                     "recall": recall(truth, got), "ms_per_query": ms, "build_s": build})
        table.add_row(str(index.n_lists), str(index.n_probe), f"{rows[-1]['recall']:.4f}",
                      f"{ms:.3f}", f"{build:.1f}")
    table.add_row("exact", "", "1.0000", f"{exact_ms:.3f}", "")
    console.print(table)
    result["generated-500k"] = {"rows": rows, "exact_ms_per_query": exact_ms}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
