"""``recforge forget``: remove users, and what a saved model learned from them, from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from recforge.cli.common import check_model_dir, check_out_dir, console, read_id_file
from recforge.errors import ConfigError, DataError


def forget(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    users: Path | None = typer.Option(None, "--users", help="File of the user ids to "
                                      "remove, one per line (first field of a CSV / TSV; "
                                      "optional header)."),
    erased_in: str | None = typer.Option(
        None, "--erased-in", help="Event store (the server's --events: a SQLite file or a "
        "database URL): remove every user of the model that it has erased (DELETE "
        "/users/{id}), found by the store's keyed hashes, as the server finds them."),
    retrain: bool = typer.Option(False, "--retrain", help="Fit the model again, with its "
                                 "saved hyperparameters, on the training data without the "
                                 "users (the only way for models that cannot forget "
                                 "exactly)."),
    data: list[str] | None = typer.Option(
        None, "--data", help="With --retrain: the training data (dataset name or file; "
        "repeat for several), read like `recforge train --data`; without it the model's "
        "stored training matrix (no timestamps) is used."),
    fmt: str | None = typer.Option(None, "--format", help="--data's format: csv, tsv, "
                                   "parquet or adjacency."),
    columns: str | None = typer.Option(None, "--columns", help="--data's columns, as for "
                                       "recforge train."),
    min_rating: float | None = typer.Option(
        None, "--min-rating", help="With --data: keep events rated at least this, as "
        "implicit positives (default: the threshold the model was trained with)."),
    out: Path | None = typer.Option(None, "--out", help="Write the model here (default: "
                                    "replace --model, atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove users from a saved model: exactly where the model allows it.

    pop, itemknn, userknn, ease, als, gfcf and bspm become the model trained without the users
    (ease by a Woodbury update of its inverse, als by training again from its seed). Models
    trained by gradient descent lose the users' own rows (embeddings, biases, sequences);
    their item parameters keep the users' influence until retrained (--retrain). Other
    models forget only with --retrain. --erased-in STORE removes the users that the
    server's event store has erased (DELETE /users/{id}). The users leave the vocabulary
    and the stored training matrix; meta.json records the erasure (time and counts, never
    ids). Ids the model does not know are reported. See docs/privacy.md."""
    check_model_dir(model)
    target = out if out is not None else model
    check_out_dir(target)
    if data and not retrain:
        raise ConfigError("--data is read only to retrain: add --retrain")
    if users is None and erased_in is None:
        raise ConfigError("name the users to remove: --users FILE, --erased-in EVENT_STORE, "
                          "or both")
    ids = read_id_file(users, "user") if users is not None else None
    if erased_in is not None:
        est, erased = _erased_users(model, erased_in)
        if not erased:
            console.print(f"{erased_in}: no user of the model is erased there")
        ids = erased if ids is None else [*ids, *erased]
    else:
        from recforge.models.base import Recommender  # lazy: imports torch

        est = Recommender.load(model)
    train = None
    if data:
        from recforge.experiment.workflow import ReadOptions, concat, read_data  # lazy: torch

        threshold = min_rating if min_rating is not None else (
            getattr(est, "training_data_", {}) or {}).get("min_rating")
        train = concat(read_data(data, ReadOptions(format=fmt, columns=columns,
                                                   min_rating=threshold)))
    report = est.forget_users(ids, retrain=retrain, data=train)
    if report.users_removed:
        est.save(target)
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), "unknown": len(report.unknown),
                               "saved": str(target) if report.users_removed else None}))
        return
    if report.unknown:
        shown = ", ".join(repr(x) for x in report.unknown[:5])
        console.print(f"[yellow]{len(report.unknown):,} id(s) unknown to the model, left "
                      f"out: {escape(shown)}{' ...' if len(report.unknown) > 5 else ''}"
                      "[/yellow]")
    if not report.users_removed:
        console.print(f"no user to remove is in the model: {model} is unchanged")
        return
    console.print(f"removed {report.users_removed:,} user(s) and their "
                  f"{report.events_removed:,} training event(s) from {report.model!r} in "
                  f"{report.seconds:.2f} s ({escape(report.method)}); wrote {target}")
    console.print(escape(report.guarantee))


def _erased_users(model: Path, store_path: str) -> tuple[Any, list[Any]]:
    """The saved model and those of its users that the event store has erased: the users a
    server on that store answers as unknown (``RecommendationService.resolve``: erased
    after the model was made, or since come back with other items than the model holds)."""
    from recforge.data.events import EventStore  # lazy: SQLAlchemy
    from recforge.serving.service import RecommendationService  # lazy: torch

    if "://" not in store_path and not Path(store_path).is_file():  # a URL, or a file
        raise DataError("no such event store (the server's --events file)", source=store_path)
    store = EventStore(store_path, create=False)
    try:
        service = RecommendationService(model, events=store)
        erased = [u for u in service.model.users_.ids.tolist() if service.resolve(u).index < 0]
    finally:
        store.close()
    return service.model, erased
