#!/usr/bin/env python
"""Private bpr at epsilon 8 with user rows solved (dp_user_rows='solve'): a small grid on
train.txt -> valid.txt."""
import json
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench_privacy import RECIPE, shared_data

from recforge.data.readers import read_many
from recforge.evaluation import evaluate
from recforge.models import create_model

torch.set_num_threads(1)
d = shared_data()
train, valid, test = read_many([d / "train.txt", d / "valid.txt", d / "test.txt"])
if len(sys.argv) > 2 and sys.argv[2] == "test":
    train, valid = train.concat(valid), test
for change in json.loads(sys.argv[1]):
    params = {**RECIPE, "dp_user_epochs": 0, "dp_user_rows": "solve", "dp_epsilon": 8.0, **change}
    t0 = time.perf_counter()
    model = create_model("bpr", device="cpu", valid_metric=None, **params).fit(train, progress=False)
    fit_s = time.perf_counter() - t0
    r = evaluate(model, train, valid, metrics="ndcg@20,recall@20").summary
    print(json.dumps(change), {k: round(v, 4) for k, v in r.items()}, f"fit {fit_s:.0f}s eps {model.privacy_['epsilon']:.3f}", flush=True)
