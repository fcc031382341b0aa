#!/usr/bin/env python
"""GF-CF and BSPM on a generated catalogue too large for a dense item-item matrix.

    python benchmarks/bench_graphfilter.py                      # 30k users x 40k items
    python benchmarks/bench_graphfilter.py --users 30000 --items 40000 --events 1200000

The data comes from :func:`recforge.data.synthetic.write_synthetic_parquet` (Zipf item
popularity, log-normal activity, genre tastes; seed 0), split per user 80/20 (seed 0).
Each model is fitted in a fresh process (so one model's memory does not count against the
next) and evaluated by full ranking of every item (training items excluded). Reported:
fit seconds, evaluation seconds, the process's peak resident memory over fit and
evaluation (``ru_maxrss``, and psutil sampling every 5 ms as bench_models does), and
whether the dense or the factored form was used. ``pop`` is the floor. JSON goes to
``benchmarks/results/graphfilter-<users>x<items>.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def run_one(args: argparse.Namespace) -> dict:
    """Fit and evaluate one model in this process; return its row."""
    import torch
    import yaml
    from bench_models import PeakMemory

    from recforge.data.readers import read_parquet
    from recforge.data.split import random_split
    from recforge.evaluation import evaluate
    from recforge.models.registry import create_model

    data = read_parquet(args.data, columns={"user": "user", "item": "item"})
    split = random_split(data, test_size=0.2, by_user=True, seed=0)
    params = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    model = create_model(args.model, **params)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - t0
        fit_peak = mem.peak
        result = evaluate(model, split.train, split.test, metrics="recall@20,ndcg@20")
    return {"model": args.model, "params": model.get_params(),
            "dense": getattr(model, "dense_", None), **result.summary,
            "fit_s": round(fit_s, 2), "eval_s": round(result.seconds, 2),
            "fit_peak_rss_mb": round(fit_peak / 2**20, 1),
            "peak_rss_mb": round(mem.peak / 2**20, 1),
            "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "train_events": len(split.train), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--items", type=int, default=40_000)
    ap.add_argument("--events", type=int, default=1_200_000)
    ap.add_argument("--models", default="pop,gfcf,bspm")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="model.param=value, e.g. bspm.factor_dim=128")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.model:  # the child process: one model
        print(json.dumps(run_one(args)))
        return 0

    from recforge.data.synthetic import write_synthetic_parquet

    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.parquet"
        info = write_synthetic_parquet(path, n_users=args.users, n_items=args.items,
                                       n_interactions=args.events, seed=0)
        print(f"generated {info['events']:,} events, {args.users:,} users x "
              f"{args.items:,} items in {info['seconds']} s", flush=True)
        rows = []
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            own = [p.split(".", 1)[1] for p in args.param if p.startswith(name + ".")]
            cmd = [sys.executable, __file__, "--data", str(path), "--model", name]
            for p in own:
                cmd += ["-p", p]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            rows.append(row)
            print(f"{name:6s} dense={row['dense']} fit {row['fit_s']:.1f}s eval "
                  f"{row['eval_s']:.1f}s peak {row['peak_rss_mb']:.0f} MB (fit "
                  f"{row['fit_peak_rss_mb']:.0f} MB, ru_maxrss {row['ru_maxrss_mb']:.0f} MB) "
                  f"Recall@20 {row['Recall@20']:.4f} NDCG@20 {row['NDCG@20']:.4f}",
                  flush=True)
    payload = {"dataset": f"synthetic {args.users}x{args.items}, {info['events']} events, "
                          "per-user 80/20 (seed 0)",
               "load_before": [round(x, 2) for x in load],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "cpu_count": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "results": rows}
    out = args.out or REPO / "benchmarks" / "results" / f"graphfilter-{args.users}x{args.items}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"load {payload['load_before']} -> {payload['load_after']}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
