"""Next-item evaluation of non-sequential baselines, on the splits of ``recforge.data.split``.

* ml-1m-seq, ``leave_last_out(valid=True)``: fit on train, test input ``split.history``
  (each user's whole earlier sequence), full ranking with seen items kept and excluded,
  and the sampled protocol (1 + 100) beside it;
* ml-100k, the same split and the global time cut (``temporal_split(next_item=True)`` at
  the 90% quantile of time), to show how the two measure different things;
* ml-100k, ``last_sessions_split`` (sessions cut by a one-hour gap), session protocol.

Prints NDCG@10 / HR@10 / MRR@10 with their 95% intervals, fit and evaluation seconds, and
writes ``benchmarks/results/next_item.json``.

    .venv/bin/python benchmarks/bench_next_item.py [--models pop,ease] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from recforge import Interactions, create_model
from recforge.data import split as S
from recforge.data.readers import read_sequences
from recforge.evaluation import evaluate_next_item, evaluate_sessions

DATA = Path(os.environ.get("RECFORGE_SHARED_DATA", Path(__file__).resolve().parents[2]
                           / "shared" / "data"))
RESULTS = Path(__file__).parent / "results" / "next_item.json"


def ml100k() -> Interactions:
    frame = pd.read_csv(DATA / "ml-100k" / "u.data", sep="\t",
                        names=["user", "item", "rating", "timestamp"])
    return Interactions.from_frame(frame[["user", "item", "timestamp"]])


def row(data: str, split: str, model: str, setting: str, fit_s: float, res) -> dict:
    out = {"data": data, "split": split, "model": model, "setting": setting,
           "targets": res.n_targets, "fit_s": round(fit_s, 2), "eval_s": round(res.seconds, 2)}
    for label in ("NDCG@10", "HR@10", "MRR@10"):
        key = label
        out[key] = round(res[label], 4)
        lo, hi = res.interval(label)
        out[key + "_ci"] = [round(lo, 4), round(hi, 4)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="pop,ease")
    ap.add_argument("--quick", action="store_true", help="ml-100k only")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    rows: list[dict] = []
    small = ml100k()
    cases: list[tuple[str, str, S.Split]] = []
    if not args.quick:
        cases.append(("ml-1m-seq", "leave_last_out",
                      S.leave_last_out(read_sequences(DATA / "ml-1m-seq" / "sequences.txt"),
                                       valid=True)))
    cut = int(pd.Series(small.timestamp).quantile(0.9))
    cases += [("ml-100k", "leave_last_out", S.leave_last_out(small, valid=True)),
              ("ml-100k", "time_cut_q0.9", S.temporal_split(small, cutoff=cut, next_item=True))]
    for data, split_name, split in cases:
        for name in models:
            t = time.perf_counter()
            model = create_model(name).fit(split.train, split.valid)
            fit_s = time.perf_counter() - t
            for setting, kw in (("full", {}), ("full, seen excluded", {"exclude_seen": True}),
                                ("sampled 1+100", {"sampled": 100})):
                res = evaluate_next_item(model, split.history, split.test, **kw)
                rows.append(row(data, split_name, name, setting, fit_s, res))
    sessions = S.last_sessions_split(small, 0.1, gap=3600)
    for name in models:
        t = time.perf_counter()
        model = create_model(name).fit(sessions.train)
        fit_s = time.perf_counter() - t
        res = evaluate_sessions(model, sessions.test, exclude_seen=True)
        rows.append(row("ml-100k", "last_sessions_gap1h", name, "sessions, prefix excluded",
                        fit_s, res))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=[c for c in table.columns if c.endswith("_ci")]).to_string(
            index=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "load": os.getloadavg()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
