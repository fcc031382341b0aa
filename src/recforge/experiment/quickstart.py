"""``recforge quickstart``: the main job, what ``make demo`` runs.

Uses MovieLens 100K when a local copy is found (``--data-dir``, ``RECFORGE_DATA_DIR`` or the
download cache) or can be downloaded, otherwise the generated dataset (saying which); fits
every registered model with settings sized for a laptop, evaluates them with full ranking
(ratings >= 4 are the relevant items; rating models also get RMSE), prints the leaderboard,
writes the experiment report and ends with the command that uses the best model, and the
one that trains it on the user's own data with ``--auto`` (hyperparameters tuned there). A
model's quickstart settings are its class's ``quick_params`` (read through
:func:`recforge.models.registry.quick_params`): what keeps the whole quickstart within a
few minutes on 2 CPU cores; every other model runs with its defaults.

Models that read the order of events (sequence and session models: ``reads_order``) are
compared in a second, next-item section on the same data (every rating an event, each
user's last event the target, predicted from the user's whole earlier sequence with the
items already rated left out of the ranking), beside ``pop`` and ``ease``; its
leaderboard, report and models go to ``OUT/next-item``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from recforge.data.movielens import download_movielens, find_local
from recforge.errors import ConfigError, DataError
from recforge.evaluation.metrics import MAX_CUTOFF
from recforge.experiment.auto import auto_space
from recforge.experiment.config import parse_config
from recforge.experiment.runner import run_experiment
from recforge.models.registry import available_models, create_model, models_with, quick_params

log = logging.getLogger(__name__)

__all__ = ["run_quickstart"]

def _pick_dataset(data_dir: Path | None, console: Console, download: bool) -> str:
    if find_local("ml-100k", data_dir) is not None:
        console.print(f"Using MovieLens 100K from {escape(str(find_local('ml-100k', data_dir)))}",
                      highlight=False)
        return "ml-100k"
    if download:
        try:
            path = download_movielens("ml-100k")
            console.print(f"Downloaded MovieLens 100K to {escape(str(path))}", highlight=False)
            return "ml-100k"
        except DataError as exc:
            log.info("could not download ml-100k: %s", exc)
    console.print("MovieLens 100K not found locally and not downloadable (set "
                  "RECFORGE_DATA_DIR or run `recforge datasets download ml-100k`): using the "
                  "generated dataset", highlight=False)
    return "synthetic"


def run_quickstart(*, out: Path, data_dir: Path | None = None, k: int = 10,
                   console: Console | None = None, models: list[str] | None = None,
                   download: bool = True) -> list[dict[str, Any]]:
    """Run the quickstart and return the leaderboard rows (best first)."""
    console = console or Console()
    # the options first, not after a download
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_CUTOFF:
        raise ConfigError(f"--k must be an integer in 1..{MAX_CUTOFF}, got {k!r}")
    names = models or available_models()
    ordered = set(models_with("reads_order"))
    sequence = [m for m in names if m in ordered]
    names = [m for m in names if m not in ordered]
    rating = any(create_model(m).predicts_ratings for m in names)
    name = _pick_dataset(data_dir, console, download)
    rows = _top_k(name, names, rating, k, out, data_dir, console) if names else []
    if sequence:
        seq_rows = _next_item(name, sequence, [m for m in ("pop", "ease") if m in names],
                              k, out / "next-item", data_dir, console)
        rows = rows or seq_rows
    return rows


def _top_k(name: str, names: list[str], rating: bool, k: int, out: Path,
           data_dir: Path | None, console: Console) -> list[dict[str, Any]]:
    """The top-K section: every model but those that read order, per-user random split."""
    cfg = parse_config({
        "name": f"quickstart-{name}",
        "data": {"source": name, "min_rating": 4,
                 "data_dir": str(data_dir) if data_dir else None},
        "split": {"method": "random", "test_size": 0.2, "by_user": True, "seed": 0},
        "models": [{"name": m, "params": quick_params(m)} for m in names],
        "metrics": [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"mrr@{k}",
                    f"coverage@{k}", *(["rmse"] if rating else [])],
        "n_bootstrap": 300,
    }, source="quickstart")
    console.print("Per-user random 80/20 split; ranking models learn from ratings >= 4, "
                  "rating models from all ratings; relevant test items are those rated >= 4.",
                  highlight=False)
    result = run_experiment(cfg, out, console=console)
    best = result.rows[0]["model"]
    console.print(f"Best by {result.primary}: [bold]{escape(best)}[/bold]. Report: "
                  f"{escape(str(out / 'report.html'))}. Serve the best model:\n"
                  f"  recforge serve --model {escape(str(out / 'models' / best))}",
                  highlight=False)
    try:  # a model --auto tunes (pop and blend have nothing to tune)
        auto_space(best)
        auto_model = best
    except ConfigError:
        auto_model = "als"
    console.print("On your own data, these defaults were never chosen there: --auto tunes "
                  "the few hyperparameters that matter on a validation split carved from "
                  "your training data first, within a time budget, and prints the gain:\n"
                  f"  recforge train {escape(auto_model)} --data YOUR_EVENTS.csv --out model "
                  "--auto --budget 60s", highlight=False)
    return result.rows


def _next_item(name: str, sequence: list[str], baselines: list[str], k: int, out: Path,
               data_dir: Path | None, console: Console) -> list[dict[str, Any]]:
    """The next-item section: the models that read order (with their quick parameters)
    beside the order-blind ``baselines``, on each user's last event."""
    cfg = parse_config({
        "name": f"quickstart-{name}-next-item",
        "task": "next_item",
        "data": {"source": name, "data_dir": str(data_dir) if data_dir else None},
        "split": {"method": "leave_last_out"},
        "next_item": {"exclude_seen": True},
        "models": [{"name": m, "params": quick_params(m)} for m in [*sequence, *baselines]],
        "metrics": [f"ndcg@{k}", f"hr@{k}", f"mrr@{k}"],
        "n_bootstrap": 300,
    }, source="quickstart")
    console.print("\nNext item: every rating is an event in time order; each user's last "
                  "event is the target, predicted from all the user's earlier events, "
                  "among the items the user has not rated yet.", highlight=False)
    result = run_experiment(cfg, out, console=console)
    best = result.rows[0]["model"]
    console.print(f"Best next-item model by {result.primary}: [bold]{escape(best)}[/bold]. "
                  f"Report: {escape(str(out / 'report.html'))}.", highlight=False)
    return result.rows
