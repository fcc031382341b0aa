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

    python benchmarks/bench_unlearning.py --serving --out benchmarks/results/unlearning-serving.json

measures ``DELETE /users/{id}`` against a served ``ease`` instead (see :func:`serving`).
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
ITEM_SIDE = {"pop": ["scores_"], "itemknn": ["similarity_"], "userknn": ["similarity_"],
             "ease": ["weights_"],
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


def serving(train, rounds: int = 3, n_quiet: int = 300) -> dict:
    """``DELETE /users/{id}`` against a served ``ease`` (in-process test client, an event
    store): the request's latency, the worker's time until the model without the user is
    swapped in, and ``GET /users/{id}/recommendations`` latencies before and while it runs."""
    import tempfile  # lazy: only for --serving

    from fastapi.testclient import TestClient

    from recforge.serving.app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-unlearning-"))
    path = create_model("ease").fit(train).save(tmp / "ease")
    app = create_app(path, events=tmp / "events.sqlite")
    client = TestClient(app, base_url="http://localhost")
    users = train.users.ids

    def gets(n: int, offset: int) -> list[float]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            client.get(f"/users/{users[(offset + i) % len(users)]}/recommendations")
            out.append((time.perf_counter() - t0) * 1000)
        return out

    quiet = gets(n_quiet, 0)
    deletes, during, workers = [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        answer = client.delete(f"/users/{users[1000 + r]}",
                               headers={"content-type": "application/json"}).json()
        deletes.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        while not app.state.forgetter.wait(0):
            during.extend(gets(5, 2000 + len(during)))
        workers.append(time.perf_counter() - t0)
        assert answer["model"] == "forgetting" and users[1000 + r] not in \
            app.state.service.model.users_

    def pct(xs: list[float]) -> dict:
        return {"p50_ms": round(float(np.percentile(xs, 50)), 2),
                "p99_ms": round(float(np.percentile(xs, 99)), 2), "n": len(xs)}

    out = {"model": "ease", "delete_ms": [round(x, 1) for x in deletes],
           "worker_s": [round(x, 2) for x in workers], "get_quiet": pct(quiet),
           "get_while_forgetting": pct(during)}
    print(f"DELETE {out['delete_ms']} ms; worker {out['worker_s']} s; GET p50/p99 "
          f"{out['get_quiet']['p50_ms']}/{out['get_quiet']['p99_ms']} ms before, "
          f"{out['get_while_forgetting']['p50_ms']}/{out['get_while_forgetting']['p99_ms']} "
          "ms while forgetting", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="pop,itemknn,ease,als,gfcf,bspm,bpr")
    ap.add_argument("--counts", default="1,100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--serving", action="store_true",
                    help="Measure DELETE /users/{id} against a served ease instead.")
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks" / "results" / "unlearning.json")
    args = ap.parse_args(argv)
    train = load("ml-1m-implicit")["train"]
    counts = [int(x) for x in args.counts.split(",")]
    load_before = os.getloadavg()
    if args.serving:
        result = serving(train)
        result.update(load_before=[round(x, 2) for x in load_before],
                      load_after=[round(x, 2) for x in os.getloadavg()],
                      omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                      created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return 0
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
