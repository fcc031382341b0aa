"""The conformance tests every model must pass (inherit :class:`ModelConformance`).

A test class sets ``model_name`` (registry name) and optionally ``params`` (small, fast
hyperparameters); every test below then runs against that model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from recforge import ConfigError, DataError, Interactions, ModelError
from recforge.models import Recommender, create_model
from recforge.models.gradient import GradientRecommender
from recforge.models.registry import models_with
from recforge.training.embedding import embedding_of


def checkerboard(n: int = 20, *, hold_out_diagonal: bool = True) -> tuple[Interactions, Interactions]:
    """User u interacts with every item j of the same parity (u + j even), except item u
    (the diagonal), which is held out. A model that learns the structure must rank item u
    first for user u: it is the only unseen item of the user's parity."""
    u, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    same = (u + j) % 2 == 0
    diag = u == j
    train = same & ~diag if hold_out_diagonal else same
    tu, ti = np.nonzero(train)
    frame = pd.DataFrame({"user": [f"user{x}" for x in tu], "item": [f"item{x}" for x in ti]})
    full = Interactions.from_frame(pd.DataFrame({
        "user": [f"user{x}" for x in range(n)], "item": [f"item{x}" for x in range(n)]}))
    users, items = full.users, full.items
    tr = Interactions.from_frame(frame, users=users, items=items)
    te = Interactions.from_frame(pd.DataFrame({"user": [f"user{x}" for x in range(n)],
                                               "item": [f"item{x}" for x in range(n)]}),
                                 users=users, items=items)
    return tr, te


class ModelConformance:
    model_name: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}

    def make(self, **extra: Any) -> Recommender:
        return create_model(self.model_name, **{**self.params, **extra})

    def training_data(self, data: Interactions) -> Interactions:
        """The data the shared ``fitted`` fixture trains on (override, e.g. add ratings)."""
        return data

    def fit_model(self, model: Recommender, data: Interactions) -> Recommender:
        """How the suite fits (override, e.g. to pass item features)."""
        return model.fit(data)

    # -- the oracle -----------------------------------------------------------------------
    def test_checkerboard_oracle(self):
        train, test = checkerboard(20)
        model = self.fit_model(self.make(), train)
        recs = model.recommend([f"user{u}" for u in range(20)], k=1)
        if not model.capabilities.personalized:
            # A non-personalised model can only return the most popular unseen item.
            pop = model.item_popularity_
            for row in recs.itertuples():
                u = model.users_.index([row.user])[0]
                seen = set(model.seen_[u].indices)
                best = max((i for i in range(model.n_items) if i not in seen), key=lambda i: pop[i])
                assert pop[model.items_.index([row.item])[0]] == pop[best]
            return
        expected = [f"item{u}" for u in range(20)]
        assert recs["item"].tolist() == expected

    # -- the recommendation contract ------------------------------------------------------
    def test_recommend_contract(self, fitted, random_data):
        users = random_data.users.ids[:7]
        recs = fitted.recommend(users, k=5)
        assert list(recs.columns) == ["user", "item", "rank", "score"]
        assert set(recs["user"]) <= set(users.tolist())
        for user, grp in recs.groupby("user"):
            assert grp["rank"].tolist() == list(range(1, len(grp) + 1))
            assert np.all(np.diff(grp["score"].to_numpy()) <= 1e-6)
            u = random_data.users.index([user])[0]
            seen = set(random_data.items.ids[random_data.csr[u].indices].tolist())
            assert not seen & set(grp["item"].tolist())
            assert len(grp) == min(5, random_data.n_items - len(seen))

    def test_include_seen_and_candidates(self, fitted, random_data):
        user = random_data.users.ids[0]
        u = random_data.users.index([user])[0]
        seen = random_data.items.ids[random_data.csr[u].indices]
        recs = fitted.recommend([user], k=random_data.n_items, include_seen=True)
        assert len(recs) == random_data.n_items
        assert set(seen.tolist()) <= set(recs["item"].tolist())
        cands = random_data.items.ids[:6]
        recs = fitted.recommend([user], k=10, candidates=cands, include_seen=True)
        assert set(recs["item"]) <= set(cands.tolist()) and len(recs) == 6

    def test_unknown_user(self, fitted, random_data):
        with pytest.raises(ModelError, match="unknown user"):
            fitted.recommend(["no-such-user"], k=3)
        assert fitted.recommend(["no-such-user"], k=3, unknown="skip").empty
        known = random_data.users.ids[0]
        recs = fitted.recommend(["no-such-user", known], k=3, unknown="popular")
        assert recs["user"].tolist()[:3] == ["no-such-user"] * 3
        top_pop = random_data.items.ids[np.argsort(-random_data.item_counts(), kind="stable")[:1]]
        assert recs["item"].iloc[0] in set(random_data.items.ids[
            random_data.item_counts() == random_data.item_counts().max()].tolist())
        assert len(top_pop) == 1

    def test_empty_input(self, fitted, random_data):
        assert fitted.recommend([], k=3).empty
        empty = random_data.subset(np.zeros(len(random_data), dtype=bool))
        with pytest.raises(DataError):
            self.fit_model(self.make(), empty)

    def test_score_shapes(self, fitted, random_data):
        s = fitted.score([0, 1, 2])
        assert isinstance(s, torch.Tensor) and s.shape == (3, random_data.n_items)
        assert torch.isfinite(s).all()
        s2 = fitted.score([1], [3, 0])
        assert torch.allclose(s2[0], s[1, [3, 0]])
        with pytest.raises(ModelError):
            fitted.score([random_data.n_users])

    def test_not_fitted(self):
        with pytest.raises(ModelError, match="not fitted"):
            self.make().recommend(["x"], k=3)

    def test_bad_k(self, fitted, random_data):
        with pytest.raises(ConfigError):
            fitted.recommend(random_data.users.ids[:1], k=0)

    # -- persistence and determinism -------------------------------------------------------
    def test_save_load_identical(self, fitted, random_data, tmp_path):
        path = fitted.save(tmp_path / "model")
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted)
        assert loaded.get_params() == fitted.get_params()
        users = np.arange(random_data.n_users)
        assert torch.equal(loaded.score(users), fitted.score(users))
        ids = random_data.users.ids[:5]
        pd.testing.assert_frame_equal(loaded.recommend(ids, k=4), fitted.recommend(ids, k=4))

    def test_tampered_artifact_rejected(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "model")
        weights = path / "weights.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        with pytest.raises(ModelError, match="checksum"):
            Recommender.load(path)

    def test_deterministic_with_seed(self, random_data):
        a = self.fit_model(self.make(**self._seed_kw(7)), random_data)
        b = self.fit_model(self.make(**self._seed_kw(7)), random_data)
        users = np.arange(random_data.n_users)
        assert torch.equal(a.score(users), b.score(users))

    def _seed_kw(self, seed: int) -> dict[str, Any]:
        cls = create_model(self.model_name).__class__
        return {"seed": seed} if "seed" in cls._param_names() else {}

    def test_declares_itself(self, fitted):
        """What the class declares (capabilities, tuning space, quick-run parameters)
        matches what the model takes and does."""
        cls = type(fitted)
        caps, params = cls.capabilities, set(cls._param_names())
        assert caps.seeded == ("seed" in params)
        assert caps.folds_in_history == (cls._score_history is not Recommender._score_history)
        assert caps.gradient == isinstance(fitted, GradientRecommender)
        assert set(cls.tuning_space) <= params and set(cls.quick_params) <= params
        kinds = {"float", "int", "log", "logint", "cat"}
        assert all(spec[0] in kinds for spec in cls.tuning_space.values())
        create_model(self.model_name, **cls.quick_params)._validate_params()
        assert cls.name in models_with("ranks")
        if caps.gradient:  # row-sparse updates need user tables read by lookup
            tables = [n for n in fitted.user_parameter_names()
                      if embedding_of(fitted.module_, n) is not None]
            assert caps.sparse_user_updates == bool(fitted.user_tables_read_by_lookup
                                                    and tables)

    def test_params_roundtrip(self):
        model = self.make()
        clone = model.clone()
        assert clone.get_params() == model.get_params() and clone is not model
        with pytest.raises(ConfigError, match="no parameter"):
            create_model(self.model_name, no_such_param=1)

    def test_similar_items_never_self(self, fitted, random_data):
        if not fitted.capabilities.similar_items:
            with pytest.raises(ModelError, match="similar_items"):
                fitted.similar_items(random_data.items.ids[:3], k=4)
            return
        sims = fitted.similar_items(random_data.items.ids[:3], k=4)
        assert list(sims.columns) == ["item", "similar", "rank", "score"]
        assert not (sims["item"] == sims["similar"]).any()
        assert sims.groupby("item").size().max() <= 4

    # -- users the model never saw ---------------------------------------------------------
    def test_recommend_for_history(self, fitted, random_data):
        if not fitted.supports_history:
            with pytest.raises(ModelError, match="cannot score a history"):
                fitted.recommend_for_history(random_data.items.ids[:3], k=3)
            return
        hist = random_data.items.ids[random_data.csr[0].indices[:5]]
        recs = fitted.recommend_for_history(hist, k=5)
        assert list(recs.columns) == ["item", "rank", "score"]
        assert recs["rank"].tolist() == [1, 2, 3, 4, 5]
        assert np.isfinite(recs["score"]).all()
        assert not set(hist.tolist()) & set(recs["item"].tolist())
        with pytest.raises(ModelError, match="unknown to the model"):
            fitted.recommend_for_history([*hist.tolist(), "no-such-item"], k=5)
        skipped = fitted.recommend_for_history([*hist.tolist(), "no-such-item"], k=5,
                                               unknown="skip")
        assert skipped.attrs["unknown_items"] == ["no-such-item"]
        pd.testing.assert_frame_equal(skipped, recs)
        cands = random_data.items.ids[:8]
        some = fitted.recommend_for_history(hist, k=20, candidates=cands)
        assert set(some["item"]) <= set(cands.tolist())

    def test_history_oracle(self):
        """A new user whose history is user 0's checkerboard row gets user 0's held-out
        item first."""
        model = self.make()
        if not model.supports_history or not model.capabilities.personalized:
            pytest.skip(f"{self.model_name} does not score histories")
        train, _ = checkerboard(20)
        model = self.fit_model(model, train)
        hist = [f"item{j}" for j in range(2, 20, 2)]
        assert model.recommend_for_history(hist, k=1)["item"].tolist() == ["item0"]
