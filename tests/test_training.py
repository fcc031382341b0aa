"""The shared training engine: losses, sampler, early stopping, checkpoints and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import ConfigError
from recforge.data.interactions import Interactions
from recforge.models import create_model
from recforge.training import losses
from recforge.training.batches import EpochSampler
from recforge.training.contracts import FitContext
from recforge.training.trainer import Trainer, resolve_device


def test_losses_by_hand():
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([0.0, 0.0])
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(0.5)) / 2
    assert losses.bpr(pos, neg).item() == pytest.approx(expected)
    assert losses.bpr(pos, neg.unsqueeze(1)).item() == pytest.approx(expected)
    # BCE: two positives, two negatives, logits 0 -> log 2 each.
    assert losses.bce(torch.zeros(2), torch.zeros(2)).item() == pytest.approx(math.log(2))
    # Softmax of [0, 0, 0]: -log(1/3).
    assert losses.sampled_softmax(torch.zeros(1), torch.zeros(1, 2)).item() == pytest.approx(
        math.log(3))
    assert losses.mse(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])).item() == 0.5
    assert losses.l2(torch.ones(2, 3)).item() == pytest.approx(0.5 * 6 / 2)


def test_sum_of_squares_matches_autograd_of_pow():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(losses.sum_of_squares, (x,))
    a, b = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    losses.sum_of_squares(a).mul(3.0).backward()
    b.pow(2).sum().mul(3.0).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    y = torch.randn(4096, 64, generator=g)  # float32: one dot product, close to pow's sum
    assert losses.sum_of_squares(y).item() == pytest.approx(y.pow(2).sum().item(), rel=1e-4)
    ints = torch.arange(4)
    assert losses.sum_of_squares(ints).item() == 14  # other dtypes: the plain expression
    # l2 over several tensors: half the sum of squares per row of the batch
    t = [torch.randn(8, 3, generator=g) for _ in range(3)]
    assert losses.l2(*t).item() == pytest.approx(
        0.5 * sum(float(v.pow(2).sum()) for v in t) / 8, rel=1e-5)


@pytest.mark.parametrize("n_negatives,reg", [(1, 0.01), (3, 0.5), (2, 0.0)])
def test_bpr_dot_matches_the_expression_it_fuses(n_negatives, reg):
    g = torch.Generator().manual_seed(n_negatives)
    users = torch.randn(7, 4, dtype=torch.float64, generator=g, requires_grad=True)
    table = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    # repeated rows: a row read by several events (and as positive and negative) sums them
    items = torch.tensor([[0, 1] + [1] * (n_negatives - 1), [2, 0] + [4] * (n_negatives - 1),
                          [2, 3] + [0] * (n_negatives - 1)] * 2 + [[4] * (1 + n_negatives)])

    def reference(u, t):
        pos, neg = t[items[:, 0]], t[items[:, 1:]]
        return (losses.bpr((u * pos).sum(-1), (u.unsqueeze(1) * neg).sum(-1))
                + reg * losses.l2(u, pos, neg.flatten(0, 1)))

    fused = losses.bpr_dot(users, table, items, reg)
    assert fused.item() == pytest.approx(reference(users, table).item(), rel=1e-12)
    got = torch.autograd.grad(fused * 1.7, (users, table))
    want = torch.autograd.grad(reference(users, table) * 1.7, (users, table))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert got[1][1].abs().sum() > 0 and got[1][3].abs().sum() > 0
    assert torch.autograd.gradcheck(lambda u, t: losses.bpr_dot(u, t, items, reg),
                                    (users, table))
    with pytest.raises(ValueError, match="positive first"):
        losses.bpr_dot(users, table, items[:, 0])


def test_sampler_negatives_exclude_positives(random_data):
    sampler = EpochSampler(random_data, batch_size=64, n_negatives=3)
    csr = random_data.binary_csr
    seen = 0
    for batch in sampler.epoch(np.random.default_rng(0)):
        u = batch["users"].numpy()
        neg = batch["negatives"].numpy()
        assert neg.shape == (len(u), 3)
        assert not np.asarray(csr[np.repeat(u, 3), neg.ravel()]).any()
        seen += len(u)
    assert seen == len(random_data)
    assert sampler.steps_per_epoch() == -(-len(random_data) // 64)


def test_sampler_batches_carry_each_events_value():
    """Each event comes once per epoch, its user, item and exact value together (the
    sampler keeps them as one row and reorders the rows)."""
    rng = np.random.default_rng(5)
    n = 500
    frame = pd.DataFrame({"user": rng.integers(0, 30, n), "item": rng.permutation(n),
                          "rating": rng.normal(0, 3, n).astype(np.float32)})
    frame.loc[0, "rating"] = -0.0
    frame.loc[1, "rating"] = 1e-30
    data = Interactions.from_frame(frame)
    expected = {(int(u), int(i)): v for u, i, v in
                zip(data.user, data.item, data.values_or_ones(), strict=True)}
    got = {}
    for batch in EpochSampler(data, batch_size=64).epoch(np.random.default_rng(0)):
        assert batch["users"].dtype == batch["items"].dtype == torch.int64
        assert batch["values"].dtype == torch.float32 and batch["values"].is_contiguous()
        for u, i, v in zip(batch["users"].tolist(), batch["items"].tolist(),
                           batch["values"].numpy(), strict=True):
            assert (u, i) not in got
            got[(u, i)] = v
    assert got.keys() == expected.keys()
    assert all(np.float32(got[k]).tobytes() == np.float32(v).tobytes()
               for k, v in expected.items())


def test_sampler_shards_are_disjoint(random_data):
    a = EpochSampler(random_data, 50, shard=(0, 2))
    b = EpochSampler(random_data, 50, shard=(1, 2))
    ka = {(int(u), int(i)) for bt in a.epoch(np.random.default_rng(3))
          for u, i in zip(bt["users"], bt["items"], strict=True)}
    kb = {(int(u), int(i)) for bt in b.epoch(np.random.default_rng(3))
          for u, i in zip(bt["users"], bt["items"], strict=True)}
    assert not ka & kb and len(ka | kb) == len(random_data)


def test_trainer_rejects_bad_settings():
    with pytest.raises(ConfigError, match="optimizer"):
        Trainer(epochs=1, learning_rate=0.1, optimizer="lbfgs")
    with pytest.raises(ConfigError, match="lr_schedule"):
        Trainer(epochs=1, learning_rate=0.1, lr_schedule="wild")
    with pytest.raises(ConfigError, match="epochs"):
        Trainer(epochs=0, learning_rate=0.1)
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_training_reduces_loss_and_logs(random_data, tmp_path):
    model = create_model("bpr", embedding_dim=8, epochs=5, batch_size=128, learning_rate=0.05,
                         seed=1)
    model.fit(random_data, checkpoint_dir=tmp_path / "ckpt")
    losses_ = [h["loss"] for h in model.history_]
    assert len(losses_) == 5 and losses_[-1] < losses_[0]
    lines = (tmp_path / "ckpt" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4, 5]
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()


def test_early_stopping_restores_best(random_data):
    from recforge.data.split import random_split

    split = random_split(random_data, seed=0)
    model = create_model("bpr", embedding_dim=8, epochs=30, batch_size=64, learning_rate=0.3,
                         patience=2, seed=0)
    model.fit(split.train, split.test)
    hist = model.history_
    scores = [h["ndcg@20"] for h in hist]
    assert len(hist) < 30  # stopped early
    assert model.best_epoch_ == int(np.argmax(scores)) + 1
    from recforge.evaluation import evaluate

    now = evaluate(model, split.train, split.test, metrics="ndcg@20")["NDCG@20"]
    assert now == pytest.approx(max(scores), abs=1e-6)


def test_resume_after_kill_matches_uninterrupted(random_data, tmp_path):
    """A run killed after some epochs and resumed ends with the same weights as a run that
    was never interrupted."""
    train_csv = tmp_path / "train.csv"
    random_data.to_frame().to_csv(train_csv, index=False)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from recforge.data.readers import read_csv
        from recforge.models import create_model
        from recforge.models.gradient import GradientRecommender
        data = read_csv({str(train_csv)!r})
        slow = len(sys.argv) > 2
        model = create_model("bpr", embedding_dim=8, epochs=6, batch_size=256, seed=3,
                             learning_rate=0.05)
        if slow:  # give the test time to kill us between epochs
            orig = model.after_backward
            model.after_backward = lambda: (time.sleep(0.02), orig())
        model.fit(data, checkpoint_dir=sys.argv[1], resume=True)
        model.save(sys.argv[1] + "-model")
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ckpt = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt), "slow"], env=env)
    log = ckpt / "train_log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(log.read_text().splitlines())
    assert 2 <= done < 6, "the run should have been killed part-way"
    subprocess.run([sys.executable, str(script), str(ckpt)], env=env, check=True)
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, str(script), str(clean)], env=env, check=True)

    from recforge.models import Recommender

    a = Recommender.load(str(ckpt) + "-model")
    b = Recommender.load(str(clean) + "-model")
    users = np.arange(random_data.n_users)
    assert torch.equal(a.score(users), b.score(users))
    assert len(a.history_) == 6


def test_resume_refuses_other_settings(random_data, tmp_path):
    create_model("bpr", embedding_dim=4, epochs=1, seed=0).fit(random_data,
                                                               checkpoint_dir=tmp_path)
    other = create_model("bpr", embedding_dim=8, epochs=2, seed=0)
    with pytest.raises(ConfigError, match="other hyperparameters"):
        other.fit(random_data, checkpoint_dir=tmp_path, resume=True)


def test_resume_refuses_other_or_missing_validation_data_and_epoch_length(random_data,
                                                                        tmp_path):
    """The checkpoint's best epoch and early-stopping state were measured on its validation
    data: a resume without it (or with other data, or other epoch lengths) is refused, not
    ended by restoring weights chosen on data the run no longer has."""
    from recforge.data.split import random_split

    split = random_split(random_data, test_size=0.2, seed=0)
    other = random_split(random_data, test_size=0.2, seed=1)

    def run(valid, resume, stop_after=None, max_steps=None):
        model = create_model("bpr", embedding_dim=4, epochs=3, batch_size=64, seed=0)
        return model.fit(split.train, valid, checkpoint_dir=tmp_path, resume=resume,
                         epoch_callback=_interrupt_after(stop_after), max_steps_per_epoch=max_steps)

    with pytest.raises(KeyboardInterrupt):
        run(split.test, resume=False, stop_after=1)
    for valid, steps in ((None, None), (other.test, None), (split.test, 2)):
        with pytest.raises(ConfigError, match="other hyperparameters or other training"):
            run(valid, resume=True, max_steps=steps)
    assert len(run(split.test, resume=True).history_) == 3


@pytest.mark.parametrize("n_queries,chunk", [(1000, 1 << 22), (300_000, 1 << 22),
                                             (300_000, 70_000)])
def test_positive_lookup_agrees_with_set_membership(n_queries, chunk, monkeypatch):
    from recforge.data import sampling
    from recforge.data.sampling import is_positive

    monkeypatch.setattr(sampling, "SORTED_QUERY_CHUNK", chunk)
    rng = np.random.default_rng(n_queries)
    keys = np.sort(rng.choice(2000 * 700, 150_000, replace=False)).astype(np.int64)
    users = rng.integers(0, 2000, (n_queries // 2, 2))
    items = rng.integers(0, 700, (n_queries // 2, 2))
    got = is_positive(keys, 700, users, items)
    assert got.shape == users.shape
    np.testing.assert_array_equal(got, np.isin(users * 700 + items, keys))
    assert 0.05 < got.mean() < 0.3


@pytest.mark.parametrize("popularity", [False, True])
def test_negatives_in_parts_are_the_same_on_any_number_of_threads(random_data, monkeypatch,
                                                                   popularity):
    from recforge.data import sampling
    from recforge.errors import DataError

    monkeypatch.setattr(sampling, "NEGATIVE_CHUNK_ROWS", 97)
    csr = random_data.binary_csr
    users = np.repeat(random_data.user, 3)  # 3x the events: many parts
    pop = random_data.item_counts() + 1.0 if popularity else None
    draws = [sampling.sample_negatives(csr, users, 2, rng=np.random.default_rng(7),
                                       popularity=pop, threads=t) for t in (1, 3)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert draws[0].shape == (len(users), 2)
    assert not np.asarray(csr[np.repeat(users, 2), draws[0].ravel()]).any()
    # parts of the same users differ: each part has its own random stream
    same = np.tile(random_data.user[:97], 3)
    parts = sampling.sample_negatives(csr, same, 2, rng=np.random.default_rng(7), threads=2)
    assert not np.array_equal(parts[:97], parts[97:194])
    # a part's error reaches the caller
    full = sampling.sp.csr_matrix(np.ones((3, 4), dtype=bool))
    with pytest.raises(DataError, match="cannot sample negatives"):
        sampling.sample_negatives(full, np.zeros(300, dtype=np.int64), 1,
                                  rng=np.random.default_rng(0), threads=2)


def test_max_steps_per_epoch_cuts_every_epoch_short(random_data):
    from recforge.models.mf import BPR

    model = BPR(embedding_dim=8, epochs=2, batch_size=16, seed=0)
    model.fit(random_data, max_steps_per_epoch=3)
    assert [h["steps"] for h in model.history_] == [3, 3]
    assert all(0 <= h["sampling_seconds"] <= h["seconds"] for h in model.history_)
    full = BPR(embedding_dim=8, epochs=1, batch_size=16, seed=0).fit(random_data)
    assert full.history_[0]["steps"] == -(-len(random_data) // 16) > 3


def test_min_steps_raises_the_epochs_of_a_small_log_only_when_epochs_is_auto(random_data):
    """``epochs=None``: ``auto_epochs``, raised so the fit makes ``min_steps`` optimizer
    steps (capped at MAX_EPOCH_FACTOR times); an explicit ``epochs`` is never changed."""
    from recforge.models.mf import BPR

    steps = -(-len(random_data) // 64)  # 332 events: 6 steps an epoch
    auto = BPR(embedding_dim=4, epochs=None, min_steps=100 * steps - 1, batch_size=64,
               valid_metric=None, seed=0)
    assert auto.fit_epochs(steps) == 100 > BPR.auto_epochs
    capped = BPR.MAX_EPOCH_FACTOR * BPR.auto_epochs
    assert BPR(epochs=None, min_steps=10 ** 9).fit_epochs(1) == capped
    assert BPR(epochs=None, min_steps=0).fit_epochs(1) == BPR.auto_epochs
    assert BPR(epochs=None, min_steps=5).fit_epochs(1) == BPR.auto_epochs  # already beyond
    assert BPR(epochs=3, min_steps=10 ** 6).fit_epochs(1) == 3
    assert BPR(epochs=None, min_steps=10 ** 6).fit_epochs(None) == BPR.auto_epochs  # private
    # a model without auto_epochs starts from its default epochs (mf: 50, not the base's 10)
    mf = create_model("mf", epochs=None)
    assert mf.fit_epochs(1) == mf.fit_epochs(None) == create_model("mf").epochs == 50

    class Short(BPR):  # a class whose auto epochs the floor visibly raises
        auto_epochs = 2

    model = Short(embedding_dim=4, epochs=None, min_steps=2 * steps + 1, batch_size=64,
                  valid_metric=None, seed=0).fit(random_data)
    assert len(model.history_) == 3 and sum(h["steps"] for h in model.history_) == 3 * steps
    assert model.get_params()["epochs"] is None
    # the learning-rate schedule runs over the raised count: cosine ends near zero
    assert model.history_[-1]["lr"] < model.history_[0]["lr"]
    # timing runs (max_steps_per_epoch) count the steps they make
    cut = Short(embedding_dim=4, epochs=None, min_steps=2 * steps + 1, batch_size=64,
                valid_metric=None, seed=0).fit(random_data, max_steps_per_epoch=2)
    assert len(cut.history_) == steps + 1
    with pytest.raises(ConfigError, match="min_steps"):
        BPR(min_steps=-1).fit(random_data)


def test_trainer_keeps_freed_memory_for_reuse_on_glibc():
    """The allocator setting the trainer applies on CPU (large blocks reused instead of
    unmapped and page-faulted again every step), and its opt-out; each in a fresh process
    since it is process-wide."""
    import os
    import platform
    import subprocess
    import sys

    code = ("from recforge.training.allocator import retain_freed_memory as r; "
            "print(r(), r())")

    def run(**env):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, **env}).stdout.split()

    assert run(RECFORGE_RETAIN_FREED_MEMORY="0") == ["False", "False"]
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert run() == ["True", "True"]


def _gradient_layouts(model, data, monkeypatch, **fit_options) -> dict[str, bool]:
    """Whether each parameter's gradient was sparse at the optimizer steps of a fit."""
    seen: dict[str, bool] = {}
    step = torch.optim.Adagrad.step

    def spy(self, *args, **kwargs):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    name = next(n for n, q in model.module_.named_parameters() if q is p)
                    seen[name] = p.grad.is_sparse
        return step(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.optim.Adagrad, "step", spy)
        model.fit(data, **fit_options)
    return seen


@pytest.mark.parametrize("model_name", ["mf", "bpr"])
def test_row_sparse_updates_train_the_same_model(random_data, monkeypatch, model_name):
    """With Adagrad, row-sparse updates of the user tables (only the batch's users' rows
    touched) give the model of dense updates, to float rounding; the other tables keep
    dense gradients on the fused kernel, and the trained module is left as built."""
    data = random_data
    if model_name == "mf":  # ratings
        rng = np.random.default_rng(3)
        data = data.with_values(rng.integers(1, 6, len(data)).astype(np.float32))
    fitted = {}
    for mode in ("off", "on"):
        model = create_model(model_name, embedding_dim=8, epochs=3, batch_size=64, seed=4,
                             optimizer="adagrad", learning_rate=0.05)
        fitted[mode] = (model, _gradient_layouts(model, data, monkeypatch, sparse_updates=mode))
    (dense, dense_grads), (sparse, sparse_grads) = fitted["off"], fitted["on"]
    assert not any(dense_grads.values())
    assert {n for n, s in sparse_grads.items() if s} == set(sparse.user_parameter_names())
    assert sparse_grads["item.weight"] is False
    for name, value in dense.module_.state_dict().items():
        torch.testing.assert_close(sparse.module_.state_dict()[name], value,
                                   rtol=1e-5, atol=1e-6)
    assert [h["loss"] for h in sparse.history_] == pytest.approx(
        [h["loss"] for h in dense.history_], rel=1e-5)
    assert not sparse.module_.user.sparse


def test_row_sparse_updates_only_where_exact(random_data):
    """"auto" turns row-sparse updates on for Adagrad from SPARSE_ROWS_PER_LOOKUP user rows
    per lookup; "on" refuses settings where they would change the result."""
    from recforge.training import optim as trainer_mod

    model = create_model("bpr", embedding_dim=8, epochs=1, batch_size=64, optimizer="adagrad")
    model.fit(random_data)  # builds the module; its tables are what the trainer looks at
    n = model.n_users

    def decide(mode, optimizer="adagrad", batch_size=64, distributed=(0, 1), **kwargs):
        model.batch_size = batch_size
        trainer = Trainer(epochs=1, learning_rate=0.1, optimizer=optimizer, **kwargs,
                          context=FitContext(sparse_updates=mode, distributed=distributed))
        return trainer.row_sparse_tables(model)

    assert decide("on") == ["user.weight"]
    assert decide("off") == []
    assert decide("auto", batch_size=64) == []  # n users: far fewer than 16 per lookup
    rows = trainer_mod.SPARSE_ROWS_PER_LOOKUP
    assert decide("auto", batch_size=n // rows) == ["user.weight"]
    assert decide("auto", batch_size=n // rows + 1) == []
    assert decide("auto", optimizer="adam", batch_size=1) == []
    for kwargs, match in (({"optimizer": "adam"}, "adagrad"),
                          ({"weight_decay": 0.1}, "weight_decay"),
                          ({"max_grad_norm": 1.0}, "max_grad_norm"),
                          ({"distributed": (0, 2)}, "sharded")):
        with pytest.raises(ConfigError, match=match):
            decide("on", **kwargs)
    with pytest.raises(ConfigError, match="sparse_updates"):
        Trainer(epochs=1, learning_rate=0.1, context=FitContext(sparse_updates="sometimes"))
    hybrid = create_model("hybrid_bpr", embedding_dim=8, epochs=1, optimizer="adagrad")
    hybrid.fit(random_data)
    with pytest.raises(ConfigError, match="whole"):
        Trainer(epochs=1, learning_rate=0.1, optimizer="adagrad",
                context=FitContext(sparse_updates="on")).row_sparse_tables(hybrid)


def test_resume_with_other_sparse_updates_is_refused(random_data, tmp_path):
    """A checkpoint's optimizer state holds one parameter group per kind of update: a
    resumed run that would update the user tables otherwise stops with a clear error."""
    def run(mode, resume, stop_after=None):
        model = create_model("bpr", embedding_dim=8, epochs=2, batch_size=64, seed=0,
                             optimizer="adagrad")
        return model.fit(random_data, checkpoint_dir=tmp_path, resume=resume,
                         sparse_updates=mode, epoch_callback=_interrupt_after(stop_after))

    with pytest.raises(KeyboardInterrupt):
        run("off", resume=False, stop_after=1)
    with pytest.raises(ConfigError, match="optimizer state does not fit"):
        run("on", resume=True)
    assert len(run("off", resume=True).history_) == 2


def test_a_user_who_saw_nearly_every_item_still_gets_negatives():
    from recforge.data import sampling

    dense = np.zeros((2, 100), dtype=bool)
    dense[0, :90] = True  # 10 items left to this user
    dense[1, :3] = True
    csr = sampling.sp.csr_matrix(dense)
    for pop in (None, np.linspace(1, 2, 100)):
        out = sampling.sample_negatives(csr, np.zeros(500, dtype=np.int64), 4,
                                        rng=np.random.default_rng(0), popularity=pop)
        assert out.min() >= 90 and set(out.ravel().tolist()) == set(range(90, 100))


def test_a_diverging_run_is_an_error_and_a_failed_fit_leaves_the_model_as_it_was(random_data):
    from recforge import ModelError
    from recforge.data.synthetic import make_synthetic
    from recforge.models import create_model

    rated = make_synthetic(200, 100).interactions
    model = create_model("mf", optimizer="sgd", learning_rate=1e4, epochs=2, embedding_dim=4)
    with pytest.raises(ModelError, match="training diverged in epoch 1.*learning_rate \\(now"):
        model.fit(rated)
    assert not model.is_fitted  # not a model of NaN that looks fitted
    good = create_model("bpr", epochs=1, embedding_dim=4).fit(random_data)
    scores = good.score([0]).clone()
    good.set_params(learning_rate=float("nan"))
    with pytest.raises(ConfigError, match="learning_rate must be a finite number"):
        good.fit(random_data)
    assert torch.equal(good.score([0]), scores)  # still the earlier fit
    params = good.get_params()
    params["embedding_dim"] = 99
    assert good.embedding_dim == 4  # get_params hands out copies


def test_the_log_names_the_rate_each_epoch_used_and_hybrid_bpr_repeats_itself(random_data):
    from recforge.models import create_model

    model = create_model("bpr", epochs=4, embedding_dim=4, learning_rate=0.01,
                         lr_schedule="cosine").fit(random_data)
    rates = [h["lr"] for h in model.history_]
    assert rates[0] == pytest.approx(0.01) and rates[-1] > 0  # not one epoch late
    assert rates == sorted(rates, reverse=True)
    with pytest.raises(ConfigError, match="cannot pretrain for loss='mse'"):
        create_model("neumf", pretrain=True, loss="mse").fit(
            random_data.with_values(np.ones(len(random_data), dtype=np.float32)))
    from recforge.data import features as F

    feats = F.categorical(random_data.items, [f"g{i % 3}" for i in range(random_data.n_items)],
                          "genre")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weights = [create_model("hybrid_bpr", epochs=2, embedding_dim=8, batch_size=64,
                                device="cpu").fit(random_data, item_features=feats)
                   .module_.state_dict() for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_validation_settings_checked_up_front_and_the_last_epoch_evaluated(random_data):
    from recforge.data.split import random_split
    from recforge.models import create_model

    for metric, message in (("rmse", "needs a model that predicts ratings"),
                            ("gini@10", "must be a ranking metric")):
        with pytest.raises(ConfigError, match=message):
            create_model("bpr", valid_metric=metric).fit(random_data)
    split = random_split(random_data, test_size=0.2, seed=0)
    model = create_model("bpr", epochs=5, eval_every=3, embedding_dim=4).fit(split.train,
                                                                             split.test)
    evaluated = [h["epoch"] for h in model.history_ if "ndcg@20" in h]
    assert evaluated == [3, 5]  # epochs 4-5 are evaluated, not thrown away unseen
    step = create_model("bpr", epochs=7, embedding_dim=4, learning_rate=0.08,
                        lr_schedule="step").fit(random_data)
    assert step.history_[-1]["lr"] == pytest.approx(0.01)  # 3 halvings, not 6


@pytest.mark.parametrize("private", [False, True])
def test_valid_metric_none_trains_without_validation(random_data, private):
    """``valid_metric=None`` turns validation off even when validation data is passed
    (it failed with "a metric is a name such as 'ndcg@10', not a NoneType")."""
    from recforge.data.split import random_split

    split = random_split(random_data, test_size=0.2, seed=0)
    model = create_model("bpr", epochs=2, embedding_dim=4, valid_metric=None,
                         **({"dp_epsilon": 8.0} if private else {}))
    model.fit(split.train, split.test)
    assert len(model.history_) == 2
    assert not any(k.startswith("ndcg") for h in model.history_ for k in h)


def test_validation_data_with_no_known_user_is_refused_before_training(random_data):
    """Validation users in another id space: a clear error before the first epoch (not
    after eval_every epochs, nor "the test set is empty")."""
    from recforge import DataError

    frame = random_data.to_frame()
    frame["user"] = frame["user"] + 10_000
    valid = Interactions.from_frame(frame.iloc[:50])
    epochs = []
    model = create_model("bpr", embedding_dim=4, epochs=3, eval_every=3, seed=0)
    with pytest.raises(DataError, match="validation users is known to the model"):
        model.fit(random_data, valid, epoch_callback=lambda r: epochs.append(r["epoch"]))
    assert epochs == []


def test_hybrid_bpr_resume_with_other_features_is_refused(random_data, tmp_path):
    """The feature matrices are buffers of hybrid_bpr's module: a checkpoint written with
    other features (same shape or not) is refused, not loaded over the new ones; and a
    checkpoint whose weights do not fit the model gives a ConfigError, not a traceback."""
    from recforge.data import features as F

    items = random_data.items
    genre = [f"g{i % 3}" for i in range(random_data.n_items)]
    a = F.categorical(items, genre, "genre")
    same_shape = F.categorical(items, [f"x{(i * 2) % 3}" for i in range(len(genre))], "genre")
    other_shape = F.categorical(items, [f"g{i % 5}|h{i % 2}" for i in range(len(genre))],
                                "genre")

    def run(feats, resume, stop_after=None):
        model = create_model("hybrid_bpr", epochs=2, embedding_dim=4, batch_size=128, seed=0,
                             device="cpu")
        return model.fit(random_data, checkpoint_dir=tmp_path, resume=resume,
                         item_features=feats, epoch_callback=_interrupt_after(stop_after))

    with pytest.raises(KeyboardInterrupt):
        run(a, resume=False, stop_after=1)
    for feats in (same_shape, other_shape):
        with pytest.raises(ConfigError, match="other hyperparameters or other training"):
            run(feats, resume=True)
    path = tmp_path / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    payload["module"]["items.f_indices"] = payload["module"]["items.f_indices"][:-1]
    torch.save(payload, path)
    with pytest.raises(ConfigError, match="weights do not fit this model"):
        run(a, resume=True)


def test_any_accepted_seed_trains(random_data):
    """Seeds up to 2**63-1 are accepted; the per-epoch torch seed once overflowed for seeds
    above about 1.8e14. Small seeds keep their torch seeds (and runs their numbers)."""
    from recforge.training.trainer import _torch_seed

    assert _torch_seed(3, 2) == 3 * 100_003 + 2
    for seed in (2**50, 2**63 - 1):
        model = create_model("mlp", epochs=1, embedding_dim=4, batch_size=256, seed=seed)
        assert len(model.fit(random_data).history_) == 1


def test_checkpoint_writes_are_synced_before_and_after_the_rename(tmp_path, monkeypatch):
    """A crash right after an epoch must leave the old checkpoint or the new one whole: the
    temporary file is synced before it is renamed into place, the directory after."""
    from recforge import _fs

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")
                       if os.path.exists("/proc/self/fd") else None))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", None))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _fs.atomic_write_text(tmp_path / "log.jsonl", "{}\n")
    assert (tmp_path / "log.jsonl").read_text() == "{}\n"
    names = [e[0] for e in events]
    assert names == ["fsync", "replace", "fsync"], events
    if events[0][1] is not None:
        assert events[0][1] is False and events[2][1] is True  # the file, then the directory


def test_a_user_with_every_item_is_left_out_of_negative_sampling(caplog):
    """One user who had every item stopped bpr, lightgcn and the NCF models from training
    at all (EASE and ALS trained on the same data)."""
    from recforge import DataError

    frame = pd.DataFrame({"user": [1, 1, 2, 2, 3] + [4] * 5,
                          "item": ["a", "b", "b", "c", "d", "a", "b", "c", "d", "e"]})
    data = Interactions.from_frame(frame)
    with caplog.at_level("WARNING"):
        sampler = EpochSampler(data, batch_size=4, n_negatives=2)
    assert sampler.n_events == 5 and "user 4 interacted with every item" in caplog.text
    for batch in sampler.epoch(np.random.default_rng(0)):
        assert not (batch["users"] == data.users.index([4])[0]).any()
    for name in ("bpr", "gmf", "lightgcn"):
        model = create_model(name, epochs=1, embedding_dim=4, batch_size=4).fit(data)
        assert model.recommend([4], k=2, include_seen=True).shape[0] == 2
    # under DDP a rank sees only its shard: nothing is left out there
    assert EpochSampler(data, batch_size=4, n_negatives=2, shard=(0, 2)).n_events == 10
    # "observed" draws from the items of the whole data: leaving a user out must not
    # shrink that set (c, d, e are only A's: B and C would have every item left)
    data = Interactions.from_frame(pd.DataFrame({"user": list("AAAAABBCC"),
                                                 "item": list("abcdeabab")}))
    sampler = EpochSampler(data, batch_size=4, n_negatives=2, negative_sampling="observed")
    assert sampler.n_events == 4
    for batch in sampler.epoch(np.random.default_rng(0)):
        assert (batch["negatives"] >= 2).all()  # c, d or e
    alone = Interactions.from_frame(frame[frame.user == 4])
    with pytest.raises(DataError, match="cannot sample negatives"):  # nothing left
        EpochSampler(alone, batch_size=4, n_negatives=1)


def _interrupt_after(epoch):
    """An epoch callback that stops training (as Ctrl-C would) after ``epoch``."""
    def callback(record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt
    return callback
