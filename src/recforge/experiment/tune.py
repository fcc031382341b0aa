"""Hyperparameter search with Optuna on a validation split, never on the test set.

``recforge tune EXPERIMENT.yaml --model NAME --trials N``: the experiment's data and split
give the training part; its validation part (``data.valid`` / ``split.valid_size``) or, when
there is none, a seeded per-user random 20% of the training events, scores each trial.
Gradient models report the validation metric every epoch, so Optuna's median pruner stops
hopeless trials early. The best parameters are written as YAML (``best_params.yaml``) and
into a copy of the experiment file with the model's ``params`` replaced
(``EXPERIMENT.tuned.yaml``), ready for ``recforge run``.

Search spaces are per model (each model class's ``tuning_space``, read through
:func:`recforge.models.registry.tuning_space`; documented in ``docs/experiments.md``); the
model's ``params`` in the experiment file fix the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from rich.console import Console
from rich.markup import escape

from recforge._fs import atomic_write_text
from recforge.data.split import cold_start_items, leave_last_out, random_split
from recforge.errors import ConfigError
from recforge.evaluation.metrics import Metric
from recforge.experiment.config import (
    NEXT_ITEM_METRICS,
    ExperimentConfig,
    ModelConfig,
    check_model_params,
)
from recforge.experiment.workflow import (
    PreparedData,
    evaluate_split,
    fit_model,
    is_gradient,
    output_dir,
    positives,
    prepare_data,
    split_data,
)
from recforge.models.registry import available_models, create_model, tuning_space

log = logging.getLogger(__name__)

__all__ = ["run_study", "tune"]

def _suggest(trial: Any, name: str, spec: tuple[Any, ...]) -> Any:
    kind = spec[0]
    if kind == "cat":
        return trial.suggest_categorical(name, list(spec[1]))
    if kind == "int":
        return trial.suggest_int(name, int(spec[1]), int(spec[2]))
    if kind == "logint":
        return trial.suggest_int(name, int(spec[1]), int(spec[2]), log=True)
    if kind == "log":
        return trial.suggest_float(name, float(spec[1]), float(spec[2]), log=True)
    return trial.suggest_float(name, float(spec[1]), float(spec[2]))


def tune(cfg: ExperimentConfig, model: str, *, n_trials: int = 20, out: str | Path,
         metric: str | None = None, timeout: float | None = None, seed: int = 0,
         space: dict[str, tuple[Any, ...]] | None = None, config_path: str | Path | None = None,
         console: Console | None = None) -> dict[str, Any]:
    """Search ``model``'s hyperparameters (a label or name from ``cfg.models``, or any
    registered model) and write the best as YAML into ``out``. Returns the summary."""
    console = console or Console()
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ConfigError(f"--trials must be an integer >= 1, got {n_trials!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
        raise ConfigError(f"--timeout must be a number of seconds > 0, got {timeout!r}")
    entry, space = _entry_and_space(cfg, model, space)
    metric = metric or cfg.metrics[0]
    parsed = Metric.parse(metric)
    template = _checked_template(cfg, entry, metric, parsed)  # before the data is read
    out = output_dir(out, make=False)  # before the data is read and the trials run
    inner, where = _validation_split(cfg, prepare_data(
        cfg, rating_side=bool(template.predicts_ratings) or None))
    rating = template.predicts_ratings and parsed.kind == "rating"
    if cfg.protocol != "full" and not rating:
        where += f", {cfg.protocol} protocol"
    lower_is_better = parsed.kind == "rating"
    console.print(f"tuning {escape(entry.display)} on {where}: {n_trials} trials, {parsed.label} "
                  f"({'lower' if lower_is_better else 'higher'} is better); search space: "
                  f"{', '.join(space)}", highlight=False)
    objective = _objective(cfg.protocol, entry, space, metric, inner, rating)
    start = time.perf_counter()

    def show(study_: Any, trial: Any) -> None:
        state = trial.state.name.lower()
        value = "" if trial.value is None else f"{parsed.label} {trial.value:.4f}"
        console.print(f"trial {trial.number + 1}/{n_trials} {state} {value} "
                      f"{escape(str(trial.params))}", highlight=False)

    study = run_study(objective, lower_is_better=lower_is_better, seed=seed,
                      n_trials=n_trials, timeout=timeout, callbacks=[show])
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ConfigError("every trial was pruned or failed; widen the search space")
    best = {**entry.params, **study.best_params}
    summary = {"model": entry.name, "label": entry.display, "metric": parsed.label,
               "value": float(study.best_value), "params": best,
               "trials": len(study.trials), "complete": len(complete),
               "pruned": sum(t.state.name == "PRUNED" for t in study.trials),
               "validation": where, "seconds": round(time.perf_counter() - start, 2)}
    _write_outputs(cfg, out, entry, summary, config_path, console)
    return summary


def _entry_and_space(cfg: ExperimentConfig, model: str,
                     space: dict[str, tuple[Any, ...]] | None
                     ) -> tuple[ModelConfig, dict[str, tuple[Any, ...]]]:
    """The experiment's entry of ``model`` (or a new one for a registered model) and the
    hyperparameters to search: ``space`` or the model's, less those the entry fixes."""
    entry = next((m for m in cfg.models if model in (m.display, m.name)), None)
    if entry is None:
        if model not in available_models():
            raise ConfigError(f"model {model!r} is neither in the experiment nor registered")
        entry = ModelConfig(name=model)
    space = dict(space if space is not None else tuning_space(entry.name))
    space = {k: v for k, v in space.items() if k not in entry.params}
    if not space:
        raise ConfigError(f"no hyperparameters to search for {entry.name!r} (no default "
                          "search space, or the experiment fixes them all)")
    return entry, space


def _checked_template(cfg: ExperimentConfig, entry: ModelConfig, metric: str,
                      parsed: Metric) -> Any:
    """The model with the entry's parameters, checked with the validation metric."""
    template = create_model(entry.name, **entry.params)
    check_model_params(template, entry.display)
    if cfg.task == "next_item" and (parsed.name not in NEXT_ITEM_METRICS or parsed.k is None):
        raise ConfigError(f"--metric {metric}: a next_item experiment is tuned on hr@K, "
                          "ndcg@K or mrr@K of each validation event")
    if parsed.kind == "rating" and not template.predicts_ratings:
        raise ConfigError(f"--metric {metric}: {entry.display} does not predict ratings; "
                          "tune it on a ranking metric such as ndcg@10")
    if is_gradient(template):  # it validates every epoch on the metric
        check_model_params(template.clone().set_params(valid_metric=metric.lower()),
                           f"--metric {metric}")
    return template


def _validation_split(cfg: ExperimentConfig, data: PreparedData) -> tuple[PreparedData, str]:
    """The split trials are scored on (its ``test`` part is the validation part, never the
    experiment's test set), and the words that say what it is."""
    if cfg.task == "next_item":
        return _next_item_validation(cfg, data)
    cold = cfg.split.method == "cold_start_items"
    if data.valid is not None:
        train, valid = data.train, data.valid
        where = "the experiment's validation part"
        if cold:
            where += " (cold items, ranked among themselves)"
    elif cold:
        # as the experiment measures: items with no training event, ranked among themselves
        split = cold_start_items(data.train, 0.2, seed=cfg.split.seed + 1)
        train, valid = split.train, split.test
        where = ("20% of the training items held out as cold items, ranked among "
                 "themselves (the test set is not used)")
    else:
        split = random_split(data.train, test_size=0.2, by_user=True, seed=cfg.split.seed + 1)
        train, valid = split.train, split.test
        where = "a per-user random 20% of the training events (the test set is not used)"
    threshold = cfg.data.min_rating
    inner = PreparedData(train=train, test=valid, valid=None,
                         train_pos=positives(train, threshold),  # type: ignore[arg-type]
                         test_pos=positives(valid, threshold),  # type: ignore[arg-type]
                         valid_pos=None, item_features=data.item_features,
                         feature_bundle=data.feature_bundle,
                         candidates=valid.items.ids[np.unique(valid.item)] if cold else None,
                         threshold_order=data.threshold_order)
    return inner, where


def _next_item_validation(cfg: ExperimentConfig, data: PreparedData
                          ) -> tuple[PreparedData, str]:
    """The next-item split trials are scored on: the experiment's validation targets
    (predicted from the training events, as sequence models validate), or else the
    experiment's split made again inside the training part (its last events as targets);
    the test targets are never read."""
    if data.valid_pos is not None:
        train, train_pos, test, test_pos = data.train, data.train_pos, data.valid, data.valid_pos
        history = data.train_pos
        where = "the experiment's validation targets, predicted from the training events"
    else:
        if cfg.split.method == "files":
            split = leave_last_out(data.train_pos)
        else:
            split = split_data(cfg, data.train_pos, valid=False)[0]
        train = train_pos = split.train
        test = test_pos = split.test
        history = split.history if split.history is not None else split.test_input()
        where = (f"the {cfg.split.method if cfg.split.method != 'files' else 'leave_last_out'}"
                 " split made again inside the training part (the test set is not used)")
    inner = PreparedData(train=train, test=test, valid=None, train_pos=train_pos,
                         test_pos=test_pos, valid_pos=None, item_features=data.item_features,
                         feature_bundle=data.feature_bundle,
                         task="next_item", history=history, sessions=data.sessions,
                         exclude_seen=data.exclude_seen, sampled=data.sampled,
                         by_length=None, gap=data.gap)
    if data.sampled:
        where += f", sampled 1+{data.sampled}"
    return inner, where


def run_study(objective: Callable[[Any], float], *, lower_is_better: bool, seed: int,
              n_trials: int | None, timeout: float | None, callbacks: list[Any],
              first: dict[str, Any] | None = None,
              proceed: Callable[[], bool] | None = None) -> Any:
    """An Optuna study of ``objective`` (TPE seeded with ``seed``, the median pruner),
    run for ``n_trials`` or ``timeout`` seconds; ``first``: the parameters of trial 0
    (``--auto`` puts the defaults there), which starts whatever the timeout (the
    objective may stop it); the others follow when ``proceed()`` says so after it (a
    callback's ``study.stop()`` stops only the ``optimize`` call it is in). Returns the
    study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if lower_is_better else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                   n_warmup_steps=2))
    start = time.perf_counter()
    if first is not None:
        study.enqueue_trial(first)
        study.optimize(objective, n_trials=1, callbacks=callbacks, catch=())
        n_trials = None if n_trials is None else n_trials - 1
        if timeout is not None:
            timeout -= time.perf_counter() - start
            if timeout <= 0:
                return study
        if n_trials == 0 or (proceed is not None and not proceed()):
            return study
    study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=callbacks,
                   catch=())
    return study


def _objective(protocol: str, entry: ModelConfig, space: dict[str, tuple[Any, ...]],
               metric: str, inner: PreparedData, rating: bool, *,
               deadline: float | None = None,
               per_user: dict[int, Any] | None = None) -> Callable[[Any], float]:
    """One trial: fit as `recforge run` trains (rating models on the ratings whatever the
    metric, the others on the positives), score on the validation part (a ranking metric
    on its positives, with the experiment's ``protocol`` and a cold-start split's
    candidates); gradient models report the metric every epoch to the pruner, and are
    pruned at the end of an epoch past ``deadline`` (a ``time.perf_counter`` value).
    ``per_user``: filled with each trial's per-user values (a Series by user) of a
    ranking metric."""
    label = Metric.parse(metric).label
    valid_eval = inner.test if rating else inner.test_pos

    def objective(trial: Any) -> float:
        params = {**entry.params, **{k: _suggest(trial, k, v) for k, v in space.items()}}
        model_ = create_model(entry.name, **params)
        train = inner.training_parts(model_)[0]
        where = f"trial {trial.number + 1}"
        if is_gradient(model_):
            model_.set_params(valid_metric=metric.lower())
            fit_model(model_, where, train, valid_eval, features=inner.features_for(model_),
                      epoch_callback=_pruning_report(trial, metric.lower(), deadline))
        else:
            fit_model(model_, where, train, features=inner.features_for(model_))
        res = evaluate_split(model_, inner, [metric], protocol=protocol)
        value_key = next((k for k in res.summary if k == label
                          or k.startswith(label + " (")), label)
        value = res[value_key]
        if not math.isfinite(value):
            raise optuna.TrialPruned()
        if per_user is not None and value_key in res.per_user.columns:
            per_user[trial.number] = res.per_user.set_index("user")[value_key].sort_index()
        return float(value)

    return objective


def _pruning_report(trial: Any, key: str, deadline: float | None = None
                    ) -> Callable[[dict[str, Any]], None]:
    """An epoch callback reporting the validation metric ``key`` to Optuna's pruner; past
    ``deadline`` (a ``time.perf_counter`` value) the trial is pruned."""
    def report(record: dict[str, Any]) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            trial.set_user_attr("out_of_time", True)
            raise optuna.TrialPruned()
        value = record.get(key)
        if value is None:
            return
        trial.report(float(value), record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    return report


def _write_outputs(cfg: ExperimentConfig, out: Path, entry: ModelConfig,
                   summary: dict[str, Any], config_path: str | Path | None,
                   console: Console) -> None:
    """``best_params.yaml``, and the experiment with the best parameters as
    ``EXPERIMENT.tuned.yaml``."""
    best = summary["params"]
    output_dir(out)
    atomic_write_text(out / "best_params.yaml", yaml.safe_dump(summary, sort_keys=False))
    tuned = cfg.to_dict()
    for m in tuned["models"]:
        if (m["label"] or m["name"]) == entry.display:
            m["params"] = best  # tuned: auto: true would search them again
            m["auto"], m["auto_budget"] = False, None
    if not any((m["label"] or m["name"]) == entry.display for m in tuned["models"]):
        tuned["models"].append({"name": entry.name, "params": best, "label": None})
    stem = Path(config_path).stem if config_path else cfg.name
    atomic_write_text(out / f"{stem}.tuned.yaml", yaml.safe_dump(tuned, sort_keys=False))
    console.print(f"best {summary['metric']} {summary['value']:.4f} with {escape(str(best))} "
                  f"({summary['complete']} complete, {summary['pruned']} pruned); wrote "
                  f"{escape(str(out / 'best_params.yaml'))} and "
                  f"{escape(str(out / (stem + '.tuned.yaml')))}", highlight=False)
