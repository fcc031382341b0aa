#!/usr/bin/env python
"""Differentially private training: the privacy-utility curve and a membership-inference
check, so that the privacy claim is measured, not asserted.

    python benchmarks/bench_privacy.py                       # curve + both attacks
    python benchmarks/bench_privacy.py --epsilons 8 --no-attack
    python benchmarks/bench_privacy.py --reference-attack    # the attacks on settings that overfit

**Curve.** ml-1m-implicit, train + valid -> test (the protocol of
``results/ml-1m-implicit.json``): ``bpr`` with its defaults (not private), and ``bpr``
trained with differential privacy per user (Opacus; ``RECIPE`` below, which adds
``dp_epsilon``) at each epsilon: NDCG@20, Recall@20 (full ranking, training items
excluded), fit time, the epsilon the accountant reports spent, the noise multiplier.

**Membership inference** (the loss-threshold attack of Yeom et al. 2018: an example with a
lower loss is guessed to be a training example; the attack's AUC over members and
non-members, 0.5 = no better than a coin):

* ``event`` attack, on the whole model (user rows included): members are training events
  ``(u, i)``, non-members the test events of the same users (held out at random, the same
  distribution); the loss of ``(u, i)`` is the BPR loss of ``i`` against 100 fixed random
  items, with the model's own user row. Run on the non-private and the private model of
  the curve. The user rows are not protected by the private training (each is trained on
  its own user's events: joint differential privacy, ``docs/privacy.md``), so this attack
  measures what the user rows reveal about their own users.
* ``user`` attack, on the released item side only (what the guarantee covers): a model is
  trained on the events of half of the users (members, seeded); the other half are
  non-members. For every user the attacker builds a user vector from the item factors
  alone (the mean of the factors of the user's items) and computes the mean loss of the
  user's events as above; the AUC over users.

Rows go to ``benchmarks/results/privacy.json``, with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: The private training recipe (with ``dp_epsilon``): bpr's ``private_defaults``, what
#: ``recforge train bpr --dp-epsilon E`` starts from: ``batch_size // dp_max_per_user`` =
#: 1,024 users expected per step (q = 1/6), 40 epochs of SGD (momentum 0.9) on the item
#: side, then every user's row solved in closed form against the private item rows
#: (``dp_user_rows="solve"``). Chosen at epsilon 8 on train.txt -> valid.txt among a few
#: settings (docs/privacy.md). Until 2026-12-07: 20 epochs, the user rows on Adam during
#: the steps and for 10 epochs alone afterwards (``--recipe adam``).
RECIPE = {"epochs": 40, "batch_size": 32768, "dp_max_per_user": 32, "dp_max_grad_norm": 0.1,
          "optimizer": "sgd", "learning_rate": 10.0, "lr_schedule": None,
          "dp_user_learning_rate": 0.05, "dp_user_epochs": 0, "dp_user_rows": "solve"}
OLD_RECIPE = {**RECIPE, "epochs": 20, "dp_user_epochs": 10, "dp_user_rows": "train"}
N_NEGATIVES = 100


def shared_data() -> Path:
    env = os.environ.get("RECFORGE_TEST_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    if not base.is_dir():
        sys.exit(f"benchmark data not found at {base}: set RECFORGE_TEST_DATA")
    return base / "ml-1m-implicit"


def fit(params: dict, train, label: str):
    from recforge.models import create_model

    t0 = time.perf_counter()
    model = create_model("bpr", device="cpu", valid_metric=None, **params).fit(
        train, progress=False)
    seconds = time.perf_counter() - t0
    print(f"  {label}: fit {seconds:.1f} s", flush=True)
    return model, seconds


def auc(members, non_members) -> float:
    """P(a member scores above a non-member), ties halved (the ROC AUC)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    return float(roc_auc_score(y, np.r_[members, non_members]))


def pair_loss(user_vecs, item_table, users, items, negatives):
    """BPR loss of each ``(users[k], items[k])`` against the fixed ``negatives``."""
    import torch

    u = user_vecs[users]  # [n, d]
    pos = (u * item_table[items]).sum(-1, keepdim=True)
    neg = u @ item_table[negatives].T  # [n, N]
    return torch.nn.functional.softplus(neg - pos).mean(-1)


def event_attack(model, train, test, seed: int = 0, n: int = 20000) -> float:
    """AUC of the loss threshold on the model's own user rows: training events (members)
    against test events of the same users (non-members)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    user_vecs, item_table = model.dot_factors()
    uidx = lambda d: model.users_.index(d.users.ids)[d.user]  # noqa: E731
    iidx = lambda d: model.items_.index(d.items.ids)[d.item]  # noqa: E731
    tu, ti = uidx(train), iidx(train)
    vu, vi = uidx(test), iidx(test)
    ok = (vu >= 0) & (vi >= 0)
    vu, vi = vu[ok], vi[ok]
    m = rng.choice(len(tu), size=min(n, len(tu)), replace=False)
    k = rng.choice(len(vu), size=min(n, len(vu)), replace=False)
    negatives = torch.from_numpy(rng.choice(model.n_items, N_NEGATIVES, replace=False))
    with torch.no_grad():
        lm = pair_loss(user_vecs, item_table, torch.from_numpy(tu[m]),
                       torch.from_numpy(ti[m]), negatives)
        ln = pair_loss(user_vecs, item_table, torch.from_numpy(vu[k]),
                       torch.from_numpy(vi[k]), negatives)
    return auc(-lm.numpy(), -ln.numpy())


def user_attack(model, data, members, seed: int = 0) -> float:
    """AUC over users of the loss threshold with user vectors built from the item factors
    alone (the mean of the user's items' factors): member users (trained on) against the
    others."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    _, item_table = model.dot_factors()
    items = model.items_.index(data.items.ids)[data.item]
    keep = items >= 0
    users, items = data.user[keep], items[keep]
    n_users = data.n_users
    counts = np.bincount(users, minlength=n_users).astype(np.float32)
    centroid = torch.zeros(n_users, item_table.shape[1])
    centroid.index_add_(0, torch.from_numpy(users.astype(np.int64)),
                        item_table[torch.from_numpy(items.astype(np.int64))])
    centroid /= torch.from_numpy(np.maximum(counts, 1))[:, None]
    negatives = torch.from_numpy(rng.choice(item_table.shape[0], N_NEGATIVES, replace=False))
    with torch.no_grad():
        loss = pair_loss(centroid, item_table, torch.from_numpy(users.astype(np.int64)),
                         torch.from_numpy(items.astype(np.int64)), negatives)
    per_user = np.bincount(users, weights=loss.numpy(), minlength=n_users) / np.maximum(
        counts, 1)
    is_member = np.zeros(n_users, dtype=bool)
    is_member[members] = True
    present = counts > 0
    return auc(-per_user[is_member & present], -per_user[~is_member & present])


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from recforge.data.readers import read_many
    from recforge.evaluation import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epsilons", default="1,4,8", help="comma-separated privacy targets")
    ap.add_argument("--attack-epsilon", type=float, default=8.0)
    ap.add_argument("--no-attack", action="store_true")
    ap.add_argument("--reference-attack", action="store_true",
                    help="only the attacks on an overfitting bpr (reg 0, 128 dimensions), "
                         "not private and private, added to the existing --out file (rows "
                         "already there are kept)")
    ap.add_argument("--recipe", choices=("solve", "adam"), default="solve",
                    help="the private recipe: today's (user rows solved) or the one before "
                         "2026-12-07 (user rows on Adam, 20 epochs)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: the machine is shared; more threads than free "
                         "cores makes index_add_ dozens of times slower)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "privacy.json")
    args = ap.parse_args(argv)
    recipe = RECIPE if args.recipe == "solve" else OLD_RECIPE
    torch.set_num_threads(args.threads)
    epsilons = [float(e) for e in args.epsilons.split(",") if e]

    d = shared_data()
    train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
    train = train.concat(valid)
    if args.reference_attack:  # does the attack see anything when there is leakage?
        out = json.loads(args.out.read_text())
        base = {"reg": 0.0, "embedding_dim": 128}
        rng = np.random.default_rng(0)
        members = rng.permutation(train.n_users)[: train.n_users // 2]
        half = train.subset(np.flatnonzero(np.isin(train.user, members)))
        for label, params in (("bpr reg=0 dim=128 (overfitting reference)", base),
                              (f"bpr reg=0 dim=128 dp_epsilon={args.attack_epsilon:g}",
                               {**recipe, **base, "dp_epsilon": args.attack_epsilon})):
            row = next((a for a in out["attacks"] if a["model"] == label), {})
            if "event_attack_auc" not in row:
                model, seconds = fit(params, train, label)
                row = {"model": label, "params": params,
                       "NDCG@20": evaluate(model, train, test,
                                           metrics="ndcg@20").summary["NDCG@20"],
                       "event_attack_auc": round(event_attack(model, train, test), 4),
                       "fit_s": round(seconds, 1), "load": os.getloadavg()}
            if "user_attack_auc" not in row:
                half_model, _ = fit(params, half, f"{label} (half of the users)")
                row["user_attack_auc"] = round(user_attack(half_model, train, members), 4)
            print(row, flush=True)
            out["attacks"] = [a for a in out["attacks"] if a["model"] != label] + [row]
            args.out.write_text(json.dumps(out, indent=1) + "\n")
        return 0
    rows, models = [], {}
    print(f"ml-1m-implicit: {len(train):,} training events, {train.n_users:,} users, "
          f"{train.n_items:,} items; load {os.getloadavg()}", flush=True)
    for eps in [None, *epsilons]:
        params = {} if eps is None else {**recipe, "dp_epsilon": eps}
        label = "bpr" if eps is None else f"bpr dp_epsilon={eps:g}"
        load = os.getloadavg()[0]
        model, seconds = fit(params, train, label)
        result = evaluate(model, train, test, metrics=["ndcg@20", "recall@20"])
        privacy = model.privacy_ or {}
        rows.append({"model": label, "params": params, **result.summary,
                     "fit_s": round(seconds, 1), "epsilon_spent": privacy.get("epsilon"),
                     "delta": privacy.get("delta"),
                     "noise_multiplier": privacy.get("noise_multiplier"),
                     "load_before": round(load, 2)})
        models[eps] = model
        print(f"  {label}: NDCG@20 {result.summary['NDCG@20']:.4f}", flush=True)
    base = rows[0]["NDCG@20"]
    for row in rows:
        row["ndcg_kept"] = round(row["NDCG@20"] / base, 4)

    attacks = []
    if not args.no_attack:
        eps = args.attack_epsilon
        rng = np.random.default_rng(0)
        members = rng.permutation(train.n_users)[: train.n_users // 2]
        half = train.subset(np.flatnonzero(np.isin(train.user, members)))
        for label, params in (("bpr", {}), (f"bpr dp_epsilon={eps:g}",
                                            {**recipe, "dp_epsilon": eps})):
            full = models.get(None if not params else eps)
            if full is None:
                full, _ = fit(params, train, label)
            half_model, _ = fit(params, half, f"{label} (half of the users)")
            attacks.append({"model": label,
                            "event_attack_auc": round(event_attack(full, train, test), 4),
                            "user_attack_auc": round(user_attack(half_model, train,
                                                                 members), 4)})
            print(f"  {label}: {attacks[-1]}", flush=True)

    print("\n| model | NDCG@20 | Recall@20 | kept | fit s | epsilon spent | noise |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        spent = "-" if r["epsilon_spent"] is None else f"{r['epsilon_spent']:.3f}"
        noise = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
        print(f"| {r['model']} | {r['NDCG@20']:.4f} | {r['Recall@20']:.4f} | "
              f"{r['ndcg_kept']:.0%} | {r['fit_s']} | {spent} | {noise} |")
    if attacks:
        print("\n| model | event attack AUC (whole model) | user attack AUC (item side) |")
        print("| --- | --- | --- |")
        for a in attacks:
            print(f"| {a['model']} | {a['event_attack_auc']} | {a['user_attack_auc']} |")
    out = {"benchmark": "privacy", "dataset": "ml-1m-implicit",
           "protocol": "train+valid -> test", "recipe": recipe, "threads": args.threads,
           "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "python": platform.python_version(), "load_after": os.getloadavg(),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows, "attacks": attacks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
