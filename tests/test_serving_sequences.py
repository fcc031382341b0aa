"""Serving order-reading models (issue 22, items 4 and 7): events posted since training
extend a user's sequence at request time, and ``POST /recommendations`` with an ordered
``history`` answers from the sequence model, in the order given."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from recforge.data.interactions import Interactions
from recforge.models import create_model
from recforge.serving.app import create_app

JSON = {"content-type": "application/json"}
N_ITEMS = 30
SMALL = {"embedding_dim": 24, "max_len": 20, "epochs": 8, "batch_size": 16,
         "learning_rate": 0.01, "dropout": 0.0, "n_negatives": 8, "device": "cpu",
         "valid_metric": None, "seed": 0}


def chain_data(n_users: int = 120, length: int = 12, seed: int = 0) -> Interactions:
    """Each user walks the cycle 0 -> 1 -> ... -> 29 -> 0 from a random start: item i is
    always followed by item i + 1 (mod 30), so the order says what comes next."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, N_ITEMS, n_users)
    items = (start[:, None] + np.arange(length)[None, :]) % N_ITEMS
    return Interactions.from_frame(pd.DataFrame({
        "user": np.repeat(np.arange(n_users), length), "item": items.ravel(),
        "timestamp": np.tile(np.arange(length), n_users)}))


@pytest.fixture(scope="module")
def data() -> Interactions:
    return chain_data()


@pytest.fixture(scope="module")
def sasrec(data):
    return create_model("sasrec", **SMALL).fit(data)


@pytest.fixture(scope="module", params=["sasrec", "sknn"])
def model(request, data):
    if request.param == "sasrec":  # trained once for the module
        return request.getfixturevalue("sasrec")
    return create_model("sknn").fit(data)


def client_for(model, tmp_path) -> TestClient:
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = create_app(model, events=tmp_path / "events.sqlite")
    return TestClient(app, base_url="http://localhost")


def last_item(data: Interactions, user: int) -> int:
    seqs = data.sequences()
    return int(data.items.ids[seqs.items[seqs.indptr[user + 1] - 1]])


def library_ranking(model, data: Interactions, user: int, posted: list[int], k: int
                    ) -> list[int]:
    """The library's next-item top-``k`` for ``user`` given the training data and then
    ``posted`` (score_sequences over the extended history, seen and posted items left
    out): what the server must answer."""
    u = int(model.users_.index(np.asarray([user], dtype=object))[0])
    posted_idx = model.items_.index(np.asarray(posted, dtype=object))
    when = int(data.timestamp.max()) + 1 + np.arange(len(posted))
    extended = Interactions(np.concatenate([data.user, np.full(len(posted), u)]),
                            np.concatenate([data.item, posted_idx]),
                            timestamp=np.concatenate([data.timestamp, when]),
                            users=model.users_, items=model.items_)
    scores = model.score_sequences(np.array([u]), extended)[0].clone()
    seen = model.seen_.indices[model.seen_.indptr[u]:model.seen_.indptr[u + 1]]
    scores[torch.from_numpy(np.concatenate([seen, posted_idx]).astype(np.int64))] = -np.inf
    order = np.lexsort((model.popularity_rank(), -scores.numpy()))[:k]
    return model.items_.ids[order].tolist()


def recs(client: TestClient, user, k: int = 5) -> list:
    r = client.get(f"/users/{user}/recommendations", params={"k": k})
    assert r.status_code == 200, r.text
    return [e["item"] for e in r.json()["items"]]


def same_answer(a: dict, b: dict) -> bool:
    """Two answers alike: the same items in the same order, scores equal to float
    rounding (a batch's product sums in another order than one row's)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    scores = [np.array([e.pop("score") for e in x["items"]], dtype=float) for x in (a, b)]
    return a == b and np.allclose(*scores, rtol=1e-5, atol=1e-5, equal_nan=True)


def post(client: TestClient, user, items: list) -> None:
    r = client.post("/interactions", headers=JSON,
                    json={"events": [{"user": user, "item": i} for i in items]})
    assert r.status_code == 200, r.text


def test_posted_events_extend_the_users_sequence(model, data, tmp_path):
    """Before any post the server answers as the model's recommend; after posts, as the
    library's next-item ranking of the training sequence followed by the posts, in the
    order posted (newest last), and differently from before."""
    client = client_for(model, tmp_path)
    user = 3
    before = recs(client, user)
    assert before == model.recommend([user], k=5)["item"].tolist()
    jump = (last_item(data, user) + 13) % N_ITEMS  # past what the user saw
    walk = [jump, (jump + 1) % N_ITEMS, (jump + 2) % N_ITEMS]
    post(client, user, walk)
    after = recs(client, user)
    assert after == library_ranking(model, data, user, walk, 5)
    assert after != before
    if model.name == "sasrec":  # the chain: what follows the newest event comes next
        assert before[0] == (last_item(data, user) + 1) % N_ITEMS
        assert after[0] == (jump + 3) % N_ITEMS
        post(client, user, [(jump + 3) % N_ITEMS, (jump + 4) % N_ITEMS])
        assert recs(client, user)[0] == (jump + 5) % N_ITEMS
    else:  # sknn: the sessions around the newest items lead
        near = (np.array(after) - (jump + 2)) % N_ITEMS
        near = np.minimum(near, N_ITEMS - near)
        assert near[0] <= 3 and (near <= 8).sum() >= 4, after


def test_the_order_of_the_posts_decides_and_max_len_holds(sasrec, data, tmp_path):
    """The same posted items in two orders give two answers; a user who posted more than
    max_len items is read from the newest max_len (the library's ranking agrees)."""
    model = sasrec
    client = client_for(model, tmp_path)
    other = client_for(model, tmp_path / "other")
    base = last_item(data, 10) + 10
    up = [(base + j) % N_ITEMS for j in range(3)]
    post(client, 10, up)
    post(other, 10, up[::-1])  # the same user and items, posted in the other order
    assert recs(client, 10, 1) == [(base + 3) % N_ITEMS]
    assert recs(client, 10) != recs(other, 10)
    # 12 training + 15 posted items: more than max_len 20 (3 items remain unseen)
    many = [(last_item(data, 12) + 1 + j) % N_ITEMS for j in range(15)]
    post(client, 12, many)
    assert recs(client, 12, 3) == library_ranking(model, data, 12, many, 3)


def test_a_batch_answers_as_each_user_alone(model, data, tmp_path):
    """POST /recommendations {"users": [...]} scores the batch at once and agrees with
    the per-user answers: users with posts, without, unknown with and without posts,
    repeated, include_seen or not."""
    client = client_for(model, tmp_path)
    post(client, 1, [(last_item(data, 1) + 7) % N_ITEMS, (last_item(data, 1) + 8) % N_ITEMS])
    post(client, 2, [(last_item(data, 2) + 20) % N_ITEMS])
    post(client, "newcomer", [4, 5, 6])
    users = [1, 2, 5, "newcomer", "stranger", 1]
    for include_seen in (False, True):
        r = client.post("/recommendations", headers=JSON,
                        json={"users": users, "k": 4, "include_seen": include_seen})
        assert r.status_code == 200, r.text
        batch = r.json()["results"]
        for who, got in zip(users, batch, strict=True):
            one = client.get(f"/users/{who}/recommendations",
                             params={"k": 4, "include_seen": include_seen}).json()
            assert same_answer(got, one)
    fallback = [r["fallback"] for r in batch]
    assert fallback == [None, None, None, "history", "popular", None]
    # scored as one batch (the route would answer user by user if the batch failed)
    service = client.app.state.service
    whole = service.recommend_users(users, 4, include_seen=True)
    assert all(same_answer(a, b) for a, b in zip(whole, batch, strict=True))


def test_a_new_users_posts_are_read_in_order(sasrec, tmp_path):
    """An unknown user who posted events is answered from the posts, in order."""
    client = client_for(sasrec, tmp_path)
    post(client, "a", [5, 6, 7])
    post(client, "b", [7, 6, 5])
    a = client.get("/users/a/recommendations", params={"k": 1}).json()
    assert a["fallback"] == "history" and [e["item"] for e in a["items"]] == [8]
    b = recs(client, "b", 5)
    assert b == sasrec.recommend_for_history([7, 6, 5], k=5)["item"].tolist()
    assert b != recs(client, "a", 5)


def test_an_ordered_history_answers_from_the_sequence_model(model, tmp_path):
    """POST /recommendations {"history": [...]} reads the history in order: reversing it
    changes the answer (for the chain-trained sasrec, to what follows the newest item);
    unknown items are listed, never dropped silently; the schema is the history one."""
    client = client_for(model, tmp_path)
    hist = [11, 12, 13, 14]

    def ask(h):
        r = client.post("/recommendations", headers=JSON, json={"history": h, "k": 3})
        assert r.status_code == 200, r.text
        return r.json()

    fwd, back = ask(hist), ask(hist[::-1])
    assert [e["item"] for e in fwd["items"]] != [e["item"] for e in back["items"]]
    lib = model.recommend_for_history(hist, k=3)
    assert [e["item"] for e in fwd["items"]] == lib["item"].tolist()
    assert np.allclose([e["score"] for e in fwd["items"]], lib["score"], atol=1e-5)
    assert set(fwd) == {"items", "unknown_items"} and fwd["unknown_items"] == []
    if model.name == "sasrec":
        assert fwd["items"][0]["item"] == 15
    odd = ask(["nope", *hist, 10**30, "x" * 50])
    assert odd["unknown_items"] == ["nope", 10**30, "x" * 50]
    assert odd["items"] == fwd["items"]
    r = client.post("/recommendations", headers=JSON, json={"history": ["nope"]})
    assert r.status_code == 400 and "none of the history" in r.json()["detail"]


def test_a_model_that_ignores_order_is_served_as_before(data, tmp_path):
    """A bag-of-items model: posted items are masked and nothing else changes."""
    model = create_model("ease", reg=5.0).fit(data)
    client = client_for(model, tmp_path)
    before = model.recommend([0], k=30)["item"].tolist()
    post(client, 0, [before[0]])
    assert recs(client, 0, 5) == [i for i in before if i != before[0]][:5]


def test_the_fast_path_answers_a_history_as_the_route_does(sasrec, tmp_path):
    """A plain {"history", "k"} body is answered before routing; the same request in a
    form only the route takes (an extra field) gets the same answer, and what the fast
    path cannot take (a k of the wrong type, ids over the length limit, a body that is
    no JSON) reaches the route and its 422."""
    client = client_for(sasrec, tmp_path)
    hist = [3, "4", 5, 3]

    def ask(body, **kw):
        return client.post("/recommendations", headers=JSON, json=body, **kw)

    fast = ask({"history": hist, "k": 4})
    routed = ask({"history": hist, "k": 4, "include_seen": False})
    assert fast.status_code == routed.status_code == 200
    assert same_answer(fast.json(), routed.json())
    assert ask({"history": hist, "k": 4.0}).status_code == 422
    assert ask({"history": hist, "k": True}).status_code == 422
    assert ask({"history": ["x" * 300]}).status_code == 422
    assert ask({"history": []}).status_code == 422
    assert client.post("/recommendations", headers=JSON, content=b"{").status_code == 422
    assert ask({"history": [True]}).status_code == 422


def test_a_restarted_server_reads_the_posts_in_the_order_stored(sasrec, tmp_path):
    """A repeated item counts at each of its places (newest last) after a restart, as it
    did before: the sequence is read back from the event store in order."""
    first = client_for(sasrec, tmp_path)
    post(first, 7, [3, 4, 5])
    post(first, 7, [3])  # a repeat: now the newest
    post(first, "someone", [9, 10])
    before = {k: v.tolist() for k, v in first.app.state.service._sequence.items()}
    assert before["7"][-4:] == sasrec.items_.index(np.array([3, 4, 5, 3], dtype=object)
                                                   ).tolist()
    again = client_for(sasrec, tmp_path)  # the same event store
    after = {k: v.tolist() for k, v in again.app.state.service._sequence.items()}
    assert after == before
    assert recs(again, 7) == recs(first, 7)


def test_a_served_model_directory_gets_a_traced_encoder_with_the_same_answers(sasrec, data,
                                                                             tmp_path):
    """A server that loads a SASRec directory traces its encoder once (TorchScript); its
    answers are the eager model's. A model given in memory is left untouched."""
    from recforge.serving.service import RecommendationService

    path = sasrec.save(tmp_path / "sasrec")
    served = RecommendationService(path)
    assert served.compiled
    eager = RecommendationService(sasrec)
    assert not eager.compiled and "encode" not in vars(sasrec.module_)
    for hist in ([11, 12, 13], [5], list(range(30))[::-1], [2, 2, 9, 3]):
        assert same_answer(served.recommend_history(hist, 5), eager.recommend_history(hist, 5))
    users = data.users.ids[:40].tolist()
    for a, b in zip(served.recommend_users(users, 5), eager.recommend_users(users, 5),
                    strict=True):
        assert same_answer(a, b)
