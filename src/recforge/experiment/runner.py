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

import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recforge._fs import atomic_path, atomic_write_text
from recforge._json import dumps
from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.experiment.config import ExperimentConfig, check_model_params
from recforge.models.base import _shown

log = logging.getLogger(__name__)

__all__ = ["PreparedData", "ExperimentResult", "prepare_data", "run_experiment",
           "leaderboard_table"]


@dataclass
class PreparedData:
    """The split an experiment runs on.

    ``train`` keeps ratings (rating models learn from it, and every item in it is excluded
    from rankings); ``train_pos`` / ``valid_pos`` / ``test_pos`` hold the positives
    (``min_rating``) that ranking models learn from and are judged on.
    """

    train: Interactions
    test: Interactions
    valid: Interactions | None
    train_pos: Interactions
    test_pos: Interactions
    valid_pos: Interactions | None
    item_features: Any = None
    candidates: np.ndarray | None = None
    description: str = ""
    item_metadata: pd.DataFrame | None = None


@dataclass
class ExperimentResult:
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    per_user: pd.DataFrame
    out: Path
    primary: str
    notes: list[str] = field(default_factory=list)


def _load_features(cfg: ExperimentConfig, bundle: Any) -> Any:
    from recforge.data.features import movielens_item_features, read_features

    src = cfg.data.item_features
    if src is None:
        return None
    if src == "auto":
        if bundle is not None and getattr(bundle, "items", None) is not None:
            return movielens_item_features(bundle)
        return None
    return read_features(src)


def _display_metadata(bundle: Any) -> pd.DataFrame | None:
    items = getattr(bundle, "items", None) if bundle is not None else None
    if items is None:
        return None
    cols = [c for c in ("title", "year", "genres") if c in items.columns]
    return items[cols] if cols else None


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load, filter and split the data as the config says."""
    from recforge.data import split as S
    from recforge.data.datasets import is_named_dataset, load_bundle, load_many
    from recforge.data.filters import k_core, to_implicit

    d, sp_cfg = cfg.data, cfg.split
    bundle = None
    read_kw = {"format": d.format, "columns": d.columns, "duplicates": d.duplicates,
               "data_dir": d.data_dir}
    candidates = None
    if sp_cfg.method == "files":
        train_files = [d.train] if isinstance(d.train, str) else list(d.train)  # type: ignore[arg-type]
        specs = [*train_files, *([d.valid] if d.valid else []), d.test]
        parts = load_many(specs, **read_kw)  # type: ignore[arg-type]
        n = len(train_files)
        # a pair in two training files follows data.duplicates, as within one file
        train = parts[0].concat(*parts[1:n], duplicates=d.duplicates) if n > 1 else parts[0]
        test = parts[-1]
        valid = parts[n] if d.valid else None
        desc = (f"files: train {' + '.join(Path(f).name for f in train_files)}, "
                f"test {Path(d.test).name}"  # type: ignore[arg-type]
                + (f", valid {Path(d.valid).name}" if d.valid else ""))
    else:
        if is_named_dataset(d.source):  # type: ignore[arg-type]
            bundle = load_bundle(d.source, data_dir=d.data_dir)  # type: ignore[arg-type]
            data = bundle.interactions
        else:
            data = load_many([d.source], **read_kw)[0]  # type: ignore[list-item, arg-type]
        if d.k_core:
            data = k_core(data, d.k_core, d.k_core, compact=False)
        m, seed = sp_cfg.method, sp_cfg.seed
        if m == "random":
            split = S.random_split(data, sp_cfg.test_size, sp_cfg.valid_size,
                                   by_user=sp_cfg.by_user, seed=seed)
        elif m == "temporal":
            split = S.temporal_split(data, sp_cfg.test_size, valid_size=sp_cfg.valid_size)
        elif m == "user_temporal":
            split = S.user_temporal_split(data, n_test=sp_cfg.n_test,
                                          n_valid=1 if sp_cfg.valid_size > 0 else 0)
        elif m == "leave_one_out":
            split = S.leave_one_out(data, strategy=sp_cfg.strategy,  # type: ignore[arg-type]
                                    valid=sp_cfg.valid_size > 0, seed=seed)
        else:  # cold_start_items
            split = S.cold_start_items(data, sp_cfg.test_size, sp_cfg.valid_size, seed=seed)
            candidates = data.items.ids[np.unique(split.test.item)]
        train, test, valid = split.train, split.test, split.valid
        desc = f"{d.source}: {m} split ({split!r})"
    thr = d.min_rating

    def pos(x: Interactions | None) -> Interactions | None:
        if x is None:
            return None
        return to_implicit(x, thr) if thr is not None and x.value is not None else x

    return PreparedData(train=train, test=test, valid=valid, train_pos=pos(train),  # type: ignore[arg-type]
                        test_pos=pos(test), valid_pos=pos(valid),  # type: ignore[arg-type]
                        item_features=_load_features(cfg, bundle), candidates=candidates,
                        description=desc, item_metadata=_display_metadata(bundle))


def _versions() -> dict[str, str]:
    import scipy
    import torch

    from recforge import __version__

    return {"recforge": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "platform": platform.platform()}


def _paired_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test over users (``nan`` when undefined)."""
    from scipy import stats

    if len(a) < 2 or np.allclose(a, b):
        return float("nan") if len(a) < 2 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, console: Console | None = None,
                   data: PreparedData | None = None) -> ExperimentResult:
    """Run every model of ``cfg`` (once per seed for seeded models) and write the results."""
    from recforge.evaluation import evaluate
    from recforge.evaluation.metrics import Metric
    from recforge.models.registry import create_model

    console = console or Console()
    out = output_dir(out)
    data = data or prepare_data(cfg)
    # names, labels and paths are the user's text, not Rich markup (a path holding '[/]'
    # raised MarkupError)
    console.print(f"[bold]{escape(cfg.name)}[/bold]: {escape(data.description)}",
                  highlight=False)
    rating_metrics = [m for m in cfg.metrics if Metric.parse(m).kind == "rating"]
    rank_metrics = [m for m in cfg.metrics if m not in rating_metrics]

    # Fail before any training when a model cannot run on this data.
    models = []
    for i, mc in enumerate(cfg.models):
        model = create_model(mc.name, **mc.params)
        check_model_params(model, f"models[{i}] ({mc.display})", seeds=cfg.seeds)
        if model.predicts_ratings and getattr(model, "objective", "") == "rating" \
                and data.train.value is None:
            raise ConfigError(f"models[{i}] ({mc.display}) predicts ratings, but the data has "
                              "no rating column")
        if getattr(model, "requires_item_features", False) and data.item_features is None:
            raise ConfigError(f"models[{i}] ({mc.display}) needs item features: set "
                              "data.item_features to a file (or 'auto' with a MovieLens name)")
        models.append((mc, model))
    if rating_metrics and not any(m.predicts_ratings for _, m in models):
        raise ConfigError(f"metrics {rating_metrics} need a rating model (e.g. mf)")
    # A re-run into the same directory (runs/NAME by default) replaces what the earlier run
    # wrote (its models, plots, report would otherwise sit beside the new results). Only
    # recforge's own outputs are removed, and only once the new models have trained: an
    # interrupted or failed re-run leaves the earlier results as they were.
    previous = _is_previous_run(out)
    if cfg.save_models:
        from recforge.models.base import check_model_target

        for mc, template in models:
            several = "seed" in template._param_names() and len(cfg.seeds) > 1
            top = out / "models" / mc.display
            if previous and _is_run_model(top):
                continue  # the earlier run's model: replaced when this one is saved
            for seed in (cfg.seeds if several else [None]):
                check_model_target(top / f"seed-{seed}" if several else top)
    replaced: set[Path] = set()
    atomic_write_text(out / RUN_MARKER, "written by recforge run; a re-run into this "
                      "directory replaces the outputs of the previous one\n")

    runs: list[dict[str, Any]] = []
    per_user_frames: list[pd.DataFrame] = []
    # At test time a user's training and validation items are both known to be theirs: left
    # in the ranking, validation items would count as misses (EASE on ml-100k with a 10 %
    # validation part: NDCG@10 0.271 instead of 0.303).
    seen_at_test = data.train if data.valid is None else data.train.concat(data.valid)
    n_runs = sum(len(cfg.seeds) if "seed" in m._param_names() else 1 for _, m in models)
    done = 0
    for i, (mc, template) in enumerate(models):
        seeded = "seed" in template._param_names()
        for seed in (cfg.seeds if seeded else [None]):
            done += 1
            model = template.clone()
            if seed is not None:
                model.set_params(seed=seed)
            rating = model.predicts_ratings
            train = data.train if rating else data.train_pos
            valid = data.valid if rating else data.valid_pos
            kw: dict[str, Any] = {}
            if getattr(model, "uses_item_features", False) and data.item_features is not None:
                kw["item_features"] = data.item_features
            start = time.perf_counter()
            fit_within_memory(model, f"models[{i}] ({mc.display})", train, valid, **kw)
            fit_s = time.perf_counter() - start
            summary: dict[str, float] = {}
            per_user = None
            eval_s = 0.0
            if rank_metrics:
                res = evaluate(model, seen_at_test, data.test_pos, metrics=rank_metrics,
                               protocol=cfg.protocol,  # type: ignore[arg-type]
                               candidates=data.candidates, seed=EVAL_SEED)
                summary.update(res.summary)
                per_user = res.per_user
                eval_s += res.seconds
            if rating_metrics and rating:
                res = evaluate(model, data.train, data.test, metrics=rating_metrics)
                summary.update(res.summary)
                eval_s += res.seconds
            run = {"label": mc.display, "model": mc.name, "seed": seed,
                   "params": model.get_params(), "fit_s": fit_s, "eval_s": eval_s, **summary}
            history = getattr(model, "history_", None)
            if isinstance(history, list) and history:
                run["history"] = history
            if rank_metrics and seed in (None, cfg.seeds[0]):
                run["popularity"] = _popularity_profile(model, data, rank_metrics,
                                                        seen_at_test, tie_seed=EVAL_SEED)
            if cfg.save_models:
                target = out / "models" / mc.display
                if target not in replaced:
                    if previous and _is_run_model(target):
                        shutil.rmtree(target)
                    replaced.add(target)
                if seeded and len(cfg.seeds) > 1:
                    target = target / f"seed-{seed}"
                if data.item_metadata is not None:
                    model.attach_item_metadata(data.item_metadata)
                model.save(target)
                run["artifact"] = str(target.relative_to(out))
            runs.append(run)
            if per_user is not None:
                frame = per_user.copy()
                frame.insert(0, "seed", -1 if seed is None else seed)
                frame.insert(0, "model", mc.display)
                frame["user"] = frame["user"].astype(str)
                per_user_frames.append(frame)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items())
            console.print(f"[{done}/{n_runs}] {escape(mc.display)}"
                          + (f" (seed {seed})" if seed is not None and len(cfg.seeds) > 1
                             else "") + f": fit {fit_s:.2f}s, {shown}", highlight=False)

    per_user_all = (pd.concat(per_user_frames, ignore_index=True) if per_user_frames
                    else pd.DataFrame(columns=["model", "seed", "user"]))
    # The first configured metric ranks the models (its label as the evaluator wrote it,
    # e.g. "NDCG@10 (sampled 1+100)" under the sampled protocol).
    first = Metric.parse(cfg.metrics[0]).label
    keys = [k for r in runs for k in r]
    primary = next((k for k in keys if k == first or k.startswith(first + " (")), first)
    rows = _leaderboard(cfg, runs, per_user_all, primary)
    if previous:  # the earlier run's files and the models this run did not replace
        _clear_previous_run(out, keep=replaced)
    _write(cfg, out, data, rows, runs, per_user_all, primary)
    print_wide(console, leaderboard_table(rows, cfg.metrics, primary, title=cfg.name))
    if cfg.report:
        from recforge.experiment.report import write_report

        write_report(out)
    console.print(f"results in {escape(str(out))}/ (results.json, results.csv, per_user.parquet, "
                  "config.yaml" + (", report.html, report.md" if cfg.report else "")
                  + (", models/" if cfg.save_models else "") + ")", highlight=False)
    return ExperimentResult(rows=rows, runs=runs, per_user=per_user_all, out=out,
                            primary=primary)


def output_dir(out: str | Path, *, make: bool = True) -> Path:
    """``out`` made (``make``) or checked as the directory of a command's outputs;
    :class:`ConfigError` for a path that cannot be one (``-``, ``/dev/stdout``, a FIFO, a
    file) or a name with a NUL character."""
    from recforge._fs import check_output_dir

    out = Path(out)
    try:
        check_output_dir(out)
        if make:
            out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        name = str(out) if str(out).isprintable() and len(str(out)) <= 200 else _shown(
            str(out))
        raise ConfigError(f"output directory {name}: {what}") from None
    return out


def fit_within_memory(model: Any, where: str, *args: Any, **kwargs: Any) -> Any:
    """``model.fit(*args, **kwargs)``; running out of memory is a :class:`ModelError`
    naming ``where`` and the model's sizes, not a traceback (the sizes are bounded by
    validation, but what they allocate grows with the data)."""
    import torch

    try:
        return model.fit(*args, **kwargs)
    except (MemoryError, RuntimeError) as exc:
        # numpy raises MemoryError, torch OutOfMemoryError on a GPU, and on a CPU a
        # RuntimeError that only its message tells apart from any other
        if not (isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError))
                or "can't allocate memory" in str(exc)):
            raise
        sizes = {k: v for k, v in model.get_params().items()
                 if k in ("embedding_dim", "mlp_embedding_dim", "layers", "batch_size",
                          "n_negatives", "neighbors", "block_size")}
        raise ModelError(f"{where}: out of memory while training ({_shown(str(exc))}); "
                         f"smaller sizes need less ({sizes})") from None


# Sampled negatives and tie-breaks of every evaluation: one seed for all models and model
# seeds, so a leaderboard compares them on the same candidates (and the per-user paired
# test pairs values computed on the same negatives); evaluate's default, so that
# `recforge evaluate` on a saved model gives its row again.
EVAL_SEED = 0
RUN_MARKER = ".recforge-run"
_RUN_FILES = ("results.json", "results.csv", "per_user.parquet", "config.yaml", "report.md",
              "report.html", "metrics.png", "learning_curves.png", "popularity.png",
              "coverage.png", "per_user.png")


def _is_saved_model(path: Path) -> bool:
    """A saved recforge model and nothing else: what saving over it may replace (its
    ``meta.json`` names the format; any ``meta.json`` was enough, and a re-run deleted a
    folder of the user's that held one)."""
    from recforge.models.base import check_model_target

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
    import json

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
    import scipy.sparse as sp

    from recforge.evaluation.metrics import Metric

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


def _leaderboard(cfg: ExperimentConfig, runs: list[dict[str, Any]], per_user: pd.DataFrame,
                 primary: str) -> list[dict[str, Any]]:
    from recforge.evaluation import bootstrap_ci

    labels = list(dict.fromkeys(r["label"] for r in runs))
    skip = ("label", "model", "seed", "params", "fit_s", "eval_s", "artifact", "history",
            "popularity")
    metric_labels: list[str] = []
    for r in runs:
        metric_labels += [k for k in r if k not in metric_labels and k not in skip]
    # Per-user values averaged over seeds: one vector per model, users aligned.
    user_means: dict[str, pd.DataFrame] = {}
    if len(per_user):
        cols = [c for c in per_user.columns if c not in ("model", "seed", "user")]
        for label, grp in per_user.groupby("model", sort=False):
            user_means[str(label)] = grp.groupby("user")[cols].mean().sort_index()
    rows = []
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        row: dict[str, Any] = {"model": label, "name": mine[0]["model"],
                               "seeds": [r["seed"] for r in mine if r["seed"] is not None],
                               "params": mine[0]["params"]}
        for m in metric_labels:
            vals = [r[m] for r in mine if m in r]
            if not vals:
                continue
            row[m] = float(np.mean(vals))
            um = user_means.get(label)
            if um is not None and m in um.columns:
                lo, hi = bootstrap_ci(um[m].to_numpy(), n_boot=cfg.n_bootstrap)
                row[f"{m} ci"] = [lo, hi]
        row["fit_s"] = float(np.mean([r["fit_s"] for r in mine]))
        row["eval_s"] = float(np.mean([r["eval_s"] for r in mine]))
        rows.append(row)
    lower_better = primary.startswith(("RMSE", "MAE"))
    def order(r: dict[str, Any]) -> tuple[bool, float]:
        # models without the primary metric last (a NaN inside a sort key breaks the order)
        v = float(r.get(primary, np.nan))
        return (bool(np.isnan(v)), 0.0 if np.isnan(v) else (v if lower_better else -v))

    rows.sort(key=order)
    best = rows[0]["model"] if rows else None
    for row in rows:
        row["rank"] = rows.index(row) + 1
        a, b = user_means.get(row["model"]), user_means.get(best)  # type: ignore[arg-type]
        if row["model"] == best or a is None or b is None or primary not in a.columns:
            row["p_vs_best"] = None
            continue
        common = a.index.intersection(b.index)
        row["p_vs_best"] = _paired_pvalue(a.loc[common, primary].to_numpy(),
                                          b.loc[common, primary].to_numpy())
    return rows


def print_wide(console: Console, renderable: Any) -> None:
    """Print a table uncropped: on a terminal at its width, into a pipe or file at up to
    200 columns (Rich would otherwise squeeze it to 80)."""
    if console.is_terminal or console.file not in (None, __import__("sys").stdout):
        console.print(renderable)
    else:
        Console(width=max(console.width, 200), highlight=False).print(renderable)


def leaderboard_cells(rows: list[dict[str, Any]], labels: list[str], *,
                      interval: bool) -> list[list[str]]:
    """Text cells of the leaderboard: rank, model, each metric (with ``±`` the CI
    half-width, or ``[low, high]`` with ``interval=True``), fit seconds, p vs best."""
    body = []
    for r in rows:
        cells = [str(r.get("rank", "")), r["model"]]
        for lab in labels:
            if lab not in r:
                cells.append("-")
                continue
            ci = r.get(f"{lab} ci")
            extra = ("" if not ci else f" [{ci[0]:.4f}, {ci[1]:.4f}]" if interval
                     else f" ±{(ci[1] - ci[0]) / 2:.4f}")
            cells.append(f"{r[lab]:.4f}{extra}")
        cells.append(f"{r['fit_s']:.2f}")
        p = r.get("p_vs_best")
        cells.append("best" if r.get("rank") == 1 else "-" if p is None or p != p
                     else "<1e-300" if p == 0 else f"{p:.2g}")
        body.append(cells)
    return body


def metric_labels(rows: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """The leaderboard's column label of each configured metric, in config order (as the
    evaluator wrote it, e.g. ``NDCG@10 (sampled 1+100)``)."""
    from recforge.evaluation.metrics import Metric

    labels = []
    for m in metrics:
        lab = Metric.parse(m).label
        labels.append(next((k for r in rows for k in r if k == lab or k.startswith(lab + " (")),
                           lab))
    return labels


def leaderboard_table(rows: list[dict[str, Any]], metrics: list[str], primary: str,
                      title: str = "leaderboard") -> Table:
    """A Rich table: mean ± CI half-width per metric, fit seconds, paired p-value against
    the best model (the exact interval bounds are in ``results.json``)."""

    labels = metric_labels(rows, metrics)
    table = Table(title=f"{title}: mean ± half-width of the 95% bootstrap CI over users")
    table.add_column("#", justify="right")
    table.add_column("model", no_wrap=True)
    for lab in labels:
        table.add_column(lab, justify="right", no_wrap=True)
    table.add_column("fit s", justify="right")
    table.add_column(f"p vs best ({primary})", justify="right", no_wrap=True)
    for cells in leaderboard_cells(rows, labels, interval=False):
        table.add_row(*(escape(c) for c in cells))
    return table


def _write(cfg: ExperimentConfig, out: Path, data: PreparedData, rows: list[dict[str, Any]],
           runs: list[dict[str, Any]], per_user: pd.DataFrame, primary: str) -> None:
    # What the report needs to describe the evaluation as it was run: the metric that
    # ranks the leaderboard, the column labels in config order, the protocol and what the
    # rankings left out or were restricted to.
    evaluation = {"primary": primary, "metrics": metric_labels(rows, cfg.metrics),
                  "protocol": cfg.protocol, "excluded": "train" if data.valid is None
                  else "train+valid", "candidates": None if data.candidates is None
                  else "held-out cold-start items"}
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
