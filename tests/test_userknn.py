"""User-based kNN: the conformance suite plus the similarities and the fold-in by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError, Interactions
from recforge.models import create_model
from recforge.models.registry import models_with


class TestUserKNN(ModelConformance):
    model_name = "userknn"
    params = {"neighbors": 10}


def _data() -> Interactions:
    # users 0 and 1 share items a and b; user 2 has only c; user 1 also has c
    return Interactions.from_frame(pd.DataFrame(
        {"user": [0, 0, 1, 1, 1, 2], "item": ["a", "b", "a", "b", "c", "c"]}))


def test_similarity_by_hand():
    data = _data()
    model = create_model("userknn", neighbors=5).fit(data)
    sim = model.similarity_.toarray()
    u0, u1, u2 = data.users.index([0, 1, 2])
    assert sim[u0, u1] == pytest.approx(2 / (np.sqrt(2) * np.sqrt(3)))
    assert sim[u2, u1] == pytest.approx(1 / np.sqrt(3))
    assert sim[u0, u2] == 0.0 and sim[u0, u0] == 0.0  # nothing in common; never oneself
    shrunk = create_model("userknn", neighbors=5, shrink=1.0).fit(data).similarity_.toarray()
    assert shrunk[u0, u1] == pytest.approx(2 / (np.sqrt(6) + 1))
    # user 0's score for c: its one neighbour with c (user 1), weighted by similarity
    c = data.items.index(["c"])[0]
    assert model.score([u0], [c]).item() == pytest.approx(sim[u0, u1])


def test_neighbors_limit_and_bad_params(random_data):
    model = create_model("userknn", neighbors=3).fit(random_data)
    assert np.diff(model.similarity_.indptr).max() <= 3
    with pytest.raises(ConfigError, match="neighbors"):
        create_model("userknn", neighbors=0).fit(random_data)


def test_fold_in_matches_a_trained_user():
    """A posted history scores as the same user's row does, plus the user itself (the
    history's most similar user, whom the trained user never counts)."""
    data = _data()
    model = create_model("userknn", neighbors=5).fit(data)
    u0 = data.users.index([0])[0]
    folded = model._score_history(data.csr[u0].indices.astype(np.int64), None)
    own = torch.from_numpy(model.history_[u0].toarray().ravel())
    assert torch.allclose(folded, model.score([u0])[0] + own, atol=1e-6)
    recs = model.recommend_for_history(["a", "b"], k=1)
    assert recs["item"].tolist() == ["c"]


def test_declared():
    assert "userknn" in models_with("folds_in_history")
    assert "userknn" not in models_with("similar_items")
