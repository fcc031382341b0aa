#!/usr/bin/env python
"""Unlearning on ml-1m-implicit: ``forget_users`` of 1 and 100 users against a full refit.

    python benchmarks/bench_unlearning.py [--models pop,itemknn,ease,als,gfcf,bspm,bpr]

For each model: fit on train.txt + valid.txt (as bench_models does), then for each count
of users (``--counts``, drawn with ``--seed``): the time of ``forget_users`` on a copy of
the fitted model, the time of a fit on the data without those users (the refit that
forgetting replaces), and the largest absolute difference between the item-side
parameters of the two (exact models; the user factors of ``als`` too). ``bpr`` forgets
the users' rows only: its row shows the time and that its item parameters did not move
(the difference to a refit is then training noise, not reported). Prints a table; JSON
with the machine's load goes to ``benchmarks/results/unlearning.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_models import load  # noqa: E402

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.models.registry import create_model  # noqa: E402
from recforge.models.unlearning import unlearning_kind  # noqa: E402

#: The item-side parameters compared with a refit.
ITEM_SIDE = {"pop": ["scores_"], "itemknn": ["similarity_"], "ease": ["weights_"],
             "als": ["item_factors_", "user_factors_"], "gfcf": ["vt_", "matrix_"],
             "bspm": ["vt_", "matrix_"], "bpr": []}


def _array(value) -> np.ndarray:
    if hasattr(value, "toarray"):
        value = value.toarray()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def max_difference(model, ref, attrs: list[str]) -> float | None:
    if not attrs:
        return None
    return max(float(np.abs(_array(getattr(model, a)) - _array(getattr(ref, a))).max())
               for a in attrs)


def ease_float64(data, reg: float) -> np.ndarray:
    """EASE's weights on ``data`` computed in float64 (the reference for rounding)."""
    x = data.binary_csr.astype(np.float64)
    gram = torch.from_numpy((x.T @ x).toarray())
    gram.diagonal().add_(reg)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram))
    b = -p / p.diagonal().unsqueeze(0)
    b.fill_diagonal_(0.0)
    return b.numpy()


def run_model(name: str, train, counts: list[int], seed: int) -> list[dict]:
    t0 = time.perf_counter()
    fitted = create_model(name).fit(train)
    fit_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    rows = []
    for n in counts:
        picked = np.sort(rng.choice(train.n_users, size=n, replace=False))
        gone = train.users.ids[picked]
        model = copy.deepcopy(fitted)
        report = model.forget_users(gone)
        keep = np.setdiff1d(np.arange(train.n_users), picked)
        without = train.reindex(train.users.take(keep), train.items, unknown="drop")
        t0 = time.perf_counter()
        ref = create_model(name).fit(without)
        refit_s = time.perf_counter() - t0
        row = {"model": name, "kind": unlearning_kind(model), "users": n,
               "events": report.events_removed, "forget_s": round(report.seconds, 3),
               "refit_s": round(refit_s, 3), "fit_s": round(fit_s, 3),
               "method": report.method,
               "max_abs_diff": max_difference(model, ref, ITEM_SIDE.get(name, []))}
        if name == "ease":  # which of the two is nearer the exact answer (float64)
            exact = ease_float64(without, float(ref.reg))
            row["forget_vs_float64"] = float(np.abs(_array(model.weights_) - exact).max())
            row["refit_vs_float64"] = float(np.abs(_array(ref.weights_) - exact).max())
        if name == "bpr":
            row["item_params_moved"] = float(
                (model.module_.item.weight - fitted.module_.item.weight).abs().max().detach())
        rows.append(row)
        diff = "-" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        print(f"{name:8} {row['kind']:9} {n:>4} users {row['events']:>6} events  forget "
              f"{row['forget_s']:7.3f}s  refit {row['refit_s']:7.3f}s  max|diff| {diff:>9}  "
              f"({row['method']})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="pop,itemknn,ease,als,gfcf,bspm,bpr")
    ap.add_argument("--counts", default="1,100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "unlearning.json")
    args = ap.parse_args(argv)
    train = load("ml-1m-implicit")["train"]
    counts = [int(x) for x in args.counts.split(",")]
    load_before = os.getloadavg()
    rows: list[dict] = []
    for name in args.models.split(","):  # written after each model: a crash keeps the rest
        rows.extend(run_model(name.strip(), train, counts, args.seed))
        write(args.out, train, rows, load_before)
    print(f"load {[round(x, 2) for x in load_before]} -> "
          f"{[round(x, 2) for x in os.getloadavg()]}; wrote {args.out}")
    return 0


def write(out: Path, train, rows: list[dict], load_before) -> None:
    payload = {"dataset": "ml-1m-implicit (train+valid)", "n_users": train.n_users,
               "n_items": train.n_items, "events": len(train),
               "recforge_version": __version__,
               "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": rows}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
