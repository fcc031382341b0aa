"""The experiment report: ``report.md`` and a self-contained ``report.html`` with plots.

:func:`write_report` reads what :func:`~recforge.experiment.runner.run_experiment` wrote
(``results.json``, ``per_user.parquet``) and draws, with matplotlib (Agg backend, no
display needed):

- ``metrics.png``: every metric per model, with the 95% bootstrap interval as error bars;
- ``learning_curves.png``: training loss and validation metric per epoch (gradient models);
- ``popularity.png``: the share of recommended slots per catalogue popularity decile,
  against the share of training interactions (popularity bias at a glance);
- ``coverage.png``: catalogue coverage of the top-K lists, when measured;
- ``per_user.png``: the distribution of the primary (ranking) metric over users.

The PNG files sit beside ``report.md``; ``report.html`` embeds them as data URIs, so it opens
offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recforge._fs import atomic_path, atomic_write_text
from recforge.experiment.leaderboard import leaderboard_cells

__all__ = ["write_report"]


def _plt() -> Any:
    """pyplot drawing off screen (no display needed), chosen when a report is drawn rather
    than when this module is imported."""
    matplotlib.use("Agg", force=True)
    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    skip = {"model", "name", "seeds", "params", "fit_s", "eval_s", "rank", "p_vs_best"}
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in skip and not k.endswith(" ci") and k not in cols]
    return cols


def _plot_metrics(rows: list[dict[str, Any]], metrics: list[str], path: Path) -> bool:
    if not rows or not metrics:
        return False
    plt = _plt()
    n = len(metrics)
    fig, axes = plt.subplots(1, n, figsize=(max(4.0, 3.2 * n), 3.4), squeeze=False)
    labels = [r["model"] for r in rows]
    for ax, m in zip(axes[0], metrics, strict=True):
        vals = np.array([r.get(m, np.nan) for r in rows], dtype=float)
        ci = [r.get(f"{m} ci") for r in rows]
        err = np.array([[v - c[0], c[1] - v] if c else [0.0, 0.0]
                        for v, c in zip(vals, ci, strict=True)]).T
        ax.bar(range(len(rows)), vals, yerr=err, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right")
        ax.set_title(m)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean over test users, 95% bootstrap interval", y=1.04)
    _save(fig, path)
    return True


def _valid_key(run: dict[str, Any]) -> str | None:
    """The history key of the run's validation metric (its ``valid_metric``), or ``None``
    when the run had no validation part (the trainer then records no such key; the other
    keys, ``sampling_seconds``, ``steps``..., are timings and counters, not curves)."""
    key = (run.get("params") or {}).get("valid_metric")
    if not isinstance(key, str):
        return None
    history = run.get("history") or []
    return key if any(key in h for h in history) else None


def _plot_learning_curves(runs: list[dict[str, Any]], path: Path) -> bool:
    curves = [r for r in runs if r.get("history")]
    if not curves:
        return False
    plt = _plt()
    valid_key = next((k for r in curves if (k := _valid_key(r))), None)
    ncols = 2 if valid_key else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.0 * ncols, 3.4), squeeze=False)
    for r in curves:
        label = r["label"] + (f" (seed {r['seed']})" if r.get("seed") is not None else "")
        epochs = [h["epoch"] for h in r["history"]]
        axes[0][0].plot(epochs, [h.get("loss", np.nan) for h in r["history"]], label=label)
        if valid_key and _valid_key(r) == valid_key:
            v = [h.get(valid_key, np.nan) for h in r["history"]]
            if np.isfinite(np.asarray(v, dtype=float)).any():
                axes[0][1].plot(epochs, v, marker="o", ms=3, label=label)
    axes[0][0].set_title("training loss")
    axes[0][0].set_xlabel("epoch")
    axes[0][0].legend(fontsize=7)
    if valid_key:
        axes[0][1].set_title(f"validation {valid_key}")
        axes[0][1].set_xlabel("epoch")
    _save(fig, path)
    return True


def _plot_popularity(runs: list[dict[str, Any]], path: Path) -> bool:
    prof = [(r["label"], r["popularity"]) for r in runs if r.get("popularity")]
    if not prof:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    x = np.arange(1, 11)
    width = 0.8 / (len(prof) + 1)
    ax.bar(x - 0.4 + width / 2, prof[0][1]["interaction_share"], width, color="#999999",
           label="training interactions")
    for j, (label, p) in enumerate(prof, start=1):
        ax.bar(x - 0.4 + width / 2 + j * width, p["recommended_share"], width, label=label)
    ax.set_xticks(x)
    ax.set_xlabel("item popularity decile (1 = the 10% most popular items)")
    ax.set_ylabel("share")
    ax.set_title(f"where the top-{prof[0][1]['k']} recommendations fall in the catalogue")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def _plot_coverage(rows: list[dict[str, Any]], path: Path) -> bool:
    cov = [c for c in _metric_columns(rows) if c.startswith("Coverage@")]
    if not cov:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    ax.bar([r["model"] for r in rows], [r.get(cov[0], np.nan) for r in rows], color="#55a868")
    ax.set_ylim(0, 1)
    ax.set_title(f"{cov[0]}: share of the catalogue ever recommended")
    ax.tick_params(axis="x", rotation=45)
    _save(fig, path)
    return True


def _plot_per_user(per_user: pd.DataFrame, metric: str, path: Path) -> bool:
    if per_user.empty or metric not in per_user.columns:
        return False
    plt = _plt()
    models = list(dict.fromkeys(per_user["model"]))
    data = [per_user.loc[per_user["model"] == m].groupby("user")[metric].mean().to_numpy()
            for m in models]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(models) + 2), 3.4))
    ax.violinplot(data, showmeans=True, showextrema=False)
    ax.set_xticks(range(1, len(models) + 1), models, rotation=45, ha="right")
    ax.set_title(f"{metric} per user")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def _table_rows(rows: list[dict[str, Any]], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    return (["#", "model", *metrics, "fit s", "p vs best"],
            leaderboard_cells(rows, metrics, interval=True))


def _protocol_text(ev: dict[str, Any]) -> str:
    seen = ("items seen in training or validation" if ev.get("excluded") == "train+valid"
            else "items seen in training")
    if ev.get("protocol") == "sampled":
        text = (f"Sampled evaluation: each held-out item ranked against randomly sampled "
                f"negatives, the same for every model and seed ({seen} excluded)")
    else:
        text = f"Full-ranking evaluation ({seen} excluded"
        if ev.get("candidates"):
            text += f"; ranking only the {ev['candidates']}"
        text += ")"
    return text + "."


def write_report(out: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out``; returns paths."""
    out = Path(out)
    payload = json.loads((out / "results.json").read_text(encoding="utf-8"))
    per_user_path = out / "per_user.parquet"
    per_user = pd.read_parquet(per_user_path) if per_user_path.exists() else pd.DataFrame()
    rows, runs = payload["leaderboard"], payload["runs"]
    ev = payload.get("evaluation") or {}
    # the run's own ranking metric and column order (older results: the row keys)
    found = _metric_columns(rows)
    metrics = [m for m in ev.get("metrics") or found if m in found] or found
    metrics += [m for m in found if m not in metrics]
    primary = ev.get("primary") or (metrics[0] if metrics else "")
    _plt()
    # labels are text: matplotlib read a label such as 'a$^{x$' as TeX and raised
    # (after every model had trained)
    with matplotlib.rc_context({"text.parse_math": False}):
        plots = {
            "metrics.png": ("Metrics with 95% intervals", _plot_metrics(rows, metrics,
                                                                       out / "metrics.png")),
            "learning_curves.png": ("Learning curves",
                                    _plot_learning_curves(runs, out / "learning_curves.png")),
            "popularity.png": ("Popularity of recommended items",
                               _plot_popularity(runs, out / "popularity.png")),
            "coverage.png": ("Catalogue coverage", _plot_coverage(rows, out / "coverage.png")),
            "per_user.png": (f"Distribution of {primary} over users",
                             _plot_per_user(per_user, primary, out / "per_user.png")),
        }
    made = [(name, title) for name, (title, ok) in plots.items() if ok]
    head, body = _table_rows(rows, metrics)
    versions = payload.get("versions", {})
    intro = (f"Data: {payload.get('data', '')}. {_protocol_text(ev)} Models ranked by "
             f"{primary}. Each value: mean over test users [95% bootstrap interval]; "
             f"p vs best: paired t-test over users on {primary}. recforge "
             f"{versions.get('recforge', '?')}, torch {versions.get('torch', '?')}.")

    md = [f"# {payload['name']}", "", intro, "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    for name, title in made:
        md += ["", f"## {title}", "", f"![{title}]({name})"]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")

    def img(name: str, title: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
                f"<figcaption>{html.escape(title)}</figcaption></figure>")

    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
             + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in body) + "</tbody></table>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(payload['name'])}: recforge report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }}
th:nth-child(2), td:nth-child(2) {{ text-align: left; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9rem; }}
</style></head><body>
<h1>{html.escape(payload['name'])}</h1>
<p>{html.escape(intro)}</p>
{table}
{''.join(img(n, t) for n, t in made)}
</body></html>
"""
    atomic_write_text(out / "report.html", page)
    paths = {"report.md": out / "report.md", "report.html": out / "report.html"}
    paths.update({name: out / name for name, _ in made})
    return paths
