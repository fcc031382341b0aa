"""Distributed (DDP) training: sharding, quality against one process, failure of a rank.

The end-to-end tests start real ``torchrun`` jobs of 2 processes on gloo through
``recforge train --nproc 2`` on MovieLens 100K.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import random_interactions, shared_data_dir, shared_path

from recforge.cli import main
from recforge.cli.train import without_option
from recforge.data.datasets import load_dataset
from recforge.data.filters import to_implicit
from recforge.data.readers import read_many
from recforge.data.split import random_split
from recforge.evaluation import evaluate
from recforge.models.base import Recommender
from recforge.training.batches import EpochSampler

RECFORGE = [sys.executable, "-m", "recforge"]


# ---------------------------------------------------------------------------------------
# sharding
@pytest.mark.parametrize("world", [2, 3])
def test_shards_are_disjoint_equal_and_cover_the_epoch(world):
    data = random_interactions(n_users=50, n_items=30, density=0.3, seed=1)
    samplers = [EpochSampler(data, batch_size=64, n_negatives=2, shard=(r, world))
                for r in range(world)]
    seen = []
    steps = {s.steps_per_epoch() for s in samplers}
    assert len(steps) == 1  # DDP needs every rank to take the same number of steps
    for s in samplers:
        batches = list(s.epoch(np.random.default_rng([7, 0])))
        assert len(batches) == s.steps_per_epoch()
        assert all(len(b["users"]) <= 64 // world for b in batches)
        pairs = np.concatenate([b["users"].numpy() * 1000 + b["items"].numpy()
                                for b in batches])
        assert len(pairs) == len(data) // world
        seen.append(pairs)
        # negatives exclude the user's positives on every rank
        csr = data.binary_csr
        for b in batches[:3]:
            neg = b["negatives"].numpy()
            rows = np.repeat(b["users"].numpy(), neg.shape[1])
            assert not np.asarray(csr[rows, neg.ravel().copy()]).any()
    allpairs = np.concatenate(seen)
    assert len(np.unique(allpairs)) == len(allpairs)  # disjoint
    assert len(data) - len(allpairs) < world  # at most world-1 events left out per epoch


def test_without_option():
    argv = ["train", "bpr", "--nproc", "2", "--out", "x", "--nproc=3", "-p", "epochs=1"]
    assert without_option(argv, "--nproc") == ["train", "bpr", "--out", "x", "-p", "epochs=1"]


def test_nproc_refuses_models_without_gradient_steps(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("user,item\n1,1\n1,2\n2,1\n")
    status = main(["train", "ease", "--data", str(data), "--out", str(tmp_path / "m"),
                   "--nproc", "2"])
    assert status == 2
    assert "not trained by gradient steps" in capsys.readouterr().err.replace("\n", "")
    assert not (tmp_path / "m").exists()


def test_nproc_checks_settings_and_paths_once_before_launching(tmp_path, capsys,
                                                              monkeypatch):
    """A bad hyperparameter, --out or --resume under --nproc is one line from the parent
    process, not one per rank followed by the launcher's traceback."""
    from recforge.training import distributed

    def launch(*_args, **_kwargs):
        raise AssertionError("torchrun launched")

    monkeypatch.setattr(distributed, "launch", launch)
    data = tmp_path / "d.csv"
    data.write_text("user,item\n1,1\n1,2\n2,1\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("x")
    base = ["train", "bpr", "--data", str(data), "--nproc", "2"]
    for extra, message in (
            (["--out", str(tmp_path / "m"), "-p", "epochs=0"], "epochs must be null or an integer in 1.."),
            (["--out", str(taken)], "not a saved recforge model"),
            (["--out", str(tmp_path / "m"), "--resume"], "--resume: no checkpoint"),
            (["--out", str(tmp_path / "m"), "-p", "seed=-1"], "seed must be an integer")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.replace("\n", " ")
        assert message in err and err.count("error:") == 1, err
    status = main(["train", "neumf", "--data", str(data), "--out", str(tmp_path / "m"),
                   "-p", "pretrain=true", "--nproc", "2"])
    assert status == 2
    assert "pretrain=True is not supported in distributed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# end to end on MovieLens 100K
@pytest.fixture(scope="module")
def ml100k_split(tmp_path_factory) -> tuple[Path, Path]:
    shared_path("ml-100k", "u.data")
    data = to_implicit(load_dataset("ml-100k", data_dir=shared_data_dir()), 4.0)
    split = random_split(data, test_size=0.2, seed=0)
    out = tmp_path_factory.mktemp("ml100k")
    train, test = out / "train.csv", out / "test.csv"
    split.train.to_frame().to_csv(train, index=False)
    split.test.to_frame().to_csv(test, index=False)
    return train, test


def _ndcg(model: Path, train: Path, test: Path) -> float:
    tr, te = read_many([train, test])
    result = evaluate(Recommender.load(model), tr, te, metrics="ndcg@20")
    return float(next(iter(result.summary.values())))


@pytest.mark.slow
def test_two_processes_reach_single_process_quality(ml100k_split, tmp_path):
    train, test = ml100k_split
    params = ["-p", "epochs=15", "-p", "batch_size=1024", "--seed", "3"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="120", OMP_NUM_THREADS="1")
    subprocess.run([*RECFORGE, "train", "bpr", "--data", str(train), "--out", str(single),
                    *params], check=True, capture_output=True, timeout=300, env=env)
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run([*RECFORGE, "train", "bpr", "--data", str(train), "--out", str(ddp),
                           "--nproc", "2", "--checkpoint-dir", str(ckpt), "--keep-checkpoint",
                           *params], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "in 2 processes (gloo)" in proc.stdout
    a, b = _ndcg(single, train, test), _ndcg(ddp, train, test)
    assert a > 0.15  # a trained model, not noise (popularity scores about 0.12 here)
    assert b >= 0.98 * a, (a, b)
    meta = json.loads((ddp / "meta.json").read_text())
    assert meta["params"]["epochs"] == 15
    # each rank read only its users' events; rank 0 collected all of them for the model
    assert "rank 0 of 2" in proc.stderr and "the users it owns" in proc.stderr
    (tr,) = read_many([train])
    saved = Recommender.load(ddp)
    assert saved.seen_.nnz == len(tr) == int(Recommender.load(single).seen_.nnz)
    np.testing.assert_allclose(saved.item_popularity_, tr.item_counts())
    # the user table stays on each rank during training; the checkpoint rank 0 wrote and the
    # saved model both hold every owner's rows (no validation: the last epoch is the model)
    import torch

    checkpoint = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    users = saved.module_.state_dict()["user.weight"]
    torch.testing.assert_close(checkpoint["module"]["user.weight"], users)
    from recforge.data.sharding import owner_of_ids

    # Adam's second moments of the user rows (parameter 0): rank 0 never saw a gradient
    # for rank 1's users, so non-zero moments there came from rank 1 through the gather
    rank1 = torch.from_numpy(owner_of_ids(saved.users_.ids, 2) == 1)
    active = torch.from_numpy(tr.user_counts() > 0)
    moments = checkpoint["optimizer"]["state"][0]["exp_avg_sq"]
    assert moments.shape == users.shape
    assert (moments[rank1 & active].sum(1) > 0).all()
    assert (moments[~rank1 & active].sum(1) > 0).all()


@pytest.mark.slow
def test_sharded_ratings_validate_over_all_ranks(tmp_path):
    """mf on ratings: the global mean and rating range come from every rank's shard, and
    early stopping sees the validation RMSE of all users, not only rank 0's."""
    shared_path("ml-100k", "u.data")
    data = load_dataset("ml-100k", data_dir=shared_data_dir())
    split = random_split(data, test_size=0.1, seed=1)
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    split.train.to_frame().to_csv(train, index=False)
    split.test.to_frame().to_csv(valid, index=False)
    out, ckpt = tmp_path / "mf", tmp_path / "ckpt"
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="120", OMP_NUM_THREADS="1")
    proc = subprocess.run([*RECFORGE, "train", "mf", "--data", str(train), "--valid",
                           str(valid), "--out", str(out), "--nproc", "2", "-p", "epochs=4",
                           "--seed", "0", "--checkpoint-dir", str(ckpt), "--keep-checkpoint"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = Recommender.load(out)
    values = split.train.value
    assert model.mean_ == pytest.approx(float(values.astype(np.float64).mean()), rel=1e-6)
    assert tuple(model.rating_range_) == (float(values.min()), float(values.max()))
    assert model.seen_.nnz == len(split.train)
    # the logged validation RMSE is the one of the whole validation set
    tr, va = read_many([train, valid])
    whole = evaluate(model, tr, va, metrics="rmse")["RMSE"]
    best = model.history_[model.best_epoch_ - 1]
    assert best["rmse"] == pytest.approx(whole, rel=1e-4)
    # the checkpoint's best-epoch weights (what a resumed run restores) hold every rank's
    # users, equal to the model's own
    import torch

    saved_best = torch.load(ckpt / "checkpoint.pt", weights_only=True)["best"]
    for name in ("user.weight", "user_bias.weight"):
        torch.testing.assert_close(saved_best[name], model.module_.state_dict()[name])


_RESUME_SCRIPT = """
import logging
import sys
from recforge.data.readers import read_many
from recforge.models import create_model
from recforge.training import distributed

logging.basicConfig(level=logging.INFO)
ctx = distributed.init_from_environment(device="cpu")
ckpt, out, crash = sys.argv[1], sys.argv[2], sys.argv[3] == "crash"
train, valid = read_many([sys.argv[4], sys.argv[5]], shard=ctx.shard)


class Crash(Exception):
    pass


crashed = 0
for case in sys.argv[6:]:  # each case: model,metric,sparse; all in one job (one start-up)
    name, metric, sparse = case.split(",")
    params = {"optimizer": "adagrad", "learning_rate": 0.1} if sparse == "on" else {}
    model = create_model(name, embedding_dim=8, epochs=5, batch_size=128, seed=2,
                         **{"learning_rate": 0.02, **params}, valid_metric=metric)
    tables = []

    def callback(record):
        tables.append(model.module_.user.weight.shape[0])
        if crash and record["epoch"] == 3:
            raise Crash  # raised alike on both ranks, after epoch 3's checkpoint

    try:
        model.fit(train, valid, distributed=ctx.shard, sharded=True,
                  checkpoint_dir=f"{ckpt}-{case}", resume=True, epoch_callback=callback,
                  sparse_updates=sparse)
    except Crash:
        crashed += 1
        continue
    print(f"{case} rank {ctx.rank} user rows while training {set(tables)} of {model.n_users}",
          flush=True)
    if ctx.is_main:
        model.save(f"{out}-{case}")
distributed.shutdown(wait_for_others=True)
if crashed:  # the resumed job is a new process, as after a real crash
    raise SystemExit(f"crash after epoch 3 in {crashed} cases")
"""

_RESUME_CASES = ("bpr,ndcg@10,off", "mf,rmse,off", "mf,rmse,on")


@pytest.mark.slow
def test_sharded_resume_matches_uninterrupted(tmp_path):
    """Each rank trains a compact table of its own users; a checkpoint holds every rank's
    rows and optimizer moments, so a job stopped after epoch 3 and resumed (a new job)
    ends with the same model as a job never stopped (also its best epoch's weights, chosen
    on validation). For bpr and mf, also with row-sparse updates of the user tables
    (Adagrad); the three cases share each job to pay torchrun's start-up once."""
    import torch
    from conftest import event_frame

    frame = event_frame(4000, seed=5)
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame.iloc[:3400].to_csv(train, index=False)
    frame.iloc[3400:].to_csv(valid, index=False)
    script = tmp_path / "job.py"
    script.write_text(_RESUME_SCRIPT)
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="60", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))

    def job(ckpt: Path, out: Path, crash: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node", "2", str(script), str(ckpt), str(out),
                               "crash" if crash else "-", str(train), str(valid),
                               *_RESUME_CASES], capture_output=True, text=True, timeout=300,
                              env=env)

    stopped = job(tmp_path / "a", tmp_path / "model-a", crash=True)
    assert stopped.returncode != 0 and "crash after epoch 3 in 3 cases" in stopped.stderr
    assert not list(tmp_path.glob("model-a-*"))
    resumed = job(tmp_path / "a", tmp_path / "model-a", crash=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for case in _RESUME_CASES:  # it did resume (not retrain from scratch)
        assert f"a-{case} after epoch 3" in resumed.stderr, resumed.stderr[-3000:]
    clean = job(tmp_path / "b", tmp_path / "model-b", crash=False)
    assert "resumed from" not in clean.stderr
    assert clean.returncode == 0, clean.stderr[-3000:]
    drop = ("seconds", "sampling_seconds")
    for case in _RESUME_CASES:
        a = Recommender.load(tmp_path / f"model-a-{case}")
        b = Recommender.load(tmp_path / f"model-b-{case}")
        assert len(b.history_) == 5, case
        assert ([{k: v for k, v in r.items() if k not in drop} for r in a.history_]
                == [{k: v for k, v in r.items() if k not in drop} for r in b.history_]), case
        for name, value in b.module_.state_dict().items():
            torch.testing.assert_close(a.module_.state_dict()[name], value, rtol=0, atol=0)
        # during training a rank's user table held only its own users' rows
        n_users = a.n_users
        # (found anywhere in the output: the ranks' lines may interleave there)
        rows = re.findall(re.escape(case) + r" rank (\d) user rows while training "
                          r"\{(\d+)\} of (\d+)", clean.stdout)
        assert sorted(r[0] for r in rows) == ["0", "1"], case
        assert all(int(r[2]) == n_users for r in rows), case
        sizes = sorted(int(r[1]) for r in rows)
        assert sum(sizes) == n_users and 0 < sizes[0] < n_users, case


@pytest.mark.slow
def test_unsharded_model_validates_and_checkpoints_under_ddp(ml100k_split, tmp_path):
    """lightgcn reads all events on every rank: each rank validates half of the users and
    the figures are combined, and every epoch writes a checkpoint (this path once crashed
    after the first epoch)."""
    train, test = ml100k_split
    out, ckpt = tmp_path / "lightgcn", tmp_path / "ckpt"
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="120", OMP_NUM_THREADS="1")
    proc = subprocess.run([*RECFORGE, "train", "lightgcn", "--data", str(train), "--valid",
                           str(test), "--out", str(out), "--nproc", "2", "-p", "epochs=2",
                           "-p", "n_layers=1", "--seed", "0", "--checkpoint-dir", str(ckpt),
                           "--keep-checkpoint"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = Recommender.load(out)
    assert [r["epoch"] for r in model.history_] == [1, 2]
    assert all(r["ndcg@20"] > 0 for r in model.history_)
    # each rank validated half of the users; combined, the figure of all of them (the
    # kept weights are the best epoch's)
    tr, va = read_many([train, test])
    whole = evaluate(model, tr, va, metrics="ndcg@20").summary["NDCG@20"]
    assert max(r["ndcg@20"] for r in model.history_) == pytest.approx(whole, abs=1e-6)
    # "steps" counts one rank's optimizer steps (each rank takes half of the global batch
    # and half of the events), not their sum over the ranks
    (tr,) = read_many([train])
    per_rank = -(-(len(tr) // 2) // (model.batch_size // 2))
    assert [r["steps"] for r in model.history_] == [per_rank, per_rank]
    log = [json.loads(line) for line in (ckpt / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


@pytest.mark.slow
def test_a_killed_rank_fails_the_whole_job(ml100k_split, tmp_path):
    psutil = pytest.importorskip("psutil")
    train, _ = ml100k_split
    ckpt = tmp_path / "ckpt"
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="30")
    job = subprocess.Popen([*RECFORGE, "train", "bpr", "--data", str(train), "--out",
                            str(tmp_path / "m"), "--nproc", "2", "--checkpoint-dir", str(ckpt),
                            "-p", "epochs=100000", "-p", "batch_size=256"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (ckpt / "train_log.jsonl").exists():  # training is under way
            assert job.poll() is None, job.stdout.read()
            assert time.time() < deadline, "training did not start"
            time.sleep(0.2)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True)
                   if p.environ().get("LOCAL_RANK") == "1"]
        assert len(workers) == 1
        workers[0].send_signal(signal.SIGKILL)
        output, _ = job.communicate(timeout=90)  # no hang: the launcher stops the job
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "distributed training failed" in output
    alive = [p for p in psutil.process_iter(["environ"])
             if (p.info.get("environ") or {}).get("TORCHELASTIC_RUN_ID")
             and str(tmp_path) in " ".join(p.cmdline())]
    assert not alive
    assert not (tmp_path / "m").exists()  # no half-written model


_HYBRID_SCRIPT = """
import json
import sys
import numpy as np
import pandas as pd
import torch
from recforge.data.features import categorical, combine
from recforge.data.interactions import Interactions
from recforge.data.sharding import user_shard
from recforge.models import create_model
from recforge.training import distributed

ctx = distributed.init_from_environment(device="cpu")
rng = np.random.default_rng(0)
key = rng.choice(300 * 80, size=4000, replace=False)
data = Interactions.from_frame(pd.DataFrame({"user": key // 80, "item": key % 80}))
users, items = data.users.ids, data.items.ids
user_features = combine(categorical(users, [f"g{u % 3}" for u in users], "group"),
                        categorical(users, [f"a{u % 7}" for u in users], "age"))
item_features = categorical(items, [f"k{i % 5}|k{i % 4 + 5}" for i in items], "genre")
model = create_model("hybrid_bpr", embedding_dim=8, epochs=3, batch_size=256, seed=1)
model.fit(user_shard(data, *ctx.shard), item_features=item_features,
          user_features=user_features, distributed=ctx.shard, sharded=True)
torch.save(model.module_.state_dict(), sys.argv[1] + f"/rank{ctx.rank}.pt")
if ctx.is_main:
    print("LOSSES " + json.dumps([r["loss"] for r in model.history_]), flush=True)
distributed.shutdown(wait_for_others=True)
"""


@pytest.mark.slow
def test_hybrid_with_user_features_trains_on_sharded_ranks(tmp_path):
    """``hybrid_bpr`` with user features under DDP: its user tower has bias tables that
    no loss reads (a user's bias does not rank that user's items), which once made DDP
    fail at the second step waiting for their gradients. They are frozen now; the job
    trains, and every rank ends with the same whole model."""
    import torch

    script = tmp_path / "job.py"
    script.write_text(_HYBRID_SCRIPT)
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="60", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("LOSSES ")]
    losses = json.loads(line[len("LOSSES "):])
    assert losses[-1] < losses[0]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and "users.feat_bias.weight" in a
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0)
    assert not a["users.id_bias.weight"].any() and not a["users.feat_bias.weight"].any()
    assert a["items.feat_bias.weight"].any()  # the item side's biases are trained


def test_local_user_tables_compact_clip_and_restore(random_data, tmp_path):
    """In one gloo process: the compact table holds the rank's rows and is looked up by
    global user index; clipping by the norm over all ranks equals torch's clipping; the
    whole tables come back unchanged."""
    import torch
    import torch.distributed as dist

    from recforge.models import create_model
    from recforge.training.ddp import LocalUserTables

    model = create_model("bpr", embedding_dim=4, epochs=1, batch_size=64).fit(random_data)
    assert all(p.grad is None for p in model.module_.parameters())  # freed after training
    before = {k: v.clone() for k, v in model.module_.state_dict().items()}
    batch = next(iter(model._sampler(random_data).epoch(np.random.default_rng(0))))
    reference = model.training_loss(batch)
    reference.backward()
    ref_grads = [p.grad.clone() for p in model.module_.parameters()]
    torch.nn.utils.clip_grad_norm_(model.module_.parameters(), 0.01)
    clipped = [p.grad.clone() for p in model.module_.parameters()]
    model.module_.zero_grad(set_to_none=True)

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        tables = LocalUserTables(model, rank=0, world=1)
        assert tables.compact and tables.names == ["user.weight"]
        assert model.module_.user.weight.shape == (model.n_users, 4)
        assert model.module_.user.weight is not before["user.weight"]
        loss = model.training_loss(batch)  # global user indices, through the pre-hook
        assert torch.equal(loss, reference)
        loss.backward()
        for p, g in zip(model.module_.parameters(), ref_grads, strict=True):
            torch.testing.assert_close(p.grad, g)
        tables.clip_gradients(model.module_, 0.01)
        for p, g in zip(model.module_.parameters(), clipped, strict=True):
            torch.testing.assert_close(p.grad, g)
        tables.restore_whole_tables(model.module_)
        tables.gather()
        assert not model.module_.user._forward_pre_hooks
        for k, v in model.module_.state_dict().items():
            torch.testing.assert_close(v, before[k])
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_machines_join_through_the_rendezvous(tmp_path):
    """The multi-node recipe of docs/scaling.md: one ``torchrun --nnodes 2`` per machine
    (here two on this one, each launching one process), joined by the c10d rendezvous at
    one endpoint. The job trains the same model as ``--nproc 2`` on one machine."""
    import socket

    import torch
    from conftest import event_frame

    data = tmp_path / "events.csv"
    event_frame(3000, seed=2).to_csv(data, index=False)
    params = ["-p", "epochs=3", "-p", "batch_size=256", "--seed", "1"]
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    with socket.socket() as s:  # a free port for the rendezvous endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = tmp_path / "nodes"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "recforge-test",
                "--max-restarts", "0", "-m", "recforge", "train", "bpr", "--data", str(data),
                "--out", str(nodes), *params]
    jobs = [subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]
    try:
        outputs = [job.communicate(timeout=240) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
    for job, (_, err) in zip(jobs, outputs, strict=True):
        assert job.returncode == 0, err[-3000:]
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("in 2 processes (gloo)") == 1  # global rank 0 reports and saves
    one = tmp_path / "one-machine"
    proc = subprocess.run([*RECFORGE, "train", "bpr", "--data", str(data), "--out", str(one),
                           "--nproc", "2", *params], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = Recommender.load(nodes), Recommender.load(one)
    assert a.history_[-1]["steps"] == b.history_[-1]["steps"]
    for name, value in b.module_.state_dict().items():
        torch.testing.assert_close(a.module_.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.slow
def test_uneven_shards_are_reported_and_a_rank_of_new_validation_users_adds_nothing(tmp_path):
    """Rank 1 owns few training users and only new validation users: the job trains, says
    that every rank takes the smallest shard, and validates over rank 0's users (a rank
    with no evaluable user used to fail the whole job)."""
    import pandas as pd

    from recforge.data.sharding import owner_of_ids

    rng = np.random.default_rng(0)
    users = np.arange(1, 400)
    owner = owner_of_ids(users, 2)
    rank0, rank1 = users[owner == 0], users[owner == 1]
    rows = [(u, i) for u in rank0[:150] for i in rng.choice(60, 12, replace=False)]
    rows += [(u, i) for u in rank1[:3] for i in rng.choice(60, 12, replace=False)]
    train = tmp_path / "train.csv"
    pd.DataFrame(rows, columns=["user", "item"]).to_csv(train, index=False)
    fresh = [u for u in range(10_000, 10_400) if owner_of_ids(np.array([u]), 2)[0] == 1][:5]
    valid_rows = [(u, int(rng.integers(60))) for u in rank0[:40]]
    valid_rows += [(u, int(rng.integers(60))) for u in fresh]
    valid = tmp_path / "valid.csv"
    pd.DataFrame(valid_rows, columns=["user", "item"]).drop_duplicates().to_csv(valid,
                                                                                index=False)
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="120", OMP_NUM_THREADS="1")
    proc = subprocess.run([*RECFORGE, "train", "bpr", "--data", str(train), "--valid",
                           str(valid), "--out", str(tmp_path / "m"), "--nproc", "2",
                           "-p", "epochs=2", "-p", "batch_size=64", "-p", "embedding_dim=8"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "shards are uneven" in proc.stderr + proc.stdout
    model = Recommender.load(tmp_path / "m")
    assert all("ndcg@20" in h for h in model.history_)


_CHECKS_SCRIPT = """
import sys
import numpy as np
import pandas as pd
from recforge.data.readers import read_many
from recforge.errors import RecforgeError
from recforge.models import create_model
from recforge.training import distributed

ctx = distributed.init_from_environment(device="cpu")
where = sys.argv[1]
train_csv, valid_csv = where + "/train.csv", where + "/valid.csv"


def report(case, outcome):  # a file per rank: the ranks' stdout lines may interleave
    with open(f"{where}/rank{ctx.rank}.txt", "a") as f:
        f.write(f"CASE {case}: {' '.join(outcome.split())}" + chr(10))


def run(case, work):
    try:
        report(case, "OK " + str(work()))
    except RecforgeError as exc:
        report(case, f"ERR {type(exc).__name__}: {exc}")


def new_valid_users():
    # every validation user id shifted out of the training data's id space
    train, valid = read_many([train_csv, where + "/valid_new.csv"], shard=ctx.shard)
    epochs = []
    model = create_model("bpr", embedding_dim=4, epochs=2, batch_size=128, seed=0)
    model.fit(train, valid, distributed=ctx.shard, sharded=True,
              epoch_callback=lambda r: epochs.append(r["epoch"]))
    return epochs


def rmse_weight():
    # rank 0 also holds 600 validation events of users without training events, which the
    # evaluator skips: the logged RMSE is still the one of the whole validation set
    from recforge.evaluation import evaluate

    train, valid = read_many([train_csv, where + "/valid_mixed.csv"], shard=ctx.shard)
    model = create_model("mf", embedding_dim=4, epochs=2, batch_size=128, seed=0)
    model.fit(train, valid, distributed=ctx.shard, sharded=True)
    logged = model.history_[model.best_epoch_ - 1]["rmse"]
    whole = evaluate(model, *read_many([train_csv, where + "/valid_mixed.csv"]),
                     metrics="rmse")["RMSE"]
    return f"logged {logged:.6f} whole {whole:.6f}"


def foreign_users():
    # every rank holds all events, but says each holds its own users' shard
    (train,) = read_many([train_csv])
    create_model("bpr", embedding_dim=4, epochs=1, batch_size=128).fit(
        train, distributed=ctx.shard, sharded=True)


def shards_unsharded():
    # each rank holds its users' shard, but says every rank holds all events
    (train,) = read_many([train_csv], shard=ctx.shard)
    create_model("bpr", embedding_dim=4, epochs=1, batch_size=128).fit(
        train, distributed=ctx.shard, sharded=False)


for case in sys.argv[2:]:
    run(case, globals()[case])
distributed.shutdown(wait_for_others=True)
"""


def _checks_job(tmp_path: Path, *cases: str) -> dict[str, list[str]]:
    """Run the cases of ``_CHECKS_SCRIPT`` in one 2-process gloo job; each case's line per
    rank (the ranks' errors are raised alike, so the job goes on to the next case)."""
    from conftest import event_frame

    frame = event_frame(3000, seed=4)
    frame.iloc[:2500].to_csv(tmp_path / "train.csv", index=False)
    valid = frame.iloc[2500:].copy()
    valid.to_csv(tmp_path / "valid.csv", index=False)
    valid.assign(user=valid["user"] + 10_000).to_csv(tmp_path / "valid_new.csv", index=False)
    import pandas as pd

    from recforge.data.sharding import owner_of_ids

    cand = np.arange(5000, 9000)
    new = cand[owner_of_ids(cand, 2) == 0][:30]  # users without training events, on rank 0
    extra = pd.DataFrame({"user": np.repeat(new, 20), "item": np.tile(np.arange(1, 21), 30),
                          "rating": np.random.default_rng(0).integers(1, 6, 600).astype(float),
                          "timestamp": 1})
    pd.concat([valid, extra]).to_csv(tmp_path / "valid_mixed.csv", index=False)
    script = tmp_path / "job.py"
    script.write_text(_CHECKS_SCRIPT)
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="60", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", str(script), str(tmp_path), *cases],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines: dict[str, list[str]] = {}
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        for m in re.finditer(r"^CASE (\w+): (.*)$", text, re.MULTILINE):
            lines.setdefault(m.group(1), []).append(m.group(2))
    assert sorted(lines) == sorted(cases) and all(len(v) == 2 for v in lines.values()), lines
    return lines


@pytest.mark.slow
def test_ddp_checks_of_data_and_settings_fail_alike_on_every_rank(tmp_path):
    """Clear errors raised on every rank together (the job neither hangs nor aborts):
    validation data whose users no rank knows is refused before the first epoch (it used
    to score 0.0 every epoch, stop early and keep epoch 1's weights); data that does not
    match ``sharded=`` is refused. Also: sharded RMSE is the whole validation set's."""
    lines = _checks_job(tmp_path, "new_valid_users", "rmse_weight", "foreign_users",
                        "shards_unsharded")
    for line in lines["new_valid_users"]:
        assert line.startswith("ERR DataError") and "validation users is known" in line, line
    # sharded RMSE weighted by the events predicted, not by each rank's len(valid)
    for line in lines["rmse_weight"]:
        m = re.fullmatch(r"OK logged ([\d.]+) whole ([\d.]+)", line)
        assert m is not None, line
        assert float(m.group(1)) == pytest.approx(float(m.group(2)), rel=1e-4), line
    # Python API: data that does not match sharded= (an IndexError, or a gloo abort)
    for line in lines["foreign_users"]:
        assert line.startswith("ERR DataError") and "users that another rank owns" in line
    for line in lines["shards_unsharded"]:
        assert line.startswith("ERR DataError") and "different training data" in line


def test_a_sequence_model_validates_its_next_items_over_both_ranks(tmp_path):
    """sasrec under DDP: each rank takes the next-item figure of every other validation
    user; combined, it is the figure of all of them, as evaluate_next_item gives it."""
    import pandas as pd

    from recforge.evaluation.next_item import evaluate_next_item

    rng = np.random.default_rng(0)
    n_users, n_items, length = 90, 30, 10
    start = rng.integers(0, n_items, n_users)
    frame = pd.DataFrame({"user": np.repeat(np.arange(n_users), length),
                          "item": ((start[:, None] + np.arange(length)) % n_items).ravel(),
                          "timestamp": np.tile(np.arange(length), n_users)})
    last = frame.groupby("user").cumcount() == length - 1
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame[~last].to_csv(train, index=False)
    frame[last].to_csv(valid, index=False)
    out = tmp_path / "sasrec"
    env = dict(os.environ, RECFORGE_DIST_TIMEOUT="120", OMP_NUM_THREADS="1")
    proc = subprocess.run([*RECFORGE, "train", "sasrec", "--data", str(train), "--valid",
                           str(valid), "--out", str(out), "--nproc", "2", "-p", "epochs=3",
                           "-p", "embedding_dim=16", "-p", "max_len=12", "-p", "batch_size=32",
                           "-p", "valid_metric=ndcg@10", "--seed", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = Recommender.load(out)
    figures = [r["ndcg@10"] for r in model.history_]
    assert len(figures) == 3 and max(figures) > 0
    tr, va = read_many([train, valid])
    again = evaluate_next_item(model, tr, va, metrics="ndcg@10", by_length=None)
    assert max(figures) == pytest.approx(float(next(iter(again.summary.values()))),
                                         abs=1e-6)
