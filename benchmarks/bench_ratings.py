#!/usr/bin/env python
"""Rating models on the fixed ML-100K split, beside Surprise on the same split and machine.

    python benchmarks/bench_ratings.py [--models baseline,svdpp,knnbaseline,mf] [--seed 0]
    RECFORGE_SURPRISE_PYTHON=../bench-surprise/bin/python python benchmarks/bench_ratings.py

The split is ``../shared/splits/ml100k_{train,test}.csv`` (``$RECFORGE_SPLITS`` overrides
the directory; never copied into the repository). RMSE and MAE are over all 20,000 test
pairs: a pair whose user or item is not in the training data gets each library's
fallback (recforge: ``predict``'s default, the mean plus the known bias; Surprise: the
global mean), so no pair is left out. ``fit_s`` is the wall time of ``fit``.

Surprise (scikit-surprise) is never a dependency of recforge: it runs in its own virtual
environment, in a subprocess, when ``$RECFORGE_SURPRISE_PYTHON`` (default
``../bench-surprise/bin/python``) exists; otherwise its rows are skipped with the reason
printed. Set one up with ``python3 -m venv ../bench-surprise &&
../bench-surprise/bin/pip install numpy scikit-surprise pandas``.

Writes ``benchmarks/results/ml-100k-ratings.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from recforge import __version__  # noqa: E402
from recforge._fs import atomic_write_text  # noqa: E402
from recforge.data.interactions import Interactions  # noqa: E402
from recforge.models.registry import create_model  # noqa: E402

DEFAULT_MODELS = "baseline,knnbaseline,svdpp,mf"
#: a benchmark-only venv beside the repository, as ../shared is
SURPRISE_PYTHON = str(Path(__file__).resolve().parents[2] / "bench-surprise" / "bin" / "python")

#: Surprise's models, run in its venv: name -> constructor call (defaults, plus the
#: item-based pearson_baseline configuration that recforge's knnbaseline implements).
SURPRISE_SCRIPT = r"""
import json, sys, time
import numpy as np, pandas as pd
from surprise import SVD, SVDpp, KNNBaseline, BaselineOnly, Dataset, Reader
train_csv, test_csv, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
tr, te = pd.read_csv(train_csv), pd.read_csv(test_csv)
reader = Reader(rating_scale=(1, 5))
trainset = Dataset.load_from_df(tr[["user", "item", "rating"]], reader).build_full_trainset()
testset = list(zip(te["user"], te["item"], te["rating"].astype(float)))
algos = {
    "BaselineOnly (ALS)": lambda: BaselineOnly(verbose=False),
    "SVD": lambda: SVD(random_state=seed),
    "SVD++": lambda: SVDpp(random_state=seed),
    "KNNBaseline (item, pearson_baseline)": lambda: KNNBaseline(
        sim_options={"name": "pearson_baseline", "user_based": False}, verbose=False),
    "KNNBaseline (defaults: user, MSD)": lambda: KNNBaseline(verbose=False),
}
for name, make in algos.items():
    algo = make()
    t = time.perf_counter(); algo.fit(trainset); fit_s = time.perf_counter() - t
    pred = np.array([p.est for p in algo.test(testset)])
    err = pred - te["rating"].to_numpy()
    print(json.dumps({"model": name, "RMSE": float(np.sqrt(np.mean(err ** 2))),
                      "MAE": float(np.mean(np.abs(err))), "fit_s": fit_s,
                      "n_test": int(len(err))}), flush=True)
"""


def splits_dir() -> Path:
    env = os.environ.get("RECFORGE_SPLITS")
    base = Path(env) if env else REPO.parent / "shared" / "splits"
    if not (base / "ml100k_train.csv").is_file():
        sys.exit(f"fixed split not found at {base}: set RECFORGE_SPLITS")
    return base


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``-p svdpp.epochs=30`` -> ``{"svdpp": {"epochs": 30}}`` (values read as JSON when
    they parse, else text)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, value = item.partition("=")
        model, _, param = key.partition(".")
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(model, {})[param] = parsed
    return out


def run_recforge(name: str, params: dict[str, Any], train: Interactions,
                 test: pd.DataFrame) -> dict[str, Any]:
    model = create_model(name, **params)
    t = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t
    pred = model.predict(test["user"].to_numpy(), test["item"].to_numpy())  # all pairs
    err = pred.astype(np.float64) - test["rating"].to_numpy()
    return {"library": "recforge", "model": name, "params": params,
            "RMSE": float(np.sqrt(np.mean(err ** 2))), "MAE": float(np.mean(np.abs(err))),
            "fit_s": fit_s, "n_test": int(len(err))}


def run_surprise(base: Path, seed: int) -> tuple[list[dict[str, Any]], str | None]:
    python = os.environ.get("RECFORGE_SURPRISE_PYTHON", SURPRISE_PYTHON)
    if not Path(python).exists():
        return [], f"no Surprise venv at {python} (set RECFORGE_SURPRISE_PYTHON)"
    proc = subprocess.run([python, "-c", SURPRISE_SCRIPT, str(base / "ml100k_train.csv"),
                           str(base / "ml100k_test.csv"), str(seed)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [], f"Surprise failed: {proc.stderr.strip()[-500:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    version = subprocess.run([python, "-c", "import surprise; print(surprise.__version__)"],
                             capture_output=True, text=True, check=False).stdout.strip()
    for row in rows:
        row["library"] = f"surprise {version}"
    return rows, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("-p", "--param", action="append", default=[],
                    help="MODEL.PARAM=VALUE, e.g. svdpp.epochs=30")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-surprise", action="store_true")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ml-100k-ratings.json"))
    args = ap.parse_args()
    base = splits_dir()
    tr = pd.read_csv(base / "ml100k_train.csv")
    te = pd.read_csv(base / "ml100k_test.csv")
    train = Interactions.from_frame(tr[["user", "item", "rating"]])
    extra = parse_params(args.param)
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        params = dict(extra.get(name, {}))
        if "seed" in create_model(name)._param_names():
            params.setdefault("seed", args.seed)
        if name in ("svdpp", "mf"):
            params.setdefault("device", "cpu")
        rows.append(run_recforge(name, params, train, te))
        print(f"{name}: RMSE {rows[-1]['RMSE']:.4f} MAE {rows[-1]['MAE']:.4f} "
              f"fit {rows[-1]['fit_s']:.1f}s", flush=True)
    skipped = "--no-surprise" if args.no_surprise else None
    if not args.no_surprise:
        peer, skipped = run_surprise(base, args.seed)
        rows.extend(peer)
    if skipped:
        print(f"Surprise column skipped: {skipped}")
    print()
    print(f"{'library':<16} {'model':<38} {'RMSE':>7} {'MAE':>7} {'fit_s':>7}")
    for r in rows:
        print(f"{r['library']:<16} {r['model']:<38} {r['RMSE']:7.4f} {r['MAE']:7.4f} "
              f"{r['fit_s']:7.1f}")
    result = {"dataset": "ml-100k fixed 80/20 split (../shared/splits)", "n_test": len(te),
              "recforge": __version__, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.platform(),
              "load_avg": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
              "surprise_skipped": skipped, "rows": rows}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
