"""Run an experiment: data -> split -> every model (and seed) -> evaluation -> leaderboard.

:func:`run_experiment` writes into its output directory:

- ``results.json``: the resolved config, the data and split used, library versions, one
  leaderboard row per model (mean, 95% bootstrap interval per metric, fit and evaluation
  seconds, paired test against the best model) and one entry per (model, seed) run;
- ``results.csv``: the leaderboard as a table;
- ``per_user.parquet``: every user's metric values per model and seed;
- ``config.yaml``: the resolved config (re-runnable as is);
- ``models/LABEL/`` (``models/LABEL/seed-N/`` with several seeds): the trained artefacts.

Everything is written atomically; a re-run with the same config and seeds gives the same
numbers on CPU.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
import torch
import yaml
from rich.console import Console
from rich.markup import escape

from recforge._fs import atomic_path, atomic_write_text
from recforge._json import dumps
from recforge._version import __version__
from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.evaluation.metrics import Metric
from recforge.experiment.auto import auto_space, auto_tune, print_auto
from recforge.experiment.config import (
    DEFAULT_BUDGET,
    ExperimentConfig,
    ModelConfig,
    check_model_params,
    parse_budget,
)
from recforge.experiment.leaderboard import (
    leaderboard,
    leaderboard_table,
    metric_labels,
    primary_label,
    print_wide,
)
from recforge.experiment.report import write_report
from recforge.experiment.tune import _validation_split
from recforge.experiment.workflow import (
    EVAL_SEED,
    PreparedData,
    applicable_metrics,
    evaluate_split,
    fit_model,
    is_seeded,
    learns_ratings,
    output_dir,
    prepare_data,
    requires_item_features,
    save_model,
    split_metrics,
)
from recforge.models.artifact import check_model_target
from recforge.models.registry import create_model

log = logging.getLogger(__name__)

__all__ = ["ExperimentResult", "run_experiment"]


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` wrote: the leaderboard ``rows`` (best first), one entry
    per (model, seed) run, every user's metric values, the output directory and the label
    of the metric that ranks the models."""

    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    per_user: pd.DataFrame
    out: Path
    primary: str
    notes: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    return {"recforge": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "platform": platform.platform()}


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, console: Console | None = None,
                   data: PreparedData | None = None) -> ExperimentResult:
    """Run every model of ``cfg`` (once per seed for seeded models) and write the results."""
    console = console or Console()
    out = output_dir(out)
    data = data or prepare_data(cfg)
    # names, labels and paths are the user's text, not Rich markup (a path holding '[/]'
    # raised MarkupError)
    console.print(f"[bold]{escape(cfg.name)}[/bold]: {escape(data.description)}",
                  highlight=False)
    models = _check_models(cfg, data)  # before any training
    # A re-run into the same directory (runs/NAME by default) replaces what the earlier run
    # wrote (its models, plots, report would otherwise sit beside the new results). Only
    # recforge's own outputs are removed, and only once the new models have trained: an
    # interrupted or failed re-run leaves the earlier results as they were.
    previous = _is_previous_run(out)
    if cfg.save_models:
        _check_model_targets(cfg, out, models, previous)
    atomic_write_text(out / RUN_MARKER, "written by recforge run; a re-run into this "
                      "directory replaces the outputs of the previous one\n")
    runs, per_user, replaced = _run_models(cfg, data, models, out, previous, console)
    primary = primary_label(cfg.metrics, runs)
    rows = leaderboard(cfg, runs, per_user, primary)
    if previous:  # the earlier run's files and the models this run did not replace
        _clear_previous_run(out, keep=replaced)
    _write(cfg, out, data, rows, runs, per_user, primary)
    print_wide(console, leaderboard_table(rows, cfg.metrics, primary, title=cfg.name))
    if cfg.report:
        write_report(out)
    console.print(f"results in {escape(str(out))}/ (results.json, results.csv, per_user.parquet, "
                  "config.yaml" + (", report.html, report.md" if cfg.report else "")
                  + (", models/" if cfg.save_models else "") + ")", highlight=False)
    return ExperimentResult(rows=rows, runs=runs, per_user=per_user, out=out,
                            primary=primary)


def _check_models(cfg: ExperimentConfig, data: PreparedData) -> list[tuple[ModelConfig, Any]]:
    """Every configured model built and checked: fail before any training when a model
    cannot run on this data."""
    models = []
    for i, mc in enumerate(cfg.models):
        model = create_model(mc.name, **mc.params)
        check_model_params(model, f"models[{i}] ({mc.display})", seeds=cfg.seeds)
        if learns_ratings(model) and data.train.value is None:
            raise ConfigError(f"models[{i}] ({mc.display}) predicts ratings, but the data has "
                              "no rating column")
        if requires_item_features(model) and data.item_features is None:
            raise ConfigError(f"models[{i}] ({mc.display}) needs item features: set "
                              "data.item_features to a file (or 'auto' with a MovieLens name)")
        if mc.auto:
            try:
                auto_space(mc.name, mc.params)
            except ConfigError as exc:
                raise ConfigError(f"models[{i}] ({mc.display}).auto: {exc}") from None
        models.append((mc, model))
    rating_metrics = split_metrics(cfg.metrics)[0]
    if rating_metrics and not any(m.predicts_ratings for _, m in models):
        raise ConfigError(f"metrics {rating_metrics} need a rating model (e.g. mf)")
    return models


def _several_seeds(cfg: ExperimentConfig, model: Any) -> bool:
    return is_seeded(model) and len(cfg.seeds) > 1


def _check_model_targets(cfg: ExperimentConfig, out: Path,
                         models: list[tuple[ModelConfig, Any]], previous: bool) -> None:
    """Refuse, before any training, a model folder that saving would have to replace and
    that is not one an earlier run wrote."""
    for mc, template in models:
        top = out / "models" / mc.display
        if previous and _is_run_model(top):
            continue  # the earlier run's model: replaced when this one is saved
        several = _several_seeds(cfg, template)
        for seed in (cfg.seeds if several else [None]):
            check_model_target(top / f"seed-{seed}" if several else top)


def _run_models(cfg: ExperimentConfig, data: PreparedData,
                models: list[tuple[ModelConfig, Any]], out: Path, previous: bool,
                console: Console) -> tuple[list[dict[str, Any]], pd.DataFrame, set[Path]]:
    """Fit, evaluate and save every model, once per seed (seeded models); returns the runs,
    every user's metric values and the model folders this run wrote."""
    runs: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    replaced: set[Path] = set()
    rank_metrics = split_metrics(cfg.metrics)[1]
    n_runs = sum(len(cfg.seeds) if is_seeded(m) else 1 for _, m in models)
    done = 0
    for i, (mc, template) in enumerate(models):
        auto = None
        if mc.auto:  # tuned once, on the validation split, with the first seed
            template, auto = _auto_tuned(cfg, data, mc, template, console)
        for seed in (cfg.seeds if is_seeded(template) else [None]):
            done += 1
            model = template.clone()
            if seed is not None:
                model.set_params(seed=seed)
            fields, summary, per_user = _fit_and_score(cfg, data,
                                                       f"models[{i}] ({mc.display})", model)
            run = {"label": mc.display, "model": mc.name, "seed": seed, **fields}
            if auto is not None:
                run["auto"] = auto
            if rank_metrics and seed in (None, cfg.seeds[0]) and cfg.task == "topk":
                run["popularity"] = _popularity_profile(model, data, rank_metrics,
                                                        data.seen_for(model),
                                                        tie_seed=EVAL_SEED)
            if cfg.save_models:
                run["artifact"] = _save_run_model(cfg, out, data, mc, model, seed,
                                                  previous, replaced, auto)
            runs.append(run)
            if per_user is not None:
                frame = per_user.copy()
                frame.insert(0, "seed", -1 if seed is None else seed)
                frame.insert(0, "model", mc.display)
                frame["user"] = frame["user"].astype(str)
                frames.append(frame)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
            console.print(f"[{done}/{n_runs}] {escape(mc.display)}"
                          + (f" (seed {seed})" if seed is not None and len(cfg.seeds) > 1
                             else "") + f": fit {run['fit_s']:.2f}s, {shown}", highlight=False)
    per_user_all = (pd.concat(frames, ignore_index=True) if frames
                    else pd.DataFrame(columns=["model", "seed", "user"]))
    return runs, per_user_all, replaced


def _auto_tuned(cfg: ExperimentConfig, data: PreparedData, mc: ModelConfig, template: Any,
                console: Console) -> tuple[Any, dict[str, Any]]:
    """``auto: true``: the model's few hyperparameters that matter tuned within its
    ``auto_budget`` on the split ``recforge tune`` scores on (the experiment's validation
    part, or one carved from the training part; never the test set), by the experiment's
    first metric that applies to it. Returns the model with the chosen parameters and the
    record of the choice."""
    metric = applicable_metrics(template, cfg.metrics)[0]
    inner, where = _validation_split(cfg, data)
    params = dict(mc.params)
    if is_seeded(template):
        params["seed"] = cfg.seeds[0]
    budget = DEFAULT_BUDGET if mc.auto_budget is None else parse_budget(mc.auto_budget)
    result = auto_tune(ModelConfig(name=mc.name, params=params, label=mc.label), inner,
                       budget=budget, where=where, metric=metric, protocol=cfg.protocol,
                       seed=cfg.split.seed, console=console)
    print_auto(console, result)
    return template.clone().set_params(**result.chosen), result.record()


def _fit_and_score(cfg: ExperimentConfig, data: PreparedData, where: str, model: Any
                   ) -> tuple[dict[str, Any], dict[str, float], pd.DataFrame | None]:
    """Fit ``model`` and evaluate it on the metrics that apply to it; returns the run's
    fields (parameters, seconds, metric values, training history), its metric values and
    the per-user values of the ranking metrics (``None`` without ranking metrics)."""
    train, valid = data.training_parts(model)
    start = time.perf_counter()
    fit_model(model, where, train, valid, features=data.features_for(model))
    fit_s = time.perf_counter() - start
    res = evaluate_split(model, data, applicable_metrics(model, cfg.metrics),
                         protocol=cfg.protocol, seed=EVAL_SEED)
    fields = {"params": model.get_params(), "fit_s": fit_s, "eval_s": res.seconds,
              **res.summary}
    history = getattr(model, "history_", None)
    if isinstance(history, list) and history:
        fields["history"] = history
    by_length = getattr(res, "by_length", None)
    if by_length is not None:  # next-item: the metrics by history length
        fields["by_length"] = by_length.to_dict(orient="records")
    return fields, res.summary, res.per_user if split_metrics(cfg.metrics)[1] else None


def _save_run_model(cfg: ExperimentConfig, out: Path, data: PreparedData, mc: ModelConfig,
                    model: Any, seed: int | None, previous: bool, replaced: set[Path],
                    auto: dict[str, Any] | None = None) -> str:
    """Save a run's model under ``models/LABEL`` (``seed-N`` inside with several seeds),
    replacing the earlier run's model folder of that label; returns its relative path."""
    target = out / "models" / mc.display
    if target not in replaced:
        if previous and _is_run_model(target):
            shutil.rmtree(target)
        replaced.add(target)
    if _several_seeds(cfg, model):
        target = target / f"seed-{seed}"
    # the relevance threshold the run judged by, for `recforge evaluate` to use again
    model.training_data_ = {"min_rating": cfg.data.min_rating,
                            **({"auto": auto} if auto is not None else {})}
    save_model(model, target, data.item_metadata)
    return str(target.relative_to(out))


RUN_MARKER = ".recforge-run"
_RUN_FILES = ("results.json", "results.csv", "per_user.parquet", "config.yaml", "report.md",
              "report.html", "metrics.png", "learning_curves.png", "popularity.png",
              "coverage.png", "per_user.png", "by_length.png")


def _is_saved_model(path: Path) -> bool:
    """A saved recforge model and nothing else: what saving over it may replace (its
    ``meta.json`` names the format; any ``meta.json`` was enough, and a re-run deleted a
    folder of the user's that held one)."""
    if not path.is_dir() or path.is_symlink() or not any(path.iterdir()):
        return False
    try:
        check_model_target(path)
    except ModelError:
        return False
    return True


def _is_run_model(path: Path) -> bool:
    """A model folder a run writes: a saved model, or a folder of ``seed-N`` saved models."""
    if _is_saved_model(path):
        return True
    if not path.is_dir() or path.is_symlink():
        return False
    children = list(path.iterdir())
    return bool(children) and all(c.name.startswith("seed-") and _is_saved_model(c)
                                  for c in children)


def _is_previous_run(out: Path) -> bool:
    """Whether ``out`` holds an earlier ``recforge run``'s outputs (its marker, or a
    results.json with a leaderboard)."""
    if (out / RUN_MARKER).is_file():
        return True
    try:
        payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not JSON, or nested past the stack
        return False
    return isinstance(payload, dict) and "leaderboard" in payload


def _clear_previous_run(out: Path, keep: set[Path] | None = None) -> None:
    """Remove the outputs of an earlier ``recforge run`` in ``out``: its files (by name)
    and the saved models under ``models/`` (a model folder, or a folder of ``seed-N``
    model folders) but those in ``keep`` (this run's). Anything else is left alone."""
    for name in _RUN_FILES:
        f = out / name
        if f.is_file() or f.is_symlink():
            f.unlink()
    models = out / "models"
    if not models.is_dir() or models.is_symlink():
        return
    for entry in models.iterdir():
        if entry not in (keep or set()) and _is_run_model(entry):
            shutil.rmtree(entry)
    if not any(models.iterdir()):
        models.rmdir()


def _popularity_profile(model: Any, data: PreparedData, metrics: list[str],
                        seen: Interactions | None = None, max_users: int = 2000,
                        tie_seed: int = 0) -> dict[str, Any]:
    """Where the recommended items sit in the catalogue's popularity: the share of top-K
    slots (K of the first ranking metric) that fall in each popularity decile of the
    catalogue (decile 1 = the 10% most popular items), for up to ``max_users`` test users;
    beside it, each decile's share of the training interactions.

    The lists are the evaluated ones: ``seen`` (training and validation events) excluded,
    and only ``data.candidates`` ranked in a cold-start experiment."""
    k = next((Metric.parse(m).k for m in metrics if Metric.parse(m).k), 10)
    counts = data.train_pos.item_counts().astype(np.float64)
    order = np.argsort(-counts, kind="stable")
    decile = np.empty(len(counts), np.int64)
    decile[order] = np.minimum(np.arange(len(counts)) * 10 // max(len(counts), 1), 9)
    users = np.unique(data.test_pos.user)
    if len(users) > max_users:
        users = np.random.default_rng(0).choice(users, max_users, replace=False)
    known = model.users_.index(data.test_pos.users.ids[users])
    known = known[known >= 0]
    exclude = model.seen_
    if seen is not None:  # as evaluate: the events in the model's index space
        u = model.users_.index(seen.users.ids)[seen.user]
        i = model.items_.index(seen.items.ids)[seen.item]
        ok = (u >= 0) & (i >= 0)
        exclude = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (u[ok], i[ok])),
                                shape=(model.n_users, model.n_items))
        exclude.sort_indices()
    cand = None
    if data.candidates is not None:
        cand = model.items_.index(data.candidates)
        cand = np.unique(cand[cand >= 0])
    slots = np.zeros(10)
    for _, items, scores in model.iter_top_k(known, k, exclude=exclude, candidates=cand,
                                             tie_seed=tie_seed):  # as evaluate
        it = items.numpy()[np.isfinite(scores.numpy())]
        it = it[it < len(decile)]
        slots += np.bincount(decile[it], minlength=10)
    inter = np.bincount(decile, weights=counts, minlength=10)
    return {"k": int(k), "users": int(len(known)),
            "recommended_share": (slots / max(slots.sum(), 1)).tolist(),
            "interaction_share": (inter / max(inter.sum(), 1)).tolist()}


def _write(cfg: ExperimentConfig, out: Path, data: PreparedData, rows: list[dict[str, Any]],
           runs: list[dict[str, Any]], per_user: pd.DataFrame, primary: str) -> None:
    # What the report needs to describe the evaluation as it was run: the metric that
    # ranks the leaderboard, the column labels in config order, the protocol and what the
    # rankings left out or were restricted to.
    evaluation = {"primary": primary, "metrics": metric_labels(rows, cfg.metrics),
                  "protocol": cfg.protocol, "excluded": "train" if data.valid is None
                  else "train+valid", "candidates": None if data.candidates is None
                  else "held-out cold-start items", "task": cfg.task,
                  "threshold": None if cfg.data.min_rating is None else {
                      "min_rating": cfg.data.min_rating,
                      "order": cfg.data.threshold_order}}
    if cfg.task == "next_item":
        evaluation.update(protocol="sampled" if data.sampled else "full",
                          sampled=data.sampled, exclude_seen=data.exclude_seen,
                          split=cfg.split.method, sessions=data.sessions)
    payload = {"name": cfg.name, "config": cfg.to_dict(), "data": data.description,
               "versions": _versions(), "evaluation": evaluation, "leaderboard": rows,
               "runs": runs}
    atomic_write_text(out / "results.json", dumps(payload, indent=2) + "\n")
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k not in ("params", "seeds") and not k.endswith(" ci")}
        for k, v in r.items():
            if k.endswith(" ci"):
                f[f"{k[:-3]} ci_low"], f[f"{k[:-3]} ci_high"] = v
        f["params"] = dumps(r["params"], sort_keys=True)
        flat.append(f)
    atomic_write_text(out / "results.csv", pd.DataFrame(flat).to_csv(index=False))
    with atomic_path(out / "per_user.parquet") as tmp:
        per_user.to_parquet(tmp, index=False)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
