"""Train and test one RecBole 1.2.1 sequential model (SASRec or GRU4Rec) at RecBole's defaults
on recforge's exact next-item split (quality side by side).

Run by ``bench_sequential.py --recbole-quality MODEL`` with the interpreter of a
benchmark-only venv that has RecBole (``RECFORGE_RECBOLE_PYTHON``); it is not part of
recforge and imports nothing of it.

Input: a file of ordered sequences, one user per line, ``user item item ...`` oldest first,
written by ``bench_sequential.py`` from the events recforge trains on, so both libraries see
the same order (each event's timestamp given to RecBole is its position in the user's line:
no ties for RecBole to break its own way). RecBole's leave-one-out (``LS: valid_and_test``,
time order) then holds out the same last and second-last items recforge does.

Training is RecBole's: its trainer's epoch, its validation (MRR@10, seen items kept) and
its early stopping (10 validations without a gain), plus a CPU-seconds budget: after the
epoch that passes it, training stops and the best validated weights are tested, as
recforge's benchmark does. The test ranks all items for each user's last item from the
user's earlier sequence (RecBole's model reads its last ``MAX_ITEM_LIST_LENGTH`` items)
under both protocols: seen items kept (what RecBole's own evaluator does for sequential
models: it masks no history) and seen items excluded (every item of the user's earlier
sequence, validation item included, masked here). Ranks are strict (1 + the number of
items scored higher). Prints one JSON line.

    $RECFORGE_RECBOLE_PYTHON benchmarks/recbole_next_item.py SEQUENCES MODEL CPU_BUDGET_S \\
        [MAX_EPOCHS] [THREADS]
"""

from __future__ import annotations

import copy
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
from recbole.model.sequential_recommender import GRU4Rec, SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

MODELS = {"SASRec": SASRec, "GRU4Rec": GRU4Rec}
K = 10


def read_sequences(path: Path) -> dict[str, list[str]]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = parts[1:]
    return out


def test_metrics(model, test_data, dataset, sequences: dict[str, list[str]]) -> dict:
    """HR / NDCG / MRR @10 over the test users, seen items kept and excluded."""
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    sums = {"kept": np.zeros(3), "excluded": np.zeros(3)}
    users = 0
    model.eval()
    with torch.no_grad():
        for interaction, _history, _pos_u, pos_i in test_data:
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).clone()
            scores[:, 0] = -np.inf  # RecBole's padding item
            target = scores[torch.arange(len(interaction)), pos_i]
            for protocol in ("kept", "excluded"):
                if protocol == "excluded":
                    tokens = dataset.id2token(uid_field, interaction[uid_field].numpy())
                    for row, token in enumerate(tokens):
                        earlier = sequences[str(token)][:-1]
                        ids = dataset.token2id(iid_field, earlier)
                        scores[row, torch.as_tensor(np.asarray(ids))] = -np.inf
                rank = (scores > target[:, None]).sum(1).numpy() + 1
                hit = rank <= K
                sums[protocol] += [hit.sum(), (hit / np.log2(rank + 1)).sum(),
                                   (hit / rank).sum()]
            users += len(interaction)
    return {protocol: {f"HR@{K}": round(s[0] / users, 4), f"NDCG@{K}": round(s[1] / users, 4),
                       f"MRR@{K}": round(s[2] / users, 4)} for protocol, s in sums.items()} | {
        "users": users}


def main() -> None:
    source, name, budget = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    max_epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    torch.set_num_threads(threads)
    sequences = read_sequences(source)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seq"
        folder.mkdir()
        with open(folder / "seq.inter", "w") as out:
            out.write("user_id:token\titem_id:token\ttimestamp:float\n")
            for user, items in sequences.items():
                out.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(items))
        config = Config(model=name, dataset="seq", config_dict={
            "data_path": tmp, "device": "cpu", "use_gpu": False, "gpu_id": "",
            "train_neg_sample_args": None, "show_progress": False,
            "checkpoint_dir": tmp, "log_wandb": False, "save_dataset": False,
            "save_dataloaders": False, "seed": 0, "reproducibility": True,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                          "group_by": "user", "mode": "full"}})
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        model = MODELS[name](config, train.dataset).to("cpu")
        trainer = Trainer(config, model)
        patience = int(config["stopping_step"])
        curve, cpu_marks, best, best_epoch, best_state = [], [], -1.0, -1, None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for epoch in range(max_epochs):
            trainer._train_epoch(train, epoch, show_progress=False)
            score, _ = trainer._valid_epoch(valid, show_progress=False)
            curve.append(round(float(score), 4))
            cpu_marks.append(round(time.process_time() - cpu0, 1))
            if score > best:
                best, best_epoch = float(score), epoch
                best_state = copy.deepcopy(model.state_dict())
            if epoch - best_epoch >= patience or cpu_marks[-1] >= budget:
                break
        wall = time.perf_counter() - wall0
        model.load_state_dict(best_state)
        metrics = test_metrics(model, test, dataset, sequences)
        keys = ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                "attn_dropout_prob", "embedding_size", "dropout_prob", "num_layers",
                "MAX_ITEM_LIST_LENGTH", "train_batch_size", "learning_rate", "loss_type",
                "valid_metric", "stopping_step")
        print(json.dumps({
            "model": name, "metrics": metrics, "epochs": len(curve),
            "best_epoch": best_epoch + 1, "valid_mrr10_curve": curve,
            "cpu_seconds_per_epoch_mark": cpu_marks, "fit_wall_seconds": round(wall, 1),
            "fit_cpu_seconds": cpu_marks[-1],
            "cpu_budget_s": budget if budget < 1e12 else None,
            "stopped": ("budget" if cpu_marks[-1] >= budget else
                        "early stopping" if len(curve) - 1 - best_epoch >= patience else
                        "max epochs"),
            "threads": threads, "training_examples": len(train.dataset),
            "settings": {k: config[k] for k in keys if config[k] is not None}}))


if __name__ == "__main__":
    main()
