"""Shared fixtures: small generated data, and the real MovieLens files in ../shared/data.

Real-data tests find the files through ``RECFORGE_TEST_DATA`` or ``../shared/data`` beside
the repository, and are skipped (with the reason) when neither holds them. The files are
never copied into the repository: the MovieLens licence forbids redistribution.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from recforge import Interactions

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    env = os.environ.get("RECFORGE_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_path(*parts: str) -> Path:
    """Path of a file under the shared data directory, or skip the test."""
    base = shared_data_dir()
    if base is None:
        pytest.skip("shared test data not found: set RECFORGE_TEST_DATA or place ../shared/data")
    p = base.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not found (MovieLens data is not redistributed with recforge)")
    return p


@pytest.fixture
def small_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user": ["u1", "u1", "u2", "u2", "u3", "u3", "u3"],
        "item": ["a", "b", "a", "c", "b", "c", "d"],
        "rating": [5.0, 3.0, 4.0, 2.0, 1.0, 5.0, 4.0],
        "timestamp": [10, 20, 15, 30, 5, 25, 40],
    })


@pytest.fixture
def small(small_frame) -> Interactions:
    return Interactions.from_frame(small_frame)


def random_interactions(n_users: int = 60, n_items: int = 40, density: float = 0.15,
                        seed: int = 0, with_time: bool = True) -> Interactions:
    """Random implicit data with a popularity skew, every user and item present."""
    rng = np.random.default_rng(seed)
    pop = rng.pareto(1.5, n_items) + 0.1
    prob = np.clip(density * pop / pop.mean(), 0, 0.9)
    mask = rng.random((n_users, n_items)) < prob[None, :]
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    frame = pd.DataFrame({"user": u, "item": i})
    if with_time:
        frame["timestamp"] = rng.integers(0, 10_000, len(u))
    return Interactions.from_frame(frame)


@pytest.fixture(scope="session")
def random_data() -> Interactions:
    """Shared across the session: Interactions are immutable."""
    return random_interactions()


@pytest.fixture(scope="class")
def fitted(request, random_data):
    """The model of a ModelConformance test class, fitted once per class (do not modify)."""
    suite = request.cls()
    return suite.fit_model(suite.make(), suite.training_data(random_data))


def event_frame(n: int = 5000, seed: int = 0, string_ids: bool = False,
                n_users: int = 300, n_items: int = 200) -> pd.DataFrame:
    """A raw event table (user, item, rating, timestamp) of distinct (user, item) pairs,
    ids from 1; ``string_ids`` makes user ids text."""
    rng = np.random.default_rng(seed)
    key = rng.choice(n_users * n_items, size=n, replace=False)
    frame = pd.DataFrame({"user": key // n_items + 1, "item": key % n_items + 1,
                          "rating": rng.integers(1, 6, n).astype(float),
                          "timestamp": rng.integers(0, 10**9, n)})
    if string_ids:
        frame["user"] = "u" + frame["user"].astype(str)
    return frame


def run_cli(args, capsys) -> tuple[int, str, str]:
    """``recforge ARGS`` in this process: (exit status, standard output, standard error)."""
    from recforge.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # Typer exits with the command's status
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@contextlib.contextmanager
def running_server(*args, log: Path | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """`recforge serve ARGS` on a free loopback port; yields ``(process, base_url)`` once
    /health answers, and stops the process with SIGTERM afterwards (unless the test killed
    it). Its output goes to the file ``log`` (a temporary one by default), not to a pipe: a
    pipe nobody reads fills up with access-log lines and stops the server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    owned = log is None
    if log is None:
        fd, name = tempfile.mkstemp(suffix=".log", prefix="recforge-serve-")
        os.close(fd)
        log = Path(name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "recforge", "serve", *map(str, args),
                                 "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    httpx.get(url + "/health", timeout=1)
                    break
                except httpx.TransportError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise AssertionError(log.read_text(errors="replace")
                                             or "the server did not start") from None
                    time.sleep(0.2)
            yield proc, url
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=20)
            if owned:
                log.unlink(missing_ok=True)
