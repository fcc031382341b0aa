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
    ratings = bundle.interactions
    split = random_split(ratings, test_size=0.2, by_user=True, seed=0)
    train_pos = to_implicit(split.train, 4.0)
    test_pos = to_implicit(split.test, 4.0)
    console.print(f"{name}: per-user random 80/20 split of {len(ratings):,} ratings "
                  f"({ratings.n_users:,} users, {ratings.n_items:,} items); ranking models "
                  f"learn from ratings >= 4, rating models from all ratings; relevant test "
                  f"items are those rated >= 4")
    metrics = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"mrr@{k}", f"coverage@{k}"]
    from recforge.data.features import movielens_item_features

    item_features = movielens_item_features(bundle)
    rows = []
    for model_name in models or available_models():
        model = create_model(model_name)
        fit_data = split.train if model.predicts_ratings else train_pos
        start = time.perf_counter()
        if getattr(model, "uses_item_features", False):
            model.fit(fit_data, item_features=item_features)
        else:
            model.fit(fit_data)
        fit_s = time.perf_counter() - start
        # Everything the user rated in training is excluded from their ranking.
        result = evaluate(model, split.train, test_pos, metrics=metrics)
        row = {"model": model_name, **result.summary, "RMSE": float("nan"), "fit s": fit_s,
               "eval s": result.seconds}
        if model.predicts_ratings:
            row["RMSE"] = evaluate(model, split.train, split.test, metrics="rmse")["RMSE"]
        model.save(out / model_name)
        rows.append(row)
    rows.sort(key=lambda r: -r[f"NDCG@{k}"])
    table = Table(title=f"{name}: full-ranking evaluation, training items excluded")
    cols = ["model", f"NDCG@{k}", f"Recall@{k}", f"Precision@{k}", f"MRR@{k}", f"Coverage@{k}",
            "RMSE", "fit s", "eval s"]
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right", no_wrap=True,
                         min_width=len(c) if c != "model" else max(len(r["model"]) for r in rows))
    for r in rows:
        table.add_row(*[r[c] if c == "model" else "-" if r[c] != r[c]
                        else f"{r[c]:.2f}" if c.endswith(" s") else f"{r[c]:.4f}" for c in cols])
    # Piped output has no terminal width: do not crop the leaderboard to 80 columns.
    console.print(table, width=None if console.is_terminal else max(console.width, 120),
                  crop=False)
    best = rows[0]["model"]
    console.print(f"Best: [bold]{best}[/bold]. Models saved under {out}/. Recommend with:\n"
                  f"  recforge recommend --model {out / best} --k 10 --out recommendations.csv")
    return rows
