#!/usr/bin/env python
"""Every implicit-feedback ranking model on datasets of different shapes (issue 23 item 1).

    python benchmarks/bench_datasets.py                                  # all models, all datasets
    python benchmarks/bench_datasets.py --models pop,ease,als --datasets ml-100k,wide
    python benchmarks/bench_datasets.py --models als -p als.reg_exponent=0 -p als.reg=0.01
    python benchmarks/bench_datasets.py --markdown docs/benchmarks.md   # table from the JSON only
    python benchmarks/bench_datasets.py --merge other.json              # rows run elsewhere

Datasets (real ones read from $RECFORGE_TEST_DATA or ../shared/data, never the repository):

* ``ml-100k``, ``ml-latest-small``: ratings >= 4 as positives, per-user 80/20 random split
  (``random_split(data, test_size=0.2, by_user=True, seed=0)``).
* ``ml-1m-implicit``: the LightGCN-style split, train.txt + valid.txt -> test.txt.
* generated (:func:`recforge.data.synthetic.write_synthetic_parquet`: Zipf item
  popularity, log-normal activity, users drawn to 1-3 favourite genres with probability
  ``taste_strength`` and popularity within the genre; seed 0), per-user 80/20 split (seed 0),
  cached as Parquet under ``--cache`` ($RECFORGE_BENCH_CACHE or the temp directory):
  ``sparse-local`` 30k users x 41k items, 1M events, 1,000 genres, taste 0.9 (many small
  clusters, a check-in log); ``wide`` 60k users x 5k items, 2M events, 20 genres;
  ``long-tail`` 50k users x 200k items, 1M events, 2,000 genres, taste 0.8. Evaluated on a
  fixed sample (seed 0) of 5,000 test users.

The models are those the registry lists as ranking (``models_with("ranks")``) that need no
ratings, no item features and no event order. Each (model, dataset) runs in a fresh process
with a time limit (``--time-limit``) and a memory limit (``--memory-limit``, resident
memory polled every 0.2 s); a model that exceeds either, or fails, is recorded as such and
the run goes on. Evaluation: :func:`recforge.evaluation.evaluate`, full ranking, training
items excluded, Recall@20 and NDCG@20. Rows are merged into
``benchmarks/results/datasets.json`` (a run of some models on some datasets replaces those
cells only), and the table (model x dataset, each model's rank by NDCG@20 per dataset and
its mean rank) is printed; ``--markdown FILE`` writes it between ``<!-- bench:datasets -->``
markers.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

RESULTS = REPO / "benchmarks" / "results" / "datasets.json"
MOVIELENS = ("ml-100k", "ml-latest-small")
#: Generated datasets: write_synthetic_parquet's arguments (seed 0).
GENERATED: dict[str, dict[str, Any]] = {
    "sparse-local": {"n_users": 30_000, "n_items": 41_000, "n_interactions": 1_000_000,
                     "n_genres": 1000, "taste_strength": 0.9},
    "wide": {"n_users": 60_000, "n_items": 5_000, "n_interactions": 2_000_000,
             "n_genres": 20},
    "long-tail": {"n_users": 50_000, "n_items": 200_000, "n_interactions": 1_000_000,
                  "n_genres": 2000, "taste_strength": 0.8},
}
DATASETS = (*MOVIELENS, "ml-1m-implicit", *GENERATED)
EVAL_USERS = 5000  # test users sampled (seed 0) on the generated sets
METRICS = ("Recall@20", "NDCG@20")


def benchmark_models() -> list[str]:
    """Every implicit-feedback ranking model: ranks, needs no ratings, no item features
    and no event order (sequence models have their own benchmark)."""
    from recforge.models.registry import create_model, models_with

    out = []
    for name in models_with("ranks"):
        caps = create_model(name).effective_capabilities()  # mlp, neumf: by their loss
        if not (caps.learns_ratings or caps.requires_item_features or caps.reads_order):
            out.append(name)
    return out


def cache_dir(arg: Path | None) -> Path:
    base = arg or Path(os.environ.get("RECFORGE_BENCH_CACHE",
                                      Path(tempfile.gettempdir()) / "recforge-bench"))
    base.mkdir(parents=True, exist_ok=True)
    return base


def generated_path(name: str, cache: Path) -> Path:
    """The dataset's Parquet file, generated once (seeded) and then read from the cache."""
    from recforge.data.synthetic import write_synthetic_parquet

    spec = GENERATED[name]
    tag = "-".join(f"{k}{v}" for k, v in sorted(spec.items()))
    path = cache / f"{name}-{tag}-seed0.parquet"
    if not path.is_file():
        write_synthetic_parquet(path, seed=0, **spec)
    return path


def load(name: str, cache: Path) -> dict[str, Any]:
    """``train``, ``test`` (the evaluated users only) and a description of ``name``."""
    import numpy as np

    from recforge.data.filters import to_implicit
    from recforge.data.movielens import load_movielens
    from recforge.data.readers import read_parquet
    from recforge.data.split import random_split

    if name == "ml-1m-implicit":
        from bench_models import load as load_ml1m

        d = load_ml1m("ml-1m-implicit")
        return {"train": d["train"], "test": d["test"], "desc": "train+valid -> test"}
    if name in MOVIELENS:
        from bench_models import shared_dir

        data = load_movielens(name, data_dir=shared_dir() / name, download=False,
                              progress=False).interactions
        split = random_split(to_implicit(data, 4.0), test_size=0.2, by_user=True, seed=0)
        return {"train": split.train, "test": split.test,
                "desc": "ratings >= 4, per-user 80/20 (seed 0)"}
    if name in GENERATED:
        data = read_parquet(generated_path(name, cache), columns={"user": "user", "item": "item"})
        split = random_split(data, test_size=0.2, by_user=True, seed=0)
        test = split.test
        users = np.unique(test.user)
        if len(users) > EVAL_USERS:
            keep = np.random.default_rng(0).choice(users, EVAL_USERS, replace=False)
            test = test.subset(np.isin(test.user, keep))
        return {"train": split.train, "test": test,
                "desc": f"generated, per-user 80/20 (seed 0), {EVAL_USERS:,} test users"}
    sys.exit(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Fit and evaluate one model on one dataset in this process; return its row."""
    import torch
    import yaml
    from bench_models import PeakMemory

    from recforge.errors import RecforgeError
    from recforge.evaluation import evaluate
    from recforge.models.registry import create_model

    data = load(args.dataset, cache_dir(args.cache))
    train, test = data["train"], data["test"]
    params = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in args.param)}
    row: dict[str, Any] = {"model": args.model, "dataset": args.dataset,
                           "users": train.n_users, "items": train.n_items,
                           "train_events": len(train), "threads": torch.get_num_threads()}
    model = create_model(args.model, **params)
    row["params"] = model.get_params()
    row["code"] = _code_version(type(model))
    with PeakMemory() as mem:
        try:
            t0 = time.perf_counter()
            model.fit(train)
            row["fit_s"] = round(time.perf_counter() - t0, 2)
            result = evaluate(model, train, test, metrics="recall@20,ndcg@20")
        except RecforgeError as exc:  # e.g. ease refusing a catalogue too large
            row.update(status="error", error=f"{type(exc).__name__}: {exc}")
            return row
    row.update(status="ok", **{k: round(v, 4) for k, v in result.summary.items()},
               eval_s=round(result.seconds, 2), eval_users=result.n_users,
               peak_rss_mb=round(mem.peak / 2**20), peak_delta_mb=round((mem.peak - mem.base) / 2**20))
    return row


def _code_version(cls: type) -> str:
    """The commit and whether the model's module had uncommitted changes when it ran
    (``$RECFORGE_BENCH_CODE`` when run from an exported snapshot, e.g. ``git archive``)."""
    if "RECFORGE_BENCH_CODE" in os.environ:
        return os.environ["RECFORGE_BENCH_CODE"]
    src = Path(sys.modules[cls.__module__].__file__)
    git = ["git", "-C", str(REPO)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", str(src)], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted ' + src.name if dirty else ''}"


def run_child(name: str, dataset: str, params: list[str], args: argparse.Namespace) -> dict:
    """Run one (model, dataset) in a fresh process under the time and memory limits."""
    import psutil

    cmd = [sys.executable, __file__, "--child", "--model", name, "--dataset-one", dataset]
    if args.cache:
        cmd += ["--cache", str(args.cache)]
    for p in params:
        cmd += ["-p", p]
    base = {"model": name, "dataset": dataset}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        ps = psutil.Process(proc.pid)
        status, peak = None, 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            if time.perf_counter() - t0 > args.time_limit:
                status = f"timeout (> {args.time_limit:.0f} s)"
            elif peak > args.memory_limit * 2**30:
                status = f"out of memory (> {args.memory_limit:g} GB)"
            if status:
                proc.kill()
                proc.wait()
                return {**base, "status": status, "wall_s": round(time.perf_counter() - t0)}
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            status = "out of memory (killed)" if proc.returncode == -9 else "failed"
            return {**base, "status": status, "error": tail[0][:300],
                    "wall_s": round(time.perf_counter() - t0)}
    row = json.loads(lines[-1])
    row["wall_s"] = round(time.perf_counter() - t0)
    return row


# ---------------------------------------------------------------------------------------
# results: merge, rank, print, markdown
def read_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"datasets": {}, "results": []}


def merge(payload: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = {(r["model"], r["dataset"]) for r in rows}
    kept = [r for r in payload["results"] if (r["model"], r["dataset"]) not in done]
    payload["results"] = sorted(kept + rows, key=lambda r: (r["dataset"], r["model"]))
    return payload


def ranks(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """(model, dataset) -> rank by NDCG@20 among the models run on that dataset (1 = best;
    ties share the better rank); a model that failed, timed out or ran out of memory ranks
    after every model that finished."""
    out = {}
    for ds in {r["dataset"] for r in rows}:
        here = [r for r in rows if r["dataset"] == ds]
        ok = sorted((r for r in here if r.get("status") == "ok"), key=lambda r: -r["NDCG@20"])
        for r in here:
            if r.get("status") == "ok":
                out[(r["model"], ds)] = 1 + sum(o["NDCG@20"] > r["NDCG@20"] for o in ok)
            else:
                out[(r["model"], ds)] = len(ok) + 1
    return out


def _cell(r: dict[str, Any] | None, rank: int | None) -> str:
    if r is None:
        return "not run"
    if r.get("status") != "ok":
        short = {"error": "refused", "failed": "failed"}.get(r["status"], r["status"])
        return f"{short} ({rank})"
    return f"{r['Recall@20']:.4f} / {r['NDCG@20']:.4f} ({rank})"


def table_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table: a cell per (model, dataset) with its rank among the models run on that
    dataset; the mean rank ranks again among the models run on every dataset of the table
    (so that every mean counts the same datasets and the same rivals)."""
    rows = payload["results"]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in sorted(rows, key=lambda r: r["model"])))
    rk = ranks(rows)
    by = {(r["model"], r["dataset"]): r for r in rows}
    common = {m for m in models if all((m, d) in by for d in datasets)}
    rk_common = ranks([r for r in rows if r["model"] in common])
    body = []
    for m in models:
        if m in common:
            mean = sum(rk_common[(m, d)] for d in datasets) / len(datasets)
            last = f"{mean:.2f}"
        else:
            mean = float("inf")
            last = f"- ({sum((m, d) in by for d in datasets)} of {len(datasets)} datasets)"
        body.append((mean, [m, *[_cell(by.get((m, d)), rk.get((m, d))) for d in datasets],
                            last]))
    body.sort(key=lambda t: t[0])
    return ["model", *datasets, "mean rank (models run on every dataset)"], [b for _, b in body]


def shapes(payload: dict[str, Any]) -> list[str]:
    out = []
    for d in DATASETS:
        r = next((r for r in payload["results"] if r["dataset"] == d and "items" in r), None)
        if r:
            desc = payload["datasets"].get(d, {}).get("desc", "")
            dens = r["train_events"] / r["users"] / r["items"]
            out.append(f"`{d}`: {r['users']:,} users x {r['items']:,} items, "
                       f"{r['train_events']:,} training events ({dens:.3%} dense); {desc}")
    return out


def write_markdown(path: Path, payload: dict[str, Any]) -> None:
    from recforge._fs import atomic_write_text

    head, body = table_rows(payload)
    loads = sorted({tuple(v["load"]) for v in payload.get("runs", [])})
    lines = ["<!-- bench:datasets -->",
             f"Generated by `python benchmarks/bench_datasets.py` (table: `--markdown`) on "
             f"{time.strftime('%Y-%m-%d')} from benchmarks/results/datasets.json. Recall@20 / "
             "NDCG@20 (rank by NDCG@20 on that dataset), full ranking with training items "
             "excluded, default hyperparameters; a model that failed, was refused, was skipped, "
             "timed out or ran out of memory ranks last on that dataset; the mean rank ranks "
             "again among the models run on every dataset.", "",
             *[f"- {s}" for s in shapes(payload)], "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    if loads:
        lo = min(x[0] for x in loads)
        hi = max(x[0] for x in loads)
        lines += ["", f"Machine load (1-minute average) at the start of the runs: "
                      f"{lo:.1f}-{hi:.1f} on {os.cpu_count()} cores; times are not comparable "
                      "across runs, the metrics are."]
    lines.append("<!-- /bench:datasets -->")
    block = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = "<!-- bench:datasets -->", "<!-- /bench:datasets -->"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)


def print_table(payload: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    head, body = table_rows(payload)
    table = Table(title="Recall@20 / NDCG@20 (rank by NDCG@20)")
    for c in head:
        table.add_column(c, justify="left" if c == "model" else "right")
    for b in body:
        table.add_row(*b)
    Console(width=250).print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="all", help="comma-separated, or 'all'")
    ap.add_argument("--datasets", default="all", help=f"comma-separated of {', '.join(DATASETS)}")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="model.param=value, e.g. als.reg=0.01")
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per model and dataset")
    ap.add_argument("--memory-limit", type=float, default=16.0, help="GB of resident memory")
    ap.add_argument("--cache", type=Path, default=None, help="where generated data is kept")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--markdown", type=Path, default=None,
                    help="write the table from the JSON into this file and exit (no runs)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="merge the rows of these JSON files (runs made elsewhere, e.g. from a "
                         "snapshot) into --out and exit; later files win")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--dataset-one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.dataset = args.dataset_one
        print(json.dumps(run_one(args)))
        return 0
    if args.merge:
        from recforge._fs import atomic_write_text

        payload = read_results(args.out)
        for path in args.merge:
            other = read_results(path)
            payload = merge(payload, other["results"])
            payload["datasets"].update(other["datasets"])
            payload["runs"] = (payload.get("runs", []) + other.get("runs", []))[-500:]
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        print_table(payload)
        print(f"merged {len(args.merge)} file(s) into {args.out}")
        return 0
    if args.markdown is not None:
        payload = read_results(args.out)
        print_table(payload)
        write_markdown(args.markdown, payload)
        print(f"updated {args.markdown}")
        return 0

    from recforge._fs import atomic_write_text

    known = benchmark_models()
    names = known if args.models == "all" else [m.strip() for m in args.models.split(",") if m]
    datasets = list(DATASETS) if args.datasets == "all" else [
        d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in datasets:
        if d not in DATASETS:
            sys.exit(f"unknown dataset {d!r} (known: {', '.join(DATASETS)})")
    cache = cache_dir(args.cache)
    for d in datasets:
        if d in GENERATED:
            t0 = time.perf_counter()
            path = generated_path(d, cache)
            print(f"{d}: {path} ({time.perf_counter() - t0:.1f} s)", flush=True)
    for dataset in datasets:
        for name in names:
            own = [p.split(".", 1)[1] for p in args.param if p.startswith(name + ".")]
            load_avg = os.getloadavg()
            row = run_child(name, dataset, own, args)
            row["load"] = [round(x, 2) for x in load_avg]
            if row.get("status") == "ok":
                print(f"{dataset:16s} {name:10s} Recall@20 {row['Recall@20']:.4f} NDCG@20 "
                      f"{row['NDCG@20']:.4f} fit {row['fit_s']:.1f}s eval {row['eval_s']:.1f}s "
                      f"peak {row['peak_rss_mb']} MB (load {row['load'][0]})", flush=True)
            else:
                print(f"{dataset:16s} {name:10s} {row['status']}: {row.get('error', '')} "
                      f"(load {row['load'][0]})", flush=True)
            payload = merge(read_results(args.out), [row])  # after each run: resumable
            payload["datasets"][dataset] = {"desc": _desc(dataset)}
            payload.setdefault("runs", []).append(
                {"model": name, "dataset": dataset, "load": row["load"],
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
            payload["runs"] = payload["runs"][-500:]
            atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    print_table(read_results(args.out))
    print(f"wrote {args.out}")
    return 0


def _desc(dataset: str) -> str:
    if dataset in MOVIELENS:
        return "ratings >= 4, per-user 80/20 (seed 0)"
    if dataset == "ml-1m-implicit":
        return "train+valid -> test"
    spec = GENERATED[dataset]
    return (f"generated ({spec['n_genres']:,} genres, taste_strength "
            f"{spec.get('taste_strength', 0.6)}, Zipf exponent 1.0), per-user 80/20 (seed 0), "
            f"{EVAL_USERS:,} sampled test users")


if __name__ == "__main__":
    sys.exit(main())
