"""Load benchmark of `recforge serve`: requests/s and latency percentiles.

    .venv/bin/python benchmarks/bench_serving.py [--model DIR] [--duration 10]

Trains ALS (defaults) on ml-1m-implicit train.txt + valid.txt unless ``--model`` names a
saved model, starts ``recforge serve`` (one uvicorn worker) on a free loopback port, and
drives ``GET /users/{random user}/recommendations?k=10`` with wrk (``apt-get install wrk``)
at 1, 8 and 32 connections, the client on the same machine. Prints a table and writes
``benchmarks/results/serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402

LUA = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/users/" .. math.random(0, %d) .. "/recommendations?k=10")
end
"""


def _train(out: Path) -> Path:
    from recforge.data.io import read_many
    from recforge.models import create_model

    env = os.environ.get("RECFORGE_TEST_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    d = base / "ml-1m-implicit"
    if not d.is_dir():
        sys.exit(f"{d} not found: set RECFORGE_TEST_DATA or pass --model")
    train, valid = read_many([d / "train.txt", d / "valid.txt"])
    return create_model("als").fit(train.concat(valid)).save(out / "als")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, Any]:
    proc = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                           "-s", str(script), url], capture_output=True, text=True, check=True)
    out = proc.stdout
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"connections": connections,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50_ms": pct.get("50"), "p90_ms": pct.get("90"), "p99_ms": pct.get("99"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", default="1,8,32")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.json")
    args = ap.parse_args(argv)
    console = Console()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    tmp = Path(tempfile.mkdtemp(prefix="recforge-bench-"))
    model_dir = args.model or _train(tmp)
    meta = json.loads((model_dir / "meta.json").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "recforge", "serve", "--model",
                               str(model_dir), "--port", str(port)],
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.time() + 120
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("the server did not start")
                time.sleep(0.3)
        script = tmp / "users.lua"
        script.write_text(LUA % (meta["n_users"] - 1))
        _wrk(url, script, 8, 2)  # warm-up
        rows = [_wrk(url, script, int(c), args.duration)
                for c in args.connections.split(",")]
    finally:
        server.terminate()
        server.wait(timeout=10)
    table = Table(title=f"GET /users/{{id}}/recommendations?k=10, {meta['model']} on "
                        f"{meta['n_items']:,} items, one uvicorn worker, wrk on the same host")
    for col in ("connections", "requests/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["connections"]), f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.2f}",
                      f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["non_2xx"]))
    console.print(table)
    payload = {"model": meta["model"], "params": meta["params"], "n_items": meta["n_items"],
               "n_users": meta["n_users"], "duration_s": args.duration, "results": rows,
               "recforge": __version__, "python": platform.python_version(),
               "cpu_count": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
