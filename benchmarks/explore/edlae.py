#!/usr/bin/env python
"""Experiment: EASE with EDLAE's dropout-emphasis penalty (Steck 2020):
P = (G + reg I + p/(1-p) diag(G))^-1, B = -P / diag(P), diag(B) = 0.
ml-1m-implicit, train -> valid (choose) and train+valid -> test."""
import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench_privacy import shared_data

from recforge.data.readers import read_many
from recforge.evaluation import evaluate
from recforge.models import create_model

torch.set_num_threads(1)
d = shared_data()
tr, va, te = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
grid = [(float(r), float(p)) for r, p in (a.split(":") for a in sys.argv[1:])] or \
    [(500, 0), (200, 0.1), (100, 0.2), (200, 0.2), (50, 0.33), (100, 0.33), (200, 0.33), (20, 0.5), (100, 0.5)]
for mode, (train, test) in (("valid", (tr, va)), ("test", (tr.concat(va), te))):
    for reg, p in grid:
        m = create_model("ease", reg=reg).fit(train)
        x = m.history_
        g = torch.from_numpy((x.T @ x).toarray().astype(np.float64))
        dg = g.diagonal().clone()
        g.diagonal().add_(reg + p / (1 - p) * dg)
        P = torch.linalg.inv(g)
        B = P / (-P.diagonal().unsqueeze(0))
        B.fill_diagonal_(0.0)
        m.weights_ = B.float().contiguous()
        r = evaluate(m, train, test, metrics="recall@20,ndcg@20").summary
        print(mode, f"reg {reg} p {p}", {k: round(v, 4) for k, v in r.items()}, flush=True)
