"""Commands that use a trained model: ``recommend``, ``similar``, ``predict`` and
``evaluate``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.markup import escape

from recforge._fs import atomic_write_text
from recforge._json import json_safe
from recforge.cli.common import (
    ENCODING_OPTION,
    FORMAT_OPTION,
    HEADER_OPTION,
    as_model_ids,
    check_data_specs,
    check_model_dir,
    check_out_file,
    id_list_or_file,
    load_model,
    metrics_table,
    models_with,
    output_format,
    read_id_file,
    status,
    with_item_metadata,
    write_frame,
)
from recforge.errors import ConfigError, ModelError


def recommend(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    k: int = typer.Option(10, "--k", help="Recommendations per user."),
    users: str = typer.Option("all", "--users", help="Comma-separated user ids (1,2,3), a "
                              "file of user ids (one per line; an existing path is read as "
                              "a file), or 'all' for every user the model knows."),
    include_seen: bool = typer.Option(False, "--include-seen",
                                      help="Allow items the user already interacted with."),
    unknown: str = typer.Option("error", "--unknown", help="Unknown users: error, skip or "
                                "popular."),
    out: Path = typer.Option(..., "--out", help="Output .csv / .tsv / .jsonl / .parquet "
                             "file (- for standard output)."),
    fmt: str | None = FORMAT_OPTION,
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="Add the item "
                                  "metadata the model keeps (title, ...) as columns."),
    history: str | None = typer.Option(
        None, "--history", help="Recommend for a user the model never saw from these item "
        "ids (comma-separated, e.g. a session) instead of --users; columns item,rank,score."),
) -> None:
    """Top-K recommendations: columns user,item,rank,score (external ids), then the
    item's title and other metadata when the model keeps them."""
    check_out_file(out)
    output_format(out, fmt)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    check_model_dir(model)
    import numpy as np  # lazy: after the arguments are checked

    user_ids = None if users == "all" or history is not None else id_list_or_file(
        users, "--users")
    est = load_model(model)
    shown = status(out)
    if history is not None:
        items = [x.strip() for x in history.split(",") if x.strip()]
        if not items:
            raise ConfigError("--history needs at least one item id")
        recs = est.recommend_for_history(items, k=k, unknown="skip")
        if recs.attrs.get("unknown_items"):
            shown.print(f"[yellow]left out item ids unknown to the model: "
                        f"{recs.attrs['unknown_items']}[/yellow]")
        write_frame(with_item_metadata(recs, est) if metadata else recs, out, fmt)
        shown.print(f"wrote {len(recs):,} recommendations for the history to {out}")
        return
    if user_ids is None:
        user_ids = est.users_.ids
    else:  # text from the command line or a file: written as the model's ids (1, not "1")
        user_ids = as_model_ids(user_ids, est.users_)
    if unknown == "error":  # said in the CLI's words (the library's names its argument)
        ids = np.asarray(user_ids, dtype=object)
        bad = ids[est.users_.index(ids) < 0]
        if len(bad):
            shown_ids = ", ".join(repr(x) for x in bad[:5].tolist())
            raise ModelError(f"{len(bad)} unknown user id(s) in --users {users}: {shown_ids}"
                             f"{' ...' if len(bad) > 5 else ''}; use --unknown skip or "
                             "--unknown popular to skip them or recommend popular items")
    recs = est.recommend(user_ids, k=k, include_seen=include_seen, unknown=unknown)  # type: ignore[arg-type]
    write_frame(with_item_metadata(recs, est) if metadata else recs, out, fmt)
    shown.print(f"wrote {len(recs):,} recommendations for "
                f"{recs['user'].nunique():,} users to {out}")


def similar(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    items: str | None = typer.Option(None, "--items", help="Comma-separated item ids "
                                     "(1,260), or a file of item ids (an existing path)."),
    items_file: Path | None = typer.Option(None, "--items-file", help="File of item ids, "
                                           "one per line (first field; optional header)."),
    k: int = typer.Option(10, "--k", help="Similar items per item."),
    unknown: str = typer.Option("error", "--unknown", help="Item ids the model does not "
                                "know: error or skip."),
    out: Path = typer.Option(Path("-"), "--out", help="Output .csv / .tsv / .jsonl / "
                             ".parquet file (default -, standard output)."),
    fmt: str | None = FORMAT_OPTION,
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="Add the similar "
                                  "item's metadata the model keeps (title, ...)."),
) -> None:
    """Items most similar to given items: columns item,similar_item,rank,score.

    Then the similar item's title and other metadata when the model keeps them. Models
    with item similarities: {models_with:similar_items}."""
    check_out_file(out)
    output_format(out, fmt)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if unknown not in ("error", "skip"):
        raise ConfigError(f"--unknown must be error or skip, not {unknown!r}")
    if (items is None) == (items_file is None):
        raise ConfigError("give the item ids with --items 1,260 or --items-file FILE "
                          "(one of the two)")
    check_model_dir(model)
    ids = (id_list_or_file(items, "--items", "item") if items is not None
           else read_id_file(items_file, "item"))  # type: ignore[arg-type]
    est = load_model(model)
    if not est.effective_capabilities().similar_items:
        raise ModelError(f"model {est.name!r} has no item similarities; models that do: "
                         f"{models_with('similar_items')}")
    idx = est.items_.index(ids)
    if (idx < 0).any():
        bad = ids[idx < 0]
        if unknown == "error":
            shown_ids = ", ".join(repr(x) for x in bad[:5].tolist())
            raise ModelError(f"{len(bad)} unknown item id(s): {shown_ids}"
                             f"{' ...' if len(bad) > 5 else ''}; use --unknown skip to "
                             "leave them out")
        status(out).print(f"[yellow]left out item ids unknown to the model: "
                          f"{bad[:20].tolist()}[/yellow]")
        ids = ids[idx >= 0]
    ids = as_model_ids(ids, est.items_)
    frame = est.similar_items(ids, k=k).rename(columns={"similar": "similar_item"})
    write_frame(with_item_metadata(frame, est, "similar_item") if metadata else frame,
                out, fmt)
    status(out).print(f"wrote {len(frame):,} similar items for {len(ids):,} items to {out}")


def predict(
    model: Path = typer.Option(..., "--model", help="Directory of a trained rating model."),
    pairs: Path = typer.Option(..., "--pairs", help="File with user,item columns."),
    out: Path = typer.Option(..., "--out", help="Output file: user,item,prediction "
                             "(- for standard output)."),
    fmt: str | None = FORMAT_OPTION,
    columns: str | None = typer.Option(None, "--columns",
                                       help="Column mapping, e.g. user=userId,item=movieId."),
    header: bool | None = typer.Option(
        None, "--header/--no-header", help="Whether the pairs file starts with a line of "
        "column names (default: guessed from the first lines)."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of the pairs "
                                 "file, e.g. latin-1."),
    unknown: str = typer.Option("baseline", "--unknown", help="Pairs with a user or item "
                                "the model never saw: baseline (the model's fallback, e.g. "
                                "mean plus the known bias), skip (row left out) or error."),
) -> None:
    """Predict ratings for (user, item) pairs (rating models only): one output row per
    input row, in the input's order (with --unknown skip, less the unknown pairs)."""
    if unknown not in ("baseline", "skip", "error"):
        raise ConfigError(f"--unknown must be baseline, skip or error, got {unknown!r}")
    check_out_file(out)
    output_format(out, fmt)
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
    pred = est.predict(users, items, unknown=unknown)  # type: ignore[arg-type]
    result = pd.DataFrame({"user": users, "item": items, "prediction": pred})
    if unknown == "skip":  # NaN: a pair the model cannot score
        result = result[result["prediction"].notna()].reset_index(drop=True)
    write_frame(result, out, fmt)
    status(out).print(f"wrote {len(result):,} predictions to {out}")


#: Fewer users evaluated than this and ``recforge evaluate`` warns: a metric's mean over
#: so few users moves by whole users (its 95 % interval is wide).
FEW_USERS = 100

#: Formats ``recforge evaluate --out`` writes (``--out-format``, else from the suffix).
EVAL_FORMATS = ("json", "csv", "tsv", "jsonl")


def _min_rating_option(value: str | None) -> float | None | bool:
    """``--min-rating``: a number, ``none`` (every test event relevant), or ``False`` when
    not given (the model's own then)."""
    if value is None:
        return False
    if value.strip().lower() in ("none", "off", "all"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"--min-rating must be a number or none, not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(f"--min-rating must be a finite number, not {value!r}")
    return number


def _trained_min_rating(meta: dict) -> tuple[bool, float | None]:
    """(whether the saved model says how its data were made implicit, the threshold)."""
    data = meta.get("training_data")
    if not isinstance(data, dict) or "min_rating" not in data:
        return False, None  # saved before models kept it, or by the Python API
    value = data["min_rating"]
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                         and value == value):
        return True, None if value is None else float(value)
    return False, None


def _choose_min_rating(given: float | None | bool, meta: dict, shown) -> float | None:
    """The threshold ``evaluate`` judges relevance by: the one given, else the model's
    (said), warning when the two differ."""
    known, trained = _trained_min_rating(meta)
    if given is False:
        if known and trained is not None:
            shown.print(f"relevant test items: rated >= {trained:g}, the --min-rating the "
                        "model was trained with (--min-rating none counts every test event)")
        return trained
    if known and given != trained:
        was = "no --min-rating" if trained is None else f"--min-rating {trained:g}"
        now = "every test event" if given is None else f"ratings >= {given:g}"
        shown.print(f"[yellow]warning: the model was trained with {was}, evaluated here "
                    f"with {now} relevant; the metrics judge other items than the model "
                    "learned to find[/yellow]")
    return given  # type: ignore[return-value]


def _results_table(result) -> list[dict]:
    """One row per metric: its value, 95 % interval (per-user metrics) and users."""
    intervals = result.confidence_intervals(level=0.95)
    rows = []
    for metric, value in result.summary.items():
        low, high = intervals.get(metric, (None, None))
        rows.append({"metric": metric, "value": value,
                     "ci_low": low, "ci_high": high, "users": result.n_users})
    return rows


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
    min_rating: str | None = typer.Option(
        None, "--min-rating", help="Test ratings >= this are the relevant items (default: "
        "the --min-rating the model was trained with; none: every test event)."),
    columns: str | None = typer.Option(None, "--columns", help="Column mapping."),
    fmt: str | None = typer.Option(None, "--format", help="Input format."),
    header: bool | None = HEADER_OPTION,
    encoding: str = ENCODING_OPTION,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Directory holding extracted datasets (for dataset names)."),
    out: Path | None = typer.Option(None, "--out", help="Write the results: .json (default), "
                                    ".csv / .tsv / .jsonl (one row per metric); - for "
                                    "standard output."),
    out_format: str | None = typer.Option(None, "--out-format", help="Format of --out: "
                                          "json, csv, tsv or jsonl (default: from the "
                                          "suffix, else json)."),
) -> None:
    """Evaluate a trained model on held-out data (full ranking by default): each metric
    with its 95 % interval over the users evaluated."""
    if out is not None:
        check_out_file(out)
    if out_format is not None and out_format.lower() not in EVAL_FORMATS:
        raise ConfigError(f"--out-format must be one of {', '.join(EVAL_FORMATS)}, not "
                          f"{out_format!r}")
    given = _min_rating_option(min_rating)
    check_model_dir(model)
    check_data_specs([*train, test])
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import ReadOptions, concat, evaluate_files, read_data
    from recforge.models.base import Recommender  # lazy: imports torch

    est, meta = Recommender.load_with_meta(model)
    shown = status(out)  # the results alone on standard output with --out -
    threshold = _choose_min_rating(given, meta, shown)
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
        result = evaluate_files(est, train_data, test_data, names, min_rating=threshold,
                                protocol=protocol, n_negatives=n_negatives)
    finally:
        quiet_notes.setLevel(level)
    rows = _results_table(result)
    shown.print(escape(f"{est.name} on {test} ({result.protocol} protocol, "
                       f"{result.seconds:.2f}s)"), highlight=False)
    shown.print(metrics_table("", [{k: "-" if v is None else v for k, v in r.items()}
                               for r in rows], ["metric", "value", "ci_low", "ci_high"]))
    shown.print(f"{result.n_users:,} users evaluated; ci_low..ci_high: 95 % bootstrap "
                "interval of the mean over users")
    if 0 < result.n_users < FEW_USERS:
        shown.print(f"[yellow]warning: only {result.n_users} users evaluated (fewer than "
                    f"{FEW_USERS}): a difference of a few users moves these metrics; "
                    "compare models by their intervals, or use a split that holds out "
                    "more users[/yellow]")
    for note in result.notes:
        shown.print(f"note: {note}")
    if out is not None:
        kind = (out_format or {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
                               ".ndjson": "jsonl"}.get(out.suffix.lower(), "json")).lower()
        if kind == "json":
            payload = {"model": est.name, "params": est.get_params(), "test": test,
                       "protocol": result.protocol, "n_users": result.n_users,
                       "min_rating": threshold, "metrics": result.summary,
                       "intervals": {r["metric"]: [r["ci_low"], r["ci_high"]] for r in rows
                                     if r["ci_low"] is not None},
                       "seconds": result.seconds, "notes": result.notes}
            atomic_write_text(out, json.dumps(json_safe(payload), indent=2) + "\n")
        else:
            import pandas as pd  # lazy: after the arguments are checked

            write_frame(pd.DataFrame(rows), out, kind)
