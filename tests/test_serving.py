"""The HTTP app: every endpoint, fallbacks, and bad input answered with 4xx, never 5xx."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from conftest import running_server
from fastapi.testclient import TestClient

from recforge.models import create_model
from recforge.serving.app import create_app

#: What every request that changes state must say (415 otherwise).
JSON = {"content-type": "application/json"}


def local_client(app, **kwargs) -> TestClient:
    """A test client that names a loopback host (the app answers 421 to TestClient's
    default ``testserver``)."""
    return TestClient(app, base_url="http://localhost", **kwargs)


@pytest.fixture(scope="module")
def saved(random_data, tmp_path_factory):
    model = create_model("ease", reg=20.0).fit(random_data)
    return model, model.save(tmp_path_factory.mktemp("m") / "ease")


@pytest.fixture(scope="module")
def client(saved):
    return local_client(create_app(saved[1]))


def test_health_and_model(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["model"] == "ease" and info["params"]["reg"] == 20.0 and info["n_items"] > 0


def test_user_recommendations_match_the_library(client, saved, random_data):
    model, _ = saved
    user = random_data.users.ids[3]
    body = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    expected = model.recommend([user], k=5)
    assert [x["item"] for x in body["items"]] == expected["item"].tolist()
    assert body["fallback"] is None and [x["rank"] for x in body["items"]] == [1, 2, 3, 4, 5]
    seen = set(random_data.items.ids[random_data.csr[3].indices].tolist())
    assert not seen & {x["item"] for x in body["items"]}
    with_seen = client.get(f"/users/{user}/recommendations",
                           params={"k": 5, "include_seen": True}).json()
    assert len(with_seen["items"]) == 5


def test_unknown_user_gets_popular_fallback(client, random_data):
    body = client.get("/users/nobody/recommendations", params={"k": 3}).json()
    assert body["fallback"] == "popular" and len(body["items"]) == 3
    top = random_data.items.ids[np.argmax(random_data.item_counts())]
    assert body["items"][0]["item"] == top
    assert random_data.users.is_integer  # an unknown integer id comes back as a number
    for path in ("/users/99999/recommendations", "/users/99999/history"):
        assert client.get(path).json()["user"] == 99999
    assert client.get("/users/0099x/history").json()["user"] == "0099x"


def test_batch_and_history(client, saved, random_data):
    users = [random_data.users.ids[0], "nobody", random_data.users.ids[1]]
    res = client.post("/recommendations", json={"users": [int(u) if isinstance(u, np.integer)
                                                          else u for u in users], "k": 4})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert [r["fallback"] for r in results] == [None, "popular", None]
    hist = [int(i) for i in random_data.items.ids[:3]]
    res = client.post("/recommendations", json={"history": hist + ["zzz"], "k": 5}).json()
    assert res["unknown_items"] == ["zzz"] and len(res["items"]) == 5
    expected = saved[0].recommend_for_history(hist, k=5)
    assert [x["item"] for x in res["items"]] == expected["item"].tolist()


def test_similar_items(client, random_data):
    item = random_data.items.ids[2]
    body = client.get(f"/items/{item}/similar", params={"k": 4}).json()
    assert len(body["similar"]) == 4 and item not in [x["item"] for x in body["similar"]]
    assert client.get("/items/no-such-item/similar").status_code == 404


@pytest.mark.parametrize("method,url,kwargs", [
    ("get", "/users/1/recommendations?k=0", {}),
    ("get", "/users/1/recommendations?k=1001", {}),
    ("get", "/users/1/recommendations?k=abc", {}),
    ("get", "/users/1/recommendations?include_seen=maybe", {}),
    ("post", "/recommendations", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("post", "/recommendations", {"json": {"k": 5}}),
    ("post", "/recommendations", {"json": {"users": [1], "history": [1]}}),
    ("post", "/recommendations", {"json": {"users": "1"}}),
    ("post", "/recommendations", {"json": {"history": [], "k": 3}}),
    ("post", "/recommendations", {"json": {"history": [1, 2], "values": [1.0]}}),
    ("post", "/recommendations", {"json": {"users": [[1]]}}),
    ("get", "/items/1/similar?k=-1", {}),
    ("get", "/items", {}),
    ("get", "/items?query=", {}),
    ("get", "/items?query=%20%20", {}),
    ("get", "/items?query=a&limit=0", {}),
    ("get", "/items?query=a&limit=1001", {}),
    ("get", "/items?query=a&limit=abc", {}),
    ("get", "/items?query=" + "a" * 201, {}),
    ("get", "/users/1/history?limit=0", {}),
    ("get", "/users/1/history?limit=x", {}),
    ("get", "/users/1/recommendations?explain=maybe", {}),
])
def test_bad_input_is_4xx(client, method, url, kwargs):
    res = getattr(client, method)(url, **kwargs)
    assert 400 <= res.status_code < 500, (res.status_code, res.text)
    assert "detail" in res.json()


def test_api_key(saved):
    c = local_client(create_app(saved[1], api_key="s3cret"))
    assert c.get("/health").status_code == 200
    # The page and its files load without the key; the page asks for it.
    page = c.get("/")
    assert page.status_code == 200 and '<meta name="recforge-api-key" content="required">' \
        in page.text
    assert c.get("/static/app.js").status_code == 200
    for url in ("/model", "/items?query=1", "/users/1/history",
                "/users/1/recommendations?explain=true"):
        assert c.get(url).status_code == 401, url
        assert c.get(url, headers={"X-API-Key": "s3cret"}).status_code == 200, url
    assert c.get("/model").status_code == 401
    assert c.get("/model", headers={"X-API-Key": "wrong"}).status_code == 401
    assert c.get("/model", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_a_non_ascii_api_key_works_on_every_endpoint_and_an_empty_one_is_refused(saved):
    from recforge.errors import ConfigError

    c = local_client(create_app(saved[1], api_key="clé"))
    raw = "clé".encode()  # what a client sends: the key's UTF-8 bytes
    for url in ("/model", "/users/1/recommendations", "/users/1/recommendations?explain=true"):
        assert c.get(url, headers=[(b"x-api-key", raw)]).status_code == 200, url
        assert c.get(url, headers={"X-API-Key": "cle"}).status_code == 401, url
    with pytest.raises(ConfigError, match="empty API key"):
        create_app(saved[1], api_key="")


def test_serve_checks_its_address_before_loading(saved, capsys):
    from recforge.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(saved[1]), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", str(saved[1]), "--port", "99999"])
    assert exit_.value.code == 2


def test_fast_path_answers_like_the_documented_route(saved, random_data):
    """Well-formed per-user requests are answered before routing; the same request in a
    form only FastAPI accepts (``include_seen=TRUE``, ``k=+5``) takes the route. Both must
    give the same body, and the key is enforced on both."""
    from recforge.serving import fastpath

    user = random_data.users.ids[4]
    c = local_client(create_app(saved[1], api_key="k3y"))
    calls = []
    original = fastpath.FastRecommendations._params

    def spy(self, scope):
        found = original(self, scope)
        calls.append(found is not None)
        return found

    key = {"X-API-Key": "k3y"}
    fastpath.FastRecommendations._params = spy
    try:
        for fast, slow in [(f"/users/{user}/recommendations?k=5&include_seen=true",
                            f"/users/{user}/recommendations?k=5&include_seen=TRUE"),
                           (f"/users/{user}/recommendations?k=7",
                            f"/users/{user}/recommendations?k=+7"),
                           ("/users/nobody/recommendations?explain=false",
                            "/users/nobody/recommendations?explain=no")]:
            calls.clear()
            a = c.get(fast, headers=key)
            b = c.get(slow, headers=key)
            assert calls == [True, False], (fast, slow, calls)
            assert a.status_code == b.status_code == 200
            assert a.json() == b.json()
            assert a.headers["content-type"] == "application/json"
        calls.clear()
        assert c.get(f"/users/{user}/recommendations?k=5").status_code == 401
        assert c.get(f"/users/{user}/recommendations?k=5",
                     headers={"X-API-Key": "k3z"}).status_code == 401
        assert calls == [False, False]
        assert c.get(f"/users/{user}/recommendations?k=5&k=6", headers=key).status_code == 200
        assert calls[-1] is False  # repeated parameter: FastAPI decides
    finally:
        fastpath.FastRecommendations._params = original
    assert "/users/{user_id}/recommendations" in c.get("/openapi.json",
                                                       headers=key).json()["paths"]


def test_model_without_history_support(random_data, tmp_path):
    c = local_client(create_app(create_model("pop").fit(random_data)))
    res = c.post("/recommendations", json={"history": [1, 2]})
    assert res.status_code == 400 and "history" in res.json()["detail"]
    assert c.get(f"/items/{random_data.items.ids[0]}/similar").status_code == 400


def test_recforge_serve_end_to_end(saved):
    """`recforge serve` in a real process answers over HTTP, for its own names and those of
    --allowed-host only, with the limits and the admin key of its options."""
    with running_server("--model", saved[1], "--allowed-host", "api.example", "--admin-key",
                        "adm1n", "--max-id-length", "8", "--no-events") as (_, url):
        assert httpx.get(url + "/health").json() == {"status": "ok"}
        r = httpx.get(url + "/users/nobody/recommendations?k=2")
        assert r.json()["fallback"] == "popular" and len(r.json()["items"]) == 2
        assert httpx.get(url + "/health", headers={"host": "api.example:80"}).status_code == 200
        assert httpx.get(url + "/health", headers={"host": "evil.example"}).status_code == 421
        assert httpx.get(url + "/users/nobody123/history").status_code == 422  # 9 characters
        assert httpx.post(url + "/admin/reload", headers=JSON).status_code == 401
        assert httpx.post(url + "/admin/reload", headers={**JSON, "X-Admin-Key": "adm1n"}
                          ).status_code == 200


# -- the event store ------------------------------------------------------------------------
def test_events_count_as_seen_and_users_can_be_forgotten(saved, random_data, tmp_path):
    c = local_client(create_app(saved[1], events=tmp_path / "ev.sqlite"))
    user = random_data.users.ids[0]
    first = c.get(f"/users/{user}/recommendations", params={"k": 3}).json()["items"][0]["item"]
    res = c.post("/interactions", json={"events": [{"user": int(user), "item": first,
                                                    "value": 1.0, "timestamp": 5}]})
    assert res.status_code == 200 and res.json() == {"stored": 1}
    after = [x["item"] for x in c.get(f"/users/{user}/recommendations").json()["items"]]
    assert first not in after  # the posted item is now a seen item
    # A user the model never saw, with posted events: recommendations from that history.
    hist = [int(i) for i in random_data.items.ids[:3]]
    c.post("/interactions", json={"events": [{"user": "newbie", "item": i} for i in hist]})
    body = c.get("/users/newbie/recommendations", params={"k": 4}).json()
    assert body["fallback"] == "history" and not set(hist) & {x["item"] for x in body["items"]}
    # The right to be forgotten: events gone, the user is answered as unknown.
    res = c.delete(f"/users/{user}", headers=JSON).json()
    assert res["deleted_events"] == 1
    body = c.get(f"/users/{user}/recommendations", params={"k": 3}).json()
    assert body["fallback"] == "popular"
    assert c.post("/interactions", json={"events": []}).status_code == 422
    assert c.post("/interactions", json={"events": [{"user": 1}]}).status_code == 422


def test_train_from_the_event_store(tmp_path, capsys):
    from recforge.cli import main
    from recforge.data.events import EventStore
    from recforge.models import Recommender

    store = EventStore(tmp_path / "ev.sqlite")
    rng = np.random.default_rng(0)
    store.append([(int(u), int(i), None, None) for u, i in rng.integers(0, 30, (400, 2))])
    try:
        main(["train", "ease", "--data", f"events:{tmp_path / 'ev.sqlite'}", "--out",
              str(tmp_path / "m"), "--duplicates", "last"])
    except SystemExit as exc:
        assert not exc.code
    model = Recommender.load(tmp_path / "m")
    assert model.users_.is_integer and model.n_users <= 30


def test_acknowledged_events_survive_kill_9(saved, tmp_path):
    """10,000 events posted to a real server, then SIGKILL: all are in the store."""
    import signal

    from recforge.data.events import EventStore

    db = tmp_path / "ev.sqlite"
    acked = 0
    with running_server("--model", saved[1], "--events", db) as (proc, url):
        with httpx.Client(base_url=url) as client:
            for b in range(100):
                batch = [{"user": f"u{b}", "item": j, "timestamp": b * 100 + j}
                         for j in range(100)]
                r = client.post("/interactions", json={"events": batch})
                assert r.status_code == 200
                acked += r.json()["stored"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert acked == 10_000
    assert EventStore(db).count() == acked


def test_fuzzed_requests_never_5xx(saved, random_data, tmp_path):
    """1,000 malformed or hostile requests (Hypothesis): no 5xx answer."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    c = local_client(create_app(saved[1], events=tmp_path / "fuzz.sqlite"),
                   raise_server_exceptions=False)
    titled = local_client(create_app(_titled_model(random_data)), raise_server_exceptions=False)
    ident = st.one_of(st.integers(-2**70, 2**70), st.text(max_size=30), st.none(),
                      st.floats(allow_nan=False, allow_infinity=False), st.booleans())
    json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(),
                                        st.floats(allow_nan=False, allow_infinity=False),
                                        st.text(max_size=20)),
                              lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                      st.dictionaries(st.text(max_size=8),
                                                                      inner, max_size=5)),
                              max_leaves=20)
    body = st.one_of(
        json_value,
        st.fixed_dictionaries({"users": st.lists(ident, max_size=5)},
                              optional={"k": ident, "include_seen": ident}),
        st.fixed_dictionaries({"history": st.lists(ident, max_size=5)},
                              optional={"k": ident, "values": st.lists(ident, max_size=5)}),
        st.fixed_dictionaries({"events": st.lists(st.fixed_dictionaries(
            {"user": ident, "item": ident}, optional={"value": ident, "timestamp": ident}),
            max_size=4)}),
    )
    segment = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                             blacklist_characters="/?#%"), max_size=20)
    query = st.dictionaries(st.sampled_from(["k", "include_seen", "explain", "limit", "x"]),
                            st.text(max_size=12), max_size=3)

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(kind=st.integers(0, 7), seg=segment, q=query, payload=body,
           raw=st.one_of(st.binary(max_size=50), st.sampled_from(
               [b"NaN", b"{\"history\": [1], \"values\": [NaN]}", b"{\"k\": Infinity}",
                b"{\"users\": [1e999]}"])))
    def probe(kind, seg, q, payload, raw):
        from urllib.parse import quote

        text, seg = seg, quote(seg, safe="") or "x"
        if kind == 0:
            r = c.get(f"/users/{seg}/recommendations", params=q)
        elif kind == 1:
            r = c.get(f"/items/{seg}/similar", params=q)
        elif kind == 2:
            r = c.post("/recommendations", json=payload)
        elif kind == 3:
            r = c.post("/interactions", json=payload)
        elif kind == 4:
            r = c.get("/items", params={**q, "query": text})
        elif kind == 5:
            r = titled.get("/items", params={**q, "query": text})
        elif kind == 6:
            r = c.get(f"/users/{seg}/history", params=q)
        else:
            r = c.post("/recommendations", content=raw,
                       headers={"content-type": "application/json"})
        assert r.status_code < 500, (kind, seg, q, payload, r.status_code, r.text[:300])

    probe()


def test_admin_reload_swaps_the_model(random_data, tmp_path):
    path = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "m")
    c = local_client(create_app(path))
    assert c.get("/model").json()["params"]["reg"] == 20.0
    create_model("ease", reg=300.0).fit(random_data).save(path)  # replaced atomically
    res = c.post("/admin/reload", headers=JSON)
    assert res.status_code == 200 and res.json()["model"]["params"]["reg"] == 300.0
    assert c.get("/model").json()["params"]["reg"] == 300.0
    other = create_model("pop").fit(random_data).save(tmp_path / "pop")
    assert c.post("/admin/reload", json={"model": str(other)}).json()["model"]["model"] == "pop"
    bad = c.post("/admin/reload", json={"model": str(tmp_path / "nothing")})
    assert bad.status_code == 400 and c.get("/model").json()["model"] == "pop"


def test_sighup_reloads_a_running_server(random_data, tmp_path):
    import signal

    path = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "m")
    with running_server("--model", path, "--no-events") as (proc, url):
        assert httpx.get(url + "/model").json()["params"]["reg"] == 20.0
        create_model("ease", reg=300.0).fit(random_data).save(path)
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.time() + 30
        while httpx.get(url + "/model", timeout=2).json()["params"]["reg"] != 300.0:
            assert time.time() < deadline, "the model was not reloaded"
            time.sleep(0.2)

def test_titles_travel_with_the_model(random_data, tmp_path):
    import pandas as pd

    from recforge.models import Recommender

    model = create_model("ease", reg=20.0).fit(random_data)
    ids = random_data.items.ids
    meta = pd.DataFrame({"title": [f"Film {i}" for i in ids[:-1]],
                         "genres": [["Drama", "War"]] * (len(ids) - 1)}, index=ids[:-1])
    path = model.attach_item_metadata(meta).save(tmp_path / "m")
    loaded = Recommender.load(path)
    assert loaded.item_metadata_["title"].iloc[0] == f"Film {ids[0]}"
    assert pd.isna(loaded.item_metadata_["title"].iloc[-1])  # no metadata for the last item
    c = local_client(create_app(path))
    user = random_data.users.ids[0]
    items = c.get(f"/users/{user}/recommendations", params={"k": 3}).json()["items"]
    last = c.get(f"/items/{ids[0]}/similar", params={"k": len(ids) - 1}).json()["similar"]
    assert next(x["title"] for x in last if x["item"] == ids[-1]) is None
    assert all(x["title"] in (f"Film {x['item']}", None) for x in items)
    sims = c.get(f"/items/{ids[0]}/similar", params={"k": 2}).json()["similar"]
    assert all("title" in x for x in sims)


def test_ivf_index_agrees_with_exact_retrieval(random_data):
    pytest.importorskip("faiss", reason="the 'ann' extra (faiss-cpu) is not installed")
    model = create_model("als", embedding_dim=16, seed=0).fit(random_data)
    exact = local_client(create_app(model))
    # Probing every list is exact search: the answers must match the model's ranking.
    approx = local_client(create_app(model, index="ivf", n_probe=10_000))
    for user in random_data.users.ids[:20]:
        a = [x["item"] for x in exact.get(f"/users/{user}/recommendations?k=5").json()["items"]]
        b = [x["item"] for x in approx.get(f"/users/{user}/recommendations?k=5").json()["items"]]
        assert a == b
    with pytest.raises(Exception, match="dot products"):
        create_app(create_model("ease").fit(random_data), index="ivf")
    # One probed list (of 10) holds fewer items than a long list asks for: the exact path
    # answers, with every unseen item
    from conftest import random_interactions

    wide = random_interactions(n_users=60, n_items=400, density=0.05, seed=1)
    big = create_model("als", embedding_dim=8, seed=0).fit(wide)
    one = local_client(create_app(big, index="ivf", n_probe=1))
    for user in wide.users.ids[:5]:
        got = one.get(f"/users/{user}/recommendations?k=1000").json()["items"]
        assert len(got) == wide.n_items - len(wide.csr[wide.users.index([user])[0]].indices)


# -- the web page and the endpoints it uses --------------------------------------------------
TITLES = {0: "Star", 1: "Star Wars", 2: "Starman", 3: "Lone Star", 4: "Mustard"}


def _titled_model(data):
    """EASE on ``data`` with titles: TITLES for the first items, ``Film <id>`` for the
    others, none for the last item."""
    import pandas as pd

    model = create_model("ease", reg=20.0).fit(data)
    ids = data.items.ids[:-1]
    titles = [TITLES.get(n, f"Film {i}") for n, i in enumerate(ids)]
    return model.attach_item_metadata(pd.DataFrame({"title": titles}, index=ids))


@pytest.fixture(scope="module")
def titled(random_data):
    model = _titled_model(random_data)
    return model, local_client(create_app(model))


def test_item_search_ranks_title_matches(titled, random_data):
    model, c = titled
    ids, pop = random_data.items.ids, model.item_popularity_
    body = c.get("/items", params={"query": "  STAR ", "limit": 10}).json()
    assert body["total"] == 5
    prefix = sorted([1, 2], key=lambda n: (-pop[n], n))  # ties go to the more popular
    assert [x["item"] for x in body["items"]] == [ids[n] for n in [0, *prefix, 3, 4]]
    assert [x["title"] for x in body["items"]][0] == "Star"
    top2 = c.get("/items", params={"query": "star", "limit": 2}).json()
    assert top2["total"] == 5 and len(top2["items"]) == 2
    assert c.get("/items", params={"query": "no such film"}).json() == {
        "query": "no such film", "total": 0, "items": []}
    # An item id comes first; the last item, without a title, is found by its id only.
    last = str(ids[-1])
    hit = c.get("/items", params={"query": last}).json()["items"][0]
    assert hit == {"item": ids[-1], "title": None}


def test_item_search_without_titles_matches_ids(client, random_data):
    body = client.get("/items", params={"query": "1", "limit": 1000}).json()
    expected = [i for i in random_data.items.ids if "1" in str(i)]
    assert body["total"] == len(expected) and body["items"][0] == {"item": 1}
    assert sorted(x["item"] for x in body["items"]) == sorted(expected)


def test_user_history(client, random_data, saved, tmp_path):
    model = saved[0]
    user = random_data.users.ids[5]
    row = random_data.csr[5]
    body = client.get(f"/users/{user}/history").json()
    assert body["user"] == user and body["known"] is True and body["total"] == row.nnz
    items = [x["item"] for x in body["items"]]
    assert sorted(items) == sorted(random_data.items.ids[row.indices].tolist())
    pops = [model.item_popularity_[model.items_.index([i])[0]] for i in items]
    assert pops == sorted(pops, reverse=True)  # equal values: the most popular first
    assert all(x["source"] == "training" and x["value"] == 1.0 for x in body["items"])
    assert len(client.get(f"/users/{user}/history?limit=2").json()["items"]) == 2
    assert client.get("/users/nobody/history").json() == {
        "user": "nobody", "known": False, "total": 0, "items": []}
    # Posted events come first; a forgotten user has no history left.
    c = local_client(create_app(saved[1], events=tmp_path / "ev.sqlite"))
    new = next(i for i in random_data.items.ids.tolist() if i not in items)
    c.post("/interactions", json={"events": [{"user": int(user), "item": new}]})
    body = c.get(f"/users/{user}/history").json()
    assert body["total"] == row.nnz + 1
    assert body["items"][0] == {"item": new, "value": None, "source": "events"}
    c.delete(f"/users/{user}", headers=JSON)
    assert c.get(f"/users/{user}/history").json()["known"] is False


def test_explanations_name_the_most_similar_history_item(titled, random_data):
    model, c = titled
    user = random_data.users.ids[7]
    history = set(random_data.items.ids[random_data.csr[7].indices].tolist())
    plain = c.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    assert all("because" not in x for x in plain["items"])
    body = c.get(f"/users/{user}/recommendations", params={"k": 5, "explain": True}).json()
    assert [x["item"] for x in body["items"]] == [x["item"] for x in plain["items"]]
    explained = [x for x in body["items"] if x["because"] is not None]
    assert explained
    # more items than one block of similarity rows (32): the same answer for the first 5
    every = c.get(f"/users/{user}/recommendations", params={"k": 40, "explain": True}).json()
    assert len(every["items"]) > 32 and every["items"][:5] == body["items"]
    explained += [x for x in every["items"][32:] if x["because"] is not None]
    for rec in explained:
        ranking = model.similar_items([rec["item"]], k=model.n_items - 1)["similar"].tolist()
        best = next(i for i in ranking if i in history)
        because = rec["because"]
        assert because["item"] == best != rec["item"] and because["similarity"] > 0
        assert because["title"] == (TITLES.get(int(best)) or f"Film {best}")
    unknown = c.get("/users/nobody/recommendations", params={"explain": True}).json()
    assert unknown["fallback"] == "popular"
    assert all(x["because"] is None for x in unknown["items"])
    # A model without item similarities answers, with no explanations.
    pop = local_client(create_app(create_model("pop").fit(random_data)))
    res = pop.get(f"/users/{user}/recommendations", params={"explain": True})
    assert res.status_code == 200 and all(x["because"] is None for x in res.json()["items"])


def test_page_is_served_with_its_own_files_only(client):
    import re

    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert '<meta name="recforge-api-key" content="optional">' in page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/static/app.js", "/static/style.css"} <= set(refs)
    for ref in refs:  # nothing from another host
        assert ref.startswith("/"), ref
        assert client.get(ref).status_code == 200, ref
    css = client.get("/static/style.css").text
    assert "url(" not in css and "@import" not in css
    assert client.get("/static/nothing.js").status_code == 404
    assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.slow
def test_wheel_ships_the_web_page(tmp_path):
    """A regular (non-editable) install has the page: the wheel holds static/."""
    import shutil
    import zipfile
    from pathlib import Path

    pytest.importorskip("setuptools", reason="building a wheel needs setuptools")
    repo = Path(__file__).resolve().parents[1]
    project = tmp_path / "project"
    shutil.copytree(repo / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(repo / "pyproject.toml", project)
    shutil.copy(repo / "README.md", project)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(project), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("recforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = repo / "src" / "recforge" / "serving" / "static"
    for f in static.iterdir():
        assert f"recforge/serving/static/{f.name}" in names, f.name


def test_writes_during_a_reload_are_neither_lost_nor_undone(random_data, tmp_path,
                                                             monkeypatch):
    """A post and a delete that land while a reload is loading the new model must hold in
    the service swapped in (it read the event store before they happened)."""
    import threading

    path = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "m")
    app = create_app(path, events=tmp_path / "ev.sqlite")
    c = local_client(app)
    items = [int(i) for i in random_data.items.ids[:3]]
    gone = random_data.users.ids[1]
    assert c.post("/interactions", json={"events": [{"user": int(gone), "item": items[0]}]}
                  ).status_code == 200
    from recforge.data.events import EventStore

    loading, go = threading.Event(), threading.Event()
    real = EventStore.all_user_values

    def read_then_wait(store):  # the reload's service has read the store: hold it there
        items_by_user = real(store)
        if threading.current_thread() is reload and not loading.is_set():
            loading.set()
            go.wait(10)
        return items_by_user

    monkeypatch.setattr(EventStore, "all_user_values", read_then_wait)
    reload = threading.Thread(target=app.state.reload)
    reload.start()
    assert loading.wait(10)  # the new service has read the store; now the writes
    assert c.post("/interactions", json={"events": [{"user": "newbie", "item": i}
                                                    for i in items]}).status_code == 200
    assert c.delete(f"/users/{gone}", headers=JSON).status_code == 200
    go.set()
    reload.join(10)
    assert app.state.service is not None and not reload.is_alive()
    body = c.get("/users/newbie/recommendations", params={"k": 5}).json()
    assert body["fallback"] == "history" and not set(items) & {x["item"] for x in body["items"]}
    assert c.get(f"/users/{gone}/recommendations").json()["fallback"] == "popular"


def test_concurrent_posts_for_one_user_keep_every_item(random_data, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from recforge.data.events import EventStore
    from recforge.serving.service import RecommendationService

    class SlowDict(dict):  # widens the window between reading a user's items and writing
        def get(self, *args):
            value = super().get(*args)
            time.sleep(0.002)
            return value

    model = create_model("pop").fit(random_data)
    svc = RecommendationService(model, events=EventStore(tmp_path / "ev.sqlite"))
    svc._posted = SlowDict()
    items = list(random_data.items.ids)
    rounds = [(r, i) for r in range(20) for i in items]  # the same items, many times over
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ri: svc.add_events([("u1", ri[1], None, ri[0])]), rounds))
    assert len(svc._posted_items("u1")) == len(items)
    svc2 = RecommendationService(model, events=EventStore(tmp_path / "ev2.sqlite"))
    svc2._posted = SlowDict()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: svc2.add_events([("u2", i, None, 0)]), items))
    assert len(svc2._posted_items("u2")) == len(items)


@pytest.mark.parametrize("damage", ["no model key", "meta is a list", "params null",
                                    "files null", "unchecked metadata", "weights truncated"])
def test_a_damaged_model_directory_is_a_clear_error(random_data, tmp_path, damage):
    """Recommender.load names what is wrong; the server answers 400 and keeps serving."""
    import json

    from recforge.errors import ModelError
    from recforge.models import Recommender

    good = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "good")
    bad = create_model("ease", reg=30.0).fit(random_data).save(tmp_path / "bad")
    meta = json.loads((bad / "meta.json").read_text())
    if damage == "no model key":
        del meta["model"]
    elif damage == "meta is a list":
        meta = []
    elif damage == "params null":
        meta["params"] = None
    elif damage == "files null":
        meta["files"] = None
    elif damage == "unchecked metadata":
        import pandas as pd

        pd.DataFrame({"title": ["x"]}).to_parquet(bad / "item_metadata.parquet")
    elif damage == "weights truncated":
        w = bad / "weights.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=str(bad.name)):
        Recommender.load(bad)
    c = local_client(create_app(good))
    res = c.post("/admin/reload", json={"model": str(bad)})
    assert res.status_code == 400, res.text
    assert c.get("/model").json()["params"]["reg"] == 20.0


def test_a_forgotten_user_who_posts_again_is_not_answered_from_old_data(random_data, tmp_path):
    """The served model was trained on the user's old events: after DELETE, a new post must
    not bring them back (recommendations, history), nor a restart or another model."""
    path = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "m")
    c = local_client(create_app(path, events=tmp_path / "ev.sqlite"))
    user = int(random_data.users.ids[0])
    trained = set(random_data.items.ids[random_data.csr[0].indices].tolist())
    new = next(int(i) for i in random_data.items.ids if i not in trained)
    assert c.delete(f"/users/{user}", headers=JSON).status_code == 200
    assert c.post("/interactions", json={"events": [{"user": user, "item": new}]}
                  ).status_code == 200
    hist = c.get(f"/users/{user}/history").json()
    assert hist["known"] is False and [x["item"] for x in hist["items"]] == [new]
    body = c.get(f"/users/{user}/recommendations", params={"k": 5}).json()
    assert body["fallback"] == "history"
    # the same holds after a restart or a reload of the same model ...
    c2 = local_client(create_app(path, events=tmp_path / "ev.sqlite"))
    assert c2.get(f"/users/{user}/history").json()["known"] is False
    # ... and after a model saved later: it may have been trained on a copy of the old data
    create_model("ease", reg=20.0).fit(random_data).save(path)
    assert c2.post("/admin/reload", headers=JSON).status_code == 200
    assert c2.get(f"/users/{user}/history").json()["known"] is False


def test_a_user_id_means_the_same_user_on_every_endpoint(random_data, tmp_path):
    """ "1.0" and "01" are user 1 of an integer vocabulary, in a path, in a batch, with or
    without the event store, as Vocabulary.index has it everywhere else."""
    path = create_model("ease", reg=20.0).fit(random_data).save(tmp_path / "m")
    user = int(random_data.users.ids[0])
    for events in (None, tmp_path / "ev.sqlite"):
        c = local_client(create_app(path, events=events))
        want = c.get(f"/users/{user}/recommendations").json()
        for spelled in (f"{user}.0", f"0{user}"):
            got = c.get(f"/users/{spelled}/recommendations").json()
            assert got["fallback"] is None and got["items"] == want["items"], spelled
            batch = c.post("/recommendations", json={"users": [spelled]}).json()
            assert batch["results"][0]["items"] == want["items"], spelled
        if events is not None:  # posted and forgotten under the same user
            item = next(x["item"] for x in want["items"])
            c.post("/interactions", json={"events": [{"user": f"{user}.0", "item": item}]})
            after = [x["item"] for x in c.get(f"/users/{user}/recommendations").json()["items"]]
            assert item not in after
            c.delete(f"/users/0{user}", headers=JSON)
            assert c.get(f"/users/{user}/recommendations").json()["fallback"] == "popular"


def test_ids_with_slashes_reach_every_endpoint(tmp_path):
    import pandas as pd

    from recforge import Interactions

    frame = pd.DataFrame({"user": ["bob/smith", "bob/smith", "ann", "ann", "cy", "cy"],
                          "item": ["sku/1", "sku/2", "sku/1", "x", "x", "sku/2"]})
    path = create_model("itemknn").fit(Interactions.from_frame(frame)).save(tmp_path / "m")
    c = local_client(create_app(path, events=tmp_path / "ev.sqlite"))
    body = c.get("/users/bob%2Fsmith/recommendations").json()
    assert body["user"] == "bob/smith" and body["fallback"] is None
    assert c.get("/users/bob%2Fsmith/history").json()["known"] is True
    assert c.get("/items/sku%2F1/similar").json()["item"] == "sku/1"
    assert c.delete("/users/bob%2Fsmith", headers=JSON).json()["user"] == "bob/smith"
    assert c.get("/users/bob%2Fsmith/recommendations").json()["fallback"] == "popular"


def test_a_batch_answered_in_pieces_is_one_json_document(saved, random_data):
    """Batches are scored and encoded 100 users at a time (the event loop stays free);
    the pieces must join into the answer one piece would give."""
    c = local_client(create_app(saved[1]))
    users = [int(u) for u in random_data.users.ids] * 5  # over two pieces of 100
    assert len(users) > 200
    res = c.post("/recommendations", json={"users": users + ["nobody"], "k": 3})
    assert res.status_code == 200 and res.headers["content-type"] == "application/json"
    results = res.json()["results"]
    assert len(results) == len(users) + 1 and results[-1]["fallback"] == "popular"
    for u, got in zip(users[:3] + users[-3:], results[:3] + results[-4:-1], strict=True):
        assert got == c.get(f"/users/{u}/recommendations", params={"k": 3}).json()
    assert c.post("/recommendations", json={"users": []}).json() == {"results": []}


def test_posted_values_are_kept_and_used(random_data, tmp_path):
    """A posted rating shows in /history and drives a rating model's answer for a user it
    never saw (4 x 1.0 and 4 x 5.0 gave the same recommendations)."""
    import pandas as pd

    from recforge import Interactions

    rng = np.random.default_rng(0)
    pairs = rng.choice(80 * 40, size=1500, replace=False)
    data = Interactions.from_frame(pd.DataFrame({
        "user": pairs // 40, "item": pairs % 40, "rating": rng.integers(1, 6, size=1500)}))
    path = create_model("mf", epochs=3, embedding_dim=8).fit(data).save(tmp_path / "mf")
    c = local_client(create_app(path, events=tmp_path / "ev.sqlite"))
    items = [int(i) for i in data.items.ids[:4]]
    for user, value in (("low", 1.0), ("high", 5.0)):
        c.post("/interactions", json={"events": [{"user": user, "item": i, "value": value}
                                                 for i in items]})
    hist = c.get("/users/high/history").json()
    assert {x["value"] for x in hist["items"]} == {5.0}
    low = c.get("/users/low/recommendations", params={"k": 10}).json()
    high = c.get("/users/high/recommendations", params={"k": 10}).json()
    assert low["fallback"] == high["fallback"] == "history"
    assert [x["score"] for x in low["items"]] != [x["score"] for x in high["items"]]
    # a later value replaces an earlier one; a post without one keeps it (restart too)
    c.post("/interactions", json={"events": [{"user": "high", "item": items[0], "value": 2.0},
                                             {"user": "high", "item": items[1]}]})
    for client in (c, local_client(create_app(path, events=tmp_path / "ev.sqlite"))):
        got = {x["item"]: x["value"] for x in client.get("/users/high/history").json()["items"]}
        assert got[items[0]] == 2.0 and got[items[1]] == 5.0


def test_a_boolean_is_not_an_id_and_an_empty_reload_path_is_refused(saved):
    c = local_client(create_app(saved[1], events=None))
    assert c.post("/recommendations", json={"users": [True]}).status_code == 422
    assert c.post("/recommendations", json={"users": [1, "a"]}).status_code == 200
    assert c.post("/admin/reload", json={"model": ""}).status_code == 422


def test_delete_under_any_spelling_and_values_only_for_rating_models(random_data, tmp_path):
    from recforge.data.events import EventStore

    path = create_model("als", embedding_dim=4, binary=False).fit(random_data).save(
        tmp_path / "m")
    c = local_client(create_app(path, events=tmp_path / "ev.sqlite"))
    user = int(random_data.users.ids[0])
    item = int(random_data.items.ids[0])
    for spelled in (f"{user}", f"{user}.0"):
        c.post("/interactions", json={"events": [{"user": spelled, "item": item}]})
    assert c.delete(f"/users/0{user}", headers=JSON).json()["deleted_events"] == 2
    with EventStore(tmp_path / "ev.sqlite") as store:
        assert store.count() == 0
    # a value of -1 posted for a user the model never saw: als takes no ratings in its
    # fold-in (it answered 422 on every GET once such a value was posted)
    c.post("/interactions", json={"events": [{"user": "neg", "item": item, "value": -1.0}]})
    res = c.get("/users/neg/recommendations")
    assert res.status_code == 200 and res.json()["fallback"] == "history"


def test_the_service_and_the_library_order_ties_alike(random_data):
    """pop scores many items alike: the HTTP answer must be the library's, items and order
    (the service took torch.topk's order, the library the popular first)."""
    model = create_model("pop").fit(random_data)
    c = local_client(create_app(model))
    for user in random_data.users.ids[:5]:
        lib = model.recommend([user], k=10)["item"].tolist()
        assert [x["item"] for x in c.get(f"/users/{user}/recommendations").json()["items"]] == lib
        batch = c.post("/recommendations", json={"users": [int(user)]}).json()["results"][0]
        assert [x["item"] for x in batch["items"]] == lib
    unknown = model.recommend([10**9], k=10, unknown="popular")["item"].tolist()
    assert [x["item"] for x in c.get("/users/nobody/recommendations").json()["items"]] == unknown


def test_a_failing_user_in_a_batch_gets_an_error_entry_and_the_json_stays_whole(
        saved, random_data, monkeypatch):
    """A user whose answer fails, with a recforge error or any other (a bug), gets an error
    entry: the status went out with the first piece, and the JSON must stay whole."""
    from recforge.errors import ModelError
    from recforge.serving.service import RecommendationService

    real = RecommendationService._recommend

    def fails_for_bad(self, who, *args, **kwargs):
        if who.user == "bad":
            raise ModelError("cannot answer 'bad'")
        if who.user == "bug":
            raise ValueError("a bug")
        return real(self, who, *args, **kwargs)

    monkeypatch.setattr(RecommendationService, "_recommend", fails_for_bad)
    for events in (None, "ev.sqlite"):  # the batched path and the per-user one
        app = create_app(saved[1], events=events and saved[1].parent / events)
        c = local_client(app)
        users = [int(u) for u in random_data.users.ids] * 3
        for where in (5, 120):  # in the first piece of 100 and in a later one
            asked = users[:where] + ["bad"] + users[where:where + 50] + ["bug"] + users[where:]
            res = c.post("/recommendations", json={"users": asked, "k": 2})
            results = res.json()["results"]  # parses: the stream is whole
            assert res.status_code == 200 and len(results) == len(asked)
            assert results[where] == {"user": "bad", "error": "cannot answer 'bad'"}
            assert results[where + 51] == {"user": "bug", "error": "internal error"}
            assert results[where + 1]["items"] and results[where + 52]["items"]


# -- ids of any length, limits, keys, hosts (issue 20, items 2, 7 and 8) ---------------------
ODD_IDS = ["1" * 5000, "9" * 4301 + ".0", "1e5000", "-" + "1" * 30, "0" * 5000 + "7",
           "\x00", "é🙂", " ", "..", "a/b", "1" * 20_000 + "x"]


def test_ids_of_any_length_and_characters_never_5xx(saved):
    """`int(user)` on a 5,000-digit id raised ValueError (Python's int-string limit): 500 on
    /recommendations and /history, and a batch of 101 users cut its JSON mid-stream. Any id
    now answers 4xx or as an unknown user; a batch is whole JSON or a 4xx."""
    from urllib.parse import quote

    c = local_client(create_app(saved[1]), raise_server_exceptions=False)
    assert saved[0].users_.is_integer
    for user in ODD_IDS:
        for path in ("recommendations", "history"):
            r = c.get(f"/users/{quote(user, safe='')}/{path}")
            assert r.status_code < 500, (user[:20], path, r.status_code)
            assert 400 <= r.status_code < 500 or r.json()["user"] == user
        for users in ([user], [1] * 100 + [user], [user] + [1] * 150):
            r = c.post("/recommendations", json={"users": users, "k": 3})
            assert r.status_code < 500, (user[:20], len(users), r.status_code)
            body = r.json()  # whole JSON, or a 4xx
            assert 400 <= r.status_code < 500 or len(body["results"]) == len(users)


def test_a_long_id_the_server_lets_in_is_an_unknown_user(saved, tmp_path):
    """With the id length limit raised past them, long ids reach the service: an unknown
    user (the popular items), never a crash, in every path and in batches of any size."""
    from recforge.serving.service import RecommendationService
    from recforge.serving.settings import Limits

    svc = RecommendationService(saved[1])
    for user in ODD_IDS:
        body = svc.recommend_user(user, 3)
        assert body["fallback"] == "popular" and body["user"] == user
        assert svc.history(user)["known"] is False
        assert [r["user"] for r in svc.recommend_users([1, user], 2)] == [1, user]
    for events in (None, tmp_path / "ev.sqlite"):
        app = create_app(saved[1], events=events, limits=Limits(max_id_length=100_000))
        c = local_client(app)
        big = "1" * 5000
        for path in ("recommendations", "history"):
            r = c.get(f"/users/{big}/{path}")
            assert r.status_code == 200 and r.json()["user"] == big
        r = c.post("/recommendations", json={"users": [1] * 100 + [big], "k": 3})
        results = r.json()["results"]
        assert r.status_code == 200 and len(results) == 101
        assert results[-1]["user"] == big and results[-1]["fallback"] == "popular"


def test_limits_refuse_too_much_work_with_a_message_naming_the_limit(saved, tmp_path):
    from recforge.errors import ConfigError
    from recforge.serving.settings import Limits

    limits = Limits(max_id_length=10, max_batch_results=100, max_history=5, max_events=3)
    c = local_client(create_app(saved[1], events=tmp_path / "ev.sqlite", limits=limits))

    def refused(res, name):
        assert res.status_code == 422, res.text
        assert name in res.text, res.text

    refused(c.get("/users/" + "u" * 11 + "/recommendations"), "max_id_length")
    refused(c.get("/users/" + "u" * 11 + "/history"), "max_id_length")
    refused(c.get("/items/" + "1" * 11 + "/similar"), "max_id_length")
    refused(c.delete("/users/" + "u" * 11, headers=JSON), "max_id_length")
    refused(c.post("/recommendations", json={"users": ["u" * 11]}), "max_id_length")
    refused(c.post("/recommendations", json={"users": [1] * 11, "k": 10}), "max_batch_results")
    refused(c.post("/recommendations", json={"users": [1] * 101, "k": 1}), "max_batch_results")
    refused(c.post("/recommendations", json={"history": [1] * 6}), "max_history")
    refused(c.post("/interactions", json={"events": [{"user": 1, "item": 2}] * 4}),
            "max_events")
    refused(c.post("/interactions", json={"events": [{"user": "u" * 11, "item": 2}]}),
            "max_id_length")
    assert c.get("/users/" + "u" * 10 + "/recommendations").status_code == 200
    assert c.post("/recommendations", json={"users": [1] * 10, "k": 10}).status_code == 200
    assert c.post("/recommendations", json={"history": [1] * 5}).status_code == 200
    # the OpenAPI schema states the limits
    spec = c.get("/openapi.json").json()
    path_id = spec["paths"]["/users/{user_id}/history"]["get"]["parameters"][0]["schema"]
    assert path_id["maxLength"] == 10
    for name, bad in (("max_body_bytes", 0), ("heavy_workers", 0), ("max_history", "5")):
        with pytest.raises(ConfigError, match=name):
            Limits(**{name: bad})


def test_the_body_limit_holds_while_the_body_arrives(saved):
    """Content-Length over the limit: 413 before reading; a body without one (chunked) is
    counted as it arrives and refused once over, without reading the rest."""
    import asyncio

    from recforge.serving.settings import Limits

    app = create_app(saved[1], limits=Limits(max_body_bytes=1000))
    c = local_client(app)
    small = {"users": [1, 2], "k": 2}
    assert c.post("/recommendations", json=small).status_code == 200
    res = c.post("/recommendations", content=b'{"users": [' + b"1, " * 400 + b'1]}',
                 headers=JSON)
    assert res.status_code == 413 and "max_body_bytes" in res.json()["detail"]

    def chunked():
        yield b'{"users": ['
        for _ in range(300):
            yield b"1, " * 10
        yield b'1]}'

    res = c.post("/recommendations", content=chunked(), headers=JSON)
    assert res.status_code == 413 and "max_body_bytes" in res.json()["detail"]

    pulled, sent = 0, []

    async def receive():  # 100 pieces of 600 bytes, no Content-Length
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 600, "more_body": pulled < 100}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/recommendations", "raw_path": b"",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"localhost"), (b"content-type", b"application/json")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and pulled == 2  # stopped at the first piece over
    sent.clear()  # a Content-Length of 5,000 digits: 413, not int()'s ValueError (a 500)
    scope["headers"] = [*scope["headers"], (b"content-length", b"9" * 5000)]
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413


def test_the_admin_key_guards_the_admin_routes_only(saved, tmp_path, monkeypatch):
    from recforge.errors import ConfigError

    app = create_app(saved[1], api_key="read-key", admin_key="s3cr3t-adm1n",
                     events=tmp_path / "ev.sqlite")
    c = local_client(app)
    read, admin = {"X-API-Key": "read-key"}, {"X-Admin-Key": "s3cr3t-adm1n"}
    assert c.get("/users/1/recommendations", headers=read).status_code == 200
    assert c.post("/interactions", json={"events": [{"user": 1, "item": 2}]},
                  headers=read).status_code == 200  # event posts take the read key
    for method, url in (("post", "/admin/reload"), ("delete", "/users/1")):
        for headers in ({}, read, {"X-Admin-Key": "read-key"}, {"X-API-Key": "s3cr3t-adm1n"}):
            res = getattr(c, method)(url, headers={**JSON, **headers})
            assert res.status_code == 401, (method, headers, res.text)
        res = getattr(c, method)(url, headers={**JSON, **admin})
        assert res.status_code == 200, (method, res.text)
    assert c.get("/model", headers=admin).status_code == 401  # the admin key is no read key
    # A read key and no admin key: the admin routes are off.
    only_read = local_client(create_app(saved[1], api_key="read-key"))
    res = only_read.post("/admin/reload", headers={**JSON, **read})
    assert res.status_code == 403 and "admin key" in res.json()["detail"]
    # An admin key alone: reads are open, the admin routes are not.
    only_admin = local_client(create_app(saved[1], admin_key="s3cr3t-adm1n"))
    assert only_admin.get("/model").status_code == 200
    assert only_admin.post("/admin/reload", headers=JSON).status_code == 401
    monkeypatch.setenv("RECFORGE_ADMIN_KEY", "from-env")
    from_env = local_client(create_app(saved[1]))
    assert from_env.post("/admin/reload", headers=JSON).status_code == 401
    assert from_env.post("/admin/reload", headers={**JSON, "X-Admin-Key": "from-env"}
                         ).status_code == 200
    with pytest.raises(ConfigError, match="differ"):
        create_app(saved[1], api_key="same", admin_key="same")
    with pytest.raises(ConfigError, match="empty admin key"):
        create_app(saved[1], admin_key="")
    # The page never holds, sends or asks for the admin key.
    for url in ("/", "/static/app.js", "/openapi.json", "/model"):
        text = c.get(url, headers=read).text
        assert "s3cr3t-adm1n" not in text and "from-env" not in text, url
    assert "X-Admin-Key" not in c.get("/static/app.js").text


def test_a_flood_of_heavy_requests_is_refused_and_cheap_ones_answer(saved, monkeypatch):
    """heavy_workers=1, heavy_queue=1: one batch runs, one waits, the next is answered 503
    with Retry-After at once; /health and one user's recommendations answer meanwhile."""
    import asyncio
    import threading

    from recforge.serving.service import RecommendationService
    from recforge.serving.settings import Limits

    entered, release = threading.Event(), threading.Event()
    real = RecommendationService.recommend_resolved

    def blocking(self, *args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RecommendationService, "recommend_resolved", blocking)
    app = create_app(saved[1], limits=Limits(heavy_workers=1, heavy_queue=1, retry_after=7))

    async def flood():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            batch = {"users": [1, 2, 3], "k": 5}
            running = asyncio.ensure_future(c.post("/recommendations", json=batch))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            waiting = asyncio.ensure_future(c.post("/recommendations", json=batch))
            while app.state.heavy._places:
                await asyncio.sleep(0.01)
            refused = await c.post("/recommendations", json=batch)
            similar = await c.get("/items/1/similar")
            health = await c.get("/health")
            one = await c.get("/users/1/recommendations?k=3")
            history = await c.get("/users/1/history")
            release.set()
            return refused, similar, health, one, history, await running, await waiting

    refused, similar, health, one, history, first, second = asyncio.run(flood())
    assert refused.status_code == similar.status_code == 503
    assert refused.headers["retry-after"] == "7" and "busy" in refused.json()["detail"]
    assert health.status_code == one.status_code == history.status_code == 200
    assert first.status_code == second.status_code == 200
    assert len(first.json()["results"]) == 3
    assert app.state.heavy._places == 2  # every place given back


@pytest.mark.parametrize("method,url,kwargs", [
    ("post", "/admin/reload", {}),  # what a cross-site no-cors fetch sends
    ("post", "/admin/reload", {"headers": {"content-type": "text/plain"}}),
    ("post", "/interactions", {"content": b'{"events": [{"user": 1, "item": 2}]}',
                               "headers": {"content-type": "text/plain"}}),
    ("post", "/recommendations", {"data": {"users": "1"}}),  # a form
    ("delete", "/users/1", {}),
])
def test_state_changing_requests_must_be_json(saved, tmp_path, method, url, kwargs):
    c = local_client(create_app(saved[1], events=tmp_path / "ev.sqlite"))
    res = getattr(c, method)(url, **kwargs)
    assert res.status_code == 415, res.text
    assert "application/json" in res.json()["detail"]
    ok = getattr(c, method)(url, headers={"content-type": "application/json; charset=utf-8"},
                            **({"content": kwargs["content"]} if "content" in kwargs else {}))
    assert ok.status_code in (200, 422), ok.text  # past the check


def test_the_host_header_must_name_an_allowed_host(saved):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends
    ``Host: evil.example``; the server answers 421 to anything but its own names."""
    import asyncio

    app = create_app(saved[1])
    for host, status in (("localhost", 200), ("localhost:8000", 200), ("127.0.0.1:80", 200),
                         ("[::1]:8000", 200), ("LOCALHOST.", 200), ("evil.example", 421),
                         ("evil.example:8000", 421), ("127.0.0.1.evil.example", 421),
                         ("localhost:x", 421), ("", 421)):
        for url in ("/health", "/users/1/recommendations", "/users/1/history"):
            res = TestClient(app).get(url, headers={"host": host})
            assert res.status_code == status, (host, url, res.text)
    assert TestClient(app).post("/admin/reload", headers={"host": "evil.example", **JSON}
                                ).status_code == 421
    named = create_app(saved[1], allowed_hosts=["api.example.com", "10.0.0.5"])
    assert TestClient(named).get("/health", headers={"host": "api.example.com"}).status_code == 200
    assert TestClient(named).get("/health", headers={"host": "10.0.0.5:8000"}).status_code == 200
    assert TestClient(named).get("/health", headers={"host": "localhost"}).status_code == 421
    anyhost = create_app(saved[1], allowed_hosts=["*"])
    assert TestClient(anyhost).get("/health", headers={"host": "evil.example"}).status_code == 200
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.0",
             "method": "GET", "scheme": "http", "path": "/health", "raw_path": b"/health",
             "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))  # HTTP/1.0 without a Host header
    assert sent[0]["status"] == 400


def test_no_answer_shows_a_server_path_and_cors_stays_closed(saved, tmp_path):
    import pandas as pd

    from recforge import Interactions

    c = local_client(create_app(saved[1], events=tmp_path / "ev.sqlite"))
    info = c.get("/model").json()
    assert info["directory"] == saved[1].name and "path" not in info
    where = str(saved[1].parent)
    frame = pd.DataFrame({"user": ["/srv/data/u1", "u2"], "item": ["/x/y", "z"]})
    path_ids = local_client(create_app(create_model("pop").fit(Interactions.from_frame(frame))))
    answers = [
        c.get("/model"),
        c.post("/admin/reload", json={"model": str(tmp_path / "no" / "such" / "model")}),
        c.post("/admin/reload", json={"model": str(tmp_path)}),
        c.post("/admin/reload", json={"model": "relative/dir"}),
        c.post("/interactions", json={"events": [{"user": "a\x00b", "item": 1}]}),
        path_ids.get("/items/%2Fnope%2Fmissing/similar"),
    ]
    assert [r.status_code for r in answers] == [200, 400, 400, 400, 422, 404]
    assert "'/nope/missing'" in answers[-1].text  # an id is an id, not a path to hide
    for r in answers:
        assert where not in r.text and str(tmp_path) not in r.text, r.text
        assert os.getcwd() not in r.text, r.text
    # CORS stays closed: no preflight passes, no answer allows another origin
    pre = c.options("/admin/reload", headers={"Origin": "https://evil.example",
                                              "Access-Control-Request-Method": "POST"})
    assert pre.status_code >= 400
    for r in (pre, c.get("/model", headers={"Origin": "https://evil.example"})):
        assert not any(h.startswith("access-control-") for h in r.headers), r.headers


# -- the hot path (issue 20, item 12: tail latency; speed itself is measured by
#    benchmarks/bench_serving.py, not here) -------------------------------------------------
def test_one_users_recommendations_query_no_database_and_take_no_thread(saved, random_data,
                                                                         tmp_path, monkeypatch):
    """GET /users/{id}/recommendations is answered inline in the event loop from memory:
    no event-store query (posted events are kept in memory), no hop to a worker thread,
    whether the fast path or the FastAPI route answers, the user posted events or not."""
    import asyncio

    import sqlalchemy as sa

    from recforge.serving.service import RecommendationService

    app = create_app(saved[1], events=tmp_path / "ev.sqlite")
    c = local_client(app)
    users = [int(u) for u in random_data.users.ids[:6]]
    item = int(random_data.items.ids[0])
    assert c.post("/interactions", json={"events": [{"user": users[0], "item": item},
                                                    {"user": "newbie", "item": item}]}
                  ).status_code == 200
    queries, threads = [], []
    sa.event.listen(app.state.service.events.engine, "before_cursor_execute",
                    lambda *args: queries.append(args[2]))
    real = RecommendationService._recommend

    def spy(self, *args, **kwargs):
        try:
            asyncio.get_running_loop()
            threads.append("event loop")
        except RuntimeError:  # a worker thread runs no event loop
            threads.append("worker thread")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RecommendationService, "_recommend", spy)
    for user in [*users, "newbie", "nobody"]:
        for query in ("k=5", "k=5&include_seen=TRUE"):  # the fast path; the route
            assert c.get(f"/users/{user}/recommendations?{query}").status_code == 200
    assert threads == ["event loop"] * 16
    assert queries == []
    c.post("/interactions", json={"events": [{"user": users[1], "item": item}]})
    assert queries  # the listener sees the store's queries


@pytest.mark.parametrize("seed", range(3))
def test_the_top_k_takes_ties_in_order_with_or_without_ties(seed):
    """The ranking function's answer is the order by (score descending, tie key): on rows
    without ties (its quick exit, the hot path's usual case) as on rows with them."""
    import math

    import torch

    from recforge.ranking import rank_ties
    from recforge.ranking import topk_with_ties as _top_k_ties_in_order

    g = np.random.default_rng(seed)
    for trial in range(300):
        rows, n = int(g.integers(1, 5)), int(g.integers(1, 40))
        k = int(g.integers(1, n + 1))
        kind = trial % 3
        scores = (g.standard_normal((rows, n)) if kind == 0
                  else g.integers(0, 4, (rows, n)).astype(float) if kind == 1
                  else np.where(g.random((rows, n)) < 0.5, -math.inf, g.standard_normal((rows, n))))
        rank = g.permutation(n)
        for key in (None, rank):
            pos, vals = _top_k_ties_in_order(torch.tensor(scores, dtype=torch.float32), k,
                                             None if key is None else rank_ties(torch.tensor(key)))
            s32 = scores.astype(np.float32)
            for r in range(rows):
                tie = np.arange(n) if key is None else key
                want = np.lexsort((tie, -s32[r]))[:k]
                assert pos[r].tolist() == want.tolist(), (trial, r, s32[r], k)
                assert vals[r].tolist() == s32[r][want].tolist()


def test_a_row_without_ties_is_ranked_by_topk_alone(saved, monkeypatch):
    """Continuous scores (ALS, EASE) rarely tie: then the ranking is topk's own order, with
    none of the sorts that settle ties (two sorts and three gathers per request, a third of
    the hot path's scoring time before)."""
    import torch

    from recforge.ranking import topk_with_ties as _top_k_ties_in_order
    from recforge.serving.service import RecommendationService

    sorts = []
    real_sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **kw: sorts.append(1) or real_sort(*a, **kw))
    distinct = torch.tensor([[0.3, 0.9, 0.1, 0.5, 0.7]])
    assert _top_k_ties_in_order(distinct, 3)[0].tolist() == [[1, 4, 3]]
    assert sorts == []
    tied = torch.tensor([[0.3, 0.9, 0.5, 0.5, 0.7]])
    assert _top_k_ties_in_order(tied, 3)[0].tolist() == [[1, 4, 2]]
    assert sorts  # ties are settled as before
    sorts.clear()
    svc = RecommendationService(saved[1])
    user = int(saved[0].users_.ids[3])
    assert len(svc.recommend_user(user, 10)["items"]) == 10
    assert sorts == []
