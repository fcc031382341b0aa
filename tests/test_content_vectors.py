"""Item text encoded offline by the bundled encoder, and precomputed item vectors of any
modality: reading, validation (with property tests), and use by the feature models."""

from __future__ import annotations

import logging
import os
import socket
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recforge import ConfigError, DataError, Interactions, ModelError
from recforge.data import features as F
from recforge.data import text_encoders as T
from recforge.data.split import cold_start_items
from recforge.data.vectors import item_vectors, vectors_from_arrays, write_item_vectors
from recforge.data.vocabulary import Vocabulary
from recforge.evaluation import evaluate
from recforge.models import Recommender, create_model

_FUZZ = settings(deadline=None, max_examples=int(os.environ.get("RECFORGE_FUZZ_EXAMPLES", 60)),
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- the bundled text encoder -----------------------------------------------------------------
def test_bundled_encoder_loads_with_no_network_and_no_cache(monkeypatch, tmp_path):
    """The default encoder's weights and tokenizer come from the wordllama wheel: with every
    connection refused and an empty home (no model cache), it loads and encodes."""
    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    T._wordllama.cache_clear()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    vectors = T.encode_texts(["a space opera with starships", "starships and galaxies at war",
                              "a romantic comedy in Paris", "", None])
    assert (list(root.handlers), root.level) == before  # wordllama's basicConfig undone
    assert vectors.shape == (5, 256) and vectors.dtype == np.float32
    assert not vectors[3:].any()  # no text, no vector
    assert not list(tmp_path.iterdir())  # nothing downloaded or cached

    def cos(a, b):
        return a @ b / np.linalg.norm(a) / np.linalg.norm(b)

    centred = T.decorrelate(np.vstack([vectors[:3], T.encode_texts(
        ["a quiet drama about a family", "a documentary about birds"])]), drop_components=0)
    assert cos(centred[0], centred[1]) > cos(centred[0], centred[2]) + 0.1


def test_decorrelate_centres_and_removes_the_top_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)) + 10.0  # a large shared component
    x[3] = 0.0
    out = T.decorrelate(x, drop_components=1)
    rows = np.delete(out, 3, axis=0)
    assert not out[3].any()
    np.testing.assert_allclose(rows.mean(axis=0), 0.0, atol=1e-5)
    # the direction of largest variance is gone: the remaining variance is below the
    # second singular value of the centred input
    centred = np.delete(x, 3, axis=0) - np.delete(x, 3, axis=0).mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    assert np.linalg.svd(rows, compute_uv=False)[0] <= s[1] + 1e-4


def test_text_vectors_block_and_default_encoder_of_tables(tmp_path):
    ids = Vocabulary(["a", "b", "c"])
    block = F.text_vectors(ids, ["space opera", "", "romantic comedy"], "plot")
    assert block.n_features == 256 and set(block.groups) == {"plot"}
    assert block.has_features().tolist() == [True, False, True]
    table = pd.DataFrame({"item": [1, 2, 3, 4],
                          "plot": ["a ship lost in space among the stars of a galaxy",
                                   "two lovers meet again in a small town in spring",
                                   "a detective hunts a killer through a rainy city",
                                   "robots rebel against the crew of a space station"],
                          "genre": ["scifi", "romance", "crime", "scifi"]})
    feats = F.from_frame(table, "item")
    assert sorted(set(feats.groups)) == ["genre", "plot"]
    assert (feats.groups == "plot").sum() == 256
    tfidf = F.from_frame(table, "item", text_encoder="tfidf")
    assert "plot:space" in set(tfidf.names)
    with pytest.raises(ConfigError, match="does not download"):
        F.from_frame(table, "item", text_encoder=tmp_path / "no-model")


def test_missing_wordllama_falls_back_to_tfidf_with_a_message(monkeypatch):
    monkeypatch.setattr(F, "wordllama_available", lambda: False)
    table = pd.DataFrame({"item": [1, 2, 3], "plot": ["a long story about ships at sea",
                                                       "a long story about a town",
                                                       "another story about the sea"]})
    with pytest.warns(UserWarning, match="pip install wordllama"):
        feats = F.from_frame(table, "item", kinds={"plot": "text"})
    assert "plot:sea" in set(feats.names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for by name: no warning
        F.from_frame(table, "item", kinds={"plot": "text"}, text_encoder="tfidf")


class _MovieLensLike:
    def __init__(self):
        self.items = pd.DataFrame(
            {"title": ["Alien (1979)", "Aliens (1986)", "Notting Hill (1999)", "Heat (1995)"],
             "genres": ["Horror|Sci-Fi", "Action|Sci-Fi", "Comedy|Romance",
                        "(no genres listed)"],
             "year": [1979, 1986, 1999, 1995]}, index=pd.Index([1, 2, 3, 4], name="item"))
        self.tags = pd.DataFrame({"user": [1, 2], "item": [1, 3], "tag": ["space", "london"]})


def test_movielens_text_group_is_one_document_per_film():
    ml = _MovieLensLike()
    feats = F.movielens_item_features(ml)
    assert sorted(set(feats.groups)) == ["genres", "text", "year"]
    old = F.movielens_item_features(ml, text_encoder="tfidf")
    assert "text" not in set(old.groups) and set(old.groups) <= {"genres", "title", "tags", "year"}
    # title without its year, genre words, tags: one document per film
    docs = ["Alien. Horror Sci-Fi. space", "Aliens. Action Sci-Fi", "Notting Hill. Comedy "
            "Romance. london", "Heat"]
    expected = F.text_vectors(Vocabulary([1, 2, 3, 4]), docs, "text")
    np.testing.assert_allclose(feats.select_groups(["text"]).matrix.toarray(),
                               expected.matrix.toarray(), rtol=1e-5, atol=1e-6)


def test_movielens_words_beside_the_vector_for_the_models_that_map_them():
    """words=True adds the TF-IDF title and tag groups beside the text vector (the same
    groups as the TF-IDF features); the CLI and experiments build them for hybrid,
    hybrid_bpr and vbpr, whose classes ask for them, and not for content."""
    from recforge.experiment.workflow import PreparedData, item_features

    ml = _MovieLensLike()
    both = F.movielens_item_features(ml, words=True)
    old = F.movielens_item_features(ml, text_encoder="tfidf")
    # (a word must be in two films' titles or tags: this catalogue has tag words only)
    assert set(both.groups) == set(old.groups) | {"text"} == {"genres", "tags", "text", "year"}
    for group in set(old.groups) & {"title", "tags"}:
        assert both.select_groups([group]).names.tolist() == \
            old.select_groups([group]).names.tolist()
    np.testing.assert_allclose(both.select_groups(["text"]).matrix.toarray(),
                               F.movielens_item_features(ml).select_groups(["text"])
                               .matrix.toarray())
    hybrid, content = create_model("hybrid"), create_model("content")
    assert set(item_features(None, ml, model=hybrid).groups) == set(both.groups)
    for name in ("vbpr", "hybrid_bpr"):
        assert set(item_features(None, ml, model=create_model(name)).groups) == \
            set(both.groups)
    assert set(item_features(None, ml, model=content).groups) == {"genres", "text", "year"}
    plain = item_features(None, ml)
    data = PreparedData(train=None, test=None, valid=None, train_pos=None, test_pos=None,
                        valid_pos=None, item_features=plain, feature_bundle=ml)
    assert data.features_for(content) is plain
    worded = data.features_for(hybrid)
    assert set(worded.groups) == set(both.groups) and data.features_for(hybrid) is worded


# -- reading vectors --------------------------------------------------------------------------
def test_the_three_layouts_read_back_alike(tmp_path):
    ids = [10, 20, 30]
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    parquet = item_vectors(write_item_vectors(tmp_path / "v.parquet", ids, m), name="image")
    npy = item_vectors(write_item_vectors(tmp_path / "v.npy", ids, m), name="image")
    rows = np.zeros(3, dtype=[("item", "i8"), ("vector", "f4", (4,))])
    rows["item"], rows["vector"] = ids, m
    np.save(tmp_path / "s.npy", rows)
    structured = item_vectors(tmp_path / "s.npy", name="image")
    pq.write_table(pa.table({"item": ids, **{f"d{j}": m[:, j] for j in range(4)}}),
                   tmp_path / "cols.parquet")
    columns = item_vectors(tmp_path / "cols.parquet", name="image")
    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"item": ["x", "y", "z"], "clip": [list(r) for r in m]}), lists)
    for f in (parquet, npy, structured, columns):
        assert f.ids.ids.tolist() == ids and f.ids.is_integer
        np.testing.assert_array_equal(f.matrix.toarray(), m)
        assert f.names.tolist() == [f"image:{j}" for j in range(4)]
    assert item_vectors(lists).ids.ids.tolist() == ["x", "y", "z"]
    explicit = item_vectors(tmp_path / "v.npy", ids=["a", "b", "c"])
    assert explicit.ids.ids.tolist() == ["a", "b", "c"]


def _parquet(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("make,match,row,column", [
    (lambda p: _parquet(p, item=[1, 2], v=[[1.0, 2.0], [1.0]]), "1 numbers where", 2, "v"),
    (lambda p: _parquet(p, item=[1, 1], v=[[1.0], [2.0]]), "appears twice .first at row 1",
     2, "item"),
    (lambda p: _parquet(p, item=[1, None], v=[[1.0], [2.0]]), "missing id", 2, "item"),
    (lambda p: _parquet(p, item=[1, 2], v=[[1.0, 0.0], [2.0, float("nan")]]),
     "nan in dimension 1", 2, "vectors[1]"),
    (lambda p: _parquet(p, item=[1, 2], v=[[1.0], None]), "missing vector", 2, "v"),
    (lambda p: _parquet(p, item=[1, 2], v=[[1.0], [None]]), "missing number", 2, "v"),
    (lambda p: _parquet(p, item=[1, 2], v=[["a"], ["b"]]), "must be numbers", None, "v"),
    (lambda p: _parquet(p, item=[1, 2], a=[1.0, 2.0], b=["x", "y"]), "is string", None, "b"),
    (lambda p: _parquet(p, item=[1, 2], a=[1.0, None]), "missing value", 2, "a"),
    (lambda p: _parquet(p, id=[1, 2], v=[[1.0], [2.0]]), "no id column 'item'", None, "item"),
    (lambda p: _parquet(p, item=[1, 2]), "no vector column", None, None),
    (lambda p: _parquet(p, item=[1], a=[[1.0]], b=[[2.0]]), "several list columns", None, None),
])
def test_bad_parquet_vectors_name_file_row_and_column(tmp_path, make, match, row, column):
    path = make(tmp_path / "v.parquet")
    with pytest.raises(DataError, match=match) as info:
        item_vectors(path)
    err = info.value
    assert err.source == str(path) and err.row == row and err.column == column


def test_bad_npy_vectors_and_options(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((3, 2)))
    with pytest.raises(DataError, match="a.ids.txt"):
        item_vectors(tmp_path / "a.npy")
    (tmp_path / "a.ids.txt").write_text("1\n2\n")
    with pytest.raises(DataError, match="2 ids for 3 vectors"):
        item_vectors(tmp_path / "a.npy")
    (tmp_path / "a.ids.txt").write_text("1\n2\n3\n")
    with pytest.raises(DataError, match="2 dimensions, expected 3"):
        item_vectors(tmp_path / "a.npy", dim=3)
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not objects"):
        item_vectors(tmp_path / "o.npy", ids=[1])
    np.save(tmp_path / "b.npy", np.ones(4))
    with pytest.raises(DataError, match="2-D"):
        item_vectors(tmp_path / "b.npy", ids=[1, 2, 3, 4])
    (tmp_path / "c.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="cannot read"):
        item_vectors(tmp_path / "c.npy", ids=[1])
    with pytest.raises(DataError, match="no such file"):
        item_vectors(tmp_path / "missing.npy")
    (tmp_path / "v.csv").write_text("item,a\n1,2\n")
    with pytest.raises(DataError, match=".npy or .parquet"):
        item_vectors(tmp_path / "v.csv")
    with pytest.raises(ConfigError, match="name"):
        item_vectors(tmp_path / "a.npy", name="im:age")


def test_unknown_ids_keep_drop_or_error(tmp_path):
    path = write_item_vectors(tmp_path / "v.parquet", [1, 2, 99], np.eye(3))
    known = Vocabulary([1, 2, 3])
    assert item_vectors(path, known=known).ids.ids.tolist() == [1, 2, 99]
    assert item_vectors(path, known=known, unknown="drop").ids.ids.tolist() == [1, 2]
    with pytest.raises(DataError, match="99 is not an item") as info:
        item_vectors(path, known=known, unknown="error")
    assert info.value.row == 3
    with pytest.raises(DataError, match="no id of the vectors"):
        item_vectors(path, known=Vocabulary([7]), unknown="drop")
    with pytest.raises(ConfigError, match="unknown must be"):
        item_vectors(path, unknown="ignore")


@_FUZZ
@given(n=st.integers(1, 12), d=st.integers(1, 9), layout=st.sampled_from(["parquet", "npy"]),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 11), st.integers(0, 8),
                                          st.sampled_from([np.nan, np.inf, -np.inf]))),
       seed=st.integers(0, 2**16))
def test_vectors_round_trip_or_report_the_bad_value(tmp_path_factory, n, d, layout, bad, seed):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(n, d)).astype(np.float32)
    ids = rng.choice(10_000, n, replace=False).tolist()
    if bad is not None:
        r, c = bad[0] % n, bad[1] % d
        m[r, c] = bad[2]
    path = write_item_vectors(tmp_path_factory.mktemp("v") / f"v.{layout}", ids, m)
    if bad is None:
        f = item_vectors(path, dim=d)
        assert f.ids.ids.tolist() == ids
        np.testing.assert_array_equal(f.matrix.toarray(), m)
        return
    first = np.argwhere(~np.isfinite(m))[0]
    with pytest.raises(DataError) as info:
        item_vectors(path)
    assert info.value.row == first[0] + 1 and info.value.column == f"vectors[{first[1]}]"


@_FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".npy", ".parquet"]))
def test_arbitrary_bytes_are_a_data_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("b") / f"v{suffix}"
    path.write_bytes(data)
    with pytest.raises(DataError):
        item_vectors(path, ids=None if suffix == ".parquet" else [1])


@_FUZZ
@given(rows=st.lists(st.one_of(st.none(), st.lists(st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)), max_size=4)),
    min_size=1, max_size=6),
    ids=st.lists(st.one_of(st.none(), st.integers(0, 3), st.text(max_size=3)), min_size=6,
                 max_size=6))
def test_ragged_or_broken_list_columns_read_or_raise_data_error(tmp_path_factory, rows, ids):
    path = tmp_path_factory.mktemp("p") / "v.parquet"
    id_values = [None if v is None else str(v) for v in ids[:len(rows)]]
    pq.write_table(pa.table({"item": pa.array(id_values, pa.string()),
                             "v": pa.array(rows, pa.list_(pa.float32()))}), path)
    try:
        f = item_vectors(path)
    except DataError as err:
        assert err.source == str(path)
        return
    assert np.isfinite(f.matrix.toarray()).all() and len(f) == len(rows)


# -- vectors in the feature models ------------------------------------------------------------
def _genre_world(seed=0):
    rng = np.random.default_rng(seed)
    n_items, n_users = 160, 120
    genre = rng.integers(0, 8, n_items)
    likes = np.stack([rng.choice(8, 2, replace=False) for _ in range(n_users)])
    rows = []
    for u in range(n_users):
        pool = np.flatnonzero(np.isin(genre, likes[u]))
        rows += [(u, i) for i in rng.choice(pool, 12, replace=False)]
    data = Interactions.from_frame(pd.DataFrame(rows, columns=["user", "item"]))
    centres = rng.normal(size=(8, 24))
    vectors = centres[genre] + 0.3 * rng.normal(size=(n_items, 24))
    return data, vectors


@pytest.mark.parametrize("name,params", [
    ("content", {}),
    ("hybrid", {"embedding_dim": 16, "device": "cpu"}),
    ("hybrid_bpr", {"embedding_dim": 16, "epochs": 12, "batch_size": 128,
                    "learning_rate": 0.02, "device": "cpu"}),
])
def test_image_vectors_rank_cold_items(tmp_path, name, params):
    """Vectors read from a file (as an image encoder's output would be) carry cold items
    in every feature model, and survive save / load."""
    data, vectors = _genre_world()
    split = cold_start_items(data, test_size=0.25, seed=1)
    cold = data.items.ids[np.unique(split.test.item)]
    path = write_item_vectors(tmp_path / "image.parquet", np.arange(len(vectors)), vectors)
    feats = item_vectors(path, name="image", known=split.train.items)
    model = create_model(name, **params).fit(split.train, item_features=feats)
    r = evaluate(model, split.train, split.test, metrics="recall@10", candidates=cold)
    assert r["Recall@10"] > 2.5 * 10 / len(cold), r["Recall@10"]
    loaded = Recommender.load(model.save(tmp_path / name))
    np.testing.assert_array_equal(loaded.score([0, 1]).numpy(), model.score([0, 1]).numpy())


def test_an_item_table_with_an_embedding_column_is_a_vector_block(tmp_path):
    """`--item-features items.parquet` with a list column: the CLI's reader makes it a
    dense block named after the column, beside the table's other columns."""
    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item": [1, 2, 3], "genre": ["a", "b", "a"],
                             "clip": [[0.5, 1.0], [1.5, -2.0], None]}), path)
    feats = F.read_features(path)
    assert sorted(set(feats.groups)) == ["clip", "genre"]
    clip = feats.select_groups(["clip"]).matrix.toarray()
    np.testing.assert_array_equal(clip, [[0.5, 1.0], [1.5, -2.0], [0.0, 0.0]])
    pq.write_table(pa.table({"item": [1, 2], "clip": [[0.5, 1.0], [1.5]]}), path)
    with pytest.raises(DataError, match="1 numbers where the first has 2") as info:
        F.read_features(path)
    assert info.value.row == 2 and info.value.column == "clip"
    pq.write_table(pa.table({"item": [1, 2], "clip": [[0.5, 1.0], [1.5, float("inf")]]}),
                   path)
    with pytest.raises(DataError, match="inf in dimension 1"):
        F.read_features(path)


def test_similar_in_history_by_modality(tmp_path):
    """Why an item is recommended, per modality: the history item nearest by genre and
    the one nearest by image may differ."""
    ids = Vocabulary(["new", "same-genre", "same-look", "other"])
    genres = F.categorical(ids, ["scifi", "scifi", "drama", "comedy"], "genres")
    image = vectors_from_arrays(ids.ids, [[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]],
                                name="image")
    feats = F.combine(genres, image)
    data = Interactions.from_frame(pd.DataFrame({"user": [1, 1, 1, 2, 2],
                                                 "item": ["same-genre", "same-look", "other",
                                                          "other", "same-look"]}))
    for name, params in (("content", {}), ("vbpr", {"embedding_dim": 4, "visual_dim": 2,
                                                    "epochs": 1, "device": "cpu"})):
        model = create_model(name, **params).fit(data, item_features=feats)
        why = model.similar_in_history("new", user=1)
        assert why["group"].tolist() == ["genres", "image"]
        assert why["item"].tolist() == ["same-genre", "same-look"]
        assert why["similarity"].iloc[0] == pytest.approx(1.0)
        assert model.similar_in_history("new", history=["other"]).empty
    with pytest.raises(ConfigError, match="either"):
        model.similar_in_history("new")
    with pytest.raises(ModelError, match="unknown item"):
        model.similar_in_history("nope", user=1)


def test_hybrid_bpr_sums_a_dense_block_and_bagged_words_as_f_times_e():
    """hybrid_bpr's feature side with words beside a dense vector: the vector's columns
    are one dense block, the words bagged; the sums and their gradients equal f E, and
    the saved buffers (the whole CSR) are what they were."""
    import scipy.sparse as sp
    import torch

    from recforge.models.hybrid import _Bag

    rng = np.random.default_rng(0)
    n, n_words, dim = 50, 40, 6
    words = sp.random(n, n_words, density=0.05, random_state=1, format="csr")
    f = sp.hstack([words, sp.csr_matrix(rng.normal(size=(n, dim)))]).tocsr()
    bag = _Bag(n, f, 4, np.ones(n), 0.1, torch.Generator().manual_seed(0))
    assert bag.dense_cols.tolist() == list(range(n_words, n_words + dim))
    assert len(bag.rest_indices) == words.nnz
    assert sorted(bag.state_dict()) == ["f_indices", "f_offsets", "f_weights", "feat.weight",
                                        "feat_bias.weight", "id_bias.weight", "ids.weight",
                                        "warm"]
    assert len(bag.state_dict()["f_indices"]) == f.nnz
    vec, bias = bag()
    dense = torch.from_numpy(f.toarray()).float()
    torch.testing.assert_close(vec, bag.ids.weight + dense @ bag.feat.weight)
    torch.testing.assert_close(bias, (dense @ bag.feat_bias.weight).squeeze(1))
    (vec.sum() + bias.sum()).backward()
    got = bag.feat.weight.grad.clone()
    bag.zero_grad()
    (dense @ bag.feat.weight).sum().backward()
    torch.testing.assert_close(got, bag.feat.weight.grad)
