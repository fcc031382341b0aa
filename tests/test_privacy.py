"""Differentially private training per user (recforge.training.privacy, on Opacus)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import random_interactions
from conftest import run_cli as run

from recforge import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.models import create_model
from recforge.models.registry import private_models
from recforge.training.privacy import PrivacySpec, PrivateRun, UserBatches
from recforge.training.trainer import Trainer

TINY = dict(epochs=2, embedding_dim=8, batch_size=64, dp_max_per_user=8, device="cpu",
            valid_metric=None)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return random_interactions(n_users=40, n_items=30, density=0.3, seed=3)


@pytest.fixture(scope="module")
def private_bpr(data):
    return create_model("bpr", dp_epsilon=4.0, **TINY).fit(data)


def test_private_fit_spends_at_most_the_target(private_bpr, data):
    report = private_bpr.privacy_
    assert 0 < report["epsilon"] <= 4.0
    assert report["epsilon"] > 3.5  # the noise is chosen to spend the budget, not far less
    assert report["delta"] == pytest.approx(1 / data.n_users)
    assert report["unit"] == "user" and report["noise_multiplier"] > 0
    # Poisson sampling: 1 / q steps per epoch, every one counted by the accountant
    assert report["steps"] == round(2 / report["sample_rate"])
    assert [r["epsilon"] for r in private_bpr.history_] == sorted(
        r["epsilon"] for r in private_bpr.history_)
    scores = private_bpr.score(np.arange(3))
    assert scores.shape == (3, data.n_items) and torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ["neumf", "mf"])
def test_other_models_train_privately(name, data):
    train = data
    if name == "mf":  # ratings 1..5
        frame = data.to_frame()
        frame["rating"] = (np.arange(len(frame)) % 5 + 1).astype(float)
        train = Interactions.from_frame(frame)
    model = create_model(name, dp_epsilon=2.0, dp_delta=1e-3, **TINY).fit(train)
    assert 0 < model.privacy_["epsilon"] <= 2.0 and model.privacy_["delta"] == 1e-3
    if name == "mf":  # the global mean is not read from every user's ratings
        assert model.mean_ == 3.0
    assert np.isfinite(model.history_[-1]["loss"])


def test_user_rows_solved_against_the_private_item_side(data):
    """dp_user_rows='solve' (bpr's private default): every user's row is the implicit
    least-squares fit of that user's events against the released item rows (the
    one-user fold-in gives the same vector); neumf has no such rows and refuses it."""
    from recforge.models.als import fold_in_implicit

    model = create_model("bpr", dp_epsilon=4.0, dp_user_rows="solve", **TINY).fit(data)
    items = model.module_.item.weight.detach()
    reg = model.SOLVE_REG * float(items.pow(2).sum(1).mean())
    csr = data.binary_csr.tocsr()
    for u in (0, 5, 17, 39):
        seen = csr.indices[csr.indptr[u]:csr.indptr[u + 1]]
        expected = fold_in_implicit(items, seen, None, model.SOLVE_ALPHA, reg)
        assert torch.allclose(model.module_.user.weight[u].detach(), expected, atol=1e-4)
    assert create_model("bpr").private_defaults["dp_user_rows"] == "solve"
    with pytest.raises(ConfigError, match="dp_user_rows='solve'"):
        create_model("neumf", dp_epsilon=4.0, dp_user_rows="solve", **TINY).fit(data)


@pytest.mark.parametrize("pairs", [3, 40])
def test_linear_norms_by_gradient_equal_opacus_ghost_norms(pairs):
    """A linear layer's per-user gradient norms: recforge takes the per-user gradient
    where the pairs are many (T^2 > d_out x d_in), Opacus's ghost norm otherwise; both
    equal the norm of the materialised per-user gradient."""
    from opacus.grad_sample import linear as opacus_linear

    from recforge.training.privacy import linear_norm_sample

    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(5, 4)
    a = torch.randn(6, pairs, 5, generator=gen)
    g = torch.randn(6, pairs, 4, generator=gen)
    ours = linear_norm_sample(layer, [a], g)
    ghost = opacus_linear.compute_linear_norm_sample(layer, [a], g)
    per_user_w = torch.einsum("nti,ntj->nij", g, a).flatten(1).norm(dim=1)
    per_user_b = g.sum(1).norm(dim=1)
    for p, expected in ((layer.weight, per_user_w), (layer.bias, per_user_b)):
        assert torch.allclose(ours[p], expected, rtol=1e-4, atol=1e-5)
        assert torch.allclose(ghost[p], expected, rtol=1e-4, atol=1e-4)


def test_user_batches_bound_each_users_contribution(data):
    batches = UserBatches(data, max_per_user=5, n_negatives=3)
    users = np.array([0, 7, 12, 39])
    b = batches.batch(users, np.random.default_rng(0))
    csr = data.binary_csr
    counts = np.diff(csr.indptr)[users]
    mask = b["mask"].numpy()
    # one row per user, at most max_per_user events each, all of them when fewer
    assert b["users"].tolist() == users.tolist()
    assert (mask.sum(1) == np.minimum(counts, 5)).all()
    for row, u in enumerate(users):
        items = b["items"][row][b["mask"][row]].numpy()
        assert len(set(items)) == len(items)  # drawn without replacement
        assert set(items) <= set(csr[u].indices)
        negatives = b["negatives"][row][b["mask"][row]].numpy().ravel()
        assert not set(negatives) & set(csr[u].indices)
    assert b["negatives"].shape == (4, 5, 3)
    empty = batches.batch(np.zeros(0, dtype=np.int64), np.random.default_rng(0))
    assert empty["items"].shape == (0, 5) and empty["negatives"].shape == (0, 5, 3)


def _run(model, data, clip: float) -> PrivateRun:
    model.device_ = torch.device("cpu")
    model.users_, model.items_ = data.users, data.items
    model.module_ = model._build()
    trainer = Trainer(epochs=1, learning_rate=0.01, device="cpu", seed=0,
                      privacy=PrivacySpec(epsilon=1.0, delta=1e-3, max_grad_norm=clip,
                                          max_per_user=8, users_per_step=16))
    return PrivateRun(trainer, model, UserBatches(data, 8, 4), trainer.privacy)


def test_opacus_clips_each_users_gradient(data):
    model = create_model("bpr", dp_epsilon=1.0, **{**TINY, "init_std": 1.0})
    clip = 1e-3
    run = _run(model, data, clip)
    users = np.arange(20)
    batch = run.batches.batch(users, np.random.default_rng(1))
    item = model.module_.item.weight
    # without clipping, a user's gradient of the item table is far above the bound
    model.private_loss(batch)[0].backward()
    assert item.grad.norm() > 100 * clip
    item.grad = None
    run.opt.zero_grad(set_to_none=True)
    run.calls.check(model.name)
    run.criterion(model.private_loss(batch)).backward()
    # before the noise: the sum of the clipped per-user gradients
    assert item.grad.norm() <= len(users) * clip * (1 + 1e-4)
    assert item.grad.norm() > 0.1 * clip
    run.finish()


@pytest.mark.parametrize("name", ["bpr", "neumf", "gmf", "mlp"])
def test_a_step_that_sampled_no_user_adds_the_noise_alone(name, data):
    """Poisson sampling can draw no user for a step (a real fit of 30 users, batch 7
    crashed in Opacus's embedding norm function): the step runs, its gradient before the
    noise is zero, and the noise still moves the shared parameters (the accountant
    counts the step)."""
    model = create_model(name, dp_epsilon=1.0, **TINY)
    run = _run(model, data, 1.0)
    before = {n: p.detach().clone() for n, p in model.module_.named_parameters()}
    loss, users = run._step(run._empty())
    assert (loss, users, run.steps) == (0.0, 0, 1)
    moved = [n for n, p in model.module_.named_parameters()
             if not torch.equal(p.detach(), before[n])]
    user_names = set(model.user_parameter_names())
    assert moved and not set(moved) & user_names  # noise on the shared side only
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    run.finish()


def test_a_shared_module_called_other_than_once_is_refused(data):
    """Ghost clipping keeps one gradient norm per parameter and step: a shared table
    called twice (Opacus refuses it) or not at all (a stale norm) would clip wrongly."""
    model = create_model("bpr", dp_epsilon=1.0, **TINY)
    run = _run(model, data, 1.0)
    batch = run.batches.batch(np.arange(5), np.random.default_rng(0))
    with pytest.raises(ModelError, match=r"exactly once.*item \(0 calls\)"):
        run.calls.check(model.name)
    model.private_loss(batch)
    with pytest.raises(NotImplementedError, match="tying"):
        model.private_loss(batch)
    run.finish()


def test_models_without_private_training_refuse_dp_params(data):
    assert {"mf", "bpr", "neumf", "gmf", "mlp"} <= set(private_models())
    assert "lightgcn" not in private_models() and "vbpr" not in private_models()
    with pytest.raises(ConfigError, match="ease does not support differentially private"):
        create_model("ease", dp_epsilon=4.0)
    with pytest.raises(ConfigError, match="lightgcn does not support differentially"):
        create_model("lightgcn", dp_epsilon=4.0, epochs=1).fit(data)


@pytest.mark.parametrize("params, message", [
    ({"dp_epsilon": 0.0}, "dp_epsilon"), ({"dp_epsilon": math.inf}, "dp_epsilon"),
    ({"dp_epsilon": -1}, "dp_epsilon"), ({"dp_epsilon": "4"}, "dp_epsilon"),
    ({"dp_epsilon": 1.0, "dp_delta": 1.0}, "dp_delta"),
    ({"dp_delta": 1e-5}, "dp_delta is set but dp_epsilon is not"),
    ({"dp_epsilon": 1.0, "dp_max_grad_norm": 0}, "dp_max_grad_norm"),
    ({"dp_epsilon": 1.0, "dp_max_per_user": 0}, "dp_max_per_user"),
    ({"dp_epsilon": 1.0, "patience": 3}, "patience"),
    # a budget no noise level meets (Opacus's ValueError, found by the config fuzz)
    ({"dp_epsilon": 1e-30, "dp_delta": 1e-30}, "cannot be met"),
])
def test_bad_privacy_params(params, message, data):
    with pytest.raises(ConfigError, match=message):
        create_model("bpr", **{**TINY, **params}).fit(data)


def test_spent_epsilon_is_never_negative(data):
    """A tiny target with delta = 1 / n_users (40 users): the accountant's RDP
    conversion found a noise whose epsilon came out at -0.005; it is reported as 0."""
    model = create_model("bpr", dp_epsilon=1e-30, **TINY).fit(data)
    assert model.privacy_["epsilon"] == 0.0
    assert all(r["epsilon"] >= 0 for r in model.history_)


def test_neumf_pretraining_is_refused_with_dp():
    with pytest.raises(ConfigError, match="pretrain"):
        create_model("neumf", dp_epsilon=1.0, pretrain=True, **TINY)._validate_params()


def test_save_load_keeps_the_privacy_record(private_bpr, tmp_path):
    from recforge.models.base import Recommender
    from recforge.serving.service import RecommendationService

    private_bpr.save(tmp_path / "m")
    loaded, meta = Recommender.load_with_meta(tmp_path / "m")
    assert loaded.privacy_ == private_bpr.privacy_
    assert meta["extra"]["privacy"]["epsilon"] == private_bpr.privacy_["epsilon"]
    assert torch.equal(loaded.score(np.arange(2)), private_bpr.score(np.arange(2)))
    info = RecommendationService(tmp_path / "m").info()
    assert info["privacy"]["epsilon"] == private_bpr.privacy_["epsilon"]


def test_cli_dp_flags(tmp_path, capsys, data):
    path = tmp_path / "d.csv"
    data.to_frame()[["user", "item"]].to_csv(path, index=False)
    code, _, err = run(["train", "bpr", "--data", path, "--out", tmp_path / "m",
                        "--dp-epsilon", "3", "--dp-delta", "0.001", "-p", "epochs=1",
                        "-p", "embedding_dim=8", "-p", "batch_size=64",
                        "-p", "dp_max_per_user=8", "-p", "device=cpu"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["params"]["dp_epsilon"] == 3.0
    # bpr's private defaults, under the parameters given with -p
    assert meta["params"]["optimizer"] == "sgd" and meta["params"]["dp_user_rows"] == "solve"
    assert meta["params"]["epochs"] == 1 and meta["params"]["dp_max_per_user"] == 8
    assert 0 < meta["extra"]["privacy"]["epsilon"] <= 3.0
    assert meta["extra"]["privacy"]["delta"] == 0.001
    code, _, err = run(["train", "bpr", "--data", path, "--out", tmp_path / "p",
                        "-p", "dp_epsilon=2", "-p", "epochs=1", "-p", "dp_user_epochs=0",
                        "-p", "embedding_dim=8", "-p", "device=cpu"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["params"]["optimizer"] == "sgd"  # -p dp_epsilon takes the same defaults
    assert 0 < meta["extra"]["privacy"]["epsilon"] <= 2.0
    code, _, err = run(["train", "ease", "--data", path, "--out", tmp_path / "e",
                        "--dp-epsilon", "3"], capsys)
    assert code == 2 and "ease does not support differentially private training" in err
    code, _, err = run(["train", "bpr", "--data", path, "--out", tmp_path / "e",
                        "--dp-delta", "0.001"], capsys)
    assert code == 2 and "add --dp-epsilon" in err
    code, out, _ = run(["models"], capsys)
    assert code == 0 and "DP" in out


def test_validation_is_logged_but_the_last_epoch_is_released(data):
    valid = Interactions.from_frame(data.to_frame().iloc[::7])
    model = create_model("bpr", dp_epsilon=4.0, **{**TINY, "valid_metric": "ndcg@10"})
    model.fit(data, valid)
    assert all("ndcg@10" in r for r in model.history_)
    assert model.best_epoch_ == 2  # the last


def test_user_rows_refit_leaves_the_private_item_side(data):
    """dp_user_epochs trains the user tables alone afterwards: the released item side is
    the private fit's, bit for bit."""
    plain = create_model("bpr", dp_epsilon=4.0, **TINY).fit(data)
    refit = create_model("bpr", dp_epsilon=4.0, dp_user_epochs=2, **TINY).fit(data)
    assert torch.equal(plain.module_.item.weight, refit.module_.item.weight)
    assert not torch.equal(plain.module_.user.weight, refit.module_.user.weight)
    assert [r.get("phase") for r in refit.history_] == [None, None, "user rows", "user rows"]
    assert refit.privacy_["epsilon"] == plain.privacy_["epsilon"]


# ------------------------------------------------------------------------------------
# next-item models: one window per user, the item table read at the input and the output
SEQ = dict(epochs=1, embedding_dim=8, max_len=6, batch_size=16, dropout=0.0, device="cpu",
           valid_metric=None)


@pytest.fixture(scope="module")
def private_sasrec(data):
    return create_model("sasrec", dp_epsilon=4.0, n_blocks=1, **SEQ).fit(data)


@pytest.fixture(scope="module")
def private_gru4rec(data):
    return create_model("gru4rec", dp_epsilon=4.0, dropout_hidden=0.0, **SEQ).fit(data)


@pytest.fixture(scope="module")
def private_caser(data):
    return create_model("caser", dp_epsilon=4.0, window=3, n_h=2, n_v=2, **SEQ).fit(data)


def _window_run(model, data, clip: float) -> PrivateRun:
    from recforge.training.privacy import UserWindows
    from recforge.training.sequence_batches import right_aligned

    windows = right_aligned(data.sequences().last(int(model.max_len) + 1, pad=0,
                                                  offset=1))[0]
    trainer = Trainer(epochs=1, learning_rate=0.01, device="cpu", seed=0,
                      privacy=PrivacySpec(epsilon=1.0, delta=1e-3, max_grad_norm=clip,
                                          max_per_user=8, users_per_step=16))
    return PrivateRun(trainer, model, UserWindows(windows), trainer.privacy)


def test_sasrec_trains_privately_one_window_per_user(private_sasrec, data):
    report = private_sasrec.privacy_
    assert 3.5 < report["epsilon"] <= 4.0 and report["unit"] == "user"
    assert report["max_per_user"] == SEQ["max_len"]  # the positions of one window
    assert report["expected_users_per_step"] == pytest.approx(
        report["sample_rate"] * data.n_users)
    assert "_private_output" not in private_sasrec.__dict__  # made for the fit alone
    scores = private_sasrec.recommend_for_history([0, 1, 2])
    assert len(scores) and "sasrec" in private_models()


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("name, checked", [
    ("sasrec", ("item.weight", "position.weight", "blocks.0.qkv.weight", "norm.weight")),
    ("gru4rec", ("item.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_hh_l0")),
    ("caser", ("item.weight", "output.weight", "output_bias.weight",
               "horizontal.0.weight", "horizontal.2.bias", "vertical.weight", "fc.weight")),
])
def test_per_user_gradients_include_the_tied_output(name, checked, request, data):
    """Opacus sees each user's whole gradient of the item table: the input lookup's
    share and the output scores' (ItemOutput) summed, as autograd gives it for that
    user's loss alone (gru4rec: summed over the DPGRU's cell per position, against the
    fused nn.GRU); clipping then bounds each user's share."""
    import copy

    from opacus.layers import DPGRU

    model = request.getfixturevalue(f"private_{name}")
    hooked, plain = copy.deepcopy(model), copy.deepcopy(model)
    plain.private_modules()
    if name == "gru4rec":
        fused = hooked.module_.gru
        hooked.module_.gru = DPGRU(fused.input_size, fused.hidden_size, batch_first=True)
        hooked.module_.gru.load_state_dict(fused.state_dict())
    if name == "caser":  # the layers its private fit trains (Conv1d and the bare filters)
        from recforge.models.caser import _patch_linear, _rows_linear

        module = hooked.module_
        module.horizontal = torch.nn.ModuleList(_patch_linear(c) for c in module.horizontal)
        vertical = module.vertical.detach()
        del module.vertical
        module.vertical = _rows_linear(vertical)
    clip = 1e-3
    run = _window_run(hooked, data, clip)
    users = np.arange(12)
    batch = run.batches.batch(users, np.random.default_rng(0))
    named = dict(hooked.module_.named_parameters())
    hooked.module_.train()  # as a private epoch runs it (no dropout in SEQ)
    run.opt.zero_grad(set_to_none=True)
    run.criterion(hooked.private_loss(batch)).backward()
    for param in checked:
        sample = named[param].grad_sample
        sample = sum(sample) if isinstance(sample, list) else sample
        p = dict(plain.module_.named_parameters())[param.replace("vertical.weight",
                                                                 "vertical")]
        for b in range(len(users)):
            p.grad = None
            plain.private_loss(batch)[b].backward()
            assert torch.allclose(sample[b].view_as(p.grad), p.grad, atol=1e-6,
                                  rtol=1e-4), (param, b)
    # the output table (sasrec's and gru4rec's is the input one): most of a user's norm
    item = named["output.weight" if name == "caser" else "item.weight"]
    run.opt.clip_and_accumulate()
    assert item.summed_grad.norm() <= len(users) * clip * (1 + 1e-4)
    assert item.summed_grad.norm() > 0.1 * clip
    run.finish()


def test_sasrec_step_that_sampled_no_user_adds_the_noise_alone(private_sasrec, data):
    run = _window_run(private_sasrec, data, 1.0)
    private_sasrec.module_.train()
    before = {n: p.detach().clone() for n, p in private_sasrec.module_.named_parameters()}
    loss, users = run._step(run._empty())
    assert (loss, users, run.steps) == (0.0, 0, 1)
    assert all(not torch.equal(p.detach(), before[n])
               for n, p in private_sasrec.module_.named_parameters())
    run.finish()


@pytest.mark.parametrize("params, message", [
    ({"loss": "bce"}, "loss='ce'"), ({"loss": "gbce"}, "loss='ce'"),
    ({"random_windows": 0.5}, "random_windows"),
])
def test_sasrec_private_settings_it_cannot_train(params, message, data):
    with pytest.raises(ConfigError, match=message):
        create_model("sasrec", dp_epsilon=4.0, **{**SEQ, **params}).fit(data)


def test_gru4rec_trains_privately_and_scores_with_the_fused_gru(private_gru4rec, data):
    """nn.GRU is one fused kernel Opacus cannot take per-user gradients of: the private
    fit trains a DPGRU with the same weights and puts them back into the nn.GRU."""
    assert 3.5 < private_gru4rec.privacy_["epsilon"] <= 4.0
    assert type(private_gru4rec.module_.gru) is torch.nn.GRU
    fresh = create_model("gru4rec", **SEQ)
    fresh.users_, fresh.items_ = data.users, data.items
    initial = dict(fresh._build().named_parameters())
    trained = dict(private_gru4rec.module_.named_parameters())
    assert not torch.equal(trained["gru.weight_hh_l0"], initial["gru.weight_hh_l0"])
    assert len(private_gru4rec.recommend_for_history([0, 1, 2])) > 0


def test_caser_trains_privately_and_scores_with_its_convolutions(private_caser, data):
    """Conv1d over every position's window and the bare vertical filters give Opacus no
    per-user gradient: the private fit trains the same weights as linear layers over
    batch-first windows and puts them back into the convolutions, which score as
    before (the batch-first states equal ``encode``'s)."""
    assert 3.5 < private_caser.privacy_["epsilon"] <= 4.0 and "caser" in private_models()
    module = private_caser.module_
    assert all(type(c) is torch.nn.Conv1d for c in module.horizontal)
    assert isinstance(module.vertical, torch.nn.Parameter)
    fresh = create_model("caser", window=3, n_h=2, n_v=2, **SEQ)
    fresh.users_, fresh.items_ = data.users, data.items
    initial = dict(fresh._build().named_parameters())
    trained = dict(module.named_parameters())
    assert set(trained) == set(initial)
    # the user rows train on their own user's windows, unnoised (joint DP, as bpr's)
    assert "user.weight" in private_caser.user_parameter_names()
    for name in ("horizontal.1.weight", "vertical", "output.weight"):
        assert not torch.equal(trained[name], initial[name]), name
    module.eval()
    inputs = torch.tensor([[1, 2, 3, 4], [0, 0, 5, 6], [7, 0, 0, 0]])
    users = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.allclose(module.encode_per_user(inputs, users),
                              module.encode(inputs, users), atol=1e-6)
    assert len(private_caser.recommend(data.users.ids[:3], k=5)) == 15
    assert len(private_caser.recommend_for_history([0, 1, 2])) > 0


def test_models_without_a_private_loss_refuse_dp(data):
    with pytest.raises(ConfigError, match="pop does not support differentially"):
        create_model("pop", dp_epsilon=4.0).fit(data)


def test_a_private_step_in_parts_equals_one_part(private_sasrec, data):
    """A Poisson sample larger than ``private_physical_users`` runs in parts (Opacus's
    virtual steps): the clipped sum it hands the optimizer is the one-part step's."""
    import copy

    grads = []
    for physical in (None, 5):
        model = copy.deepcopy(private_sasrec)
        run = _window_run(model, data, 0.05)
        run.physical_users = physical
        run.opt.noise_multiplier = 0.0  # compare the clipped sums alone
        model.module_.train()
        batch = run.batches.batch(np.arange(12), np.random.default_rng(0))
        assert len(run._physical(batch)) == (1 if physical is None else 3)
        loss, users = run._step(batch)
        assert users == 12 and run.steps == 1
        grads.append({n: p.grad.clone() for n, p in model.module_.named_parameters()})
        run.finish()
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-7, rtol=1e-4), name
    assert private_sasrec.private_physical_users() >= 1


@pytest.mark.parametrize("name, params", [
    ("sasrec", {"batch_size": 2**31 - 1, "max_len": 1}),
    ("sasrec", {"batch_size": 1, "max_len": 300, "embedding_dim": 1}),
    ("sasrec", {"dp_epsilon": 1e-30}),
    ("gru4rec", {"batch_size": 7, "max_len": 300, "dp_epsilon": 1000.0}),
    ("gru4rec", {"n_layers": 3, "dropout_hidden": 0.9, "max_len": 5}),
    ("caser", {"window": 9, "max_len": 2, "batch_size": 1}),
])
def test_private_next_item_models_at_the_ends_of_their_ranges(name, params):
    """Settings at the ends of their ranges (one user a step or every user, windows of
    one or 300 items, epsilon 1e-30 or 1000, three GRU layers): a private fit finishes,
    spends at most its target (never below 0) and recommends."""
    data = random_interactions(n_users=30, n_items=20, seed=1)
    kw = {"dp_epsilon": 8.0, "epochs": 1, "device": "cpu", **params}
    model = create_model(name, **kw).fit(data)
    assert 0.0 <= model.privacy_["epsilon"] <= kw["dp_epsilon"] * (1 + 1e-6)
    assert len(model.recommend(data.users.ids[:3], k=5)) == 15


def test_caser_validates_during_a_private_fit(data):
    """Validation scores through the swapped-in linear filters mid-fit (``_filters`` takes
    either form), and the best epoch's weights end in the convolutions."""
    from recforge.data.split import leave_last_out

    split = leave_last_out(data, valid=True)
    model = create_model("caser", dp_epsilon=4.0, window=3, n_h=2, n_v=2,
                         **{**SEQ, "epochs": 2, "valid_metric": "ndcg@10"})
    model.fit(split.train, valid=split.valid)
    assert model.best_epoch_ in (1, 2) and 3.5 < model.privacy_["epsilon"] <= 4.0
    assert isinstance(model.module_.vertical, torch.nn.Parameter)
    assert len(model.recommend(split.train.users.ids[:3], k=5)) == 15
