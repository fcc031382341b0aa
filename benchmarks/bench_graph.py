#!/usr/bin/env python
"""Graph models (lightgcn, LightGCN++, simgcl, xsimgcl) under recforge's protocol or the
papers' one; print a table and write JSON (issue 23 items 5 and 6).

    python benchmarks/bench_graph.py --protocol papers --models xsimgcl
    python benchmarks/bench_graph.py --protocol papers --models lightgcn,lightgcn++,xsimgcl
    python benchmarks/bench_graph.py --protocol recforge --dataset ml-100k --models simgcl

Protocols (``--dataset ml-1m-implicit``, its train.txt / valid.txt / test.txt read from
$RECFORGE_TEST_DATA or ../shared/data):

* ``papers`` — what the published ml-1m-implicit figures of the LightGCN++ study (and
  SELFRec's SimGCL / XSimGCL runs) use: fit on **train.txt only**; valid.txt only chooses
  the epoch (validation NDCG@20 after every epoch, the best epoch's weights kept, stop
  after ``--patience`` epochs without gain; ``--no-valid`` trains the fixed epochs);
  rank **every item except the user's training items** — validation items stay in the
  candidate set and count as misses — and score test.txt at @10 / @20 / @40 (Recall,
  NDCG).
* ``recforge`` — the repository's protocol (``bench_models.py``): fit on train.txt +
  valid.txt, rank everything except those, score test.txt.

Other datasets (``ml-100k``, ``ml-latest-small`` and the generated ones of
``bench_datasets.py``) have no validation file: both protocols are theirs (per-user 80/20),
with the same cutoffs.

Model names: any registry name, plus ``lightgcn++`` = ``lightgcn`` with the LightGCN++
study's ml-1m settings (``alpha=0.4 beta=0.1 gamma=0 unit_norm=true``, 2 layers), and
``simgcl-plain`` / ``xsimgcl-plain``: the papers' models with LightGCN's normalisation
(``alpha=beta=0.5``, no unit rows; recforge's defaults use LightGCN++'s). ``-p model.param=value`` overrides.
Each row records the fit's wall and CPU seconds, the epochs run and the best one, and the
1-minute load average before and after the fit (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_models import parse_params, shared_dir  # noqa: E402

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.data.readers import read_many  # noqa: E402
from recforge.evaluation import evaluate  # noqa: E402
from recforge.models.registry import create_model  # noqa: E402

#: Published figures on ml-1m-implicit, papers' protocol (LightGCN++ study, Lee et al.
#: RecSys 2024, its table of NDCG@10; NDCG@20 of LightGCN++ from the issue's target).
PUBLISHED = {"lightgcn": {"NDCG@10": 0.2977}, "simgcl": {"NDCG@10": 0.3186},
             "xsimgcl": {"NDCG@10": 0.3216}, "lightgcn++": {"NDCG@10": 0.3243,
                                                            "NDCG@20": 0.3275}}
#: Named variants: (registry model, params).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lightgcn++": ("lightgcn", {"alpha": 0.4, "beta": 0.1, "gamma": 0.0, "unit_norm": True,
                                "n_layers": 2}),
    # the papers' SimGCL / XSimGCL: LightGCN's normalisation (recforge's defaults use
    # LightGCN++'s)
    "simgcl-plain": ("simgcl", {"alpha": 0.5, "beta": 0.5, "unit_norm": False}),
    "xsimgcl-plain": ("xsimgcl", {"alpha": 0.5, "beta": 0.5, "unit_norm": False}),
}
CUTOFFS = (10, 20, 40)


def load(dataset: str, protocol: str) -> dict[str, Any]:
    """``train``, ``valid`` (or None), ``test`` and a description."""
    if dataset == "ml-1m-implicit":
        d = shared_dir() / "ml-1m-implicit"
        train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
        if protocol == "papers":
            return {"train": train, "valid": valid, "test": test,
                    "desc": "papers: train.txt -> test.txt, valid.txt picks the epoch, "
                            "only training items excluded"}
        return {"train": train.concat(valid), "valid": None, "test": test,
                "desc": "recforge: train+valid -> test"}
    from bench_datasets import cache_dir
    from bench_datasets import load as load_other

    d = load_other(dataset, cache_dir(None))
    return {"train": d["train"], "valid": None, "test": d["test"], "desc": d["desc"]}


def run(name: str, data: dict[str, Any], params: dict[str, Any], patience: int,
        use_valid: bool) -> dict[str, Any]:
    model_name, preset = VARIANTS.get(name, (name, {}))
    p = {**preset, **params}
    valid = data["valid"] if use_valid else None
    if valid is not None:
        p.setdefault("patience", patience)
        p.setdefault("valid_metric", "ndcg@20")
    model = create_model(model_name, **p)
    load_before = os.getloadavg()[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    model.fit(data["train"], valid)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    load_after = os.getloadavg()[0]
    metrics = ",".join(f"{m}@{k}" for k in CUTOFFS for m in ("recall", "ndcg"))  # Recall@10...
    # training items only are excluded: under the papers' protocol the validation items
    # stay candidates, and count as misses
    result = evaluate(model, data["train"], data["test"], metrics=metrics)
    history = getattr(model, "history_", None) or []
    return {"model": name, "registry_model": model_name, "params": model.get_params(),
            **{k: round(v, 4) for k, v in result.summary.items()},
            "fit_s": round(fit_s, 1), "cpu_s": round(cpu_s, 1),
            "epochs_run": len(history), "best_epoch": getattr(model, "best_epoch_", None),
            "s_per_epoch": round(fit_s / max(1, len(history)), 2),
            "load_before": round(load_before, 2), "load_after": round(load_after, 2),
            "eval_users": result.n_users,
            "published": PUBLISHED.get(name) if data["desc"].startswith("papers") else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml-1m-implicit")
    ap.add_argument("--protocol", choices=("papers", "recforge"), default="papers")
    ap.add_argument("--models", default="xsimgcl")
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="model.param=value, e.g. xsimgcl.eps=0.1")
    ap.add_argument("--patience", type=int, default=5,
                    help="papers' protocol: epochs without validation gain before stopping")
    ap.add_argument("--no-valid", action="store_true",
                    help="papers' protocol: train the fixed epochs, no epoch choice")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args(argv)
    # the trainer's per-epoch lines (loss, validation figure, seconds) on stderr
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    data = load(args.dataset, args.protocol)
    params = parse_params(args.param)
    console = Console(width=200)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        row = run(name, data, params.get(name, {}), args.patience, not args.no_valid)
        rows.append(row)
        console.print(f"{name}: fit {row['fit_s']} s ({row['epochs_run']} epochs, best "
                      f"{row['best_epoch']}, load {row['load_before']}-{row['load_after']}), "
                      f"NDCG@20 {row['NDCG@20']:.4f}")

    table = Table(title=f"{args.dataset} ({data['desc']})")
    cols = [f"{m}@{k}" for k in CUTOFFS for m in ("Recall", "NDCG")]
    for c in ["model", *cols, "fit_s", "cpu_s", "epochs", "load", "published"]:
        table.add_column(c, justify="left" if c == "model" else "right")
    for r in rows:
        pub = ", ".join(f"{k} {v}" for k, v in (r["published"] or {}).items()) or "-"
        table.add_row(r["model"], *[f"{r[c]:.4f}" for c in cols], f"{r['fit_s']:.0f}",
                      f"{r['cpu_s']:.0f}", f"{r['epochs_run']} (best {r['best_epoch']})",
                      f"{r['load_before']:.1f}-{r['load_after']:.1f}", pub)
    console.print(table)

    out = args.out or REPO / "benchmarks" / "results" / f"graph-{args.dataset}-{args.protocol}.json"
    earlier = json.loads(out.read_text())["results"] if out.is_file() else []
    ran = {r["model"] for r in rows}
    merged = sorted([r for r in earlier if r["model"] not in ran] + rows,
                    key=lambda r: r["model"])
    payload = {"dataset": args.dataset, "protocol": data["desc"], "cutoffs": list(CUTOFFS),
               "recforge_version": __version__, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": merged}
    atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
