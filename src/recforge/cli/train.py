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
from recforge.experiment.budget import DEFAULT_BUDGET, parse_budget
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
    auto: bool = typer.Option(False, "--auto", help="First tune the few hyperparameters "
                              "that matter on a validation split carved from --data (a "
                              "fixed seed; the defaults are trial 0), print what was chosen "
                              "and the validation gain, then train on all of --data with "
                              "them. Parameters given with -p stay fixed."),
    budget: str | None = typer.Option(None, "--budget", help="--auto's time budget for the "
                                      "search: 60s, 5m, 1h or seconds (default 60s); the "
                                      "final fit comes after it."),
    dp_epsilon: float | None = typer.Option(
        None, "--dp-epsilon", help="Train with differential privacy per user (Opacus) to "
        "this epsilon; the spent epsilon is saved with the model (docs/privacy.md)."),
    dp_delta: float | None = typer.Option(None, "--dp-delta", help="Delta of --dp-epsilon "
                                          "(default 1 / number of users)."),
) -> None:
    """Train MODEL on --data and save it to --out.

    Gradient models ({models_with:gradient}) write a checkpoint after every
    epoch; if the run is killed, the same command with --resume continues where it stopped.
    """
    # The arguments that need no torch are checked first: a mistake is answered at once.
    model = resolve_name(model)  # 'EASE' -> 'ease'; 'lightfm' -> which model to use
    budget_s = _check_auto(auto, budget, nproc=nproc, resume=resume)
    check_data_specs([*data, *([valid] if valid else [])])
    check_out_dir(out)
    if item_metadata is not None:  # a bad table is said before the data are read
        from recforge.data.metadata import read_item_metadata  # lazy: imports pandas

        read_item_metadata(item_metadata, item_id_column)
    # lazy: the workflow imports torch (seconds), not needed for `recforge --help`
    from recforge.experiment.workflow import ReadOptions, TrainRequest
    from recforge.training.optim import SPARSE_UPDATES  # lazy: imports torch

    params = parse_params(param, (ctx.find_root().obj or {}).get("argv"))
    params = _with_privacy(model, params, dp_epsilon, dp_delta)
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
    if budget_s is not None:  # the model's search space, before any data is read
        from recforge.experiment.auto import auto_space  # lazy: imports torch

        auto_space(model, params)
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = without_option((ctx.find_root().obj or {}).get("argv", sys.argv[1:]),
                              "--nproc")
        _launch(request, params, seed=seed, checkpoint_dir=checkpoint_dir, argv=argv,
                nproc=nproc)
    else:
        _train_here(request, params, seed=seed, checkpoint_dir=checkpoint_dir,
                    auto_budget=budget_s)


def _with_privacy(model: str, params: dict[str, Any], epsilon: float | None,
                  delta: float | None) -> dict[str, Any]:
    """``--dp-epsilon`` / ``--dp-delta`` as the model's ``dp_epsilon`` / ``dp_delta``,
    refused before any data is read for a model without private training."""
    if epsilon is None and delta is None:
        if params.get("dp_epsilon") is not None:  # -p dp_epsilon=E: the same defaults
            from recforge.models.registry import get_model_class  # lazy: imports the models

            cls = get_model_class(model)
            return {**getattr(cls, "private_defaults", {}), **params}
        return params
    if epsilon is None:
        raise ConfigError("--dp-delta is the delta of --dp-epsilon; add --dp-epsilon")
    from recforge.models.registry import (  # lazy: imports the models
        get_model_class,
        private_models,
    )

    if model not in private_models():
        raise ConfigError(f"--dp-epsilon: {model} does not support differentially private "
                          f"training; models that do: {', '.join(private_models())}")
    flags = {"dp_epsilon": epsilon, **({"dp_delta": delta} if delta is not None else {})}
    both = sorted(set(flags) & set(params))
    if both:
        raise ConfigError(f"-p {both[0]}= and --{both[0].replace('_', '-')} both given; "
                          "use one")
    defaults = getattr(get_model_class(model), "private_defaults", {})  # -p wins
    return {**defaults, **params, **flags}


def _check_auto(auto: bool, budget: str | None, *, nproc: int, resume: bool) -> float | None:
    """``--auto``'s budget in seconds (``None`` without ``--auto``); the options it does
    not go with refused before any data is read."""
    if not auto:
        if budget is not None:
            raise ConfigError("--budget is the time budget of --auto; add --auto")
        return None
    if nproc > 1:
        raise ConfigError("--auto tunes in this process; train with --nproc after it, with "
                          "the parameters it chose (-p)")
    if resume:
        raise ConfigError("--auto cannot --resume: resume with the parameters it chose (-p) "
                          "instead of --auto")
    try:
        return DEFAULT_BUDGET if budget is None else parse_budget(budget)
    except ConfigError as exc:
        raise ConfigError(f"--budget: {exc}") from None


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
                checkpoint_dir: Path | None, auto_budget: float | None = None) -> None:
    """Train in this process: alone, or as one rank of a DDP job started by torchrun."""
    from recforge.training import distributed  # lazy: imports torch

    dist_ctx = distributed.init_from_environment(device=str(params.get("device", "auto")))
    try:
        _train(request, params, seed=seed, checkpoint_dir=checkpoint_dir, dist_ctx=dist_ctx,
               auto_budget=auto_budget)
    except BaseException:
        distributed.shutdown()
        raise
    # the other ranks wait for rank 0 to write the model, then all leave together
    distributed.shutdown(wait_for_others=True)


def _train(request: TrainRequest, params: dict[str, Any], *, seed: int | None,
           checkpoint_dir: Path | None, dist_ctx: Any, auto_budget: float | None = None
           ) -> None:
    """Train in this process (each rank under DDP); rank 0 saves and says so."""
    from recforge.experiment.workflow import train_and_save  # lazy: imports torch

    main_rank = dist_ctx is None or dist_ctx.is_main
    if not main_rank:  # one voice: rank 0 reports, the others only warn
        logging.getLogger("recforge").setLevel(logging.WARNING)
    estimator, ckpt = _prepare_train(request, params, seed=seed, checkpoint_dir=checkpoint_dir,
                                     distributed=dist_ctx is not None)
    choose = (None if auto_budget is None
              else _auto_choice(request.model, params, seed=seed, budget=auto_budget))
    done = train_and_save(request, estimator, checkpoint_dir=ckpt, dist_ctx=dist_ctx,
                          choose=choose)
    if done is None:  # not rank 0
        return
    where = f" in {done.processes} processes ({done.backend})" if dist_ctx is not None else ""
    console.print(f"trained {request.model} on {done.n_events:,} events{where} in "
                  f"{done.seconds:.2f}s; saved to {request.out}")


def _auto_choice(model: str, params: dict[str, Any], *, seed: int | None,
                 budget: float) -> Any:
    """``--auto``: what :func:`~recforge.experiment.workflow.train_and_save` calls once the
    data are read: tune on a validation split carved from them, print the choice, and
    return the model built with it and the record of the choice for its metadata."""
    from recforge.experiment.auto import (  # lazy: imports torch
        AUTO_SEED,
        auto_tune,
        print_auto,
        validation_split,
    )
    from recforge.experiment.config import ModelConfig  # lazy: imports pandas
    from recforge.experiment.workflow import build_model  # lazy: imports torch

    def choose(estimator: Any, train: Any, features: Any) -> Any:
        split_seed = AUTO_SEED if seed is None else seed
        inner, where = validation_split(estimator, train, item_features=features,
                                        seed=split_seed)
        fixed = estimator.get_params()  # the defaults, -p and --seed over them
        fixed = {k: v for k, v in fixed.items() if k in params or k == "seed"}
        result = auto_tune(ModelConfig(name=model, params=fixed), inner, budget=budget,
                           where=where, seed=split_seed, console=console)
        print_auto(console, result)
        return (build_model(model, {**params, **result.chosen}, seed=seed),
                {"auto": result.record()})

    return choose
