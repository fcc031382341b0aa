"""Commands that run experiments: ``run``, ``tune``, ``quickstart``, and ``models``
(what can be trained)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from recforge.cli.common import check_out_dir, console
from recforge.errors import ConfigError
from recforge.models.registry import resolve_name


def run(
    experiment: Path = typer.Argument(..., help="Experiment YAML file (see docs/experiments.md)."),
    out: Path | None = typer.Option(None, "--out", help="Output directory (default: "
                                    "runs/NAME)."),
) -> None:
    """Run an experiment: every model of the config on its split; leaderboard and results."""
    if out is not None:
        check_out_dir(out)
    check_experiment_file(experiment)
    from recforge.experiment.config import load_config  # lazy: imports torch
    from recforge.experiment.runner import run_experiment  # lazy: imports torch

    cfg = load_config(experiment)
    run_experiment(cfg, out or Path("runs") / cfg.name, console=console)


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
    if out is not None:
        check_out_dir(out)
    check_experiment_file(experiment)
    from recforge.experiment.config import load_config  # lazy: imports torch
    from recforge.experiment.tune import tune as run_tune  # lazy: imports torch, Optuna

    cfg = load_config(experiment)
    model = _tuned_model(cfg, model, experiment)
    run_tune(cfg, model, n_trials=trials, metric=metric, timeout=timeout, seed=seed,
             out=out or Path("runs") / f"{cfg.name}-tune-{model}", config_path=experiment,
             console=console)


def check_experiment_file(path: Path) -> None:
    """A missing experiment file, said before the config reader (torch) is imported (the
    words of :func:`recforge.experiment.config.load_config`)."""
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")


def _tuned_model(cfg: Any, model: str, experiment: Path) -> str:
    """``--model`` of ``tune``: a label or name of the experiment as given, else a model
    name as the registry resolves it (``EASE`` -> ``ease``)."""
    if any(model in (m.display, m.name) for m in cfg.models):
        return model
    try:
        name = resolve_name(model)
    except ConfigError as exc:
        labels = ", ".join(m.display for m in cfg.models)
        raise ConfigError(f"--model {model!r} is not a model of {experiment} ({labels}), "
                          f"nor a registered one: {exc}") from None
    same = [m.display for m in cfg.models if m.name == name]
    return same[0] if len(same) == 1 else name


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
    check_out_dir(out)
    names = ([resolve_name(m.strip()) for m in models.split(",") if m.strip()] if models
             else None)
    from recforge.experiment.quickstart import run_quickstart  # lazy: imports torch

    run_quickstart(out=out, data_dir=data_dir, k=k, console=console, models=names,
                   download=download)


def models_cmd() -> None:
    """List the models that can be trained, with their hyperparameters."""
    from recforge.models.registry import (  # lazy: torch
        available_models,
        get_model_class,
        private_models,
    )

    table = Table(title="Models")  # names fold onto the next line when narrow, never cut
    table.add_column("name", overflow="fold")
    table.add_column("class", overflow="fold")
    table.add_column("DP", overflow="fold")  # trains with differential privacy (dp_epsilon)
    table.add_column("hyperparameters (defaults)", overflow="fold")
    private = set(private_models())
    for name in available_models():
        cls = get_model_class(name)
        sig = inspect.signature(cls.__init__)
        params = ", ".join(f"{p.name}={p.default!r}" for p in sig.parameters.values()
                           if p.name != "self")
        table.add_row(name, cls.__name__, "yes" if name in private else "-", params or "-")
    console.print(table)

