#!/usr/bin/env python
"""ALS's regularisation across datasets of different shapes: why ``reg_weight="observed"``.

    python benchmarks/bench_als_reg.py                         # every dataset, the settings below
    python benchmarks/bench_als_reg.py --datasets ml-100k,sparse-local --settings default,total
    python benchmarks/bench_als_reg.py --settings observed:0.05,observed:0.1
    python benchmarks/bench_als_reg.py --settings observed:2:0.5    # reg 2, exponent 0.5
    # implicit 0.7.3's ALS (128 factors, reg 0.01, alpha 10, 15 iterations, one thread) on
    # the same splits, in a venv of its own (never a dependency of recforge):
    RECFORGE_IMPLICIT_PYTHON=../bench-implicit/bin/python \
        python benchmarks/bench_als_reg.py --settings implicit

Frequency-scaled regularisation multiplies ``reg`` by a row's weight. With the weight of
every cell (``reg_weight="total"``, Rendle et al. 2022: ``n_items + alpha * n_u``) the
catalogue size enters every user's penalty, and a ``reg`` chosen on a 3,700-item catalogue
over-regularises a 41,000-item one; with the weight of the observed cells
(``"observed"``: ``n_u + alpha * n_u``) it does not. This script measures both, and a
constant ``reg``, on:

* ``ml-100k``, ``ml-latest-small``: ratings >= 4 as positives, per-user 80/20 split (seed 0);
* ``ml-1m-valid`` (train.txt -> valid.txt, where defaults are chosen) and ``ml-1m``
  (train+valid -> test) of ml-1m-implicit;
* three generated logs (``write_synthetic_parquet``, seeded; per-user 80/20 split):
  ``sparse-genres`` 30k users x 40k items, 1M events, 20 genre clusters;
  ``sparse-local`` 30k x 41k, 1M events, 1,000 small clusters, taste 0.9 (the shape of a
  check-in log); ``wide`` 60k users x 5k items, 2M events.

Generated sets are evaluated on a seeded sample of 8,000 test users. Full ranking, training
items excluded, Recall@20 and NDCG@20. Rows go to ``benchmarks/results/als_reg.json``
(merged by dataset and setting, so a run can be done in parts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: name -> ALS parameters (``observed:<reg>`` / ``total:<reg>`` / ``const:<reg>`` also work)
SETTINGS = {
    "default": {},
    "total": {"reg_weight": "total", "reg": 0.015},   # the default until December 2026
    "const": {"reg_exponent": 0.0, "reg": 0.01},      # implicit's ordinary reg
}
GENERATED = {
    "sparse-genres": dict(n_users=30_000, n_items=40_000, n_interactions=1_000_000, seed=0),
    "sparse-local": dict(n_users=30_000, n_items=41_000, n_interactions=1_000_000,
                         n_genres=1000, taste_strength=0.9, seed=2),
    "wide": dict(n_users=60_000, n_items=5_000, n_interactions=2_000_000, seed=1),
}
DATASETS = ["ml-100k", "ml-latest-small", "ml-1m-valid", "ml-1m", *GENERATED]
MAX_USERS = 8000


def shared_data() -> Path:
    env = os.environ.get("RECFORGE_TEST_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    if not base.is_dir():
        sys.exit(f"benchmark data not found at {base}: set RECFORGE_TEST_DATA")
    return base


def load(name: str, cache: Path):
    """(train, test) of one dataset."""
    import pandas as pd

    from recforge import Interactions
    from recforge.data.readers import read_many, read_parquet
    from recforge.data.split import random_split
    from recforge.data.synthetic import write_synthetic_parquet

    base = shared_data()
    if name in ("ml-1m", "ml-1m-valid"):
        d = base / "ml-1m-implicit"
        train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
        return (train, valid) if name == "ml-1m-valid" else (train.concat(valid), test)
    if name == "ml-100k":
        frame = pd.read_csv(base / "ml-100k" / "u.data", sep="\t",
                            names=["user", "item", "rating", "timestamp"])
    elif name == "ml-latest-small":
        frame = pd.read_csv(base / "ml-latest-small" / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item"})
    else:
        path = cache / f"{name}.parquet"
        if not path.exists():
            write_synthetic_parquet(path, **GENERATED[name])
        data = read_parquet(path, columns={"user": "user", "item": "item"})
        split = random_split(data, test_size=0.2, by_user=True, seed=0)
        return split.train, split.test
    data = Interactions.from_frame(frame[frame["rating"] >= 4])
    split = random_split(data, test_size=0.2, by_user=True, seed=0)
    return split.train, split.test


def fit_implicit(train, tmp: Path):
    """implicit 0.7.3's ALS on ``train`` in its own venv (``RECFORGE_IMPLICIT_PYTHON``,
    ``benchmarks/implicit_als.py``), its factors put into a recforge ``ALS`` so that the
    same evaluator scores them; returns (model, implicit's own fit seconds)."""
    import subprocess

    import scipy.sparse as sp
    import torch

    from recforge.models.als import ALS

    python = os.environ.get("RECFORGE_IMPLICIT_PYTHON")
    if not python:
        sys.exit("--settings implicit needs RECFORGE_IMPLICIT_PYTHON: the python of a venv "
                 "with implicit==0.7.3")
    sp.save_npz(tmp / "train.npz", train.binary_csr.tocsr())
    out = subprocess.run([python, str(REPO / "benchmarks" / "implicit_als.py"),
                          str(tmp / "train.npz"), str(tmp / "f")], capture_output=True,
                         text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    model = ALS(embedding_dim=128, epochs=1).fit(train)  # the vocabularies and seen items
    model.user_factors_ = torch.from_numpy(np.load(tmp / "f_users.npy")).to(model.device_)
    model.item_factors_ = torch.from_numpy(np.load(tmp / "f_items.npy")).to(model.device_)
    return model, info["fit_s"], info


def parse_setting(name: str) -> dict:
    if name in SETTINGS:
        return SETTINGS[name]
    kind, _, rest = name.partition(":")
    reg, _, nu = rest.partition(":")
    if kind in ("observed", "total"):
        return {"reg_weight": kind, "reg": float(reg),
                **({"reg_exponent": float(nu)} if nu else {})}
    if kind == "const":
        return {"reg_exponent": 0.0, "reg": float(reg)}
    sys.exit(f"unknown setting {name!r}")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from recforge.evaluation import evaluate
    from recforge.models.als import ALS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--settings", default="default,total,const")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recforge-bench")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "als_reg.json")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    for name in args.datasets.split(","):
        train, test = load(name, args.cache)
        users = test.active_users()
        sampled = len(users) > MAX_USERS
        if sampled:
            keep = np.random.default_rng(0).choice(users, MAX_USERS, replace=False)
            test = test.subset(np.nonzero(np.isin(test.user, keep))[0])
        for setting in args.settings.split(","):
            if setting == "implicit":
                with tempfile.TemporaryDirectory() as tmp:
                    model, fit_s, params = fit_implicit(train, Path(tmp))
            else:
                model = ALS(**parse_setting(setting))
                start = time.perf_counter()
                model.fit(train)
                fit_s = time.perf_counter() - start
                params = model.get_params()
            result = evaluate(model, train, test, metrics="recall@20,ndcg@20")
            row = {"dataset": name, "setting": setting, "params": params,
                   "users": len(train.active_users()), "items": train.n_items,
                   "train_events": len(train), "eval_users": int(len(test.active_users())),
                   "sampled_users": sampled, **{k: round(v, 4) for k, v in result.summary.items()},
                   "fit_s": round(fit_s, 1), "load_average": round(os.getloadavg()[0], 1)}
            print(f"{name:16s} {setting:16s} Recall@20 {row['Recall@20']:.4f} "
                  f"NDCG@20 {row['NDCG@20']:.4f} fit {fit_s:6.1f}s", flush=True)
            rows = [r for r in rows if (r["dataset"], r["setting"]) != (name, setting)]
            rows.append(row)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"benchmark": "als_reg", "rows": rows}, indent=1))
            tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
