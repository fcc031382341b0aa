"""How time and memory grow with data: loading and one epoch of training at 1M-20M events.

    .venv/bin/python benchmarks/bench_scaling.py [--sizes 1M,5M,20M]
        [--models mf,bpr,als,lightgcn] [--nproc 1,2] [--only RUNS] [--repeat N] [--merge] [--cache DIR] [--out FILE]

For each size, a synthetic log (``write_synthetic_parquet``: 27K items, users in
proportion, ML-20M at 20M) is generated once into ``--cache`` (default
``$TMPDIR/recforge-scale``). Every measurement runs in a fresh process, so each peak memory
(``ru_maxrss``) is that of one job alone:

* ``load``: ``read_parquet`` of the whole file (streaming, into compact arrays);
* ``MODEL`` with 1 process, and with ``N`` processes under ``torchrun`` (DDP on gloo, the
  same global batch): one epoch with the settings in :data:`SCALE_PARAMS`. The job gets
  ``--cores`` cores (default: all this process may use): one process runs that many
  threads, each of ``N`` processes ``cores / N`` (one each on a 2-core machine), and the
  ``1t`` run is one process with one rank's share, the resources of one rank.
  ``--cores`` below the machine's count also pins the job to that many cores, so a
  machine with many cores can measure how the efficiency grows with them.
  LightGCN's epoch at the larger sizes is timed on its first :data:`MAX_STEPS` batches and
  projected to the whole epoch (up-front sampling + seconds per batch x batches); such rows
  say ``projected``.

Then it fits ``seconds = a * events ** b`` per row kind over the sizes (the exponent ``b``)
and extrapolates time and memory to 1B events. Prints a table, writes JSON (default
``benchmarks/results/scaling.json``). docs/scaling.md discusses the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: Settings for data at scale: larger batches than the ML-1M defaults (a step's fixed cost
#: is the optimizer's pass over the embedding tables and, under DDP, the all-reduce of their
#: dense gradients), one negative per positive for bpr.
SCALE_PARAMS: dict[str, dict[str, Any]] = {
    "mf": {"batch_size": 65536, "embedding_dim": 64},
    "bpr": {"batch_size": 65536, "n_negatives": 1, "embedding_dim": 64},
    "lightgcn": {"batch_size": 16384, "embedding_dim": 64, "n_layers": 3},
    "als": {"embedding_dim": 64},
}
#: LightGCN propagates the whole graph every step; its epochs are timed on this many steps.
MAX_STEPS = {"lightgcn": 30}
GENERATED_ITEMS = 27_000
ML20M_USERS = 138_000


def parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000, "B": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KMB")) * mult)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------
# workers (one fresh process per measurement)
def worker_load(path: str) -> dict[str, Any]:
    from recforge.data.readers import read_parquet

    start = time.perf_counter()
    data = read_parquet(path)
    seconds = time.perf_counter() - start
    return {"events": len(data), "users": data.n_users, "items": data.n_items,
            "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}


def worker_train(path: str, model_name: str) -> dict[str, Any] | None:
    import torch

    from recforge.data.readers import read_parquet
    from recforge.models.registry import create_model, get_model_class
    from recforge.training import distributed

    ctx = distributed.init_from_environment(device="cpu")
    if os.environ.get("RECFORGE_BENCH_THREADS"):  # after the launcher's share of the cores
        torch.set_num_threads(int(os.environ["RECFORGE_BENCH_THREADS"]))
    rank, world = ctx.shard if ctx is not None else (0, 1)
    # Under DDP each rank keeps only its users' events, as `recforge train --nproc` does
    # (not LightGCN, which propagates over the whole graph).
    sharded = world > 1 and get_model_class(model_name).capabilities.sharded_data
    data = read_parquet(path, shard=(rank, world) if sharded else None)
    events = len(data)
    if sharded:
        n = torch.tensor([events], dtype=torch.int64)
        torch.distributed.all_reduce(n)
        events = int(n.item())
    if model_name != "mf":
        data = data.with_values(None)
    params = dict(SCALE_PARAMS.get(model_name, {}), epochs=1,
                  **json.loads(os.environ.get("RECFORGE_BENCH_PARAMS", "{}")).get(model_name, {}))
    model = create_model(model_name, **params)
    cap = MAX_STEPS.get(model_name)
    start = time.perf_counter()
    if model_name == "als":
        model.fit(data)
        history: dict[str, Any] = {"seconds": time.perf_counter() - start, "steps": 1,
                                   "sampling_seconds": 0.0}
        full_steps = 1
    else:
        batch = int(params["batch_size"])
        shard = len(data) if world == 1 or sharded else len(data) // world
        if sharded:  # every rank takes the smallest shard's number of events
            n = torch.tensor([shard], dtype=torch.int64)
            torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
            shard = int(n.item())
        full_steps = -(-shard // max(1, batch // world))
        model.fit(data, distributed=(rank, world), sharded=sharded, progress=False,
                  max_steps_per_epoch=cap if cap and cap < full_steps else None)
        history = model.history_[0]
    fit_seconds = time.perf_counter() - start
    epoch = float(history["seconds"])
    steps = int(history["steps"])
    sampling = float(history.get("sampling_seconds", 0.0))
    projected = steps < full_steps
    if projected:
        epoch = sampling + (epoch - sampling) / steps * full_steps
    rss = peak_rss_mb()
    if ctx is not None:
        t = torch.tensor([rss], dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        rss = float(t.item())
        distributed.shutdown(wait_for_others=True)
        if rank != 0:
            return None
    return {"events": events, "epoch_seconds": round(epoch, 2), "projected": projected,
            "steps_timed": steps, "steps_per_epoch": full_steps,
            "fit_seconds": round(fit_seconds, 2), "sharded_data": sharded,
            "samples_per_s": round(events / epoch) if epoch > 0 else None,
            "samples_per_s_per_process": round(events / epoch / world) if epoch > 0 else None,
            "peak_rss_mb": round(rss, 1), "threads_per_process": torch.get_num_threads(),
            "params": params}


# ---------------------------------------------------------------------------------------
# driver
def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
        range(os.cpu_count() or 1))


def run_worker(args: list[str], nproc: int = 1, threads: int | None = None,
               cores: int | None = None) -> dict[str, Any]:
    """Run one measurement in fresh processes: ``threads`` per process (default: the
    process's share of ``cores``), pinned to the first ``cores`` cores when fewer than all."""
    script = str(Path(__file__).resolve())
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", script, *args]
    else:
        cmd = [sys.executable, script, *args]
    env = dict(os.environ, RECFORGE_SET_THREADS="1")
    mine = available_cores()
    cores = len(mine) if cores is None else cores
    env["RECFORGE_BENCH_THREADS"] = str(threads or max(1, cores // nproc))
    pin = None
    if cores < len(mine) and hasattr(os, "sched_setaffinity"):
        def pin() -> None:  # in the child before exec; inherited by torchrun's ranks
            os.sched_setaffinity(0, mine[:cores])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=pin)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What a row measured: size, task, processes, one-rank-share run, cores of the job."""
    return r["size"], r["task"], r["nproc"], r.get("one_thread", False), r.get("cores")


def with_cores(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """An earlier JSON's rows, each training row with the job's cores (rows written before
    ``--cores`` existed ran on all of the machine's, which the JSON's ``machine`` names)."""
    words = payload.get("machine", "").split(", ")[-1].split()
    machine_cores = int(words[0]) if words and words[0].isdigit() else None
    rows = payload["rows"]
    for r in rows:
        if r["task"] not in ("generate", "load"):
            r.setdefault("cores", machine_cores)
    return rows


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median epoch time (the lower middle of an even count), with every
    run's epoch time in ``epoch_seconds_runs`` when there was more than one."""
    ordered = sorted(results, key=lambda r: r["epoch_seconds"])
    res = dict(ordered[(len(ordered) - 1) // 2])
    if len(ordered) > 1:
        res["epoch_seconds_runs"] = [r["epoch_seconds"] for r in ordered]
        res["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ordered)
    return res


def fit_power(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares ``y = a * x**b`` on log-log axes; ``(a, b)`` or None."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return math.exp(my - b * mx), b


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares ``y = a + b * x``; ``(a, b)`` or None. Memory is a fixed part (the
    interpreter, torch) plus a part per event, so a line extrapolates it, not a power law."""
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    return my - b * mx, b


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        kind, path = sys.argv[2], sys.argv[3]
        result = worker_load(path) if kind == "load" else worker_train(path, sys.argv[4])
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1M,5M,20M")
    parser.add_argument("--models", default="mf,bpr,als,lightgcn")
    parser.add_argument("--nproc", default="1,2")
    parser.add_argument("--only", default=None,
                        help="Measure only these runs, e.g. '2' or 'load,1,1t' (load: reading "
                             "the file; 1: one process; 1t: one process with one thread; N: "
                             "N processes); default: all.")
    parser.add_argument("--repeat", type=int, default=1,
                        help="Run each training measurement this many times, in turns, and "
                             "keep the median (the machine's run-to-run noise is about "
                             "+-15%%).")
    parser.add_argument("--merge", action="store_true",
                        help="Add the new rows to --out's earlier rows (replacing rows of "
                             "the same size, task and run) instead of starting afresh.")
    parser.add_argument("--cores", type=int, default=None,
                        help="Cores the job may use (default: all this process may use); "
                             "fewer than the machine's pins the runs to that many.")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "recforge-scale")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON to write (default: benchmarks/results/scaling.json after "
                             "measuring; nothing with --from-json unless given).")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="Recompute efficiencies, fits and tables from earlier runs' "
                             "JSON (several: their rows together) instead of measuring.")
    args = parser.parse_args()
    if args.out is None and args.from_json is None:
        args.out = REPO / "benchmarks/results/scaling.json"

    from rich.console import Console
    from rich.table import Table

    from recforge import __version__
    from recforge._fs import atomic_write_text
    from recforge.data.synthetic import write_synthetic_parquet

    console = Console()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    nprocs = [int(n) for n in args.nproc.split(",")]
    cores = args.cores or len(available_cores())
    if not 1 <= cores <= len(available_cores()):
        parser.error(f"--cores {cores}: this process may use {len(available_cores())} cores")
    share = max(1, cores // max(nprocs))  # the threads of one rank
    rows: list[dict[str, Any]] = []
    earlier_runs = [json.loads(f.read_text()) for f in args.from_json or []]
    earlier = earlier_runs[0] if earlier_runs else None
    if earlier is not None:
        sizes = []
    else:
        args.cache.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        users = max(1000, round(ML20M_USERS * size / 20_000_000))
        path = args.cache / f"synthetic-{size}.parquet"
        if not path.exists():
            info = write_synthetic_parquet(path, n_users=users, n_items=GENERATED_ITEMS,
                                           n_interactions=size, seed=0)
            rows.append({"size": size, "task": "generate", "nproc": 1,
                         "seconds": info["seconds"], "events": info["events"],
                         "file_mb": round(info["bytes"] / 1e6, 1)})
            console.print(f"generated {info['events']:,} events in {info['seconds']}s")
        if args.only is None or "load" in args.only.split(","):
            res = run_worker(["--worker", "load", str(path)])
            rows.append({"size": size, "task": "load", "nproc": 1, **res})
            console.print(f"{size:,}: load {res['seconds']}s, peak {res['peak_rss_mb']:.0f} MB")
        for model in models:
            # 1 process with all the job's cores; 1 process with one rank's share of them
            # (one thread on 2 cores); then N processes.
            configs = [(1, None)] + ([(1, share)] if max(nprocs) > 1 and model != "als" else [])
            configs += [(n, None) for n in nprocs if n > 1 and model != "als"]
            if args.only is not None:
                wanted = {c.strip() for c in args.only.split(",")}
                configs = [(n, t) for n, t in configs if f"{n}{'t' if t else ''}" in wanted]
            # With --repeat the configurations take turns (a slow spell of the machine
            # then falls on all of them alike) and each row keeps its median run.
            runs: dict[tuple[int, int | None], list[dict[str, Any]]] = {c: [] for c in configs}
            for _ in range(args.repeat):
                for nproc, threads in configs:
                    res = run_worker(["--worker", "train", str(path), model], nproc=nproc,
                                     threads=threads, cores=cores)
                    runs[(nproc, threads)].append(res)
                    console.print(f"{size:,}: {model} x{nproc}"
                                  f"{f' ({threads} thread(s))' if threads else ''} "
                                  f"epoch {res['epoch_seconds']}s"
                                  f"{' (projected)' if res['projected'] else ''}, "
                                  f"{res['samples_per_s_per_process']:,} samples/s/process, "
                                  f"peak {res['peak_rss_mb']:.0f} MB")
            for (nproc, threads), results in runs.items():
                res = median_run(results)
                # one_thread: one process with one rank's share of the cores
                rows.append({"size": size, "task": model, "nproc": nproc,
                             "one_thread": threads is not None, "cores": cores, **res})

    if args.merge and earlier is None and args.out.exists():
        today = time.strftime("%Y-%m-%d")
        for r in rows:
            r.setdefault("measured", today)
        fresh = {row_key(r): r for r in rows}
        before = json.loads(args.out.read_text())
        merged = [fresh.pop(row_key(r), r) for r in with_cores(before)]
        rows = merged + list(fresh.values())  # replaced in place; new kinds at the end
    elif earlier is not None:
        rows = [r for run in earlier_runs for r in with_cores(run)]

    # Scaling efficiency of DDP and the growth exponents (among the runs of one job size).
    by = {row_key(r): r for r in rows}
    for r in rows:
        if r["nproc"] == 1:
            continue
        for key, one_thread in (("efficiency", False), ("efficiency_vs_one_thread", True)):
            single = by.get((r["size"], r["task"], 1, one_thread, r.get("cores")))
            if single and single.get("samples_per_s_per_process"):
                r[key] = round(r["samples_per_s_per_process"]
                               / single["samples_per_s_per_process"], 3)
    fits: list[dict[str, Any]] = []
    for task, nproc, n_cores in sorted({(r["task"], r["nproc"], r.get("cores") or 0)
                                        for r in rows if r["task"] != "generate"}):
        group = [r for r in rows if r["task"] == task and r["nproc"] == nproc
                 and (r.get("cores") or 0) == n_cores and not r.get("one_thread")]
        key = "seconds" if task == "load" else "epoch_seconds"
        t_fit = fit_power([(r["events"], r[key]) for r in group])
        m_fit = fit_line([(r["events"], r["peak_rss_mb"]) for r in group])
        if t_fit is None:
            continue
        entry = {"task": task, "nproc": nproc, **({"cores": n_cores} if n_cores else {}),
                 "time_exponent": round(t_fit[1], 3),
                 "seconds_at_1B": round(t_fit[0] * 1e9 ** t_fit[1]),
                 "bytes_per_event": round(m_fit[1] * 2**20, 1) if m_fit else None,
                 "fixed_mb": round(m_fit[0]) if m_fit else None,
                 "peak_gb_at_1B": round((m_fit[0] + m_fit[1] * 1e9) / 1024, 1) if m_fit
                 else None}
        fits.append(entry)

    job_cores = sorted({r["cores"] for r in rows if r.get("cores")})
    table = Table(title=f"Scaling on synthetic data (one epoch; "
                        f"{'/'.join(map(str, job_cores)) or cores} CPU cores)")
    for c in ("events", "task", "procs", "seconds", "samples/s/proc", "efficiency",
              "eff. vs 1 rank's threads", "peak MB"):
        table.add_column(c, justify="right")
    for r in rows:
        if r["task"] == "generate":
            continue
        secs = r.get("epoch_seconds", r.get("seconds"))
        table.add_row(f"{r['events']:,}", r["task"],
                      str(r["nproc"]) + (f" ({r.get('threads_per_process', 1)} thr.)"
                                         if r.get("one_thread") else ""),
                      f"{secs:.1f}" + (" (proj.)" if r.get("projected") else ""),
                      f"{r['samples_per_s_per_process']:,}" if "samples_per_s_per_process" in r
                      else "", f"{r['efficiency']:.2f}" if "efficiency" in r else "",
                      f"{r['efficiency_vs_one_thread']:.2f}" if "efficiency_vs_one_thread" in r
                      else "", f"{r['peak_rss_mb']:,.0f}")
    console.print(table)
    ftable = Table(title="Growth: seconds ~ events^b; memory = fixed + bytes/event; at 1B")
    for c in ("task", "procs", "time exponent b", "hours at 1B", "bytes/event", "fixed MB",
              "peak GB at 1B"):
        ftable.add_column(c, justify="right")
    for f in fits:
        ftable.add_row(f["task"], str(f["nproc"]) + (f" ({f['cores']} cores)"
                                                     if len(job_cores) > 1 else ""),
                       f"{f['time_exponent']:.2f}",
                       f"{f['seconds_at_1B'] / 3600:,.1f}", str(f["bytes_per_event"]),
                       str(f["fixed_mb"]), str(f["peak_gb_at_1B"]))
    console.print(ftable)
    payload = {"recforge": __version__, "python": platform.python_version(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "rows": rows, "fits": fits,
               "scale_params": SCALE_PARAMS, "max_steps": MAX_STEPS}
    if earlier is not None:  # keep when and where the figures were measured
        payload.update({k: earlier[k] for k in ("recforge", "python", "machine", "date",
                                                "scale_params", "max_steps") if k in earlier})
    if args.out is not None:  # --from-json alone only reprints
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
