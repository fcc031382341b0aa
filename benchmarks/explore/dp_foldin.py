#!/usr/bin/env python
"""Experiment: private bpr at epsilon 8 (RECIPE), then user rows by an implicit
least-squares fold-in against the private item factors instead of / after the Adam
user epochs. train.txt -> valid.txt (choose), NDCG@20."""
import json
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench_privacy import RECIPE, shared_data

from recforge.data.readers import read_many
from recforge.evaluation import evaluate
from recforge.models import create_model

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
mode = sys.argv[1] if len(sys.argv) > 1 else "valid"
d = shared_data()
train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
if mode == "test":
    train, valid = train.concat(valid), test
params = {**RECIPE, "dp_epsilon": 8.0}
if len(sys.argv) > 3:
    params.update(json.loads(sys.argv[3]))
t0 = time.perf_counter()
model = create_model("bpr", device="cpu", valid_metric=None, **params).fit(train, progress=False)
print("fit", round(time.perf_counter() - t0, 1), "s", model.privacy_["epsilon"], flush=True)
base = evaluate(model, train, valid, metrics="ndcg@20,recall@20").summary
print("adam user rows", base, flush=True)
m = model.module_
Y = m.item.weight.detach().double()
U0 = m.user.weight.detach().clone()
csr = train.binary_csr.tocsr()
# users of the model's vocabulary = train's
ALPHAS = (1.0, 4.0, 16.0) if mode == "valid" else (1.0, 2.0)
RELS = (0.03, 0.3, 3.0) if mode == "valid" else (0.3, 1.0, 3.0)
scale = float(Y.pow(2).sum(1).mean())
G = Y.T @ Y
dd = Y.shape[1]
for alpha in ALPHAS:
    for rel in RELS:
        reg = rel * scale * 100
        X = torch.zeros_like(U0, dtype=torch.float64)
        for u in range(csr.shape[0]):
            items = csr.indices[csr.indptr[u]:csr.indptr[u + 1]]
            if not len(items):
                continue
            yh = Y[torch.from_numpy(items)]
            a = G + alpha * yh.T @ yh + reg * torch.eye(dd, dtype=torch.float64)
            b = yh.sum(0) * (1 + alpha)
            X[u] = torch.linalg.solve(a, b)
        with torch.no_grad():
            m.user.weight.copy_(X.float())
        model._prepare_scoring() if hasattr(model, "_prepare_scoring") else None
        r = evaluate(model, train, valid, metrics="ndcg@20,recall@20").summary
        print(f"fold-in alpha {alpha} reg {reg:.3g} (rel {rel})", r, flush=True)
with torch.no_grad():
    m.user.weight.copy_(U0)
