#!/usr/bin/env python
"""Train and evaluate models on a benchmark dataset; print a table and write JSON.

    python benchmarks/bench_models.py --dataset ml-1m-implicit --models pop,itemknn,ease
    python benchmarks/bench_models.py --dataset ml-100k --models ease -p ease.reg=250

Datasets (read from $RECFORGE_TEST_DATA or ../shared, never from the repository):

* ``ml-1m-implicit``: the LightGCN-style split; fit on train.txt + valid.txt, full-ranking
  evaluation on test.txt with training items excluded.
* ``ml-1m-implicit-valid``: fit on train.txt, evaluate on valid.txt (for choosing defaults
  without touching the test set).
* ``ml-100k``: the fixed 80/20 split in ../shared/splits (ratings >= 4 as positives for
  ranking metrics; RMSE / MAE on raw ratings for rating models).

For each model: every metric, fit seconds, evaluation seconds and the peak resident memory
of the process while the model was fitted and evaluated (sampled every 5 ms by psutil;
``peak_rss_mb``), and the increase over the resident memory before fitting
(``peak_delta_mb``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.data.filters import to_implicit  # noqa: E402
from recforge.data.readers import read_many  # noqa: E402
from recforge.evaluation import evaluate  # noqa: E402
from recforge.models.registry import create_model, get_model_class  # noqa: E402


def shared_dir() -> Path:
    env = os.environ.get("RECFORGE_TEST_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    if not base.is_dir():
        sys.exit(f"benchmark data not found at {base}: set RECFORGE_TEST_DATA")
    return base


def load(dataset: str) -> dict[str, Any]:
    base = shared_dir()
    if dataset in ("ml-1m-implicit", "ml-1m-implicit-valid"):
        d = base / "ml-1m-implicit"
        train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
        if dataset == "ml-1m-implicit":
            return {"train": train.concat(valid), "valid": None, "test": test,
                    "ranking_test": test, "desc": "train+valid -> test"}
        return {"train": train, "valid": None, "test": valid, "ranking_test": valid,
                "desc": "train -> valid"}
    if dataset == "ml-100k":
        splits = base.parent / "splits"
        train, test = read_many([splits / "ml100k_train.csv", splits / "ml100k_test.csv"])
        return {"train": train, "valid": None, "test": test,
                "ranking_test": to_implicit(test, 4.0), "ranking_train": to_implicit(train, 4.0),
                "desc": "fixed 80/20 split; ratings >= 4 positives for ranking"}
    sys.exit(f"unknown dataset {dataset!r}")


class PeakMemory:
    """Peak RSS of this process while the context is open (sampled in a thread)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = 0
        self.base = 0
        self._stop = threading.Event()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, val = item.partition("=")
        model, _, name = key.partition(".")
        out.setdefault(model, {})[name] = yaml.safe_load(val)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m-implicit")
    ap.add_argument("--models", default="pop,itemknn,ease")
    ap.add_argument("--metrics", default="recall@20,ndcg@20,precision@20,map@20,mrr@20,"
                                         "hit_rate@20,coverage@20,arp@20,gini@20")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="model.param=value, e.g. ease.reg=250")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also write the table into this Markdown file, between "
                         "<!-- bench:DATASET --> and <!-- /bench:DATASET --> markers")
    args = ap.parse_args(argv)

    data = load(args.dataset)
    params = parse_params(args.param)
    console = Console(width=200)
    rows = []
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if names == ["all"]:
        from recforge.models.registry import available_models

        # Every model that can run on this data: rating models need ratings, and models
        # that need item features are benchmarked by bench_content.py.
        names = [n for n in available_models()
                 if not (create_model(n).predicts_ratings and "ranking_train" not in data)
                 and not get_model_class(n).capabilities.requires_item_features]
    for name in names:
        model = create_model(name, **params.get(name, {}))
        train = data["train"]
        metrics = args.metrics
        if not model.predicts_ratings and "ranking_train" in data:
            train = data["ranking_train"]
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model.fit(train, data.get("valid"))
            fit_s = time.perf_counter() - t0
            test = data["ranking_test"]
            result = evaluate(model, train, test, metrics=metrics)
            if model.predicts_ratings:
                rating = evaluate(model, train, data["test"], metrics="rmse,mae")
                result.summary.update(rating.summary)
        history = getattr(model, "history_", None)  # per-epoch log of gradient models
        if not isinstance(history, list):
            history = None
        epochs = len(history) if history else model.get_params().get("epochs")
        if history:
            s_per_epoch = sum(h["seconds"] for h in history) / len(history)
        elif epochs:
            s_per_epoch = fit_s / epochs
        else:
            s_per_epoch = None
        row = {"model": name, "params": model.get_params(), **result.summary,
               "fit_s": round(fit_s, 3), "epochs": epochs,
               "s_per_epoch": None if s_per_epoch is None else round(s_per_epoch, 3),
               "eval_s": round(result.seconds, 3),
               "eval_users": result.n_users,
               "peak_rss_mb": round(mem.peak / 2**20, 1),
               "peak_delta_mb": round((mem.peak - mem.base) / 2**20, 1)}
        rows.append(row)
        console.print(f"{name}: fit {fit_s:.2f}s, eval {result.seconds:.2f}s, "
                      + ", ".join(f"{k} {v:.4f}" for k, v in result.summary.items()))

    out = args.out or REPO / "benchmarks" / "results" / f"{args.dataset}.json"
    if args.models != "all" and out.is_file():
        # A run of some models updates their rows and keeps the others' earlier figures.
        ran = {r["model"] for r in rows}
        earlier = [r for r in json.loads(out.read_text())["results"] if r["model"] not in ran]
        rows = sorted(earlier + rows, key=lambda r: r["model"])
    table = Table(title=f"{args.dataset} ({data['desc']}), full ranking, training items excluded")
    cost_cols = ("fit_s", "epochs", "s_per_epoch", "eval_s", "peak_delta_mb")
    metric_cols = list(dict.fromkeys(c for r in rows for c in r if c not in (
        "model", "params", "eval_users", "peak_rss_mb", *cost_cols)))
    for c in ["model", *metric_cols, *cost_cols]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(*_cells(r, metric_cols, cost_cols))
    console.print(table)
    if args.markdown is not None:
        _write_markdown(args.markdown, args.dataset, data["desc"], rows, metric_cols, cost_cols)
        console.print(f"updated {args.markdown}")

    payload = {
        "dataset": args.dataset,
        "protocol": data["desc"],
        "recforge_version": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": rows,
    }
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


def _fmt(value: Any, col: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if col == "epochs":
        return str(value)
    if col in ("fit_s", "s_per_epoch", "eval_s"):
        return f"{value:.2f}"
    if col in ("peak_rss_mb", "peak_delta_mb"):
        return f"{value:.0f}"
    return f"{value:.4f}"


def _cells(row: dict[str, Any], metric_cols: list[str], cost_cols: tuple[str, ...]) -> list[str]:
    return [row["model"], *[_fmt(row.get(c), c) for c in (*metric_cols, *cost_cols)]]


def _write_markdown(path: Path, dataset: str, desc: str, rows: list[dict[str, Any]],
                    metric_cols: list[str], cost_cols: tuple[str, ...]) -> None:
    """Replace the block between this dataset's markers in ``path`` (append if absent)."""
    head = ["model", *metric_cols, *cost_cols]
    lines = [f"<!-- bench:{dataset} -->",
             f"Generated by `python benchmarks/bench_models.py --dataset {dataset}` on "
             f"{time.strftime('%Y-%m-%d')} ({desc}; {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r, metric_cols, cost_cols)) + " |" for r in rows]
    lines.append(f"<!-- /bench:{dataset} -->")
    block = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- bench:{dataset} -->", f"<!-- /bench:{dataset} -->"
    if start in text and end in text:
        pre = text[: text.index(start)]
        post = text[text.index(end) + len(end):]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)


if __name__ == "__main__":
    sys.exit(main())
