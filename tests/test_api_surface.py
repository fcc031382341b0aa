"""The public API a newcomer types first (issue 25): the top-level imports, and id columns of
returned frames in the dtype of the ids passed, so a merge with the caller's frame works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


def test_top_level_imports():
    from recforge import Interactions, Recommender, create_model, evaluate, load_model
    from recforge.evaluation import evaluate as deep_evaluate
    from recforge.models import Recommender as DeepRecommender
    from recforge.models import create_model as deep_create

    assert Recommender is DeepRecommender and create_model is deep_create
    assert evaluate is deep_evaluate and callable(load_model)
    assert Interactions.__module__ == "recforge.data.interactions"
    import recforge

    for name in ("Recommender", "load_model", "create_model", "Interactions", "evaluate"):
        assert name in recforge.__all__
    with pytest.raises(AttributeError, match="no_such_name"):
        recforge.no_such_name  # noqa: B018


def test_import_recforge_stays_light():
    """`import recforge` (what `recforge --help` runs) does not import torch; the heavy
    names load on first use."""
    code = ("import sys, recforge; assert 'torch' not in sys.modules; "
            "recforge.Recommender; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _model(user_ids, item_ids, name="pop"):
    from recforge import Interactions, create_model

    users = np.repeat(user_ids, 2)  # user j: items j and j + 1 (distinct pairs)
    items = np.asarray(item_ids)[(np.arange(len(users)) // 2 + np.arange(len(users)) % 2)
                                 % len(item_ids)]
    data = Interactions.from_frame(pd.DataFrame({"user": users, "item": items}))
    return create_model(name).fit(data)


def test_load_model_is_recommender_load(tmp_path):
    from recforge import Recommender, load_model

    model = _model(np.arange(1, 6), np.arange(10, 20))
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, Recommender)
    pd.testing.assert_frame_equal(loaded.recommend([1, 2], k=3), model.recommend([1, 2], k=3))


@pytest.mark.parametrize("kind", ["int64", "object-int", "str"])
def test_recommend_output_merges_with_input_frame(kind):
    if kind == "str":
        model = _model(np.array(["u1", "u2", "u3", "u4"], dtype=object),
                       np.array(["a", "b", "c", "d", "e"], dtype=object))
        people = pd.DataFrame({"user": pd.Series(["u2", "u4"], dtype=object)})
    else:
        model = _model(np.arange(1, 5), np.arange(10, 15))
        people = pd.DataFrame({"user": pd.Series([2, 4], dtype="int64" if kind == "int64"
                                                 else object)})
    people["name"] = ["b", "d"]
    recs = model.recommend(people["user"], k=2)
    assert recs["user"].dtype == people["user"].dtype
    joined = recs.merge(people, on="user", how="inner", validate="many_to_one")
    assert len(joined) == len(recs) == 4
    assert joined.groupby("name")["item"].count().to_dict() == {"b": 2, "d": 2}


def test_id_dtypes_follow_what_was_passed():
    model = _model(np.arange(1, 5), np.arange(10, 15))
    assert model.recommend([1, 2], k=1)["user"].dtype == np.int64  # list of Python ints
    assert model.recommend(np.array([1, 2], np.int32), k=1)["user"].dtype == np.int32
    out = model.recommend(["1", "2"], k=1)  # text ids (a CLI, a CSV read as str)
    assert out["user"].dtype == object and out["user"].tolist() == ["1", "2"]
    assert model.recommend([], k=1)["user"].dtype == object  # nothing says which
    # unknown users answered with popular items keep their own ids
    pop = model.recommend(pd.Series([1, 99]), k=1, unknown="popular")
    assert pop["user"].tolist() == [1, 99] and pop["user"].dtype == np.int64
    knn = _model(np.arange(1, 5), np.arange(10, 15), "itemknn")
    assert knn.recommend_for_history([10], k=1)["item"].dtype == np.int64  # model's items


def test_similar_items_keeps_the_passed_dtype():
    from recforge import Interactions, create_model

    data = Interactions.from_frame(pd.DataFrame({"user": [1, 1, 2, 2, 3], "item": [10, 11, 10,
                                                                                 11, 12]}))
    model = create_model("itemknn").fit(data)
    asked = pd.Series([10, 11], dtype=object)
    out = model.similar_items(asked, k=1)
    assert out["item"].dtype == object and out["similar"].dtype == np.int64
    assert len(out.merge(pd.DataFrame({"item": asked}), on="item")) == len(out) == 2
    assert model.similar_items(np.array([10, 11]), k=1)["item"].dtype == np.int64
