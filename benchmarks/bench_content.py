"""Content-based and hybrid models on ml-latest-small: cold items, warm items, new users.

    .venv/bin/python benchmarks/bench_content.py [--seed 0] [--out FILE]

1. Cold start: ratings >= 3.5 are positives; 20% of the items are held out with all their
   events (``cold_start_items``, seeded); every model ranks only the held-out items (full
   ranking over them). A random ranking's Recall@K is ``min(K, C) / C`` for ``C`` cold
   items, whatever the user; it is printed beside the models.
2. Warm items: an 80/20 random split of the same positives; ``hybrid`` against every pure
   collaborative model.
3. ``recommend_for_history`` latency for a 5-item history (median and 95th percentile of
   200 calls, random histories) for every model that supports it.

Prints tables and writes JSON (default ``benchmarks/results/ml-latest-small-content.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.data.features import movielens_item_features  # noqa: E402
from recforge.data.filters import to_implicit  # noqa: E402
from recforge.data.movielens import load_movielens  # noqa: E402
from recforge.data.split import cold_start_items, random_split  # noqa: E402
from recforge.evaluation import evaluate  # noqa: E402
from recforge.models.registry import create_model  # noqa: E402

CF_MODELS = ["pop", "itemknn", "ease", "als", "bpr", "lightgcn"]
# Chosen on a validation cold-start split of the training part (cold_start_items(train,
# 0.2, seed=1)): Recall@20 on cold items 0.064 with equal group weights, 0.074 with genres
# x2, 0.086 genres x4 + year x2, 0.091 adding tags x0.5 (random ranking: 0.017).
CONTENT_WEIGHTS = {"genres": 4.0, "year": 2.0, "tags": 0.5}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "content": ("content", {}),
    "content (tuned weights)": ("content", {"feature_weights": CONTENT_WEIGHTS}),
    "hybrid": ("hybrid", {}),
    "hybrid_bpr": ("hybrid_bpr", {}),
}
METRICS = "recall@20,ndcg@20"


def shared_dir() -> Path:
    env = os.environ.get("RECFORGE_TEST_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    if not (base / "ml-latest-small").is_dir():
        sys.exit(f"ml-latest-small not found under {base}: set RECFORGE_TEST_DATA")
    return base


def fit(name: str, train, features, **params) -> tuple[Any, float]:
    model = create_model(name, **params)
    start = time.perf_counter()
    if model.capabilities.uses_item_features:
        model.fit(train, item_features=features)
    else:
        model.fit(train)
    return model, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "ml-latest-small-content.json")
    args = ap.parse_args(argv)
    console = Console()
    torch.manual_seed(args.seed)

    ml = load_movielens("ml-latest-small", data_dir=shared_dir(), download=False,
                        progress=False)
    positives = to_implicit(ml.interactions, 3.5)
    features = movielens_item_features(ml)
    print(f"{positives}\n{features}")
    result: dict[str, Any] = {"dataset": "ml-latest-small", "positives": "rating >= 3.5",
                              "seed": args.seed, "recforge": __version__,
                              "torch": torch.__version__, "python": platform.python_version(),
                              "threads": torch.get_num_threads()}

    # 1. cold items -----------------------------------------------------------------------
    split = cold_start_items(positives, test_size=0.2, seed=args.seed)
    cold = np.unique(split.test.item)
    cold_ids = positives.items.ids[cold]
    k = 20
    random_recall = min(k, len(cold)) / len(cold)
    table = Table(title=f"cold items: rank {len(cold):,} held-out items "
                        f"({len(split.test):,} test events, {len(np.unique(split.test.user)):,} users)")
    for col in ("model", "Recall@20", "NDCG@20", "x random", "fit s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    cold_rows = []
    for name, (model_name, params) in VARIANTS.items():
        model, fit_s = fit(model_name, split.train, features, **params)
        r = evaluate(model, split.train, split.test, metrics=METRICS, candidates=cold_ids)
        row = {"model": name, "params": params, **r.summary, "fit_s": round(fit_s, 2),
               "x_random": r.summary["Recall@20"] / random_recall}
        cold_rows.append(row)
        table.add_row(name, f"{row['Recall@20']:.4f}", f"{row['NDCG@20']:.4f}",
                      f"{row['x_random']:.1f}", f"{fit_s:.1f}")
    table.add_row("random ranking", f"{random_recall:.4f}", "", "1.0", "")
    console.print(table)
    result["cold"] = {"n_cold_items": int(len(cold)), "random_recall@20": random_recall,
                      "rows": cold_rows}

    # 2. warm items -----------------------------------------------------------------------
    warm = random_split(positives, test_size=0.2, seed=args.seed)
    table = Table(title="random 80/20 split (warm items), full ranking")
    for col in ("model", "Recall@20", "NDCG@20", "fit s"):
        table.add_column(col, justify="right" if col != "model" else "left")
    warm_rows = []
    models: dict[str, Any] = {}
    for name, (model_name, params) in [*((n, (n, {})) for n in CF_MODELS), *VARIANTS.items()]:
        model, fit_s = fit(model_name, warm.train, features, **params)
        models[name] = model
        r = evaluate(model, warm.train, warm.test, metrics=METRICS)
        row = {"model": name, "params": params, **r.summary, "fit_s": round(fit_s, 2)}
        warm_rows.append(row)
        table.add_row(name, f"{row['Recall@20']:.4f}", f"{row['NDCG@20']:.4f}", f"{fit_s:.1f}")
    console.print(table)
    best_cf = max((r for r in warm_rows if r["model"] in CF_MODELS),
                  key=lambda r: r["Recall@20"])
    hybrid = next(r for r in warm_rows if r["model"] == "hybrid")
    gap = 1 - hybrid["Recall@20"] / best_cf["Recall@20"]
    console.print(f"hybrid Recall@20 {hybrid['Recall@20']:.4f} vs best CF {best_cf['model']} "
                  f"{best_cf['Recall@20']:.4f}: {gap:+.1%} below")
    result["warm"] = {"rows": warm_rows, "best_cf": best_cf["model"],
                      "hybrid_gap_vs_best_cf": gap}

    # 3. recommend_for_history latency ----------------------------------------------------
    mf, _ = fit("mf", ml.interactions, None, epochs=10)
    models["mf"] = mf
    rng = np.random.default_rng(args.seed)
    table = Table(title="recommend_for_history: 5 items, k=10 (200 calls)")
    for col in ("model", "median ms", "p95 ms"):
        table.add_column(col, justify="right" if col != "model" else "left")
    lat_rows = []
    for name in ("content", "hybrid", "hybrid_bpr", "itemknn", "ease", "als", "mf"):
        model = models[name]
        ids = model.items_.ids
        for _ in range(5):  # warm-up
            model.recommend_for_history(ids[rng.choice(len(ids), 5, replace=False)], k=10)
        times = []
        for _ in range(200):
            hist = ids[rng.choice(len(ids), 5, replace=False)]
            t = time.perf_counter()
            model.recommend_for_history(hist, k=10)
            times.append((time.perf_counter() - t) * 1000)
        row = {"model": name, "median_ms": float(np.median(times)),
               "p95_ms": float(np.percentile(times, 95))}
        lat_rows.append(row)
        table.add_row(name, f"{row['median_ms']:.2f}", f"{row['p95_ms']:.2f}")
    console.print(table)
    result["history_latency"] = lat_rows

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
