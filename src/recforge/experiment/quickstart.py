"""``recforge quickstart``: the main job on the embedded default.

Uses MovieLens 100K when a local copy is found (``--data-dir``, ``RECFORGE_DATA_DIR`` or the
download cache), otherwise the generated dataset; fits every registered model with its
defaults, evaluates them with full ranking, prints a leaderboard and saves the models.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from recforge.data.filters import to_implicit
from recforge.data.split import random_split
from recforge.evaluation import evaluate
from recforge.models.registry import available_models, create_model

log = logging.getLogger(__name__)


def _pick_dataset(data_dir: Path | None, console: Console) -> tuple[str, Any]:
    from recforge.data.movielens import find_local, load_movielens

    if find_local("ml-100k", data_dir) is not None:
        data = load_movielens("ml-100k", data_dir=data_dir, download=False)
        console.print(f"Using MovieLens 100K from {data.path}")
        return "ml-100k", data
    from recforge.data.synthetic import make_synthetic

    console.print("MovieLens 100K not found locally (set RECFORGE_DATA_DIR or run "
                  "`recforge datasets download ml-100k`): using the generated dataset")
    return "synthetic", make_synthetic()


def run_quickstart(*, out: Path, data_dir: Path | None = None, k: int = 10,
                   console: Console | None = None, models: list[str] | None = None
                   ) -> list[dict[str, Any]]:
    """Run the quickstart and return one result row per model."""
    console = console or Console()
    name, bundle = _pick_dataset(data_dir, console)
    data = to_implicit(bundle.interactions, 4.0)
    split = random_split(data, test_size=0.2, by_user=True, seed=0)
    console.print(f"{name}: ratings >= 4 as positives; per-user random 80/20 split: "
                  f"{len(split.train):,} train / {len(split.test):,} test events, "
                  f"{data.n_users:,} users, {data.n_items:,} items")
    metrics = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"mrr@{k}", f"coverage@{k}"]
    rows = []
    for model_name in models or available_models():
        model = create_model(model_name)
        start = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - start
        result = evaluate(model, split.train, split.test, metrics=metrics)
        model.save(out / model_name)
        rows.append({"model": model_name, **result.summary, "fit s": fit_s,
                     "eval s": result.seconds})
    rows.sort(key=lambda r: -r[f"NDCG@{k}"])
    table = Table(title=f"{name}: full-ranking evaluation, training items excluded")
    cols = ["model", f"NDCG@{k}", f"Recall@{k}", f"Precision@{k}", f"MRR@{k}", f"Coverage@{k}",
            "fit s", "eval s"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(*[r[c] if c == "model" else f"{r[c]:.4f}" if "s" not in c.split()[-1:]
                        else f"{r[c]:.2f}" for c in cols])
    console.print(table)
    best = rows[0]["model"]
    console.print(f"Best: [bold]{best}[/bold]. Models saved under {out}/. Recommend with:\n"
                  f"  recforge recommend --model {out / best} --k 10 --out recommendations.csv")
    return rows
