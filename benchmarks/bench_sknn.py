"""Session-kNN (``sknn``) against popularity on next-item prediction.

Each user's last event (in time order) is the test item; the input is everything before
it, which is also what the models train on. Full ranking over all items, the user's
earlier items excluded, equal scores broken by popularity (as ``recommend`` breaks them).
Prints NDCG@10 / HR@10 / MRR@10, fit and scoring seconds per setting and writes
``benchmarks/results/sknn.json``; ``--check`` adds the figures of
``recforge.evaluation.evaluate_next_item`` (seen items excluded and kept; ties: expected),
``--valid`` predicts the second-last event instead (for choosing settings), ``--settings``
takes a JSON list of parameter dicts (``{"model": "pop"}`` for another model).

    .venv/bin/python benchmarks/bench_sknn.py [--data ml-1m-seq|ml-100k|both] [--grid]
        [--check] [--valid] [--settings JSON] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recforge import Interactions
from recforge.data.readers import read_sequences
from recforge.models import create_model

DATA = Path(os.environ.get("RECFORGE_SHARED_DATA", Path(__file__).resolve().parents[2]
                           / "shared" / "data"))
RESULTS = Path(__file__).parent / "results" / "sknn.json"


def load(name: str) -> Interactions:
    if name == "ml-1m-seq":
        return read_sequences(DATA / "ml-1m-seq" / "sequences.txt")
    frame = pd.read_csv(DATA / "ml-100k" / "u.data", sep="\t",
                        names=["user", "item", "rating", "timestamp"])
    return Interactions.from_frame(frame[["user", "item", "timestamp"]])


def last_event_split(data: Interactions) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """(everything but each user's last event, users with a test item, their test item)."""
    seq = data.sequences()
    lengths = seq.lengths()
    users = np.flatnonzero(lengths >= 2)
    last = seq.indptr[users + 1] - 1
    keep = np.ones(len(data), dtype=bool)
    keep[seq.events[last]] = False
    return data.subset(keep), users, seq.items[last].astype(np.int64)


def train_events(data: Interactions, train: Interactions) -> np.ndarray:
    """Positions in ``data`` of the events ``last_event_split`` kept in ``train``."""
    seq = data.sequences()
    users = np.flatnonzero(seq.lengths() >= 2)
    keep = np.ones(len(data), dtype=bool)
    keep[seq.events[seq.indptr[users + 1] - 1]] = False
    return np.flatnonzero(keep)


def next_item_metrics(score_fn, users: np.ndarray, target: np.ndarray, train: Interactions,
                      k: int = 10, block: int = 1024) -> dict[str, float]:
    seen = train.csr
    pop_rank = np.empty(train.n_items, dtype=np.int64)
    pop_rank[np.argsort(-train.item_counts(), kind="stable")] = np.arange(train.n_items)
    pr = torch.from_numpy(pop_rank)
    ranks = []
    for start in range(0, len(users), block):
        ub, tb = users[start:start + block], target[start:start + block]
        s = score_fn(ub).float().clone()
        rows = np.repeat(np.arange(len(ub)), np.diff(seen[ub].indptr))
        s[torch.from_numpy(rows), torch.from_numpy(seen[ub].indices.astype(np.int64))] = -np.inf
        t = torch.from_numpy(tb)
        ts = s[torch.arange(len(ub)), t][:, None]
        ahead = (s > ts) | ((s == ts) & (pr[None, :] < pr[t][:, None]))
        ranks.append(ahead.sum(1).numpy())
    rank = np.concatenate(ranks)  # 0-based
    hit = rank < k
    return {f"ndcg@{k}": float(np.mean(np.where(hit, 1 / np.log2(rank + 2), 0))),
            f"hr@{k}": float(hit.mean()),
            f"mrr@{k}": float(np.mean(np.where(hit, 1 / (rank + 1), 0)))}


def run(name: str, settings: list[dict], valid: bool = False, check: bool = False
        ) -> list[dict]:
    data = load(name)
    if valid:  # each user's last event set aside: the second-last is the target
        data = last_event_split(data)[0]
    train, users, target = last_event_split(data)
    rows = []
    for params in settings:
        model_name = params.pop("model", "sknn")
        t0 = time.perf_counter()
        model = create_model(model_name, **params).fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = next_item_metrics(lambda ub, m=model: m.score_sequences(ub, train), users,
                                    target, train)
        score_s = time.perf_counter() - t0
        row = {"data": name, "target": "second-last" if valid else "last",
               "model": model_name, **params, **metrics,
               "fit_s": round(fit_s, 2), "score_s": round(score_s, 2),
               "users": int(len(users)), "load": round(os.getloadavg()[0], 2)}
        if check:  # the same figures from recforge's next-item evaluation
            from recforge.evaluation import evaluate_next_item

            test = data.subset(~np.isin(np.arange(len(data)), train_events(data, train)))
            for exclude in (True, False):
                result = evaluate_next_item(model, train, test, exclude_seen=exclude,
                                            by_length=None)
                row[f"evaluate_next_item(exclude_seen={exclude})"] = {
                    "ndcg@10": result["ndcg@10"], "hr@10": result["hr@10"],
                    "mrr@10": result["mrr@10"], "ties": result.ties}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="both", choices=["ml-1m-seq", "ml-100k", "both"])
    ap.add_argument("--grid", action="store_true", help="try several settings")
    ap.add_argument("--settings", help="a JSON list of parameter dicts to run instead")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true",
                    help="also run recforge.evaluation.evaluate_next_item on each model")
    ap.add_argument("--valid", action="store_true",
                    help="predict each user's second-last event (for choosing settings)")
    args = ap.parse_args()
    settings = [{"model": "pop"}, {}]
    if args.settings:
        settings = json.loads(args.settings)
    if args.grid:
        settings += [{"neighbors": n, "sample_size": ss, "weighting": w}
                     for n in (50, 200, 1000) for ss in (0, 1000)
                     for w in ("div", "linear", "same")]
        settings += [{"similarity": "jaccard"}, {"weighting_score": "div"},
                     {"idf_weighting": 1.0}]
    names = ["ml-1m-seq", "ml-100k"] if args.data == "both" else [args.data]
    rows = [r for n in names for r in run(n, [dict(s) for s in settings], args.valid, args.check)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
