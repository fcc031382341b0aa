#!/usr/bin/env python
"""``recforge train MODEL --auto --budget 60s`` against the defaults (issue 23 item 3).

    python benchmarks/bench_auto.py                                   # als on both datasets
    python benchmarks/bench_auto.py --datasets ml-100k --budget 30s
    python benchmarks/bench_auto.py -p reg_weight=total               # the fixed part of a run

For each dataset the training part is written as a CSV file and the real commands run in
fresh processes: ``recforge train MODEL --data train.csv --out default [-p ...]`` and the
same with ``--auto --budget B``. Both saved models are then scored on the test part
(:func:`recforge.evaluation.evaluate`: full ranking, training items excluded, Recall@20 and
NDCG@20, and a paired t-test over test users of the NDCG@20 difference); the validation
figures come from the ``--auto`` model's ``meta.json``
(``training_data.auto``). Datasets:

* ``ml-100k``: ratings >= 4 as positives, per-user 80/20 split (seed 0), as
  ``bench_datasets.py`` (the data from $RECFORGE_TEST_DATA or ../shared/data).
* ``synthetic-short``: :func:`recforge.data.synthetic.make_synthetic` (seed 0), 6,000 users x
  4,000 items, about 11 events per user (users drawn to a few latent tastes, Zipf item
  popularity; 0.3 % density), per-user 80/20 split (seed 0): short histories, where
  als's defaults under-regularise.

Rows (with the load average before and after each run: the machine is shared) are merged
into ``benchmarks/results/auto.json`` by (model, dataset, params) and printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

RESULTS = REPO / "benchmarks" / "results" / "auto.json"
SHORT = {"n_users": 6_000, "n_items": 4_000, "mean_per_user": 10.0, "seed": 0}
DATASETS = ("ml-100k", "synthetic-short")


def load(name: str, cache: Path) -> tuple[Any, Any, str]:
    """(train, test, description) of ``name``."""
    from recforge.data.split import random_split
    from recforge.data.synthetic import make_synthetic

    if name == "ml-100k":
        from bench_datasets import load as load_dataset

        d = load_dataset(name, cache)
        return d["train"], d["test"], d["desc"]
    if name == "synthetic-short":
        data = make_synthetic(**SHORT).interactions
        split = random_split(data, test_size=0.2, by_user=True, seed=0)
        return split.train, split.test, "generated, per-user 80/20 (seed 0)"
    sys.exit(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def train(model: str, train_csv: Path, out: Path, params: list[str],
          auto_budget: str | None) -> dict[str, Any]:
    """``recforge train`` in a fresh process; its wall seconds and the load around it."""
    cmd = [sys.executable, "-m", "recforge", "train", model, "--data", str(train_csv),
           "--out", str(out), *[a for p in params for a in ("-p", p)]]
    if auto_budget is not None:
        cmd += ["--auto", "--budget", auto_budget]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    if auto_budget is not None:
        print(proc.stdout)
    return {"wall_s": round(wall, 1), "load": [round(load_before, 2),
                                               round(os.getloadavg()[0], 2)]}


def score(path: Path, train: Any, test: Any) -> tuple[dict[str, float], Any]:
    """Recall@20 and NDCG@20 on ``test``, and NDCG@20 per user (a Series by user)."""
    from recforge.evaluation import evaluate
    from recforge.models.base import Recommender

    model = Recommender.load(path)
    res = evaluate(model, train, test, metrics=["recall@20", "ndcg@20"])
    return ({k: round(float(res[k]), 4) for k in ("Recall@20", "NDCG@20")},
            res.per_user.set_index("user")["NDCG@20"].sort_index())


def run(dataset: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    train_part, test_part, desc = load(dataset, args.cache)
    csv = work / f"{dataset}-train.csv"
    train_part.to_frame()[["user", "item"]].to_csv(csv, index=False)
    row: dict[str, Any] = {"model": args.model, "dataset": dataset, "desc": desc,
                           "params": args.param, "budget": args.budget,
                           "shape": {"users": train_part.n_users, "items": train_part.n_items,
                                     "train_events": len(train_part),
                                     "test_events": len(test_part)}}
    per_user = {}
    for kind, budget in (("default", None), ("auto", args.budget)):
        out = work / f"{dataset}-{kind}"
        row[kind] = train(args.model, csv, out, args.param, budget)
        row[kind]["test"], per_user[kind] = score(out, train_part, test_part)
        if kind == "auto":
            meta = json.loads((out / "meta.json").read_text())
            row["auto"]["record"] = meta["training_data"]["auto"]
    d, a = row["default"]["test"]["NDCG@20"], row["auto"]["test"]["NDCG@20"]
    row["test_gain"] = round((a - d) / d, 4) if d else None
    # is the test difference beyond the test split's noise? (paired t-test over users)
    x, y = per_user["auto"].align(per_user["default"], join="inner")
    row["test_p_value"] = (None if np.allclose(x, y)
                           else round(float(stats.ttest_rel(x, y).pvalue), 4))
    return row


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ("dataset", "params", "valid default", "valid auto", "valid gain",
            "test default", "test auto", "test gain", "test p", "trials", "chosen")
    print(" | ".join(head))
    for r in rows:
        rec = r["auto"]["record"]
        print(" | ".join([r["dataset"], " ".join(r["params"]) or "-",
                          _fmt(rec["default_value"]), _fmt(rec["chosen_value"]),
                          "-" if rec["gain"] is None else f"{rec['gain']:+.1%}",
                          f"{r['default']['test']['NDCG@20']:.4f}",
                          f"{r['auto']['test']['NDCG@20']:.4f}",
                          "-" if r["test_gain"] is None else f"{r['test_gain']:+.1%}",
                          "-" if r.get("test_p_value") is None else f"{r['test_p_value']:.2g}",
                          str(rec["trials"]), json.dumps(rec["chosen"])]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="als")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--budget", default="60s")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="key=value fixed in both runs (repeatable)")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "RECFORGE_BENCH_CACHE", Path(tempfile.gettempdir()) / "recforge-bench")))
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets.split(","):
            rows.append(run(dataset, args, Path(tmp)))
    payload = (json.loads(args.results.read_text()) if args.results.is_file()
               else {"rows": []})
    keep = [r for r in payload["rows"]
            if (r["model"], r["dataset"], tuple(r["params"]))
            not in {(n["model"], n["dataset"], tuple(n["params"])) for n in rows}]
    payload["rows"] = keep + rows
    payload["machine"] = f"{os.cpu_count()} CPUs (shared; load average per run in 'load')"
    args.results.write_text(json.dumps(payload, indent=2) + "\n")
    print_table(payload["rows"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
