"""What the access log costs the hot path, in-process (no sockets, no client).

    .venv/bin/python benchmarks/bench_access_log.py [--requests 2000] [--repeats 3]

Builds three apps on one EASE model of generated data (2,000 users x 1,000 items): the
access log off, on (``create_app(access_log=...)``, its lines written to ``/dev/null``,
line-buffered as standard error is), and off again (a control: what two identical apps
differ by is the noise). Sends ``--requests`` ``GET /users/{id}/recommendations?k=10``
requests straight over ASGI, ``--repeats`` times, each request to the three apps one
after another (their order alternating), so that a burst of other work on the machine
falls on all three alike; the model's objects are frozen out of the garbage collector
first, as ``recforge serve`` does. Prints each app's median and 10th percentile of
microseconds per request, the ratios on / off and off-again / off, and writes
``benchmarks/results/access_log.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.data.interactions import Interactions  # noqa: E402
from recforge.models import create_model  # noqa: E402
from recforge.serving.app import create_app  # noqa: E402


def _data(n_users: int = 2000, n_items: int = 1000, per_user: int = 30) -> Interactions:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.zipf(1.3, size=len(users)) % n_items
    return Interactions.from_frame(pd.DataFrame({"user": users, "item": items}),
                                   duplicates="first")


async def _times(apps: dict[str, Any], paths: list[bytes], repeats: int
                 ) -> dict[str, list[float]]:
    """Seconds of each request, per app: each path sent to every app in turn."""
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    names = list(apps)
    out: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for i, path in enumerate(paths):
            for name in (names if i % 2 else names[::-1]):
                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                         "method": "GET", "scheme": "http", "path": path.decode(),
                         "raw_path": path, "query_string": b"k=10", "root_path": "",
                         "headers": [(b"host", b"localhost")],
                         "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
                start = time.perf_counter()
                await apps[name](scope, receive, send)
                out[name].append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as recforge serve scores
    data = _data()
    model = create_model("ease", reg=100.0).fit(data)
    sink = open(os.devnull, "w", buffering=1)  # noqa: SIM115 - for the whole run
    apps = {"off": create_app(model), "on": create_app(model, access_log=sink),
            "off again": create_app(model)}
    gc.collect()
    gc.freeze()
    rng = np.random.default_rng(1)
    users = data.users.ids[rng.integers(0, data.n_users, args.requests)]
    paths = [f"/users/{u}/recommendations".encode() for u in users.tolist()]
    asyncio.run(_times(apps, paths[:200], 1))  # warm-up
    times = asyncio.run(_times(apps, paths, args.repeats))
    sink.close()
    us = {name: {"median": float(np.median(t)) * 1e6,
                 "p10": float(np.percentile(t, 10)) * 1e6} for name, t in times.items()}
    ratios = {f"{name} / off": {stat: us[name][stat] / us["off"][stat]
                                for stat in ("median", "p10")}
              for name in ("on", "off again")}
    table = Table(title=f"GET /users/{{id}}/recommendations?k=10, in-process, "
                        f"{args.requests:,} requests x {args.repeats}, interleaved")
    for col in ("access log", "median us", "p10 us"):
        table.add_column(col)
    for name in apps:
        table.add_row(name, f"{us[name]['median']:.1f}", f"{us[name]['p10']:.1f}")
    for name, r in ratios.items():
        table.add_row(name, f"{r['median']:.3f}", f"{r['p10']:.3f}")
    Console().print(table)
    out = REPO / "benchmarks" / "results" / "access_log.json"
    atomic_write_text(out, json.dumps({
        "recforge_version": __version__, "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "requests": args.requests,
        "repeats": args.repeats, "users": data.n_users, "items": data.n_items,
        "us_per_request": us, "ratios": ratios}, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
