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
from recforge.data.io import read_many  # noqa: E402
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
    args = ap.parse_args(argv)

    data = load(args.dataset)
    params = parse_params(args.param)
    console = Console(width=200)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        cls = get_model_class(name)
        model = create_model(name, **params.get(name, {}))
        train = data["train"]
        metrics = args.metrics
        if not cls.predicts_ratings and "ranking_train" in data:
            train = data["ranking_train"]
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            model.fit(train, data.get("valid"))
            fit_s = time.perf_counter() - t0
            test = data["ranking_test"]
            result = evaluate(model, train, test, metrics=metrics)
            if cls.predicts_ratings:
                rating = evaluate(model, train, data["test"], metrics="rmse,mae")
                result.summary.update(rating.summary)
        row = {"model": name, "params": model.get_params(), **result.summary,
               "fit_s": round(fit_s, 3), "eval_s": round(result.seconds, 3),
               "eval_users": result.n_users,
               "peak_rss_mb": round(mem.peak / 2**20, 1),
               "peak_delta_mb": round((mem.peak - mem.base) / 2**20, 1)}
        rows.append(row)
        console.print(f"{name}: fit {fit_s:.2f}s, eval {result.seconds:.2f}s, "
                      + ", ".join(f"{k} {v:.4f}" for k, v in result.summary.items()))

    table = Table(title=f"{args.dataset} ({data['desc']}), full ranking, training items excluded")
    metric_cols = [c for c in rows[0] if c not in ("model", "params", "fit_s", "eval_s",
                                                   "eval_users", "peak_rss_mb",
                                                   "peak_delta_mb")] if rows else []
    for c in ["model", *metric_cols, "fit_s", "eval_s", "peak_rss_mb"]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        table.add_row(r["model"], *[f"{r.get(c, float('nan')):.4f}" for c in metric_cols],
                      f"{r['fit_s']:.2f}", f"{r['eval_s']:.2f}", f"{r['peak_rss_mb']:.0f}")
    console.print(table)

    out = args.out or REPO / "benchmarks" / "results" / f"{args.dataset}.json"
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


if __name__ == "__main__":
    sys.exit(main())
