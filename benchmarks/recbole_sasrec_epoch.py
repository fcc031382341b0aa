"""One training epoch of RecBole's SASRec on ml-100k at RecBole's defaults (timing only).

Run by ``bench_sequential.py --recbole`` with the interpreter of a benchmark-only venv
that has RecBole (``RECFORGE_RECBOLE_PYTHON``); it is not part of recforge and imports
nothing of it. Prints one JSON line: the epoch's wall and CPU seconds, the training
examples (RecBole trains every prefix of a user's sequence as one example, predicting its
last item) and the settings read back from RecBole's config.

    $RECFORGE_RECBOLE_PYTHON benchmarks/recbole_sasrec_epoch.py /path/to/ml-100k/u.data
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# RecBole 1.2.1 still names numpy's removed aliases (np.float_, np.bool8, ...)
for alias, real in (("float_", np.float64), ("complex_", np.complex128), ("bool8", np.bool_),
                    ("int_", np.int64), ("unicode_", np.str_)):
    if not hasattr(np, alias):
        setattr(np, alias, real)

import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402


def main() -> None:
    source, threads = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ml-100k"
        folder.mkdir()
        rows = np.loadtxt(source, dtype=np.int64)
        with open(folder / "ml-100k.inter", "w") as out:
            out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            np.savetxt(out, rows, fmt="%d", delimiter="\t")
        config = Config(model="SASRec", dataset="ml-100k", config_dict={
            "data_path": tmp, "device": "cpu", "use_gpu": False, "gpu_id": "",
            "train_neg_sample_args": None, "epochs": 1, "show_progress": False,
            "checkpoint_dir": tmp, "log_wandb": False, "save_dataset": False,
            "save_dataloaders": False, "seed": 0, "reproducibility": True,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                          "group_by": "user", "mode": "full"}})
        dataset = create_dataset(config)
        train, _, _ = data_preparation(config, dataset)
        model = SASRec(config, train.dataset).to("cpu")
        trainer = Trainer(config, model)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        trainer._train_epoch(train, 0, show_progress=False)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        keys = ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                "attn_dropout_prob", "MAX_ITEM_LIST_LENGTH", "train_batch_size",
                "learning_rate", "loss_type")
        print(json.dumps({"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                          "examples": len(train.dataset), "threads": threads,
                          "settings": {k: config[k] for k in keys}}))


if __name__ == "__main__":
    main()
