"""``recforge train``: options checked before any data is read, then the workflow's
:func:`~recforge.experiment.workflow.train_and_save`, in this process or in one process per
rank under DDP (``--nproc``)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from recforge.cli.common import (
    ENCODING_OPTION,
    HEADER_OPTION,
    check_checkpoint_dir,
    check_data_specs,
    check_out_dir,
    console,
    models_with,
    parse_params,
)
from recforge.errors import ConfigError
from recforge.models.registry import resolve_name

if TYPE_CHECKING:
    from recforge.experiment.workflow import TrainRequest


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
    header: bool | None = HEADER_OPTION,
    encoding: str = ENCODING_OPTION,
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
                                              help="Id column of --item-features and "
                                                   "--item-metadata (default: item, id or "
                                                   "the first)."),
    item_metadata: Path | None = typer.Option(
        None, "--item-metadata", help="Item table (CSV / TSV / Parquet) to keep with any "
        "model and show beside its items: an id column and display columns (title, "
        "genres, ...). Not learned from (see --item-features)."),
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

    Gradient models ({models_with:gradient}) write a checkpoint after every
    epoch; if the run is killed, the same command with --resume continues where it stopped.
    """
    # The arguments that need no torch are checked first: a mistake is answered at once.
    model = resolve_name(model)  # 'EASE' -> 'ease'; 'lightfm' -> which model to use
    check_data_specs([*data, *([valid] if valid else [])])
    check_out_dir(out)
    if item_metadata is not None:  # a bad table is said before the data are read
        from recforge.data.metadata import read_item_metadata  # lazy: imports pandas

        read_item_metadata(item_metadata, item_id_column)
    # lazy: the workflow imports torch (seconds), not needed for `recforge --help`
    from recforge.experiment.workflow import ReadOptions, TrainRequest
    from recforge.training.optim import SPARSE_UPDATES  # lazy: imports torch

    params = parse_params(param, (ctx.find_root().obj or {}).get("argv"))
    if sparse_updates not in SPARSE_UPDATES:  # before any data is read
        raise ConfigError(f"--sparse-updates must be one of {', '.join(SPARSE_UPDATES)}, "
                          f"not {sparse_updates!r}")
    request = TrainRequest(
        model=model, data=list(data), out=out, valid=valid,
        read=ReadOptions(format=fmt, columns=columns, duplicates=duplicates, data_dir=data_dir,
                         min_rating=min_rating, header=header, encoding=encoding),
        item_features=item_features, item_id_column=item_id_column,
        item_metadata=item_metadata, resume=resume,
        keep_checkpoint=keep_checkpoint, sparse_updates=sparse_updates)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = without_option((ctx.find_root().obj or {}).get("argv", sys.argv[1:]),
                              "--nproc")
        _launch(request, params, seed=seed, checkpoint_dir=checkpoint_dir, argv=argv,
                nproc=nproc)
    else:
        _train_here(request, params, seed=seed, checkpoint_dir=checkpoint_dir)


def without_option(argv: list[str], name: str) -> list[str]:
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


def _launch(request: TrainRequest, params: dict[str, Any], *, seed: int | None,
            checkpoint_dir: Path | None, argv: list[str], nproc: int) -> None:
    """``--nproc N``: what every rank would check first, checked once here (one line, not
    one per rank and then the launcher's traceback), then this command in N processes."""
    # lazy: the workflow imports torch
    from recforge.experiment.workflow import is_gradient
    from recforge.models.registry import get_model_class  # lazy: imports torch
    from recforge.training import distributed  # lazy: imports torch

    if not is_gradient(get_model_class(request.model)):
        raise ConfigError(f"--nproc: {request.model} is not trained by gradient steps; DDP "
                          f"applies to {models_with('gradient')}")
    estimator, _ = _prepare_train(request, dict(params), seed=seed,
                                  checkpoint_dir=checkpoint_dir, distributed=True)
    estimator._check_distributed()
    status = distributed.launch(argv, nproc)
    if status != 0:
        raise ConfigError(f"distributed training failed (torchrun exit status {status}); "
                          "the failing rank's error is printed above")


def _prepare_train(request: TrainRequest, params: dict[str, Any], *, seed: int | None,
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
                          f"applies to {models_with('gradient')}")
    if (request.resume or checkpoint_dir is not None) and not gradient:
        raise ConfigError(f"{model} is not trained by epochs of gradient steps; --resume and "
                          f"--checkpoint-dir apply to {models_with('gradient')}")
    if request.sparse_updates != "auto" and not gradient:
        raise ConfigError(f"{model} is not trained by gradient steps; --sparse-updates "
                          f"applies to {models_with('sparse_user_updates')}")
    _check_item_features(request, estimator)
    check_out_dir(out)
    check_model_target(out)  # before hours of training, not after
    ckpt = checkpoint_dir or out.with_name(out.name + ".checkpoint")
    check_checkpoint_dir(ckpt)
    if request.resume and not (ckpt / "checkpoint.pt").exists():
        raise ConfigError(f"--resume: no checkpoint in {ckpt}; run without --resume to start")
    return estimator, ckpt


def _check_item_features(request: TrainRequest, estimator: Any) -> None:
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
                              f"to {models_with('uses_item_features')}")
        return
    named = len(data) == 1 and is_named_dataset(data[0])
    if requires_item_features(estimator) and not named:
        raise ConfigError(f"{model} needs item features: pass --item-features FILE (an item "
                          "table with an id column) or train on a MovieLens dataset name")


def _train_here(request: TrainRequest, params: dict[str, Any], *, seed: int | None,
                checkpoint_dir: Path | None) -> None:
    """Train in this process: alone, or as one rank of a DDP job started by torchrun."""
    from recforge.training import distributed  # lazy: imports torch

    dist_ctx = distributed.init_from_environment(device=str(params.get("device", "auto")))
    try:
        _train(request, params, seed=seed, checkpoint_dir=checkpoint_dir, dist_ctx=dist_ctx)
    except BaseException:
        distributed.shutdown()
        raise
    # the other ranks wait for rank 0 to write the model, then all leave together
    distributed.shutdown(wait_for_others=True)


def _train(request: TrainRequest, params: dict[str, Any], *, seed: int | None,
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

