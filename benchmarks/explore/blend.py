#!/usr/bin/env python
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench_privacy import shared_data

from recforge.data.readers import read_many
from recforge.evaluation import evaluate
from recforge.models import create_model

torch.set_num_threads(1)
d = shared_data()
tr, va, te = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
variants = {
 "default now": {},
 "als total 0.012 (as chosen)": {"models": {"ease": {"reg": 500.0}, "als": {"embedding_dim": 512, "reg": 0.012, "epochs": 20, "reg_weight": "total"}}},
 "als observed 0.07": {"models": {"ease": {"reg": 500.0}, "als": {"embedding_dim": 512, "reg": 0.07, "epochs": 20}}},
 "als observed nu0.5 reg2": {"models": {"ease": {"reg": 500.0}, "als": {"embedding_dim": 512, "reg": 2.0, "reg_exponent": 0.5, "epochs": 20}}},
}
for mode, (train, test) in (("valid", (tr, va)), ("test", (tr.concat(va), te))):
    for name, params in variants.items():
        t0 = time.perf_counter()
        m = create_model("blend", **params).fit(train)
        r = evaluate(m, train, test, metrics="recall@20,ndcg@20").summary
        print(mode, name, {k: round(v, 4) for k, v in r.items()}, f"{time.perf_counter()-t0:.0f}s", flush=True)
