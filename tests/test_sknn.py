"""Session-kNN: the conformance suite plus neighbour scores by hand, recency, sessions."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError, DataError, Interactions, ModelError
from recforge.models import Recommender, create_model
from recforge.models.registry import models_with, resolve_name


class TestSessionKNN(ModelConformance):
    model_name = "sknn"
    params = {"neighbors": 20, "sample_size": 100}


def _sessions(*rows: list[str]) -> Interactions:
    """One user per session, named s0, s1, ... (later rows are more recent: no timestamps,
    so input order is time)."""
    users = [f"s{r}" for r, row in enumerate(rows) for _ in row]
    return Interactions.from_frame(pd.DataFrame(
        {"user": users, "item": [i for row in rows for i in row]}))


# the current session is [A, B, X]; each training session shares one of its items
TRAIN = (["X", "Y"], ["A", "Z"], ["B", "W"])
WEIGHTS = {  # the weights of A, B, X (places 1, 2, 3 of 3) by hand
    "linear": (0.8, 0.9, 1.0),
    "same": (1.0, 1.0, 1.0),
    "div": (1 / 3, 2 / 3, 1.0),
    "quadratic": (1 / 9, 4 / 9, 1.0),
    "log": (1 / math.log10(3.7), 1 / math.log10(2.7), 1 / math.log10(1.7)),
}


def _scores(model: Recommender, history: list[str]) -> dict[str, float]:
    recs = model.recommend_for_history(history, k=model.n_items)
    return dict(zip(recs["item"], recs["score"], strict=True))


@pytest.mark.parametrize("weighting", sorted(WEIGHTS))
def test_neighbour_scores_by_hand(weighting):
    a, b, x = WEIGHTS[weighting]
    norm = math.sqrt(a * a + b * b + x * x)
    model = create_model("sknn", weighting=weighting, idf_weighting=0.0).fit(_sessions(*TRAIN))
    got = _scores(model, ["A", "B", "X"])
    # cosine of the weighted current vector and each binary 2-item session
    want = {"Y": x / (norm * math.sqrt(2)), "Z": a / (norm * math.sqrt(2)),
            "W": b / (norm * math.sqrt(2))}
    for item, value in want.items():
        assert got[item] == pytest.approx(value, rel=1e-5)


def test_jaccard_decay_idf_and_limits_by_hand():
    data = _sessions(*TRAIN)
    got = _scores(create_model("sknn", similarity="jaccard", idf_weighting=0.0).fit(data),
                  ["A", "B", "X"])
    assert got["Y"] == pytest.approx(1 / 4) and got["W"] == pytest.approx(1 / 4)
    # decay by the place of the most recent shared item: X is 1 back, B 2, A 3
    got = _scores(create_model("sknn", weighting="same", weighting_score="div",
                               idf_weighting=0.0).fit(data), ["A", "B", "X"])
    base = 1 / (math.sqrt(3) * math.sqrt(2))
    assert [got["Y"], got["W"], got["Z"]] == pytest.approx([base, base / 2, base / 3])
    got = _scores(create_model("sknn", weighting="same", idf_weighting=2.0).fit(data),
                  ["A", "B", "X"])
    assert got["Y"] == pytest.approx(base * (1 + 2 * math.log(3)), rel=1e-5)
    # neighbors=1: the most similar session only (X weighs most under linear decay)
    got = _scores(create_model("sknn", weighting="linear", neighbors=1).fit(data),
                  ["A", "B", "X"])
    assert got["Y"] > 0 and got["Z"] == 0 and got["W"] == 0
    # sample_size=1: the most recent candidate only (the last session read)
    got = _scores(create_model("sknn", sample_size=1).fit(data), ["A", "B", "X"])
    assert got["W"] > 0 and got["Y"] == 0 and got["Z"] == 0


def test_recency_of_the_current_session_matters():
    """A session ending in X recommends what followed X elsewhere over what followed
    the session's earlier item; reversed, the other way round."""
    data = _sessions(["X", "Y"], ["B", "Z"], ["B", "X"])
    model = create_model("sknn").fit(data)
    assert model.recommend(["s2"], k=1)["item"].tolist() == ["Y"]
    assert model.recommend_for_history(["B", "X"], k=1)["item"].tolist() == ["Y"]
    assert model.recommend_for_history(["X", "B"], k=1)["item"].tolist() == ["Z"]
    # the current session's own items score 0 unless remind=True
    s2 = data.users.index(["s2"])
    b, x = data.items.index(["B", "X"])
    assert model.score_sequences(s2, data)[0, [b, x]].tolist() == [0.0, 0.0]
    reminded = create_model("sknn", remind=True).fit(data).score_sequences(s2, data)[0]
    assert reminded[x] > 0 and reminded[b] > 0
    # without position weights the two neighbours tie
    flat = _scores(create_model("sknn", weighting="same").fit(data), ["B", "X"])
    assert flat["Y"] == pytest.approx(flat["Z"])


def _timed() -> Interactions:
    # user c: an old session [Q], then after a long pause [B, X]
    frame = pd.DataFrame({
        "user": ["u1", "u1", "u2", "u2", "u3", "u3", "c", "c", "c"],
        "item": ["X", "Y", "B", "Z", "Q", "R", "Q", "B", "X"],
        "timestamp": [0, 10, 20, 30, 40, 50, 100, 10_000, 10_010]})
    return Interactions.from_frame(frame)


def test_sessions_cut_by_gap_and_the_current_session():
    data = _timed()
    c = data.users.index(["c"])[0]
    r = data.items.index(["R"])[0]
    cut = create_model("sknn", session_gap=3600).fit(data)
    assert cut.sessions_.shape[0] == 5  # c's two sessions
    whole = create_model("sknn").fit(data)
    assert whole.sessions_.shape[0] == 4
    # with the gap, c's current session is [B, X]: Q (and so R) is out of it
    assert cut.score([c])[0, r] == 0
    assert cut.score_sequences(np.array([c]), data)[0, r] == 0
    assert whole.score_sequences(np.array([c]), data)[0, r] > 0
    # c's earlier session [Q] is not contained in the current one: a neighbour all the
    # same, but it shares nothing with [B, X]; [B, X] itself is never c's neighbour
    assert torch.allclose(cut.score([c]), cut.score_sequences(np.array([c]), data))
    assert cut.recommend(["c"], k=1)["item"].tolist() == ["Y"]
    # a history the model was not trained on: its last session counts
    later = pd.DataFrame({"user": ["c", "c"], "item": ["Z", "B"], "timestamp": [0, 99_999]})
    hist = Interactions.from_frame(later, users=data.users, items=data.items)
    y, z = data.items.index(["Y", "Z"])
    scores = cut.score_sequences(np.array([c]), hist)[0]
    assert scores[z] > 0 and scores[y] == 0  # [B] only: u2's session
    # no history at all: nothing to go on, every score 0
    empty = data.subset(np.zeros(len(data), dtype=bool))
    assert not cut.score_sequences(np.arange(data.n_users), empty).any()
    with pytest.raises(DataError, match="timestamps"):
        create_model("sknn", session_gap=60).fit(_sessions(*TRAIN))


def test_session_column():
    base = _timed()
    session = np.array([0, 0, 1, 1, 2, 2, 3, 4, 4])  # c: [Q] then [B, X]
    data = Interactions(base.user, base.item, None, base.timestamp, users=base.users,
                        items=base.items, session=session)
    model = create_model("sknn", session_gap=None).fit(data)
    assert model.sessions_.shape[0] == 5
    c = data.users.index(["c"])[0]
    r = data.items.index(["R"])[0]
    assert model.score_sequences(np.array([c]), data)[0, r] == 0


def test_save_load_round_trip_and_checks(tmp_path):
    data = _timed()
    model = create_model("sknn", session_gap=3600, weighting_score="div",
                         idf_weighting=1.0).fit(data)
    path = model.save(tmp_path / "m")
    loaded = Recommender.load(path)
    users = np.arange(data.n_users)
    assert torch.equal(loaded.score_sequences(users, data), model.score_sequences(users, data))
    pd.testing.assert_frame_equal(loaded.recommend_for_history(["B", "X"], k=3),
                                  model.recommend_for_history(["B", "X"], k=3))
    # a doctored state (checksums brought up to date) is refused, naming what is wrong
    def places(arrays):
        arrays["model.sessions_data"] = torch.full_like(arrays["model.sessions_data"], 2.0)

    def owner(arrays):
        arrays["model.session_user"] = torch.roll(arrays["model.session_user"], 1)

    def last(arrays):
        arrays["model.user_last"] = torch.full_like(arrays["model.user_last"], 99)

    for change, message in ((places, "places 1..L"), (owner, "another user"),
                            (last, "user_last")):
        _doctor(path, tmp_path / change.__name__, change)
        with pytest.raises(ModelError, match=message):
            Recommender.load(tmp_path / change.__name__)


def _doctor(path, out, change) -> None:
    """A copy of the saved model at ``out`` with ``change(arrays)`` applied to its
    weights and the checksums in meta.json brought up to date (an edit, not damage)."""
    import hashlib
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(path, out)
    arrays = load_file(out / "weights.safetensors")
    change(arrays)
    save_file(arrays, out / "weights.safetensors")
    meta = json.loads((out / "meta.json").read_text())
    for name in meta["files"]:
        meta["files"][name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    (out / "meta.json").write_text(json.dumps(meta))


def test_bad_params():
    data = _sessions(*TRAIN)
    for bad in ({"neighbors": 0}, {"sample_size": -1}, {"weighting": "exp"},
                {"weighting_score": "cubic"}, {"similarity": "dot"}, {"idf_weighting": -1},
                {"session_gap": -5}, {"session_gap": "1h"}, {"neighbors": 2.5},
                {"remind": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            create_model("sknn", **bad).fit(data)


def test_registered():
    assert resolve_name("V-SKNN") == "sknn" and resolve_name("SessionKNN") == "sknn"
    assert "sknn" in models_with("reads_order") and "sknn" in models_with("folds_in_history")
    assert json.dumps(create_model("sknn").get_params())
