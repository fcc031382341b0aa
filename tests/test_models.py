"""Every built-in model runs the conformance suite, plus model-specific checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conformance import ModelConformance

from recforge import ConfigError, Interactions
from recforge.models import create_model
from recforge.models.registry import available_models, get_model_class


class TestPopularity(ModelConformance):
    model_name = "pop"

    def test_scores_are_counts(self, random_data):
        model = create_model("pop").fit(random_data)
        assert np.array_equal(model.score([0])[0].numpy(), random_data.item_counts())

    def test_similar_items_unsupported(self, random_data):
        from recforge import ModelError

        model = create_model("pop").fit(random_data)
        with pytest.raises(ModelError, match="similar_items"):
            model.similar_items(random_data.items.ids[:1])


class TestItemKNN(ModelConformance):
    model_name = "itemknn"
    params = {"neighbors": 10}

    def test_similarity_by_hand(self):
        # Items a, b share users 0 and 1; c only has user 2.
        data = Interactions.from_frame(__import__("pandas").DataFrame(
            {"user": [0, 0, 1, 1, 2, 1], "item": ["a", "b", "a", "b", "c", "c"]}))
        model = create_model("itemknn", neighbors=5).fit(data)
        sim = model.similarity_.toarray()
        a, b, c = data.items.index(["a", "b", "c"])
        assert sim[a, b] == pytest.approx(1.0)  # identical columns
        assert sim[a, c] == pytest.approx(1 / (np.sqrt(2) * np.sqrt(2)))
        assert sim[a, a] == 0.0
        shrunk = create_model("itemknn", neighbors=5, shrink=2.0).fit(data).similarity_.toarray()
        assert shrunk[a, b] == pytest.approx(2 / (2 + 2))

    def test_neighbors_limit(self, random_data):
        model = create_model("itemknn", neighbors=3).fit(random_data)
        assert np.diff(model.similarity_.indptr).max() <= 3

    def test_bad_params(self, random_data):
        with pytest.raises(ConfigError, match="neighbors"):
            create_model("itemknn", neighbors=0).fit(random_data)


class TestEASE(ModelConformance):
    model_name = "ease"
    params = {"reg": 10.0}

    def test_closed_form(self, random_data):
        model = create_model("ease", reg=5.0).fit(random_data)
        x = random_data.binary_csr.toarray().astype(np.float64)
        g = x.T @ x + 5.0 * np.eye(x.shape[1])
        p = np.linalg.inv(g)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        assert np.allclose(model.weights_.numpy(), b, atol=1e-4)
        assert torch.allclose(model.score([0, 1]), torch.from_numpy(x[:2] @ b).float(), atol=1e-3)

    def test_bad_reg(self, random_data):
        with pytest.raises(ConfigError, match="reg"):
            create_model("ease", reg=-1).fit(random_data)


def test_registry_names():
    assert {"pop", "itemknn", "ease"} <= set(available_models())
    with pytest.raises(ConfigError, match="did you mean 'ease'"):
        get_model_class("eas")
