"""Next-item neural models (``sasrec`` and its losses) on ml-1m-seq and ml-100k.

Each user's last event (in order) is the test item and the one before it the validation
item; the models train on the rest, validate per epoch on the validation item (next-item
NDCG@10 of the training sequence, early stopping) and are tested from the whole earlier
sequence (``split.history``: training plus the validation item) with
:func:`recforge.evaluation.next_item.evaluate_next_item`: full ranking over all items,
expected-rank ties; each row has both protocols: ``metrics`` with seen items kept (with
``--exclude-seen``: excluded) and ``metrics_other_protocol`` the other way. ml-1m-seq has
no repeats (a film is rated once), so excluding seen items is what the published figures
do (the SASRec+ reference code sets ``filter_seen: True``). ml-100k: every rating is an
event, in time order.

``--nproc N`` trains each run in ``N`` processes under ``torchrun`` (DDP on gloo, one
thread each, the same global batch of ``batch_size`` sequences), as ``recforge train
--nproc`` does: on this project's 2-core machine two one-thread processes train a SASRec
epoch in about half the time one two-thread process takes (torch's intra-op threads gain
little on these small matrices).

Per run: NDCG@10, HR@10, MRR@10, fit seconds, seconds per epoch (mean over the epochs,
validation excluded), trained positions per second, peak resident memory of the process
(``ru_maxrss``: run one configuration per process to read it per model). Prints a table
and writes ``benchmarks/results/sequential.json`` (runs appended by key).

    .venv/bin/python benchmarks/bench_sequential.py --data ml-1m-seq \\
        --run sasrec:loss=gbce --run sasrec:loss=bce,n_negatives=1 --epochs 3
    # per-epoch cost only (a few steps of each loss, no validation):
    .venv/bin/python benchmarks/bench_sequential.py --epoch-cost --steps 8
    # the issue's target run (0.1740 / 0.3075 on 2026-12-07): 2 processes, at most 30
    # minutes, seen excluded; dropout, schedule and validation interval are not defaults
    .venv/bin/python benchmarks/bench_sequential.py --data ml-1m-seq --nproc 2 \
        --exclude-seen --budget-min 29.5 --epochs 95 \
        --run sasrec:dropout=0.1,lr_schedule=cosine,eval_every=3
    # one SASRec epoch on ml-100k, RecBole 1.2.1 against recforge at RecBole's defaults
    # (RecBole in a venv of its own, never a dependency of recforge):
    RECFORGE_RECBOLE_PYTHON=../bench-recbole/bin/python \
        .venv/bin/python benchmarks/bench_sequential.py --recbole
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from recforge import Interactions
from recforge.data.readers import read_sequences
from recforge.data.split import leave_last_out
from recforge.data.synthetic import make_sequential
from recforge.evaluation.next_item import evaluate_next_item
from recforge.models import create_model
from recforge.models.registry import get_model_class
from recforge.training import distributed
from recforge.training.distributed import all_reduce_sum

DATA = Path(os.environ.get("RECFORGE_SHARED_DATA", Path(__file__).resolve().parents[2]
                           / "shared" / "data"))
RESULTS = Path(__file__).parent / "results" / "sequential.json"


#: Generated ordered logs of shapes MovieLens lacks (``recforge.data.synthetic.
#: make_sequential``): a shop's short sessions over a large catalogue, and long histories
#: over a small one with weaker order (more of each history is taste than sequel).
GENERATED = {
    "gen-sessions": {"n_users": 10_000, "n_items": 10_000, "mean_length": 12.0,
                     "n_topics": 100, "follow": 0.5, "stay": 0.3},
    "gen-long": {"n_users": 3_000, "n_items": 6_000, "mean_length": 120.0,
                 "n_topics": 60, "follow": 0.3, "stay": 0.4},
}
DATASETS = ["ml-1m-seq", "ml-100k", *GENERATED]


def load(name: str) -> Interactions:
    if name in GENERATED:
        return make_sequential(**GENERATED[name], seed=0)
    if name == "ml-1m-seq":
        return read_sequences(DATA / "ml-1m-seq" / "sequences.txt")
    if name == "ml-100k":
        frame = pd.read_csv(DATA / "ml-100k" / "u.data", sep="\t",
                            names=["user", "item", "rating", "timestamp"])
        return Interactions.from_frame(frame[["user", "item", "timestamp"]])
    raise SystemExit(f"unknown data {name!r}: one of {', '.join(DATASETS)}")


def parse_run(spec: str) -> tuple[str, dict[str, Any]]:
    """``model:key=value,key=value`` (values read as YAML)."""
    name, _, rest = spec.partition(":")
    params = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        params[key] = yaml.safe_load(value)
    return name, params


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _max_over_ranks(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def write_results(results: dict[str, Any]) -> None:
    """Merged into the file as it is now (another run may have written it meanwhile),
    through a temporary file renamed over it: never half-written."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    latest = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**latest, **results}, indent=1))
    os.replace(tmp, RESULTS)


def budget_callback(seconds: float | None, cpu_seconds: float | None, wall: list[float],
                    cpu: list[float]) -> Any:
    """An epoch callback that notes each epoch's wall and CPU seconds since the fit began
    (validation included) and, past ``seconds`` of wall time or ``cpu_seconds`` of this
    process's CPU time, ends training after the epoch just finished, as early stopping does
    (the best epoch's weights kept). CPU time measures the work on a shared machine, where
    wall time mostly measures the neighbours. The trainer offers no time budget, so the
    callback sets its caller's ``state.stopped_early`` (``Trainer.fit``'s local): a
    benchmark-only device."""
    t0, c0 = time.perf_counter(), time.process_time()

    def callback(record: dict[str, Any]) -> None:
        wall.append(round(time.perf_counter() - t0, 1))
        cpu.append(round(time.process_time() - c0, 1))
        stop = ((seconds is not None and wall[-1] >= seconds)
                or (cpu_seconds is not None and cpu[-1] >= cpu_seconds))
        if distributed.active():  # every rank stops after the same epoch
            stop = all_reduce_sum([float(stop)])[0] > 0
        if stop:
            sys._getframe(1).f_locals["state"].stopped_early = True

    return callback


def run_one(data_name: str, split: Any, name: str, params: dict[str, Any], epochs: int,
            exclude_seen: bool, max_steps: int | None,
            budget_s: float | None = None, cpu_budget_s: float | None = None
            ) -> dict[str, Any] | None:
    """One fit and its test figures, under both protocols: ``metrics`` with seen items
    excluded when ``exclude_seen`` (else kept), ``metrics_other_protocol`` the other way.
    Under DDP (``torchrun``, see ``--nproc``) every rank trains and rank 0 alone tests
    and returns the row (the others ``None``)."""
    takes_epochs = "epochs" in get_model_class(name)._param_names()
    model = create_model(name, **({"epochs": epochs} if takes_epochs else {}), **params)
    wall: list[float] = []
    cpu: list[float] = []
    rank, world = ((torch.distributed.get_rank(), torch.distributed.get_world_size())
                   if distributed.active() else (0, 1))
    t0 = time.perf_counter()
    if takes_epochs:
        model.fit(split.train, split.valid, max_steps_per_epoch=max_steps,
                  epoch_callback=budget_callback(budget_s, cpu_budget_s, wall, cpu),
                  **({"distributed": (rank, world)} if world > 1 else {}))
    else:
        model.fit(split.train)
    fit_s = time.perf_counter() - t0
    peak = peak_mb()
    if world > 1:
        peak = _max_over_ranks(peak)
        if rank != 0:
            return None
    t1 = time.perf_counter()
    res = evaluate_next_item(model, split.history, split.test, k=10,
                             exclude_seen=exclude_seen, by_length=None)
    eval_s = time.perf_counter() - t1
    other = evaluate_next_item(model, split.history, split.test, k=10,
                               exclude_seen=not exclude_seen, by_length=None)
    hist = getattr(model, "history_", [])
    per_epoch = float(np.mean([r["seconds"] for r in hist])) if hist else float("nan")
    positions = int((np.minimum(split.train.sequences().lengths(),
                                int(getattr(model, "max_len", 10**9)) + 1) - 1)
                    .clip(min=0).sum())
    summary = {k.lower(): float(v) for k, v in res.summary.items()}
    return {"data": data_name, "model": name, "params": params, "epochs_run": len(hist),
            "best_epoch": getattr(model, "best_epoch_", None),
            "valid_ndcg@10": [r.get("ndcg@10") for r in hist],
            # wall seconds from the start of the fit to the end of each epoch (validation
            # included): the learning curve's time axis
            "epoch_end_seconds": wall, "epoch_end_cpu_seconds": cpu,
            "budget_seconds": budget_s, "cpu_budget_seconds": cpu_budget_s,
            "metrics": summary,
            "metrics_other_protocol": {k.lower(): float(v) for k, v in other.summary.items()},
            "fit_seconds": round(fit_s, 2),
            "seconds_per_epoch": round(per_epoch, 2),
            "positions_per_second": round(positions / per_epoch) if hist else None,
            "eval_seconds": round(eval_s, 2), "peak_rss_mb": round(peak, 1),
            "exclude_seen": exclude_seen, "threads": torch.get_num_threads(),
            "processes": world,
            "load_average": os.getloadavg()[0],
            "load_average_15min": os.getloadavg()[2]}


def epoch_cost(split: Any, steps: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Seconds per epoch of each loss (and bf16), from ``steps`` batches scaled to the
    epoch's steps (batches sorted by length are cut to their longest row, so the sample is
    drawn across the epoch: ``max_steps`` takes the first ``steps`` of a shuffled epoch)."""
    rows = []
    for loss, extra in (("bce", {}), ("sampled_softmax", {}), ("gbce", {}), ("ce", {}),
                        ("gbce", {"precision": "bfloat16"}),
                        ("ce", {"precision": "bfloat16"})):
        p = {"precision": "float32", **params, "loss": loss, **extra, "epochs": 1,
             "valid_metric": None}
        model = create_model("sasrec", **p)
        cpu0 = time.process_time()
        model.fit(split.train, max_steps_per_epoch=steps)
        cpu = time.process_time() - cpu0
        rec = model.history_[0]
        full_steps = -(-int((split.train.sequences().lengths() >= 2).sum())
                       // int(model.batch_size))
        rows.append({"loss": loss, "precision": model.training_precision(),
                     "steps": rec["steps"],
                     "seconds": rec["seconds"],
                     "seconds_per_epoch": round(rec["seconds"] / rec["steps"] * full_steps, 1),
                     # CPU seconds of the whole fit (setup included) scaled the same way: on
                     # a shared machine wall time measures the neighbours, CPU time less so
                     "cpu_seconds_per_epoch": round(cpu / rec["steps"] * full_steps, 1),
                     "load_average": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    return rows


#: recforge's sasrec at RecBole 1.2.1's SASRec defaults (2 layers, 2 heads, 64 wide,
#: dropout 0.5 on the hidden states and the attention, 50 items, full softmax, Adam 0.001);
#: recforge's feed-forward is d -> d where RecBole's is d -> 256 -> d (no parameter for it).
RECBOLE_SASREC = {"n_blocks": 2, "n_heads": 2, "embedding_dim": 64, "dropout": 0.5,
                  "attention_dropout": 0.5, "max_len": 50, "loss": "ce",
                  "learning_rate": 0.001, "epochs": 1, "valid_metric": None}


def cpu_ratios(theirs: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    """RecBole / recforge in CPU seconds (a shared machine's load moves wall time): per
    epoch, per trained target, and per encoded position (RecBole encodes all
    ``MAX_ITEM_LIST_LENGTH`` positions of every example to train its last one; recforge's
    trained positions stand for its encoded ones, a lower bound)."""
    length = int(theirs["settings"]["MAX_ITEM_LIST_LENGTH"])
    return {
        "cpu_epoch_ratio": round(theirs["cpu_seconds"] / ours["cpu_seconds_fit"], 1),
        "cpu_per_target_ratio": round((theirs["cpu_seconds"] / theirs["examples"])
                                      / (ours["cpu_seconds_fit"] / ours["positions"]), 1),
        "cpu_per_encoded_position_ratio": round(
            (theirs["cpu_seconds"] / (theirs["examples"] * length))
            / (ours["cpu_seconds_fit"] / ours["positions"]), 2)}


def recbole_python() -> tuple[str | None, str]:
    """The interpreter of the venv that has RecBole (``RECFORGE_RECBOLE_PYTHON``), or
    ``None`` and why (printed: the comparison is skipped)."""
    python = os.environ.get("RECFORGE_RECBOLE_PYTHON")
    if python and Path(python).exists():
        return python, ""
    reason = "RECFORGE_RECBOLE_PYTHON is not set" if not python else f"{python} not found"
    print(f"RecBole comparison skipped: {reason} (a venv with recbole==1.2.1)")
    return None, reason


def recbole_speed(threads: int) -> dict[str, Any]:
    """One SASRec epoch on ml-100k in RecBole (run by ``RECFORGE_RECBOLE_PYTHON``, the
    interpreter of a venv that has it) and in recforge at the same settings; the ratio of
    their seconds and of their seconds per trained position (RecBole trains every prefix
    of a sequence as an example, one target each; recforge each user's last ``max_len``
    targets at once). Skipped, with the reason, when RecBole is not there."""
    python, reason = recbole_python()
    if python is None:
        return {"skipped": reason}
    script = Path(__file__).with_name("recbole_sasrec_epoch.py")
    with tempfile.TemporaryDirectory() as work:  # RecBole writes log/ and log_tensorboard/
        done = subprocess.run([python, str(script), str(DATA / "ml-100k" / "u.data"),
                               str(threads)], capture_output=True, text=True, check=False,
                              cwd=work)
    if done.returncode != 0:
        print(done.stderr[-3000:])
        raise SystemExit("the RecBole run failed (its error above)")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    split = leave_last_out(load("ml-100k"), valid=True)
    model = create_model("sasrec", **RECBOLE_SASREC, batch_size=128)
    cpu0 = time.process_time()
    model.fit(split.train)
    cpu = time.process_time() - cpu0
    ours = {"wall_seconds": model.history_[0]["seconds"], "cpu_seconds_fit": round(cpu, 2),
            "positions": int((np.minimum(split.train.sequences().lengths(), 51) - 1)
                             .clip(min=0).sum()), "params": RECBOLE_SASREC}
    row = {"recbole": theirs, "recforge": ours, "threads": threads,
           "epoch_ratio": round(theirs["wall_seconds"] / ours["wall_seconds"], 2),
           "per_position_ratio": round((theirs["wall_seconds"] / theirs["examples"])
                                       / (ours["wall_seconds"] / ours["positions"]), 2),
           **cpu_ratios(theirs, ours), "load_average": os.getloadavg()[0]}
    print(f"SASRec epoch on ml-100k: RecBole {theirs['wall_seconds']} s "
          f"({theirs['examples']:,} examples), recforge {ours['wall_seconds']} s "
          f"({ours['positions']:,} positions): RecBole/recforge {row['epoch_ratio']}x per "
          f"epoch, {row['per_position_ratio']}x per trained target (wall); CPU seconds "
          f"{theirs['cpu_seconds']} / {ours['cpu_seconds_fit']}: {row['cpu_epoch_ratio']}x "
          f"per epoch, {row['cpu_per_target_ratio']}x per target, "
          f"{row['cpu_per_encoded_position_ratio']}x per encoded position "
          f"(load average {row['load_average']:.1f})")
    return row


def recbole_quality(data_name: str, split: Any, name: str, cpu_budget_s: float,
                    epochs: int, threads: int) -> dict[str, Any]:
    """RecBole 1.2.1's ``name`` (SASRec or GRU4Rec) at its defaults, trained and tested on
    the same split as recforge (``recbole_next_item.py``, run by ``RECFORGE_RECBOLE_PYTHON``):
    the ordered sequences recforge holds (training, validation item, test item) are written
    out for it, so both see the same order and hold out the same items. Users without a
    test item (the split drops a last event whose item was never seen before it) are left
    out: RecBole would otherwise test them on their validation item."""
    python, reason = recbole_python()
    if python is None:
        return {"skipped": reason}
    sequences = split.history.sequences()
    test_item = dict(zip(split.test.users.id(split.test.user).tolist(),
                         split.test.items.id(split.test.item).tolist(), strict=True))
    script = Path(__file__).with_name("recbole_next_item.py")
    with tempfile.TemporaryDirectory() as work:  # RecBole writes log/ and log_tensorboard/
        path = Path(work) / "sequences.txt"
        users, items = split.history.users, split.history.items
        with open(path, "w") as out:
            for u in range(sequences.n_users):
                user = users.id(u).item()
                if user not in test_item:  # its last event was dropped by the split
                    continue
                row = [*items.id(sequences.user(u)).tolist(), test_item[user]]
                out.write(" ".join(map(str, [user, *row])) + "\n")
        done = subprocess.run([python, str(script), str(path), name, str(cpu_budget_s),
                               str(epochs), str(threads)], capture_output=True, text=True,
                              check=False, cwd=work)
    if done.returncode != 0:
        print(done.stderr[-3000:])
        raise SystemExit("the RecBole run failed (its error above)")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row |= {"data": data_name, "load_average": os.getloadavg()[0]}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="ml-1m-seq", choices=DATASETS)
    ap.add_argument("--run", action="append", default=[],
                    help="model:key=value,... (repeatable; default: sasrec's defaults)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--exclude-seen", action="store_true")
    ap.add_argument("--epoch-cost", action="store_true",
                    help="only the seconds per epoch of each loss at the default length")
    ap.add_argument("--steps", type=int, default=8, help="batches per loss for --epoch-cost")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget-min", type=float, default=None,
                    help="stop each fit after the first epoch that ends past this many "
                         "wall minutes (best epoch kept)")
    ap.add_argument("--cpu-budget-s", type=float, default=None,
                    help="stop each fit after the first epoch that ends past this many "
                         "CPU seconds of the process (a measure the machine's load "
                         "changes less than wall time)")
    ap.add_argument("--recbole", action="store_true",
                    help="only the RecBole speed comparison (RECFORGE_RECBOLE_PYTHON)")
    ap.add_argument("--recbole-quality", choices=["SASRec", "GRU4Rec"], default=None,
                    help="train and test RecBole's MODEL at its defaults on --data's split "
                         "(RECFORGE_RECBOLE_PYTHON; stops past --cpu-budget-s CPU seconds, "
                         "by its early stopping, or after --epochs)")
    ap.add_argument("--tag", default="", help="appended to the result keys")
    ap.add_argument("--nproc", type=int, default=1,
                    help="train each run in this many processes (DDP on gloo, one thread "
                         "each unless --threads; the same global batch), as "
                         "`recforge train --nproc` does; rank 0 tests and writes")
    # the ranks read the arguments from the environment: torchrun's own parser would take
    # --run and --nproc after the script's name for abbreviations of its options
    argv = json.loads(os.environ.get("RECFORGE_BENCH_ARGV", "null")) or sys.argv[1:]
    args = ap.parse_args(argv)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        raise SystemExit(subprocess.call(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc-per-node={args.nproc}", __file__],
            env={**os.environ, "RECFORGE_BENCH_ARGV": json.dumps(argv)}))
    ctx = distributed.init_from_environment(device="cpu")
    if ctx is not None:
        args.nproc = ctx.shard[1]
    is_main = ctx is None or ctx.shard[0] == 0
    if ctx is not None and not args.threads:
        args.threads = 1
    # the trainer's per-epoch lines (loss, validation NDCG@10, seconds) as it goes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("recforge").setLevel(logging.INFO if is_main else logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.recbole:
        row = recbole_speed(args.threads or 1)
        if "skipped" not in row:
            write_results({"recbole_speed/ml-100k": row})
        return
    data = load(args.data)
    split = leave_last_out(data, valid=True)
    if args.recbole_quality:
        budget = args.cpu_budget_s or 1e12
        row = recbole_quality(args.data, split, args.recbole_quality, budget, args.epochs,
                              args.threads or 1)
        if "skipped" not in row:
            write_results({f"recbole/{args.data}/{args.recbole_quality}/epochs={args.epochs}"
                           f"/cpu_budget={budget:g}s{args.tag}": row})
        return
    if is_main:
        print(f"{args.data}: {data.n_users:,} users, {data.n_items:,} items, {len(data):,} events; "
              f"train {len(split.train):,}, load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, Any] = {}
    if args.epoch_cost:
        rows = epoch_cost(split, args.steps, dict(parse_run(args.run[0])[1]) if args.run
                          else {})
        print(pd.DataFrame(rows).to_string(index=False))
        results[f"epoch_cost/{args.data}"] = rows
    else:
        rows = []
        for spec in args.run or ["sasrec"]:
            name, params = parse_run(spec)
            budget = args.budget_min * 60 if args.budget_min else None
            row = run_one(args.data, split, name, params, args.epochs, args.exclude_seen,
                          args.max_steps, budget, args.cpu_budget_s)
            if row is None:  # a rank other than 0
                continue
            rows.append(row)
            print(json.dumps(row), flush=True)
            key = f"{args.data}/{spec}/epochs={args.epochs}"
            if args.budget_min:
                key += f"/budget={args.budget_min:g}min"
            if args.cpu_budget_s:
                key += f"/cpu_budget={args.cpu_budget_s:g}s"
            if args.nproc > 1:
                key += f"/nproc={args.nproc}"
            results[key + args.tag] = row
        if ctx is not None:
            distributed.shutdown(wait_for_others=True)
            if not is_main:
                return
        table = pd.DataFrame([{"run": f"{r['model']} {r['params']}", **r["metrics"],
                               "epochs": r["epochs_run"], "fit_s": r["fit_seconds"],
                               "s/epoch": r["seconds_per_epoch"],
                               "peak_MB": r["peak_rss_mb"]} for r in rows])
        print(table.to_string(index=False))
    write_results(results)


if __name__ == "__main__":
    main()
