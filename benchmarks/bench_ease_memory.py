#!/usr/bin/env python
"""EASE's peak memory and fit time against the catalogue size (for ``ease_peak_bytes``).

    python benchmarks/bench_ease_memory.py --items 2000,4000,8000,12000

Each size is fitted in a fresh process on random implicit data (``--users`` users, about
``--per-user`` events each, uniform items: the Gram matrix is dense, the worst case).
Reported: fit seconds, the peak resident memory above the memory before the fit
(bench_models' PeakMemory, sampled every 5 ms) and that peak divided by ``n_items^2``,
beside :func:`recforge.models.ease.ease_peak_bytes`. JSON goes to
``benchmarks/results/ease_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def run_one(n_items: int, n_users: int, per_user: int) -> dict:
    import numpy as np
    import pandas as pd
    from bench_models import PeakMemory

    from recforge.data.interactions import Interactions
    from recforge.models.ease import EASE, ease_peak_bytes

    rng = np.random.default_rng(0)
    key = np.unique(rng.integers(0, n_users, n_users * per_user).astype(np.int64) * n_items
                    + rng.integers(0, n_items, n_users * per_user))
    data = Interactions.from_frame(pd.DataFrame({"user": key // n_items, "item": key % n_items}))
    model = EASE()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - t0
    delta = mem.peak - mem.base
    return {"n_items": data.n_items, "n_users": data.n_users, "events": len(data),
            "fit_s": round(fit_s, 2), "peak_delta_mb": round(delta / 2**20, 1),
            "bytes_per_item_pair": round(delta / data.n_items ** 2, 2),
            "estimate_mb": round(ease_peak_bytes(data.n_items) / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", default="2000,4000,8000,12000")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--per-user", type=int, default=50)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ease_memory.json")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.users, args.per_user)))
        return 0
    load = os.getloadavg()
    rows = []
    for n in [int(x) for x in args.items.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(n), "--users", str(args.users),
               "--per-user", str(args.per_user)]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['n_items']:>6} items: fit {row['fit_s']:.1f}s, peak +{row['peak_delta_mb']:.0f} MB "
              f"({row['bytes_per_item_pair']:.2f} B per item pair; estimate "
              f"{row['estimate_mb']:.0f} MB)", flush=True)
    payload = {"load_before": [round(x, 2) for x in load],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "cpu_count": os.cpu_count(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "results": rows}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
