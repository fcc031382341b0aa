"""Step time against the size of the user base, with dense and row-sparse updates.

Usage: python benchmarks/bench_sparse_updates.py [--users 138000,6900000] [--events 20M]
        [--steps 20] [--configs mf:adagrad,bpr:adagrad,bpr:adam] [--cache DIR] [--out FILE]

For each user base, synthetic data of ``--events`` events over that many users and 27K
items is generated once into ``--cache`` (6.9M users is the user base of a 1B-event log
at ML-20M's events per user). Each configuration (model:optimizer) trains ``--steps``
steps with ``bench_scaling``'s settings (batch 65,536, 64 factors) in a fresh process, with
dense updates of the user tables and, where they are exact (Adagrad), with row-sparse
updates (``fit(..., sparse_updates=...)``). Reports milliseconds per step (the epoch's
up-front sampling left out), the process's system time and peak memory; prints a table
and writes JSON (default ``benchmarks/results/sparse_updates.json``).
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scaling import GENERATED_ITEMS as ITEMS  # noqa: E402  (the same settings)
from bench_scaling import SCALE_PARAMS, parse_size  # noqa: E402

SETTINGS = {m: SCALE_PARAMS[m] for m in ("mf", "bpr")}



def worker(path: str, model_name: str, optimizer: str, mode: str, steps: int) -> dict[str, Any]:
    from recforge.data.readers import read_parquet
    from recforge.models.registry import create_model

    data = read_parquet(path)
    if model_name != "mf":
        data = data.with_values(None)
    model = create_model(model_name, **SETTINGS[model_name], epochs=1, optimizer=optimizer)
    before = resource.getrusage(resource.RUSAGE_SELF)
    model.fit(data, progress=False, max_steps_per_epoch=steps, sparse_updates=mode)
    after = resource.getrusage(resource.RUSAGE_SELF)
    h = model.history_[0]
    step_s = (h["seconds"] - h["sampling_seconds"]) / h["steps"]
    return {"users": data.n_users, "events": len(data), "model": model_name,
            "optimizer": optimizer, "updates": "row-sparse" if mode == "on" else "dense",
            "steps": h["steps"], "ms_per_step": round(1000 * step_s, 1),
            "samples_per_s": round(SETTINGS[model_name]["batch_size"] / step_s),
            "system_seconds": round(after.ru_stime - before.ru_stime, 1),
            "peak_rss_mb": round(after.ru_maxrss / 1024, 1)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        path, model_name, optimizer, mode, steps = sys.argv[2:7]
        print("RESULT " + json.dumps(worker(path, model_name, optimizer, mode, int(steps))),
              flush=True)
        return
    from rich.console import Console
    from rich.table import Table

    from recforge import __version__
    from recforge._fs import atomic_write_text
    from recforge.data.synthetic import write_synthetic_parquet

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", default="138000,6900000")
    ap.add_argument("--events", default="20M")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--configs", default="mf:adagrad,bpr:adagrad,bpr:adam")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "recforge-scale")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/sparse_updates.json")
    args = ap.parse_args()

    console = Console(width=160)
    events = parse_size(args.events)
    configs = [tuple(c.split(":")) for c in args.configs.split(",") if c.strip()]
    rows: list[dict[str, Any]] = []
    args.cache.mkdir(parents=True, exist_ok=True)
    for users in (parse_size(u) for u in args.users.split(",")):
        path = args.cache / f"users-{users}-events-{events}.parquet"
        if not path.exists():
            # a floor of 2 events per user lets a large user base share few events
            info = write_synthetic_parquet(path, n_users=users, n_items=ITEMS,
                                           n_interactions=events, min_per_user=2, seed=0)
            console.print(f"generated {info['events']:,} events of {users:,} users "
                          f"in {info['seconds']}s")
        for model_name, optimizer in configs:
            modes = ["off", "on"] if optimizer == "adagrad" else ["off"]
            for mode in modes:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(path),
                       model_name, optimizer, mode, str(args.steps)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")),
                            None)
                if line is None:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
                res = json.loads(line[len("RESULT "):])
                rows.append(res)
                console.print(f"{users:,} users: {model_name} {optimizer} {res['updates']}: "
                              f"{res['ms_per_step']} ms per step")

    table = Table(title=f"Step time against the user base ({args.steps} steps, batch 65,536)")
    for c in ("users", "events", "model", "optimizer", "updates", "ms/step", "samples/s",
              "system s", "peak MB"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(f"{r['users']:,}", f"{r['events']:,}", r["model"], r["optimizer"],
                      r["updates"], f"{r['ms_per_step']:,.1f}", f"{r['samples_per_s']:,}",
                      f"{r['system_seconds']}", f"{r['peak_rss_mb']:,.0f}")
    console.print(table)
    payload = {"recforge": __version__, "python": platform.python_version(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d"), "steps": args.steps,
               "settings": SETTINGS, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
