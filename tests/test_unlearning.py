"""Unlearning (issue 24 item 2): ``forget_users``, ``recforge forget`` and the server's
``DELETE /users/{id}``. Exact models must equal a fit without the users; gradient models
lose the users' own rows; nothing of the users stays in a saved artefact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import random_interactions, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recforge.data.interactions import Interactions
from recforge.errors import ModelError
from recforge.models import create_model
from recforge.models.base import Recommender
from recforge.models.unlearning import EXACT, NONE, USER_ROWS, unlearning_kind

#: A user id that occurs nowhere else: its bytes must leave every file of the artefact.
MARKER = "zq-forget-me-7781"

#: Exact models, small settings, and the attributes holding their item-side parameters.
EXACT_MODELS = {
    "pop": ({}, ["scores_"]),
    "itemknn": ({"neighbors": 10, "shrink": 2.0}, ["similarity_"]),
    "userknn": ({"neighbors": 10}, ["similarity_"]),
    "ease": ({"reg": 10.0}, ["weights_", "pdiag_"]),
    "als": ({"embedding_dim": 8, "epochs": 3, "device": "cpu"}, ["item_factors_"]),
    "gfcf": ({"factor_dim": 8}, ["vt_", "matrix_"]),
    "bspm": ({"factor_dim": 8, "dense_items": 0}, ["vt_"]),
}


def _array(value) -> np.ndarray:
    if hasattr(value, "toarray"):
        value = value.toarray()
    if isinstance(value, torch.Tensor):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def _without(data: Interactions, users) -> Interactions:
    """``data`` without ``users`` (external ids), the item vocabulary kept."""
    keep = np.flatnonzero(~np.isin(data.users.ids, np.asarray(users, dtype=data.users.ids.dtype)))
    return data.reindex(data.users.take(keep), data.items, unknown="drop")


@pytest.fixture(scope="module")
def data() -> Interactions:
    return random_interactions(70, 45, 0.15, seed=3)


@pytest.mark.parametrize("name", sorted(EXACT_MODELS))
def test_exact_forgetting_equals_a_fit_without_the_users(name, data):
    params, attrs = EXACT_MODELS[name]
    gone = data.users.ids[[2, 9, 40]]
    model = create_model(name, **params).fit(data)
    assert unlearning_kind(model) == EXACT
    report = model.forget_users([*gone, 99999])
    ref = create_model(name, **params).fit(_without(data, gone))
    assert report.kind == EXACT and report.users_removed == 3 and report.unknown == [99999]
    assert report.events_removed == int(data.csr[[2, 9, 40]].nnz)
    assert model.users_ == ref.users_ and (model.seen_ != ref.seen_).nnz == 0
    np.testing.assert_array_equal(model.item_popularity_, ref.item_popularity_)
    for attr in attrs:
        np.testing.assert_allclose(_array(getattr(model, attr)), _array(getattr(ref, attr)),
                                   rtol=0, atol=1e-6, err_msg=attr)
    if name == "als":  # the other users' factors too: the same fit
        np.testing.assert_allclose(model.user_factors_.numpy(), ref.user_factors_.numpy(),
                                   rtol=0, atol=1e-6)
    users = data.users.ids[[0, 5]]
    pd.testing.assert_frame_equal(model.recommend(users, k=5), ref.recommend(users, k=5),
                                  check_exact=False, atol=1e-5)
    with pytest.raises(ModelError, match="unknown user"):
        model.recommend(gone[:1])


def test_ease_woodbury_matches_a_refit_and_survives_a_save(data, tmp_path):
    model = create_model("ease", reg=5.0).fit(data)
    model = Recommender.load(model.save(tmp_path / "m"))  # diag(P) is saved with it
    first = data.users.ids[[1, 3]]
    assert "Woodbury" in model.forget_users(first).method
    second = data.users.ids[[4, 7, 8, 20]]  # twice in a row: errors do not pile up
    assert "Woodbury" in model.forget_users(second).method
    ref = create_model("ease", reg=5.0).fit(_without(data, [*first, *second]))
    np.testing.assert_allclose(model.weights_.numpy(), ref.weights_.numpy(), atol=1e-6,
                               rtol=0)
    np.testing.assert_allclose(model.pdiag_.numpy(), ref.pdiag_.numpy(), rtol=1e-5)
    # many users at once: the closed form again (cheaper than a rank-m update)
    many = data.users.ids[30:60]
    assert model.forget_users(many).method == "closed form recomputed"
    # a model saved before diag(P) was kept: the closed form, the same weights
    old = create_model("ease", reg=5.0).fit(data)
    old.pdiag_ = None
    path = old.save(tmp_path / "old")
    assert "pdiag" not in json.loads((path / "meta.json").read_text())["extra"] or not \
        json.loads((path / "meta.json").read_text())["extra"]["pdiag"]
    old = Recommender.load(path)
    assert old.forget_users(first).method == "closed form recomputed"
    ref = create_model("ease", reg=5.0).fit(_without(data, first))
    np.testing.assert_allclose(old.weights_.numpy(), ref.weights_.numpy(), atol=1e-6, rtol=0)


def test_the_docs_list_each_model_under_its_kind_of_forgetting():
    from recforge.models.unlearning import models_forgetting

    text = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    section = text[text.index("## Unlearning"):text.index("### Cost")]
    rows = [(line.split("|")[2].strip().replace(" ", "_"), line.split("|")[1])
            for line in section.splitlines() if line.startswith("| `") or
            line.startswith("| every")]
    for kind in (EXACT, USER_ROWS, NONE):
        listed = {name for kind_, cell in rows if kind_ == kind
                  for name in re.findall(r"`([a-z_0-9]+)`", cell)}
        actual = set(models_forgetting(kind))
        assert listed, kind
        if kind == USER_ROWS:  # the row names examples and ends with "..."
            assert listed <= actual, listed - actual
        else:
            assert listed == actual, (kind, listed ^ actual)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.integers(0, 59), min_size=1, max_size=8), st.floats(1.0, 100.0),
       st.booleans())
def test_ease_forgetting_any_users_is_a_refit(users, reg, binary):
    data = random_interactions(60, 30, 0.2, seed=5)
    if not binary:  # the events' values enter the Gram matrix, 25 times larger at most:
        # the float32 refit that is the reference rounds more there (1e-6 at reg 2)
        data = data.with_values(np.random.default_rng(1).integers(1, 6, len(data)))
        reg = 10.0 * reg
    gone = data.users.ids[sorted(users)]
    model = create_model("ease", reg=reg, binary=binary).fit(data)
    model.forget_users(gone)
    ref = create_model("ease", reg=reg, binary=binary).fit(_without(data, gone))
    np.testing.assert_allclose(model.weights_.numpy(), ref.weights_.numpy(), atol=1e-6,
                               rtol=0)


@pytest.mark.parametrize("name", ["bpr", "lightgcn", "sasrec"])
def test_gradient_models_lose_the_users_rows(name, data):
    model = create_model(name, embedding_dim=8, epochs=1, seed=0).fit(data)
    assert unlearning_kind(model) == USER_ROWS
    kept = data.users.ids[[0, 1, 10]]
    before = model.recommend(kept, k=5)
    gone = data.users.ids[[2, 9]]
    report = model.forget_users(gone)
    assert report.kind == USER_ROWS and "item-side parameters" in report.guarantee
    assert model.n_users == data.n_users - 2
    with pytest.raises(ModelError, match="unknown user"):
        model.recommend(gone[:1])
    popular = model.recommend(gone[:1], k=3, unknown="popular")
    assert popular["item"].tolist() == model.items_.ids[model.popularity_order()[:3]].tolist()
    after = model.recommend(kept, k=5)
    if name == "bpr":  # the others' rows are untouched: the same answers
        pd.testing.assert_frame_equal(before, after)
        emb = model.module_.user.weight
        assert emb.shape[0] == model.n_users
    else:  # the rest of the model answers as well
        assert len(after) == len(before)


def test_user_features_lose_the_users_rows(data):
    from recforge.data.features import Features

    rng = np.random.default_rng(0)

    def features(vocab, n):
        mat = sp.csr_matrix((rng.random((len(vocab), n)) > 0.5).astype(np.float32))
        return Features(vocab, mat, np.array([f"f{i}" for i in range(n)]), np.array(["g"] * n))

    users = features(data.users, 5)
    model = create_model("hybrid_bpr", embedding_dim=8, epochs=1).fit(
        data, item_features=features(data.items, 6), user_features=users)
    kept = data.users.ids[[0, 5]]
    before = model.recommend(kept, k=4)
    report = model.forget_users(data.users.ids[[1, 2]])
    assert report.kind == USER_ROWS
    rest = np.setdiff1d(np.arange(data.n_users), [1, 2])
    assert model.user_features_.ids == data.users.take(rest)
    np.testing.assert_array_equal(model.user_features_.matrix.toarray(),
                                  users.matrix[rest].toarray())
    pd.testing.assert_frame_equal(model.recommend(kept, k=4), before)


def test_models_that_cannot_forget_say_so_and_retrain(data):
    rated = data.with_values(np.random.default_rng(0).integers(1, 6, len(data)))
    model = create_model("baseline").fit(rated)
    assert unlearning_kind(model) == NONE
    with pytest.raises(ModelError, match="--retrain"):
        model.forget_users(data.users.ids[:1])
    assert model.n_users == data.n_users  # all or nothing
    report = model.forget_users(data.users.ids[:2], retrain=True)
    ref = create_model("baseline").fit(_without(rated, data.users.ids[:2]))
    assert report.kind == "retrained" and model.users_ == ref.users_
    np.testing.assert_allclose(model.item_bias_, ref.item_bias_, atol=1e-6, rtol=0)


def test_forgetting_every_user_is_refused_and_changes_nothing(data):
    model = create_model("ease", reg=10.0).fit(data)
    weights = model.weights_.clone()
    with pytest.raises(ModelError, match="nothing"):
        model.forget_users(data.users.ids)
    assert model.n_users == data.n_users and torch.equal(model.weights_, weights)
    report = model.forget_users(["nobody"])
    assert report.users_removed == 0 and report.unknown == ["nobody"]
    assert "erasures" not in (getattr(model, "training_data_", None) or {})


def _marked_data() -> Interactions:
    base = random_interactions(50, 30, 0.15, seed=7)
    frame = base.to_frame()
    frame["user"] = "u" + frame["user"].astype(str)
    frame.loc[frame["user"] == "u3", "user"] = MARKER
    return Interactions.from_frame(frame)


def _artefact_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.iterdir()))


@pytest.mark.parametrize("name,params", [("ease", {"reg": 10.0}),
                                         ("bpr", {"embedding_dim": 8, "epochs": 1})])
def test_the_saved_model_keeps_no_trace_of_the_user(name, params, tmp_path):
    data = _marked_data()
    model = create_model(name, **params).fit(data)
    path = model.save(tmp_path / name)
    assert MARKER.encode() in _artefact_bytes(path)  # there before: the check can fail
    loaded = Recommender.load(path)
    loaded.forget_users([MARKER])
    loaded.save(path)
    assert MARKER.encode() not in _artefact_bytes(path)
    meta = json.loads((path / "meta.json").read_text())
    (entry,) = meta["training_data"]["erasures"]
    assert entry["users"] == 1 and entry["events"] > 0 and "at" in entry
    assert MARKER not in json.dumps(meta)
    again = Recommender.load(path)
    assert MARKER not in again.users_ and again.n_users == data.n_users - 1


# -- the command line ----------------------------------------------------------------------
def test_cli_forget_end_to_end(data, tmp_path, capsys):
    model = create_model("ease", reg=10.0).fit(data)
    path = model.save(tmp_path / "ease")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"user\n{data.users.ids[4]}\n{data.users.ids[6]}\nghost\n")
    code, out, err = run_cli(["forget", "--model", path, "--users", ids], capsys)
    assert code == 0, err
    assert "removed 2 user(s)" in out and "ghost" in out and "exact" in out
    forgotten = Recommender.load(path)
    ref = create_model("ease", reg=10.0).fit(_without(data, data.users.ids[[4, 6]]))
    np.testing.assert_allclose(forgotten.weights_.numpy(), ref.weights_.numpy(), atol=1e-6,
                               rtol=0)
    # --out, --json, --retrain of a gradient model on its stored matrix
    bpr = create_model("bpr", embedding_dim=8, epochs=1).fit(data).save(tmp_path / "bpr")
    code, out, err = run_cli(["forget", "--model", bpr, "--users", ids, "--retrain",
                              "--out", tmp_path / "bpr2", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "retrained" and report["users_removed"] == 2
    assert report["unknown"] == 1  # a count: the ids given are not echoed into logs
    assert Recommender.load(tmp_path / "bpr2").n_users == data.n_users - 2
    assert Recommender.load(bpr).n_users == data.n_users  # --out left it as it was


def test_cli_forget_retrains_from_the_training_data(tmp_path, capsys):
    data = random_interactions(40, 25, 0.2, seed=2)
    frame = data.to_frame()
    csv = tmp_path / "train.csv"
    frame.to_csv(csv, index=False)
    path = create_model("sasrec", embedding_dim=8, epochs=1, max_len=5).fit(data).save(
        tmp_path / "seq")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{data.users.ids[0]}\n")
    code, _, err = run_cli(["forget", "--model", path, "--users", ids, "--retrain"], capsys)
    assert code == 2 and "order of events" in err  # no timestamps in the saved model
    code, out, err = run_cli(["forget", "--model", path, "--users", ids, "--retrain",
                              "--data", csv], capsys)
    assert code == 0, err
    assert Recommender.load(path).n_users == data.n_users - 1


@pytest.mark.parametrize("content,words", [
    (None, "file not found"), (b"", "no user ids"), (b"user\n", "no user ids"),
    (b"\xff\xfe\x00bad", "cannot read")])
def test_cli_forget_bad_user_files(content, words, data, tmp_path, capsys):
    path = create_model("pop").fit(data).save(tmp_path / "pop")
    ids = tmp_path / "ids.txt"
    if content is not None:
        ids.write_bytes(content)
    code, _, err = run_cli(["forget", "--model", path, "--users", ids], capsys)
    assert code == 2 and words in err


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=60).map(str.encode))
def test_cli_forget_any_user_file_is_a_result_or_one_line_error(tmp_path_factory, capsys,
                                                                content):
    base = tmp_path_factory.getbasetemp() / "fuzz-forget"
    if not (base / "pop").exists():
        create_model("pop").fit(random_interactions(20, 10, 0.3, seed=1)).save(base / "pop")
        capsys.readouterr()  # the save's log line
    ids = base / "ids.txt"
    ids.write_bytes(content)
    code, out, err = run_cli(["forget", "--model", base / "pop", "--users", ids,
                              "--out", base / "out"], capsys)
    assert code in (0, 2), err
    assert "Traceback" not in err and "Traceback" not in out
    if code == 2:
        assert err.startswith("error:")


def test_cli_forget_refusals(data, tmp_path, capsys):
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{data.users.ids[0]}\n")
    code, _, err = run_cli(["forget", "--model", tmp_path / "nope", "--users", ids], capsys)
    assert code == 2 and "no such directory" in err
    rated = data.with_values(np.random.default_rng(0).integers(1, 6, len(data)))
    path = create_model("baseline").fit(rated).save(tmp_path / "baseline")
    code, _, err = run_cli(["forget", "--model", path, "--users", ids], capsys)
    assert code == 2 and "--retrain" in err
    code, _, err = run_cli(["forget", "--model", path, "--users", ids, "--data", "x.csv"],
                           capsys)
    assert code == 2 and "--retrain" in err
    ids.write_text("ghost\n")
    code, out, _ = run_cli(["forget", "--model", path, "--users", ids], capsys)
    assert code == 2  # baseline refuses before looking at the ids
    pop = create_model("pop").fit(data).save(tmp_path / "pop")
    before = (pop / "meta.json").read_bytes()
    code, out, _ = run_cli(["forget", "--model", pop, "--users", ids], capsys)
    assert code == 0 and "unchanged" in out and (pop / "meta.json").read_bytes() == before


def test_cli_forget_the_users_an_event_store_erased(data, tmp_path, capsys):
    from recforge.data.events import EventStore
    from recforge.serving.service import RecommendationService

    path = create_model("ease", reg=10.0).fit(data).save(tmp_path / "ease")
    store = EventStore(tmp_path / "ev.sqlite")
    gone = int(data.users.ids[8])
    RecommendationService(path, events=store).forget_user(gone)  # what DELETE does
    store.close()
    code, out, err = run_cli(["forget", "--model", path, "--erased-in",
                              tmp_path / "ev.sqlite"], capsys)
    assert code == 0 and "removed 1 user(s)" in out, err
    model = Recommender.load(path)
    assert gone not in model.users_ and model.n_users == data.n_users - 1
    code, out, _ = run_cli(["forget", "--model", path, "--erased-in",
                            tmp_path / "ev.sqlite"], capsys)
    assert code == 0 and "unchanged" in out  # nothing left to remove
    code, _, err = run_cli(["forget", "--model", path, "--erased-in", tmp_path / "no.sqlite"],
                           capsys)
    assert code == 2 and "no such event store" in err
    code, _, err = run_cli(["forget", "--model", path], capsys)
    assert code == 2 and "--users" in err


def test_cli_forget_help(capsys):
    code, out, _ = run_cli(["forget", "--help"], capsys)
    assert code == 0 and "--retrain" in out and "Woodbury" in out


# -- the server ----------------------------------------------------------------------------
def test_server_delete_makes_the_served_model_forget(data, tmp_path):
    from fastapi.testclient import TestClient

    from recforge.serving.app import create_app

    path = create_model("ease", reg=10.0).fit(data).save(tmp_path / "ease")
    app = create_app(path, events=tmp_path / "ev.sqlite")
    c = TestClient(app, base_url="http://localhost")
    json_header = {"content-type": "application/json"}
    user = int(data.users.ids[5])
    res = c.delete(f"/users/{user}", headers=json_header).json()
    assert res["model"] == "forgetting"
    assert app.state.forgetter.wait(60)
    served = app.state.service.model
    assert user not in served.users_ and app.state.forgetter.last["users_removed"] == 1
    ref = create_model("ease", reg=10.0).fit(_without(data, [user]))
    np.testing.assert_allclose(served.weights_.numpy(), ref.weights_.numpy(), atol=1e-6,
                               rtol=0)
    body = c.get(f"/users/{user}/recommendations", params={"k": 3}).json()
    assert body["fallback"] == "popular"
    other = int(data.users.ids[6])
    assert c.get(f"/users/{other}/recommendations").json()["fallback"] is None
    assert c.delete(f"/users/{user}", headers=json_header).json()["model"] == "not_in_model"
    info = c.get("/model").json()
    assert info["n_users"] == data.n_users - 1 and info["forgotten_users"] == 1
    # a reload of the directory (saved before the erasure) holds the user again: forgotten
    # again in the background, and so at the start of a server on that directory and store
    app.state.reload()
    assert app.state.forgetter.wait(60)
    assert user not in app.state.service.model.users_
    again = create_app(path, events=tmp_path / "ev.sqlite")
    assert again.state.forgetter.wait(60)
    assert user not in again.state.service.model.users_
    assert again.state.service.model.n_users == data.n_users - 1
    # a model that cannot forget exactly keeps the row, unused
    bpr = create_model("bpr", embedding_dim=8, epochs=1).fit(data).save(tmp_path / "bpr")
    app = create_app(bpr, events=tmp_path / "ev2.sqlite")
    c = TestClient(app, base_url="http://localhost")
    assert c.delete(f"/users/{other}", headers=json_header).json()["model"] == "cut_off"
    assert c.get(f"/users/{other}/recommendations").json()["fallback"] == "popular"
