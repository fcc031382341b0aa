"""``recforge forget``: remove users, and what a saved model learned from them, from it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from recforge.cli.common import check_model_dir, check_out_dir, console, read_id_file
from recforge.errors import ConfigError


def forget(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    users: Path = typer.Option(..., "--users", help="File of the user ids to remove, one "
                               "per line (first field of a CSV / TSV; optional header)."),
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

    pop, itemknn, ease, als, gfcf and bspm become the model trained without the users
    (ease by a Woodbury update of its inverse, als by training again from its seed). Models
    trained by gradient descent lose the users' own rows (embeddings, biases, sequences);
    their item parameters keep the users' influence until retrained (--retrain). Other
    models forget only with --retrain. The users leave the vocabulary and the stored
    training matrix; meta.json records the erasure (time and counts, never ids). Ids the
    model does not know are reported. See docs/privacy.md."""
    check_model_dir(model)
    target = out if out is not None else model
    check_out_dir(target)
    if data and not retrain:
        raise ConfigError("--data is read only to retrain: add --retrain")
    ids = read_id_file(users, "user")
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
        console.print(f"no user of {escape(str(users))} is in the model: {model} is "
                      "unchanged")
        return
    console.print(f"removed {report.users_removed:,} user(s) and their "
                  f"{report.events_removed:,} training event(s) from {report.model!r} in "
                  f"{report.seconds:.2f} s ({escape(report.method)}); wrote {target}")
    console.print(escape(report.guarantee))
