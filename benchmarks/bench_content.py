"""Content-based and hybrid models on ml-latest-small: cold items, warm items, new users.

    .venv/bin/python benchmarks/bench_content.py [--seed 0] [--sections cold,warm,latency]
                                                 [--models M,...] [--features tfidf,text,tfidf+text] [--out FILE]

Item features come in two versions: today's default (genres, decade, and the title, genre
words and tags as one text encoded by the bundled wordllama encoder: ``text``) and the
TF-IDF one (``text_encoder="tfidf"``: title words and tag words as TF-IDF groups). Every
feature model runs on both (``hybrid`` also on the two text forms together).

1. Cold start: ratings >= 3.5 are positives; 20% of the items are held out with all their
   events (``cold_start_items``, seeded); every model ranks only the held-out items (full
   ranking over them). A random ranking's Recall@K is ``min(K, C) / C`` for ``C`` cold
   items, whatever the user; it is printed beside the models.
2. Warm items: an 80/20 random split of the same positives; ``hybrid`` against every pure
   collaborative model.
3. ``recommend_for_history`` latency for a 5-item history (median and 95th percentile of
   200 calls, random histories) for every model that supports it.

Prints tables and writes JSON (default ``benchmarks/results/ml-latest-small-content.json``;
the sections run replace theirs in an existing file).
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
from recforge.data.features import combine, movielens_item_features  # noqa: E402
from recforge.data.filters import to_implicit  # noqa: E402
from recforge.data.movielens import load_movielens  # noqa: E402
from recforge.data.split import cold_start_items, random_split  # noqa: E402
from recforge.data.vectors import vectors_from_arrays  # noqa: E402
from recforge.evaluation import evaluate  # noqa: E402
from recforge.models.registry import create_model  # noqa: E402

CF_MODELS = ["pop", "itemknn", "ease", "als", "bpr", "lightgcn"]
# TF-IDF features, chosen on a validation cold-start split of the training part
# (cold_start_items(train, 0.2, seed=1)): Recall@20 on cold items 0.064 with equal group
# weights, 0.074 with genres x2, 0.086 genres x4 + year x2, 0.091 adding tags x0.5 (random
# ranking: 0.017).
CONTENT_WEIGHTS = {"genres": 4.0, "year": 2.0, "tags": 0.5}
# Text-vector features, chosen on the same validation split by a grid over genres and year
# in {0.25, 0.5, 1, 2} (text 1): 0.144 at genres 0.5 + year 0.5, 0.122 with equal weights,
# 0.065 at genres 2 + year 0.25.
TEXT_WEIGHTS = {"genres": 0.5, "year": 0.5}
#: label -> (model, params, features: "tfidf" or "text")
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "content": ("content", {}, "tfidf"),
    "content (tuned weights)": ("content", {"feature_weights": CONTENT_WEIGHTS}, "tfidf"),
    "content, text vectors": ("content", {}, "text"),
    "content, text vectors (tuned weights)": ("content", {"feature_weights": TEXT_WEIGHTS},
                                              "text"),
    "hybrid": ("hybrid", {}, "tfidf"),
    "hybrid, text vectors": ("hybrid", {}, "text"),
    # feature_reg chosen on the validation split: TF-IDF 0.216 at 10 (the default), 0.231
    # at 30; text vectors 0.165 / 0.178 / 0.202 / 0.190 at 1 / 3 / 30 / 100; both 0.234 at 30
    "content, TF-IDF + text vectors": ("content", {}, "tfidf+text"),
    "content, TF-IDF + text vectors (text's tuned weights)": (
        "content", {"feature_weights": TEXT_WEIGHTS}, "tfidf+text"),
    "hybrid, TF-IDF + text vectors": ("hybrid", {}, "tfidf+text"),
    "hybrid (feature_reg 30)": ("hybrid", {"feature_reg": 30.0}, "tfidf"),
    "hybrid, TF-IDF + text vectors (feature_reg 30)": ("hybrid", {"feature_reg": 30.0},
                                                       "tfidf+text"),
    "hybrid_bpr": ("hybrid_bpr", {}, "tfidf"),
    "hybrid_bpr, text vectors": ("hybrid_bpr", {}, "text"),
    "vbpr": ("vbpr", {}, "tfidf"),
    "vbpr, text vectors": ("vbpr", {}, "text"),
    "hybrid_bpr, TF-IDF + text vectors": ("hybrid_bpr", {}, "tfidf+text"),
    "vbpr, TF-IDF + text vectors": ("vbpr", {}, "tfidf+text"),
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
    ap.add_argument("--sections", default="cold,warm,latency",
                    help="comma-separated: cold, warm, latency")
    ap.add_argument("--cf", default=",".join(CF_MODELS),
                    help="comma-separated collaborative models of the warm section")
    ap.add_argument("--models", default=None,
                    help="comma-separated feature models to run (default: all of "
                         "content, hybrid, hybrid_bpr, vbpr)")
    ap.add_argument("--features", default=None,
                    help="comma-separated feature sets to run (default: all of tfidf, "
                         "text, tfidf+text)")
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "ml-latest-small-content.json")
    args = ap.parse_args(argv)
    console = Console()
    torch.manual_seed(args.seed)

    sections = set(args.sections.split(","))
    CF_MODELS[:] = [m for m in args.cf.split(",") if m]
    if args.models:
        keep = set(args.models.split(","))
        for label in [k for k, v in VARIANTS.items() if v[0] not in keep]:
            del VARIANTS[label]
    if args.features:
        keep = set(args.features.split(","))
        for label in [k for k, v in VARIANTS.items() if v[2] not in keep]:
            del VARIANTS[label]
    unknown = sections - {"cold", "warm", "latency"}
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}")
    ml = load_movielens("ml-latest-small", data_dir=shared_dir(), download=False,
                        progress=False)
    positives = to_implicit(ml.interactions, 3.5)
    tfidf = movielens_item_features(ml, text_encoder="tfidf")
    start = time.perf_counter()
    text = movielens_item_features(ml)  # the default: the bundled text encoder
    encode_s = time.perf_counter() - start
    feature_sets = {"tfidf": tfidf, "text": text,
                    "tfidf+text": combine(tfidf, text.select_groups(["text"]))}
    print(f"{positives}\ntfidf: {tfidf}\ntext: {text} (built in {encode_s:.1f} s)")
    result: dict[str, Any] = {}
    if args.out.is_file():
        result = json.loads(args.out.read_text())
    result.update({"dataset": "ml-latest-small", "positives": "rating >= 3.5",
                   "seed": args.seed, "recforge": __version__, "torch": torch.__version__,
                   "python": platform.python_version(), "threads": torch.get_num_threads(),
                   "text_features_s": round(encode_s, 2),
                   "features": {k: repr(v) for k, v in feature_sets.items()}})

    if "cold" in sections:
        result["cold"] = cold_section(positives, feature_sets, args.seed, console)
    models: dict[str, Any] = {}
    if "warm" in sections:
        result["warm"], models = warm_section(positives, feature_sets, args.seed, console)
    if "latency" in sections:
        result["history_latency"] = latency_section(ml, positives, feature_sets, models,
                                                    args.seed, console)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


def cold_section(positives, feature_sets, seed, console) -> dict[str, Any]:
    split = cold_start_items(positives, test_size=0.2, seed=seed)
    cold = np.unique(split.test.item)
    cold_ids = positives.items.ids[cold]
    k = 20
    random_recall = min(k, len(cold)) / len(cold)
    table = Table(title=f"cold items: rank {len(cold):,} held-out items "
                        f"({len(split.test):,} test events, {len(np.unique(split.test.user)):,} users)")
    for col in ("model", "features", "Recall@20", "NDCG@20", "x random", "fit s"):
        table.add_column(col, justify="right" if col not in ("model", "features") else "left")
    rows = []
    for name, (model_name, params, feats) in VARIANTS.items():
        model, fit_s = fit(model_name, split.train, feature_sets[feats], **params)
        r = evaluate(model, split.train, split.test, metrics=METRICS, candidates=cold_ids)
        row = {"model": name, "features": feats, "params": params, **r.summary,
               "fit_s": round(fit_s, 2), "x_random": r.summary["Recall@20"] / random_recall}
        rows.append(row)
        print(f"cold  {name:40s} Recall@20 {row['Recall@20']:.4f} NDCG@20 "
              f"{row['NDCG@20']:.4f} fit {fit_s:.1f} s", flush=True)
        table.add_row(name, feats, f"{row['Recall@20']:.4f}", f"{row['NDCG@20']:.4f}",
                      f"{row['x_random']:.1f}", f"{fit_s:.1f}")
    table.add_row("random ranking", "", f"{random_recall:.4f}", "", "1.0", "")
    console.print(table)
    by = {r["model"]: r["Recall@20"] for r in rows}
    if not {"content", "hybrid"} <= {v[0] for v in VARIANTS.values()}:
        return {"n_cold_items": int(len(cold)), "random_recall@20": random_recall,
                "rows": rows}
    best_tfidf = max(by["content"], by["content (tuned weights)"])
    best_text = max(by["content, text vectors"], by["content, text vectors (tuned weights)"])
    console.print(f"content: text vectors {best_text:.4f} vs TF-IDF {best_tfidf:.4f} "
                  f"Recall@20 ({best_text / best_tfidf - 1:+.1%}); hybrid: "
                  f"{by['hybrid, text vectors']:.4f} vs {by['hybrid']:.4f}")
    return {"n_cold_items": int(len(cold)), "random_recall@20": random_recall, "rows": rows,
            "content_text_vs_tfidf": best_text / best_tfidf - 1}


def warm_section(positives, feature_sets, seed, console) -> tuple[dict[str, Any], dict]:
    warm = random_split(positives, test_size=0.2, seed=seed)
    table = Table(title="random 80/20 split (warm items), full ranking")
    for col in ("model", "features", "Recall@20", "NDCG@20", "fit s"):
        table.add_column(col, justify="right" if col not in ("model", "features") else "left")
    rows = []
    models: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    text = feature_sets["text"]
    # vbpr with content that says nothing (random vectors): should match bpr
    noise = vectors_from_arrays(text.ids.ids, rng.normal(size=(len(text), 256)),
                                name="noise")
    runs = [*((n, (n, {}, None)) for n in CF_MODELS), *VARIANTS.items()]
    if any(v[0] == "vbpr" for v in VARIANTS.values()):
        runs.append(("vbpr, random vectors", ("vbpr", {}, "noise")))
    sets = {**feature_sets, "noise": noise, None: None}
    for name, (model_name, params, feats) in runs:
        model, fit_s = fit(model_name, warm.train, sets[feats], **params)
        models[name] = model
        r = evaluate(model, warm.train, warm.test, metrics=METRICS)
        row = {"model": name, "features": feats, "params": params, **r.summary,
               "fit_s": round(fit_s, 2)}
        rows.append(row)
        print(f"warm  {name:40s} Recall@20 {row['Recall@20']:.4f} NDCG@20 "
              f"{row['NDCG@20']:.4f} fit {fit_s:.1f} s", flush=True)
        table.add_row(name, feats or "", f"{row['Recall@20']:.4f}", f"{row['NDCG@20']:.4f}",
                      f"{fit_s:.1f}")
    console.print(table)
    if not CF_MODELS or not any(r["model"] == "hybrid" for r in rows):
        return {"rows": rows}, models
    best_cf = max((r for r in rows if r["model"] in CF_MODELS), key=lambda r: r["Recall@20"])
    hybrid = next(r for r in rows if r["model"] == "hybrid")
    gap = 1 - hybrid["Recall@20"] / best_cf["Recall@20"]
    console.print(f"hybrid Recall@20 {hybrid['Recall@20']:.4f} vs best CF {best_cf['model']} "
                  f"{best_cf['Recall@20']:.4f}: {gap:+.1%} below")
    return {"rows": rows, "best_cf": best_cf["model"], "hybrid_gap_vs_best_cf": gap}, models


def latency_section(ml, positives, feature_sets, models, seed, console) -> list[dict]:
    names = ("content", "hybrid", "hybrid_bpr", "itemknn", "ease", "als", "mf")
    for name in names[:-1]:
        if name not in models:
            model_name, params, feats = VARIANTS.get(name, (name, {}, None))
            models[name] = fit(model_name, positives,
                               feature_sets[feats] if feats else None, **params)[0]
    models["mf"] = fit("mf", ml.interactions, None, epochs=10)[0]
    rng = np.random.default_rng(seed)
    table = Table(title="recommend_for_history: 5 items, k=10 (200 calls)")
    for col in ("model", "median ms", "p95 ms"):
        table.add_column(col, justify="right" if col != "model" else "left")
    rows = []
    for name in names:
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
        rows.append(row)
        table.add_row(name, f"{row['median_ms']:.2f}", f"{row['p95_ms']:.2f}")
    console.print(table)
    return rows


if __name__ == "__main__":
    sys.exit(main())
