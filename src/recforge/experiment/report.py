"""The experiment report: ``report.md`` and a self-contained ``report.html`` with plots.

:func:`write_report` reads what :func:`~recforge.experiment.runner.run_experiment` wrote
(``results.json``, ``per_user.parquet``) and draws, with matplotlib (Agg backend, no
display needed):

- ``metrics.png``: every metric per model (catalogue coverage included, when measured),
  with the 95% bootstrap interval as error bars, models in leaderboard order;
- ``learning_curves.png``: training loss and validation metric per epoch (gradient models);
- ``popularity.png``: the share of recommended slots per catalogue popularity decile,
  against the share of training interactions (popularity bias at a glance); left out of
  a cold-start run, whose candidates all have no training event (the report says so);
- ``per_user.png``: the distribution of the primary (ranking) metric over users, its mean
  and median marked, models in leaderboard order;
- ``by_length.png`` (next-item runs): the primary metric by the length of the history
  each target is predicted from.

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
        err = np.array([[max(v - c[0], 0.0), max(c[1] - v, 0.0)] if c else [0.0, 0.0]
                        for v, c in zip(vals, ci, strict=True)]).T
        ax.bar(range(len(rows)), vals, yerr=err, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right")
        ax.set_title(m)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("mean over test users, 95% bootstrap interval (leaderboard order)", y=1.04)
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


def _plot_per_user(per_user: pd.DataFrame, metric: str, order: list[str], path: Path) -> bool:
    """The distribution of ``metric`` over users (each user's mean over seeds), one violin
    per model in ``order`` (the leaderboard's), with its mean and median marked."""
    if per_user.empty or metric not in per_user.columns:
        return False
    plt = _plt()
    present = set(per_user["model"].astype(str))
    models = [m for m in order if m in present]
    models += [m for m in dict.fromkeys(per_user["model"].astype(str)) if m not in models]
    data = [per_user.loc[per_user["model"] == m].groupby("user")[metric].mean().to_numpy()
            for m in models]
    keep = [i for i, d in enumerate(data) if len(d)]
    if not keep:
        return False
    models, data = [models[i] for i in keep], [data[i] for i in keep]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(models) + 2), 3.4))
    ax.violinplot(data, showmeans=False, showextrema=False)
    x = np.arange(1, len(models) + 1)
    ax.scatter(x, [float(np.mean(d)) for d in data], marker="D", s=22, color="#c44e52",
               zorder=3, label="mean")
    ax.scatter(x, [float(np.median(d)) for d in data], marker="_", s=220, color="#222222",
               zorder=3, label="median")
    ax.set_xticks(x, models, rotation=45, ha="right")
    ax.set_title(f"{metric} per user (leaderboard order)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def _plot_by_length(runs: list[dict[str, Any]], metric: str, order: list[str],
                    path: Path) -> bool:
    """``metric`` by the length of the history each target is predicted from (next-item
    runs: the breakdown of :func:`~recforge.evaluation.evaluate_next_item`), one line per
    model (its first seed) in leaderboard order; each bin's number of targets under it."""
    tables: dict[str, pd.DataFrame] = {}
    for r in runs:
        if r.get("by_length") and r["label"] not in tables:
            t = pd.DataFrame(r["by_length"])
            if metric in t.columns:
                tables[r["label"]] = t
    if not tables:
        return False
    plt = _plt()
    labels = [m for m in order if m in tables] + [m for m in tables if m not in order]
    first = tables[labels[0]]
    x = np.arange(len(first))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(first) + 2), 3.4))
    for label in labels:
        t = tables[label]
        ax.plot(np.arange(len(t)), t[metric].to_numpy(dtype=float), marker="o", ms=3,
                label=label)
    ax.set_xticks(x, [f"{b}\n({n:,} targets)" for b, n in
                      zip(first["length"], first["n_targets"], strict=True)], fontsize=7)
    ax.set_xlabel("events in the history before the target")
    ax.set_title(f"{metric} by history length")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def _table_rows(rows: list[dict[str, Any]], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    return (["#", "model", *metrics, "fit s", "p vs best"],
            leaderboard_cells(rows, metrics, interval=True))


def _threshold_text(ev: dict[str, Any]) -> str:
    th = ev.get("threshold")
    if not th:
        return ""
    if th.get("order") == "after_split":
        return (f" Every rating was split, then ratings >= {th['min_rating']:g} kept as the "
                "positives of each part (threshold_order: after_split).")
    return (f" Ratings >= {th['min_rating']:g} were kept as positives, then split "
            "(threshold_order: before_split, as to_implicit then a split in Python).")


def _protocol_text(ev: dict[str, Any]) -> str:
    if ev.get("task") == "next_item":
        how = (f"against {ev['sampled']} sampled negatives (sampled 1+{ev['sampled']})"
               if ev.get("sampled") else "among all items (full ranking)")
        seen = ("the items of the user's history excluded" if ev.get("exclude_seen")
                else "the items of the user's history kept in the ranking")
        what = ("every event of each held-out session, predicted from the session's prefix"
                if ev.get("sessions") else
                f"each user's next event (split {ev.get('split', '?')}), predicted from the "
                "user's whole earlier sequence")
        return f"Next-item evaluation: {what}, ranked {how}, {seen}." + _threshold_text(ev)
    seen = ("items seen in training or validation" if ev.get("excluded") == "train+valid"
            else "items seen in training")
    if ev.get("threshold", {}) and ev["threshold"].get("order") == "before_split":
        seen = seen.replace("items seen", "positives")
    if ev.get("protocol") == "sampled":
        text = (f"Sampled evaluation: each held-out item ranked against randomly sampled "
                f"negatives, the same for every model and seed ({seen} excluded)")
    else:
        text = f"Full-ranking evaluation ({seen} excluded"
        if ev.get("candidates"):
            text += f"; ranking only the {ev['candidates']}"
        text += ")"
    return text + "." + _threshold_text(ev)


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
    order = [r["model"] for r in rows]
    cold = bool(ev.get("candidates"))
    _plt()
    # labels are text: matplotlib read a label such as 'a$^{x$' as TeX and raised
    # (after every model had trained)
    with matplotlib.rc_context({"text.parse_math": False}):
        plots = {
            "metrics.png": ("Metrics with 95% intervals", _plot_metrics(rows, metrics,
                                                                       out / "metrics.png")),
            "learning_curves.png": ("Learning curves",
                                    _plot_learning_curves(runs, out / "learning_curves.png")),
            # a cold-start run ranks items without any training event: every candidate
            # is in the "least popular" deciles, so the plot would say nothing
            "popularity.png": ("Popularity of recommended items",
                               not cold and _plot_popularity(runs, out / "popularity.png")),
            "per_user.png": (f"Distribution of {primary} over users (mean and median)",
                             _plot_per_user(per_user, primary, order, out / "per_user.png")),
            "by_length.png": (f"{primary} by history length",
                              _plot_by_length(runs, primary, order, out / "by_length.png")),
        }
    made = [(name, title) for name, (title, ok) in plots.items() if ok]
    notes = []
    if cold and any(r.get("popularity") for r in runs):
        notes.append("No popularity plot: this cold-start run ranks only items with no "
                     "training event, all of which have the same (zero) training count, "
                     "so the catalogue's popularity deciles say nothing about them.")
    head, body = _table_rows(rows, metrics)
    versions = payload.get("versions", {})
    intro = (f"Data: {payload.get('data', '')}. {_protocol_text(ev)} Models ranked by "
             f"{primary}. Each value: mean over test users [95% bootstrap interval]; "
             f"p vs best: paired t-test over users on {primary}. recforge "
             f"{versions.get('recforge', '?')}, torch {versions.get('torch', '?')}.")

    md = [f"# {payload['name']}", "", intro, "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    md += [x for n in notes for x in ("", n)]
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
{''.join(f"<p>{html.escape(n)}</p>" for n in notes)}
{''.join(img(n, t) for n, t in made)}
</body></html>
"""
    atomic_write_text(out / "report.html", page)
    paths = {"report.md": out / "report.md", "report.html": out / "report.html"}
    paths.update({name: out / name for name, _ in made})
    return paths
