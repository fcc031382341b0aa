"""The leaderboard of an experiment: rows ranked by the primary metric, and their text.

:func:`leaderboard` turns the runs of :func:`~recforge.experiment.runner.run_experiment`
into one row per model (mean over seeds, 95% bootstrap interval over users, paired test
against the best model); :func:`leaderboard_cells` and :func:`leaderboard_table` show them,
in the terminal and in the report (:mod:`recforge.experiment.report`).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy import stats

from recforge.evaluation import bootstrap_ci
from recforge.evaluation.metrics import Metric
from recforge.experiment.config import ExperimentConfig

__all__ = ["leaderboard", "leaderboard_cells", "leaderboard_table", "metric_labels",
           "primary_label", "print_wide"]

#: Keys of a run that are not metric values.
_RUN_KEYS = ("label", "model", "seed", "params", "fit_s", "eval_s", "artifact", "history",
             "popularity", "by_length", "auto")


def _paired_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test over users (``nan`` when undefined)."""
    if len(a) < 2 or np.allclose(a, b):
        return float("nan") if len(a) < 2 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def primary_label(metrics: list[str], runs: list[dict[str, Any]]) -> str:
    """The label of the metric that ranks the models: the first configured one, as the
    evaluator wrote it (e.g. ``NDCG@10 (sampled 1+100)`` under the sampled protocol)."""
    first = Metric.parse(metrics[0]).label
    keys = [k for r in runs for k in r]
    return next((k for k in keys if k == first or k.startswith(first + " (")), first)


def _user_means(per_user: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per-user values averaged over seeds: one frame per model, users aligned."""
    user_means: dict[str, pd.DataFrame] = {}
    if len(per_user):
        cols = [c for c in per_user.columns if c not in ("model", "seed", "user")]
        for label, grp in per_user.groupby("model", sort=False):
            user_means[str(label)] = grp.groupby("user")[cols].mean().sort_index()
    return user_means


def _ratio_ci(values: np.ndarray, weights: np.ndarray, n_boot: int, level: float = 0.95,
              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(values * weights) / sum(weights)``, users
    resampled: the mean over targets of a next-item run whose users have several targets
    (``values``: each user's mean, ``weights``: their number of targets); with every
    weight 1 it is :func:`~recforge.evaluation.bootstrap_ci`, draw for draw."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    vw = v * w
    chunk = max(1, (1 << 22) // max(1, len(v)))
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        idx = rng.integers(0, len(v), size=(e - s, len(v)))
        means[s:e] = vw[idx].sum(axis=1) / w[idx].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _row(label: str, mine: list[dict[str, Any]], metric_names: list[str],
         means: pd.DataFrame | None, n_bootstrap: int) -> dict[str, Any]:
    """One model's row: its runs' mean per metric with the bootstrap interval."""
    row: dict[str, Any] = {"model": label, "name": mine[0]["model"],
                           "seeds": [r["seed"] for r in mine if r["seed"] is not None],
                           "params": mine[0]["params"]}
    for m in metric_names:
        vals = [r[m] for r in mine if m in r]
        if not vals:
            continue
        row[m] = float(np.mean(vals))
        if means is not None and m in means.columns:
            if "targets" in means.columns:  # next-item: the mean over targets
                lo, hi = _ratio_ci(means[m].to_numpy(), means["targets"].to_numpy(),
                                   n_bootstrap)
            else:
                lo, hi = bootstrap_ci(means[m].to_numpy(), n_boot=n_bootstrap)
            row[f"{m} ci"] = [lo, hi]
    row["fit_s"] = float(np.mean([r["fit_s"] for r in mine]))
    row["eval_s"] = float(np.mean([r["eval_s"] for r in mine]))
    return row


def leaderboard(cfg: ExperimentConfig, runs: list[dict[str, Any]], per_user: pd.DataFrame,
                primary: str) -> list[dict[str, Any]]:
    """One row per model label, best first by ``primary`` (models without it last), each
    with its ``rank`` and ``p_vs_best`` (paired t-test over users against the best)."""
    labels = list(dict.fromkeys(r["label"] for r in runs))
    metric_names: list[str] = []
    for r in runs:
        metric_names += [k for k in r if k not in metric_names and k not in _RUN_KEYS]
    user_means = _user_means(per_user)
    rows = [_row(label, [r for r in runs if r["label"] == label], metric_names,
                 user_means.get(label), cfg.n_bootstrap) for label in labels]
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
    if console.is_terminal or console.file not in (None, sys.stdout):
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
