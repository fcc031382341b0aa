"""Commands that use a trained model: ``recommend``, ``predict`` and ``evaluate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from recforge._fs import atomic_write_text
from recforge.cli.common import (
    ENCODING_OPTION,
    HEADER_OPTION,
    check_data_specs,
    check_model_dir,
    check_out_file,
    load_model,
    metrics_table,
    read_user_list,
    status,
    write_frame,
)
from recforge.errors import ConfigError, ModelError


def recommend(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    k: int = typer.Option(10, "--k", help="Recommendations per user."),
    users: str = typer.Option("all", "--users", help="File of user ids (one per line), or "
                              "'all' for every user the model knows."),
    include_seen: bool = typer.Option(False, "--include-seen",
                                      help="Allow items the user already interacted with."),
    unknown: str = typer.Option("error", "--unknown", help="Unknown users: error, skip or "
                                "popular."),
    out: Path = typer.Option(..., "--out", help="Output .csv / .tsv / .parquet file "
                             "(- for CSV on standard output)."),
    history: str | None = typer.Option(
        None, "--history", help="Recommend for a user the model never saw from these item "
        "ids (comma-separated, e.g. a session) instead of --users; columns item,rank,score."),
) -> None:
    """Top-K recommendations: columns user,item,rank,score (external ids)."""
    check_out_file(out)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    check_model_dir(model)
    import numpy as np  # lazy: after the arguments are checked

    est = load_model(model)
    if history is not None:
        items = [x.strip() for x in history.split(",") if x.strip()]
        if not items:
            raise ConfigError("--history needs at least one item id")
        recs = est.recommend_for_history(items, k=k, unknown="skip")
        if recs.attrs.get("unknown_items"):
            status(out).print(f"[yellow]left out item ids unknown to the model: "
                               f"{recs.attrs['unknown_items']}[/yellow]")
        write_frame(recs, out)
        status(out).print(f"wrote {len(recs):,} recommendations for the history to {out}")
        return
    user_ids = est.users_.ids if users == "all" else read_user_list(Path(users))
    if users != "all":  # text from a file: written as the model's ids (1, not "1")
        idx = est.users_.index(user_ids)
        user_ids[idx >= 0] = est.users_.ids[idx[idx >= 0]]
        user_ids = est.users_.ids[idx] if (idx >= 0).all() else user_ids
    if unknown == "error":  # said in the CLI's words (the library's names its argument)
        ids = np.asarray(user_ids, dtype=object)
        bad = ids[est.users_.index(ids) < 0]
        if len(bad):
            shown = ", ".join(repr(x) for x in bad[:5].tolist())
            raise ModelError(f"{len(bad)} unknown user id(s) in {users}: {shown}"
                             f"{' ...' if len(bad) > 5 else ''}; use --unknown skip or "
                             "--unknown popular to skip them or recommend popular items")
    recs = est.recommend(user_ids, k=k, include_seen=include_seen, unknown=unknown)  # type: ignore[arg-type]
    write_frame(recs, out)
    status(out).print(f"wrote {len(recs):,} recommendations for "
                       f"{recs['user'].nunique():,} users to {out}")


def predict(
    model: Path = typer.Option(..., "--model", help="Directory of a trained rating model."),
    pairs: Path = typer.Option(..., "--pairs", help="File with user,item columns."),
    out: Path = typer.Option(..., "--out", help="Output file: user,item,prediction "
                             "(- for CSV on standard output)."),
    columns: str | None = typer.Option(None, "--columns",
                                       help="Column mapping, e.g. user=userId,item=movieId."),
    header: bool | None = typer.Option(
        None, "--header/--no-header", help="Whether the pairs file starts with a line of "
        "column names (default: guessed from the first lines)."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of the pairs "
                                 "file, e.g. latin-1."),
) -> None:
    """Predict ratings for (user, item) pairs (rating models only): one output row per
    input row, in the input's order."""
    check_out_file(out)
    check_model_dir(model)
    import pandas as pd  # lazy: after the arguments are checked

    from recforge.data.frames import parse_columns  # lazy: imports pandas
    from recforge.data.readers import read_pairs  # lazy: the file formats

    est = load_model(model)
    if not est.predicts_ratings:
        raise ConfigError(f"model {est.name!r} ranks items but does not predict ratings; "
                          "train a rating model (e.g. mf) to use `recforge predict`")
    users, items = read_pairs(pairs, columns=parse_columns(columns), header=header,
                              encoding=encoding)
    pred = est.predict(users, items)
    result = pd.DataFrame({"user": users, "item": items, "prediction": pred})
    write_frame(result, out)
    status(out).print(f"wrote {len(result):,} predictions to {out}")


def evaluate_cmd(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    train: list[str] = typer.Option(..., "--train", help="Training data (its items are "
                                    "excluded from rankings); repeatable."),
    test: str = typer.Option(..., "--test", help="Held-out data."),
    metrics: str = typer.Option("recall@20,ndcg@20", "--metrics",
                                help="Comma-separated, e.g. ndcg@10,recall@20,rmse."),
    protocol: str = typer.Option("full", "--protocol", help="full (default) or sampled."),
    n_negatives: int = typer.Option(100, "--negatives",
                                    help="Negatives per positive (sampled protocol)."),
    min_rating: float | None = typer.Option(None, "--min-rating",
                                               help="Test ratings >= this are the relevant "
                                                    "items."),
    columns: str | None = typer.Option(None, "--columns", help="Column mapping."),
    fmt: str | None = typer.Option(None, "--format", help="Input format."),
    header: bool | None = HEADER_OPTION,
    encoding: str = ENCODING_OPTION,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Directory holding extracted datasets (for dataset names)."),
    out: Path | None = typer.Option(None, "--out", help="Write the results as JSON "
                                    "(- for standard output)."),
) -> None:
    """Evaluate a trained model on held-out data (full ranking by default)."""
    if out is not None:
        check_out_file(out)
    check_model_dir(model)
    check_data_specs([*train, test])
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import ReadOptions, concat, evaluate_files, read_data

    est = load_model(model)
    parts = read_data([*train, test], ReadOptions(format=fmt, columns=columns,
                                                  data_dir=data_dir, header=header,
                                                  encoding=encoding))
    test_data = parts.pop()
    train_data = concat(parts)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    # The notes are printed below with the table; the library also logs them (for Python
    # users), which would say each one twice here.
    quiet_notes = logging.getLogger("recforge.evaluation.evaluate")
    level = quiet_notes.level
    quiet_notes.setLevel(logging.WARNING)
    try:
        result = evaluate_files(est, train_data, test_data, names, min_rating=min_rating,
                                protocol=protocol, n_negatives=n_negatives)
    finally:
        quiet_notes.setLevel(level)
    rows = [{"metric": k, "value": v} for k, v in result.summary.items()]
    shown = status(out)  # the JSON alone on standard output with --out -
    shown.print(metrics_table(f"{est.name} on {test} ({result.protocol} protocol, "
                               f"{result.n_users:,} users, {result.seconds:.2f}s)",
                               rows, ["metric", "value"]))
    for note in result.notes:
        shown.print(f"note: {note}")
    if out is not None:
        payload = {"model": est.name, "params": est.get_params(), "test": test,
                   "protocol": result.protocol, "n_users": result.n_users,
                   "metrics": result.summary, "seconds": result.seconds, "notes": result.notes}
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")

