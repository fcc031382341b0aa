"""The ``recforge`` command line. Each command is a thin call into the library.

Errors a user can cause (bad data, bad parameter, bad model directory) print one line on
stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from recforge import __version__
from recforge._fs import (
    atomic_path,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    is_stdout,
)
from recforge.data.frames import parse_columns
from recforge.data.readers import read_pairs
from recforge.data.synthetic import ML20M_EVENTS_PER_USER, write_synthetic_parquet
from recforge.errors import ConfigError, DataError, ModelError, RecforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="recforge: build, evaluate and serve recommender systems.")
datasets_app = typer.Typer(no_args_is_help=True, help="List, describe and download datasets.")
app.add_typer(datasets_app, name="datasets")

console = Console(stderr=False)
err_console = Console(stderr=True)
log = logging.getLogger("recforge")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recforge {__version__}")
        raise typer.Exit()


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Show the version and exit.")) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("recforge")
    root.handlers[:] = [RichHandler(console=err_console, show_path=False, show_time=False)]
    root.setLevel(level)
    root.propagate = False


# ---------------------------------------------------------------------------------------
# helpers
def _parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--param {item!r} must look like key=value")
        key, _, raw = item.partition("=")
        from recforge.experiment.config import load_yaml  # lazy: imports torch

        try:  # bounded as an experiment file is: depth, aliases, huge integers
            value = load_yaml(raw, f"--param {key}") if raw.strip() else ""
        except ConfigError:
            value = raw  # as text, which the model's checks then judge
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text: a number here
            with contextlib.suppress(ValueError):
                value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf",
                                                                      "infinity") else value
        params[key.strip()] = value
    return params


def _write_frame(frame: pd.DataFrame, out: Path) -> None:
    suffix = out.suffix.lower()
    with atomic_path(out) as tmp:
        if suffix in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        elif suffix in (".tsv", ".txt"):
            frame.to_csv(tmp, sep="\t", index=False)
        else:
            frame.to_csv(tmp, index=False)


def _load_model(path: Path):
    from recforge.models.base import Recommender  # lazy: imports torch

    return Recommender.load(path)


def _read_user_list(path: Path) -> np.ndarray:
    """User ids from a file: one per line (first field of a CSV / TSV), optional header."""
    if not path.is_file():
        raise DataError("file not found", source=str(path))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", source=str(path)) from None
    ids = [line.replace("\t", ",").split(",")[0].strip() for line in lines if line.strip()]
    if ids and ids[0].lower() in ("user", "user_id", "userid"):
        ids = ids[1:]
    if not ids:
        raise DataError("no user ids in the file", source=str(path))
    return np.asarray(ids, dtype=object)


def _metrics_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="left" if c in ("model", "metric") else "right")
    for row in rows:
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, ""))
                        for c in columns])
    return table


# ---------------------------------------------------------------------------------------
# datasets
@datasets_app.command("list")
def datasets_list() -> None:
    """List the datasets recforge knows by name."""
    from recforge.data.movielens import find_local, list_datasets  # lazy: downloader, 40 ms

    table = Table(title="Datasets")
    for c in ("name", "ratings", "users", "items", "metadata", "local copy"):
        table.add_column(c)
    for spec in list_datasets():
        meta = ["titles", "genres"]
        if spec.has_tags:
            meta.append("tags")
        if spec.has_user_features:
            meta.append("user features")
        local = find_local(spec.name)
        table.add_row(spec.name, f"{spec.n_ratings:,}", f"{spec.n_users:,}", f"{spec.n_items:,}",
                      ", ".join(meta), str(local) if local else "-")
    table.add_row("synthetic", "~50,000", "1,000", "800", "titles, genres", "(generated)")
    console.print(table)


@datasets_app.command("info")
def datasets_info(name: str) -> None:
    """Describe one dataset: source, size, checksum, where a local copy was found."""
    from recforge.data.movielens import find_local, get_spec  # lazy: downloader, 40 ms

    spec = get_spec(name)
    local = find_local(spec.name)
    console.print(f"[bold]{spec.name}[/bold]: {spec.description}")
    console.print(f"  url:      {spec.url}")
    console.print(f"  md5:      {spec.md5 or '(none pinned)'}")
    console.print(f"  checks:   {spec.checks}")
    console.print(f"  ratings:  {spec.n_ratings:,} by {spec.n_users:,} users on "
                  f"{spec.n_items:,} items")
    console.print(f"  local:    {local or 'not found (recforge datasets download ' + spec.name + ')'}")


@datasets_app.command("download")
def datasets_download(name: str,
                      force: bool = typer.Option(False, help="Download again even if cached."),
                      ) -> None:
    """Download a dataset into the cache (RECFORGE_CACHE_DIR, default ~/.cache/recforge)."""
    from recforge.data.movielens import fetch_movielens  # lazy: downloader, 40 ms

    got = fetch_movielens(name, force=force)
    if got.verified is None:
        console.print(f"{name} is already in {got.path} (not downloaded or checked again; "
                      "--force does both)")
        return
    console.print(f"{name} is in {got.path}; verified: {got.verified.describe()}")
    if not got.verified.pinned:
        console.print("[yellow]warning:[/yellow] nothing was checked against a checksum "
                      "recforge pins: the files are as the server sent them")


@datasets_app.command("generate")
def datasets_generate(
    out: Path = typer.Argument(..., help="Parquet file to write (- for standard output)."),
    users: int | None = typer.Option(
        None, "--users", help="Number of users (default: in proportion to --interactions, "
        "as in MovieLens 20M: 138,000 at 20M, 6,900 at 1M)."),
    items: int = typer.Option(27_000, "--items", help="Number of items."),
    interactions: int = typer.Option(20_000_000, "--interactions",
                                     help="Number of (distinct user-item) events."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Generate interactions at scale (default: the size of MovieLens 20M) to Parquet.

    Zipf item popularity, log-normal user activity and genre tastes; columns user, item,
    rating, timestamp. Memory stays bounded whatever the size (written user block by block).
    """
    _check_out_file(out, "OUT")
    if users is None:
        users = max(2, round(interactions / ML20M_EVENTS_PER_USER))
    summary = write_synthetic_parquet(out, n_users=users, n_items=items,
                                      n_interactions=interactions, seed=seed)
    _status(out).print(f"wrote {summary['events']:,} events ({users:,} users x {items:,} "
                       f"items) to {out} in {summary['seconds']:.1f}s "
                       f"({summary['bytes'] / 1e6:,.1f} MB)")


# ---------------------------------------------------------------------------------------
# train / recommend / predict / evaluate
@app.command()
def train(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="Model name (see `recforge models`)."),
    data: list[str] = typer.Option(..., "--data", help="Dataset name or file; repeat to "
                                   "concatenate files (e.g. train.txt and valid.txt)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the trained model to."),
    valid: str | None = typer.Option(None, "--valid", help="Validation data (early stopping)."),
    param: list[str] | None = typer.Option(None, "--param", "-p",
                                              help="Hyperparameter key=value (repeatable)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (models that use one)."),
    columns: str | None = typer.Option(None, "--columns",
                                          help="Column mapping, e.g. user=userId,item=movieId."),
    fmt: str | None = typer.Option(None, "--format", help="csv, tsv, parquet or adjacency."),
    header: bool | None = typer.Option(
        None, "--header/--no-header", help="Whether text files start with a line of column "
        "names (default: guessed from the first lines)."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of delimited "
                                 "files, e.g. latin-1."),
    duplicates: str = typer.Option("error", "--duplicates",
                                   help="Repeated (user, item) pairs: error, first, last, sum, "
                                        "max or mean."),
    min_rating: float | None = typer.Option(None, "--min-rating",
                                               help="Keep ratings >= this as implicit positives."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                            help="Directory holding extracted datasets."),
    checkpoint_dir: Path | None = typer.Option(
        None, "--checkpoint-dir", help="Where gradient models keep a checkpoint and a "
        "per-epoch JSON log (default: OUT.checkpoint next to --out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its last "
                                "checkpoint (same model, settings and data)."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint",
                                         help="Keep the checkpoint directory after success."),
    item_features: Path | None = typer.Option(
        None, "--item-features", help="Item table (CSV / TSV / Parquet) for content and "
        "hybrid models: an id column and feature columns (kinds inferred: numbers, "
        "categories such as 'Comedy|Drama', free text). MovieLens names use their metadata."),
    item_id_column: str | None = typer.Option(None, "--item-id-column",
                                              help="Id column of --item-features "
                                                   "(default: item, id or the first)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train a gradient model with PyTorch "
                              "DDP in this many processes on this machine (torchrun; gloo on "
                              "CPUs, NCCL on GPUs). For several machines run torchrun yourself "
                              "(docs/scaling.md)."),
    sparse_updates: str = typer.Option(
        "auto", "--sparse-updates", help="Row-sparse updates of the user tables (only the "
        "batch's users' rows each step; exact with optimizer=adagrad): auto (when the user "
        "base is at least 16x a batch), on, off."),
) -> None:
    """Train MODEL on --data and save it to --out.

    Gradient models (mf, bpr, gmf, mlp, neumf, lightgcn, hybrid_bpr) write a checkpoint after every
    epoch; if the run is killed, the same command with --resume continues where it stopped.
    """
    # lazy: the workflow imports torch (seconds), not needed for `recforge --help`
    from recforge.experiment.workflow import ReadOptions, TrainRequest
    from recforge.training import distributed  # lazy: imports torch
    from recforge.training.optim import SPARSE_UPDATES  # lazy: imports torch

    params = _parse_params(param)
    if sparse_updates not in SPARSE_UPDATES:  # before any data is read
        raise ConfigError(f"--sparse-updates must be one of {', '.join(SPARSE_UPDATES)}, "
                          f"not {sparse_updates!r}")
    request = TrainRequest(
        model=model, data=list(data), out=out, valid=valid,
        read=ReadOptions(format=fmt, columns=columns, duplicates=duplicates, data_dir=data_dir,
                         min_rating=min_rating, header=header, encoding=encoding),
        item_features=item_features, item_id_column=item_id_column, resume=resume,
        keep_checkpoint=keep_checkpoint, sparse_updates=sparse_updates)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = _without_option((ctx.find_root().obj or {}).get("argv", sys.argv[1:]),
                               "--nproc")
        _launch(request, params, seed=seed, checkpoint_dir=checkpoint_dir, argv=argv,
                nproc=nproc)
        return
    dist_ctx = distributed.init_from_environment(device=str(params.get("device", "auto")))
    try:
        _train(request, params, seed=seed, checkpoint_dir=checkpoint_dir, dist_ctx=dist_ctx)
    except BaseException:
        distributed.shutdown()
        raise
    # the other ranks wait for rank 0 to write the model, then all leave together
    distributed.shutdown(wait_for_others=True)


def _without_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def _launch(request: Any, params: dict[str, Any], *, seed: int | None,
            checkpoint_dir: Path | None, argv: list[str], nproc: int) -> None:
    """``--nproc N``: what every rank would check first, checked once here (one line, not
    one per rank and then the launcher's traceback), then this command in N processes."""
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import is_gradient
    from recforge.models.registry import get_model_class  # lazy: imports torch
    from recforge.training import distributed  # lazy: imports torch

    if not is_gradient(get_model_class(request.model)):
        raise ConfigError(f"--nproc: {request.model} is not trained by gradient steps; DDP "
                          "applies to mf, bpr, gmf, mlp, neumf, lightgcn and hybrid_bpr")
    estimator, _ = _prepare_train(request, dict(params), seed=seed,
                                  checkpoint_dir=checkpoint_dir, distributed=True)
    estimator._check_distributed()
    status = distributed.launch(argv, nproc)
    if status != 0:
        raise ConfigError(f"distributed training failed (torchrun exit status {status}); "
                          "the failing rank's error is printed above")


def _prepare_train(request: Any, params: dict[str, Any], *, seed: int | None,
                   checkpoint_dir: Path | None, distributed: bool) -> tuple[Any, Path]:
    """The model built from ``params`` and every check of the options and paths that
    needs no data; returns (model, its checkpoint directory). Run by each rank, and by
    ``--nproc``'s parent before it starts them."""
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import build_model, is_gradient
    from recforge.models.artifact import check_model_target  # lazy: imports torch

    model, out = request.model, request.out
    estimator = build_model(model, params, seed=seed)
    gradient = is_gradient(estimator)
    if distributed and not gradient:
        raise ConfigError(f"{model} is not trained by gradient steps; distributed training "
                          "applies to mf, bpr, gmf, mlp, neumf, lightgcn and hybrid_bpr")
    if (request.resume or checkpoint_dir is not None) and not gradient:
        raise ConfigError(f"{model} is not trained by epochs of gradient steps; --resume and "
                          "--checkpoint-dir apply to mf, bpr, gmf, mlp, neumf, lightgcn and "
                          "hybrid_bpr")
    if request.sparse_updates != "auto" and not gradient:
        raise ConfigError(f"{model} is not trained by gradient steps; --sparse-updates "
                          "applies to mf, bpr, gmf, mlp and neumf")
    _check_item_features(request, estimator)
    _check_out_dir(out)
    check_model_target(out)  # before hours of training, not after
    ckpt = checkpoint_dir or out.with_name(out.name + ".checkpoint")
    _check_checkpoint_dir(ckpt)
    if request.resume and not (ckpt / "checkpoint.pt").exists():
        raise ConfigError(f"--resume: no checkpoint in {ckpt}; run without --resume to start")
    return estimator, ckpt


def _check_item_features(request: Any, estimator: Any) -> None:
    """--item-features only for models that use item features; a clear error, before the
    data is read, for a model that needs them and would have none (neither the option
    nor a dataset name whose metadata gives them)."""
    from recforge.data.datasets import is_named_dataset  # lazy: imports sqlalchemy

    # lazy: the workflow imports torch
    from recforge.experiment.workflow import requires_item_features, uses_item_features

    model, data = request.model, request.data
    if request.item_features is not None:
        if not uses_item_features(estimator):
            raise ConfigError(f"{model} does not use item features; --item-features applies "
                              "to content and hybrid")
        return
    named = len(data) == 1 and is_named_dataset(data[0])
    if requires_item_features(estimator) and not named:
        raise ConfigError(f"{model} needs item features: pass --item-features FILE (an item "
                          "table with an id column) or train on a MovieLens dataset name")


def _train(request: Any, params: dict[str, Any], *, seed: int | None,
           checkpoint_dir: Path | None, dist_ctx: Any) -> None:
    """Train in this process (each rank under DDP); rank 0 saves and says so."""
    from recforge.experiment.workflow import train_and_save  # lazy: imports torch

    main_rank = dist_ctx is None or dist_ctx.is_main
    if not main_rank:  # one voice: rank 0 reports, the others only warn
        logging.getLogger("recforge").setLevel(logging.WARNING)
    estimator, ckpt = _prepare_train(request, params, seed=seed, checkpoint_dir=checkpoint_dir,
                                     distributed=dist_ctx is not None)
    done = train_and_save(request, estimator, checkpoint_dir=ckpt, dist_ctx=dist_ctx)
    if done is None:  # not rank 0
        return
    where = f" in {done.processes} processes ({done.backend})" if dist_ctx is not None else ""
    console.print(f"trained {request.model} on {done.n_events:,} events{where} in "
                  f"{done.seconds:.2f}s; saved to {request.out}")


@app.command()
def run(
    experiment: Path = typer.Argument(..., help="Experiment YAML file (see docs/experiments.md)."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: "
                                    "runs/NAME)."),
) -> None:
    """Run an experiment: every model of the config on its split; leaderboard and results."""
    from recforge.experiment.config import load_config  # lazy: imports torch
    from recforge.experiment.runner import run_experiment  # lazy: imports torch

    if out is not None:
        _check_out_dir(out)
    cfg = load_config(experiment)
    run_experiment(cfg, out or Path("runs") / cfg.name, console=console)


@app.command()
def tune(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    model: str = typer.Option(..., "--model", help="Model (label or name) to tune."),
    trials: int = typer.Option(20, "--trials", help="Number of Optuna trials."),
    metric: str | None = typer.Option(None, "--metric", help="Validation metric (default: "
                                      "the experiment's first)."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop after this many "
                                         "seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: "
                                    "runs/NAME-tune-MODEL)."),
) -> None:
    """Tune a model's hyperparameters with Optuna on a validation split (never the test)."""
    from recforge.experiment.config import load_config  # lazy: imports torch
    from recforge.experiment.tune import tune as run_tune  # lazy: imports torch, Optuna

    if out is not None:
        _check_out_dir(out)
    cfg = load_config(experiment)
    run_tune(cfg, model, n_trials=trials, metric=metric, timeout=timeout, seed=seed,
             out=out or Path("runs") / f"{cfg.name}-tune-{model}", config_path=experiment,
             console=console)


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="Directory of a trained model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="RECFORGE_API_KEY",
                                       help="The read key: require this X-API-Key header "
                                            "(every endpoint but /health, the web page, the "
                                            "API description at /docs and /openapi.json, "
                                            "and the admin routes)."),
    admin_key: str | None = typer.Option(None, "--admin-key", envvar="RECFORGE_ADMIN_KEY",
                                         help="The admin key: POST /admin/reload and DELETE "
                                              "/users/{id} require this X-Admin-Key header. "
                                              "With --api-key and no admin key they are off."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Also answer requests "
                                           "whose Host header names this host (repeatable; "
                                           "'*' for any). Default: the --host name and the "
                                           "loopback names."),
    events: str | None = typer.Option(None, "--events", help="Event store for POST "
                                      "/interactions: a SQLite file path or a SQLAlchemy URL "
                                      "(postgresql+psycopg://user@host/db; pip install "
                                      "'recforge\\[postgres]'). Default: MODEL.events.sqlite "
                                      "beside the model directory."),
    no_events: bool = typer.Option(False, "--no-events", help="Serve without an event store."),
    index: str = typer.Option("exact", "--index", help="exact, or ivf: an approximate faiss "
                              "index for large catalogues (dot-product models; "
                              "pip install 'recforge\\[ann]')."),
    n_probe: int = typer.Option(8, "--n-probe", help="Lists the ivf index scans per query."),
    max_body_bytes: int | None = typer.Option(None, "--max-body-bytes", help="Largest "
                                              "request body, in bytes (default 1,048,576; "
                                              "413 above)."),
    max_id_length: int | None = typer.Option(None, "--max-id-length", help="Longest user "
                                             "or item id, in characters (default 256)."),
    max_batch_results: int | None = typer.Option(None, "--max-batch-results", help="Most "
                                                 "recommendations one batch may ask for, "
                                                 "users x k (default 100,000)."),
    max_history: int | None = typer.Option(None, "--max-history", help="Most items of an "
                                           "anonymous history (default 1,000)."),
    max_events: int | None = typer.Option(None, "--max-events", help="Most events per "
                                          "POST /interactions (default 10,000)."),
    heavy_workers: int | None = typer.Option(None, "--heavy-workers", help="Heavy requests "
                                             "(batches, fold-ins, explanations, search, "
                                             "similar items, writes, reloads) run at once "
                                             "(default 4)."),
    heavy_queue: int | None = typer.Option(None, "--heavy-queue", help="Heavy requests that "
                                           "may wait; one more is answered 503 with "
                                           "Retry-After (default 16)."),
) -> None:
    """Serve recommendations over HTTP (OpenAPI docs at /docs)."""
    import torch  # lazy: seconds to import
    import uvicorn  # lazy: the server, only for this command

    from recforge.serving.app import create_app  # lazy: imports torch and FastAPI
    from recforge.serving.settings import LOOPBACK_HOSTS, Limits  # lazy: imports torch

    given = {"max_body_bytes": max_body_bytes, "max_id_length": max_id_length,
             "max_batch_results": max_batch_results, "max_history": max_history,
             "max_events": max_events, "heavy_workers": heavy_workers,
             "heavy_queue": heavy_queue}
    limits = Limits(**{name: v for name, v in given.items() if v is not None})
    # The bound name answers too, unless it stands for every interface (then name the
    # public ones with --allowed-host).
    hosts = [*LOOPBACK_HOSTS, *([host] if host not in ("0.0.0.0", "::", "") else []),
             *allowed_host]
    _check_can_listen(host, port)  # before loading the model, and as one line
    # One request's scoring is a small product: extra torch threads only contend with the
    # event loop (OpenMP spin-waits), so the server scores on one thread.
    torch.set_num_threads(1)
    store = None if no_events else (events or model.with_name(model.name + ".events.sqlite"))
    application = create_app(model, api_key=api_key, admin_key=admin_key, events=store,
                             index=index, n_probe=n_probe, allowed_hosts=hosts, limits=limits)
    console.print(f"serving {application.state.service.model.name} from {model} on "
                  f"http://{host}:{port} (docs: /docs)", highlight=False)
    if host in ("0.0.0.0", "::") and not allowed_host:
        console.print("note: only requests naming localhost, 127.0.0.1 or ::1 in their Host "
                      "header are answered; add this machine's public names with "
                      "--allowed-host NAME", highlight=False)
    _reload_on_sighup(application, model)
    gc.collect()
    gc.freeze()  # the loaded model's objects need no further GC scans: fewer latency spikes
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)


def _reload_on_sighup(application: Any, model: Path) -> None:
    """SIGHUP reloads the model (``kill -HUP``), in a thread, off the signal handler; a
    reload that fails keeps the previous model serving."""
    def on_sighup(*_: object) -> None:
        def work() -> None:
            try:
                application.state.reload()
                log.warning("reloaded %s", model)
            except Exception as exc:  # keep serving the old model
                log.error("reload failed, still serving the previous model: %s", exc)

        threading.Thread(target=work, daemon=True).start()

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_sighup)


@app.command()
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
    _check_out_file(out)
    est = _load_model(model)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if history is not None:
        items = [x.strip() for x in history.split(",") if x.strip()]
        if not items:
            raise ConfigError("--history needs at least one item id")
        recs = est.recommend_for_history(items, k=k, unknown="skip")
        if recs.attrs.get("unknown_items"):
            _status(out).print(f"[yellow]left out item ids unknown to the model: "
                               f"{recs.attrs['unknown_items']}[/yellow]")
        _write_frame(recs, out)
        _status(out).print(f"wrote {len(recs):,} recommendations for the history to {out}")
        return
    user_ids = est.users_.ids if users == "all" else _read_user_list(Path(users))
    if unknown == "error":  # said in the CLI's words (the library's names its argument)
        ids = np.asarray(user_ids, dtype=object)
        bad = ids[est.users_.index(ids) < 0]
        if len(bad):
            shown = ", ".join(repr(x) for x in bad[:5].tolist())
            raise ModelError(f"{len(bad)} unknown user id(s) in {users}: {shown}"
                             f"{' ...' if len(bad) > 5 else ''}; use --unknown skip or "
                             "--unknown popular to skip them or recommend popular items")
    recs = est.recommend(user_ids, k=k, include_seen=include_seen, unknown=unknown)  # type: ignore[arg-type]
    _write_frame(recs, out)
    _status(out).print(f"wrote {len(recs):,} recommendations for "
                       f"{recs['user'].nunique():,} users to {out}")


@app.command()
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
    _check_out_file(out)
    est = _load_model(model)
    if not est.predicts_ratings:
        raise ConfigError(f"model {est.name!r} ranks items but does not predict ratings; "
                          "train a rating model (e.g. mf) to use `recforge predict`")
    users, items = read_pairs(pairs, columns=parse_columns(columns), header=header,
                              encoding=encoding)
    pred = est.predict(users, items)
    result = pd.DataFrame({"user": users, "item": items, "prediction": pred})
    _write_frame(result, out)
    _status(out).print(f"wrote {len(result):,} predictions to {out}")


@app.command("evaluate")
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
    header: bool | None = typer.Option(
        None, "--header/--no-header", help="Whether text files start with a line of column "
        "names (default: guessed from the first lines)."),
    encoding: str = typer.Option("utf-8", "--encoding", help="Text encoding of delimited "
                                 "files, e.g. latin-1."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Directory holding extracted datasets (for dataset names)."),
    out: Path | None = typer.Option(None, "--out", help="Write the results as JSON "
                                    "(- for standard output)."),
) -> None:
    """Evaluate a trained model on held-out data (full ranking by default)."""
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import ReadOptions, concat, evaluate_files, read_data

    if out is not None:
        _check_out_file(out)
    est = _load_model(model)
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
    shown = _status(out)  # the JSON alone on standard output with --out -
    shown.print(_metrics_table(f"{est.name} on {test} ({result.protocol} protocol, "
                               f"{result.n_users:,} users, {result.seconds:.2f}s)",
                               rows, ["metric", "value"]))
    for note in result.notes:
        shown.print(f"note: {note}")
    if out is not None:
        payload = {"model": est.name, "params": est.get_params(), "test": test,
                   "protocol": result.protocol, "n_users": result.n_users,
                   "metrics": result.summary, "seconds": result.seconds, "notes": result.notes}
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")


@app.command("models")
def models_cmd() -> None:
    """List the models that can be trained, with their hyperparameters."""
    from recforge.models.registry import available_models, get_model_class  # lazy: torch

    table = Table(title="Models")
    table.add_column("name")
    table.add_column("class")
    table.add_column("hyperparameters (defaults)")
    for name in available_models():
        cls = get_model_class(name)
        sig = inspect.signature(cls.__init__)
        params = ", ".join(f"{p.name}={p.default!r}" for p in sig.parameters.values()
                           if p.name != "self")
        table.add_row(name, cls.__name__, params or "-")
    console.print(table)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("quickstart-output"), "--out",
                             help="Where to write results, report and trained models."),
    data_dir: Path | None = typer.Option(None, "--data-dir",
                                            help="Directory holding extracted datasets."),
    k: int = typer.Option(10, "--k", help="Cutoff of the ranking metrics."),
    models: str | None = typer.Option(None, "--models",
                                         help="Comma-separated model names (default: all)."),
    download: bool = typer.Option(True, "--download/--no-download",
                                  help="Try to download ml-100k when no local copy exists."),
) -> None:
    """Fit and compare every model on ml-100k (local or downloaded) or generated data;
    leaderboard, report.html and the trained models in --out."""
    from recforge.experiment.quickstart import run_quickstart  # lazy: imports torch

    _check_out_dir(out)
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    run_quickstart(out=out, data_dir=data_dir, k=k, console=console, models=names,
                   download=download)


def _os_error(exc: OSError) -> str:
    """``IsADirectoryError: [Errno 21] ...: 'x'`` as ``x: is a directory``."""
    what = (exc.strerror or str(exc)).rstrip(".").lower()
    return f"{exc.filename}: {what}" if exc.filename else str(exc)


def _check_can_listen(host: str, port: int) -> None:
    """A clear error now for an address in use or a host that is not this machine's, where
    uvicorn would print its own and exit 3 after the banner."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: "
                              f"{(exc.strerror or str(exc)).lower()}") from None


def _check_checkpoint_dir(ckpt: Path) -> None:
    _check_out_dir(ckpt, "--checkpoint-dir")  # '-', a device or a FIFO is no directory
    if ckpt.exists() and not ckpt.is_dir():
        raise ConfigError(f"--checkpoint-dir {ckpt} exists and is not a directory")


def _check_out_file(out: Path, option: str = "--out") -> None:
    """Refuse an output file path that cannot be one, before any work is done. ``-`` is
    standard output; a device or a FIFO is written to, a regular file replaced atomically
    (see :func:`recforge._fs.output_target`)."""
    try:
        check_output_file(out)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: {exc.strerror or exc}") from None


def _check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse a directory output that cannot be one (``-``, a device, a FIFO, a file)."""
    try:
        check_output_dir(out)
    except OSError as exc:
        raise ConfigError(f"{option} {out}: {exc.strerror or exc}") from None


def _status(out: Path | None) -> Console:
    """Where a command's messages go: standard error when its output is ``-``."""
    return err_console if out is not None and is_stdout(out) else console


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning recforge errors into one line and exit status 2.

    Usage errors (unknown option, missing argument) are reported by Typer, also with
    status 2.
    """
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        app(args=args, prog_name="recforge", obj={"argv": args})
    except (RecforgeError, OSError) as exc:  # bad input, options, paths: one line
        text = str(exc) if isinstance(exc, RecforgeError) else _os_error(exc)
        err_console.print(f"[bold red]error:[/bold red] {escape(text)}", highlight=False,
                          soft_wrap=True, markup=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
