"""Explanations per modality (``GET /explanations``) and item search by text vectors
(``GET /items?match=...``), through the HTTP app, and on the web page in headless Chromium.

The catalogue is generated: 40 films in 8 themes (cats, space, war...), each with a title
that names its theme in other words and genres that follow it; users like two themes.
Item features: genres (categories) and the titles' vectors from the bundled text encoder
(group ``text``). What the answers must say is computed here from the feature matrices
and the interactions, not from the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_web import browser, serving  # noqa: F401  (the browser fixture, the server)

from recforge.data import features as F
from recforge.data.interactions import Interactions
from recforge.data.text_encoders import encode_texts
from recforge.models import create_model
from recforge.serving.app import create_app
from recforge.serving.schemas import Explanations, ItemSearch
from recforge.serving.settings import Limits

THEMES = {
    "cats": (["The Cat Who Came Home", "Alley Cats of Paris", "A Tabby's Tale",
              "Whiskers and Purrs", "Tomcat Summer"], "Comedy|Family"),
    "space": (["Journey to Mars", "Starship Odyssey", "The Astronaut's Return",
               "Rocket to the Moon", "Galaxy Far Away"], "SciFi|Adventure"),
    "war": (["Soldiers of the Front", "Battle of the River", "The Last Trench",
             "Army of Heroes", "Bombers over Berlin"], "War|Drama"),
    "love": (["A Summer Romance", "Love in Venice", "The Wedding Promise", "Sweethearts",
              "Kiss at Midnight"], "Romance|Drama"),
    "sea": (["Pirates of the Bay", "The Lighthouse Keeper", "Ocean Voyage",
             "Sailors' Song", "Deep Sea Divers"], "Adventure"),
    "food": (["The Baker's Daughter", "Kitchen Nights", "A Taste of Rome",
              "The Chef's Table", "Chocolate Dreams"], "Comedy|Romance"),
    "west": (["Cowboys at Dawn", "The Ranch", "Outlaws of the West", "Sheriff's Badge",
              "Wild Horses"], "Western|Adventure"),
    "music": (["The Piano Lesson", "Jazz Club", "Symphony of Dreams", "Rock Band Road Trip",
               "Songs of the Valley"], "Musical|Drama"),
}
#: A query no title contains, whose meaning is one theme's.
TEXT_QUERY = "kittens"


@dataclass
class Catalogue:
    data: Interactions
    frame: pd.DataFrame  # user, item
    titles: dict[int, str]
    genres: dict[int, str]
    features: F.Features
    path: Path  # a saved content model with titles


def _catalogue(tmp: Path) -> Catalogue:
    rng = np.random.default_rng(11)
    titles, genres, theme_items = {}, {}, []
    for t, (names, genre) in enumerate(THEMES.values()):
        ids = [100 + 10 * t + j for j in range(len(names))]
        titles.update(zip(ids, names, strict=True))
        genres.update(dict.fromkeys(ids, genre))
        theme_items.append(ids)
    rows = []
    for u in range(30):
        for t in rng.choice(len(THEMES), 2, replace=False):
            rows += [(u, int(i)) for i in rng.choice(theme_items[t], 3, replace=False)]
    frame = pd.DataFrame(rows, columns=["user", "item"]).drop_duplicates()
    data = Interactions.from_frame(frame)
    ids = list(titles)
    feats = F.combine(F.categorical(ids, [genres[i] for i in ids], "genres"),
                      F.text_vectors(ids, [titles[i] for i in ids], "text"))
    model = create_model("content").fit(data, item_features=feats)
    model.attach_item_metadata(pd.DataFrame({"title": [titles[i] for i in ids]}, index=ids))
    return Catalogue(data, frame, titles, genres, feats, model.save(tmp / "content"))


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> Catalogue:
    return _catalogue(tmp_path_factory.mktemp("multimodal"))


@pytest.fixture(scope="module")
def client(catalogue) -> TestClient:
    return TestClient(create_app(catalogue.path), base_url="http://localhost")


# ---------------------------------------------------------------------------------------
# What the answers must say, from the inputs
def _unit_rows(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.where(n > 0, m / np.where(n > 0, n, 1), 0.0)


def _group_vectors(cat: Catalogue) -> dict[str, tuple[list[int], np.ndarray]]:
    """Per group, item ids and their unit rows: genres multi-hot from the genre strings,
    text from the text block given to the model."""
    ids = list(cat.titles)
    labels = sorted({g for s in cat.genres.values() for g in s.split("|")})
    multi = np.array([[g in cat.genres[i].split("|") for g in labels] for i in ids], float)
    text = cat.features.select_groups(["text"]).matrix.toarray()
    order = cat.features.ids.index(np.array(ids))
    return {"genres": (ids, _unit_rows(multi)), "text": (ids, _unit_rows(text[order]))}


def _expected(cat: Catalogue, item: int, history: set[int]) -> dict[str, tuple[set, float]]:
    """Per group: the history items (other than ``item``) of highest cosine with it (of
    those, the ones most similar over both groups: the tie-break), and that cosine;
    groups where it is not positive are left out."""
    hist = sorted(h for h in history if h != item)
    if not hist:
        return {}
    sims = {}
    for group, (ids, rows) in _group_vectors(cat).items():
        pos = {i: n for n, i in enumerate(ids)}
        sims[group] = rows[[pos[h] for h in hist]] @ rows[pos[item]]
    overall = sum(np.maximum(s, 0) for s in sims.values())
    out = {}
    for group, s in sims.items():
        top = s.max()
        if top > 1e-6:
            tied = s > top - 1e-5
            most = overall[tied].max()
            out[group] = ({h for h, t, o in zip(hist, tied, overall, strict=True)
                           if t and o > most - 1e-5}, float(top))
    return out


def _check(cat: Catalogue, answer: dict, history: set[int]) -> int:
    """Every explanation names, per group, a history item of highest cosine; returns the
    number of reasons checked."""
    Explanations.model_validate(answer)
    checked = 0
    for explanation in answer["explanations"]:
        want = _expected(cat, explanation["item"], history)
        got = {r["group"]: r for r in explanation["because"]}
        assert set(got) == set(want), (explanation, want)
        for group, (best, sim) in want.items():
            reason = got[group]
            assert reason["item"] in best and reason["similarity"] == pytest.approx(sim, abs=1e-5)
            assert reason["title"] == cat.titles[reason["item"]]
            if group == "genres":  # the genres both films have
                shared = set(cat.genres[reason["item"]].split("|")) & set(
                    cat.genres[explanation["item"]].split("|"))
                assert set(reason["shared"]) == shared
            checked += 1
        sims = [r["similarity"] for r in explanation["because"]]
        assert sims == sorted(sims, reverse=True)
    return checked


# ---------------------------------------------------------------------------------------
def test_model_lists_its_modalities(client):
    assert client.get("/model").json()["modalities"] == [
        {"group": "genres", "kind": "categories"}, {"group": "text", "kind": "vectors"}]


@pytest.mark.parametrize("name", ["content", "hybrid"])
def test_explanations_name_the_nearest_history_item_per_modality(catalogue, name, tmp_path):
    """For each user's recommendations, per group, a history item of highest cosine with
    the recommended one (the recommended item itself never); a hybrid saved and loaded
    (it keeps its item features)."""
    cat = catalogue
    if name == "content":
        served = cat.path
    else:
        served = create_model("hybrid", embedding_dim=8, epochs=3, device="cpu").fit(
            cat.data, item_features=cat.features).attach_item_metadata(
            pd.DataFrame({"title": list(cat.titles.values())}, index=list(cat.titles))
        ).save(tmp_path / "hybrid")
    c = TestClient(create_app(served), base_url="http://localhost")
    checked = 0
    for user in (0, 7, 19):
        history = set(cat.frame.loc[cat.frame["user"] == user, "item"])
        recs = c.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
        items = [r["item"] for r in recs] + [next(iter(history))]  # and one of its own
        r = c.get("/explanations", params={"user": str(user), "item": items})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == user and [e["item"] for e in body["explanations"]] == items
        checked += _check(cat, body, history)
    assert checked >= 20


def test_the_library_says_the_same(catalogue, client):
    """``similar_in_history`` (the library) and the endpoint agree."""
    from recforge.models.base import Recommender

    model = Recommender.load(catalogue.path)
    body = client.get("/explanations", params={"user": "3", "item": ["150", "101"]}).json()
    for explanation in body["explanations"]:
        lib = model.similar_in_history(explanation["item"], user=3)
        assert lib["group"].tolist() == [r["group"] for r in explanation["because"]]
        assert lib["item"].tolist() == [r["item"] for r in explanation["because"]]


def test_explanations_for_an_anonymous_history(catalogue, client):
    cat = catalogue
    history = [101, 102, 140, 171]
    r = client.get("/explanations", params={"history": [*map(str, history), "nope"],
                                            "item": ["100", "141", "173", "110"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unknown_items"] == ["nope"] and "user" not in body
    assert _check(cat, body, set(history)) >= 6
    # a cat film explained by the cat films of the history, in both groups
    first = {x["group"]: x["item"] for x in body["explanations"][0]["because"]}
    assert set(first.values()) <= {101, 102}


def test_explanation_errors(catalogue, client, tmp_path):
    """Clear 4xx answers: unknown ids, what to explain by, bounds, a model without item
    features; a user unknown to the model who posted events is explained by them."""
    get = client.get
    cases = [
        ({"user": "0", "item": ["999"]}, 404, "unknown item id '999'"),
        ({"user": "nobody", "item": ["100"]}, 404, "unknown user id 'nobody'"),
        ({"item": ["100"]}, 422, "exactly one of 'user' and 'history'"),
        ({"user": "0", "history": ["100"], "item": ["100"]}, 422, "exactly one"),
        ({"user": "0"}, 422, "item"),
        ({"user": "0", "item": ["100"] * 101}, 422, "100"),
        ({"user": "0", "item": [""]}, 422, "cannot be empty"),
        ({"user": "u" * 300, "item": ["100"]}, 422, "max_id_length"),
        ({"history": ["x", "y"], "item": ["100"]}, 400, "none of the history's items"),
    ]
    for params, status, text in cases:
        r = get("/explanations", params=params)
        assert r.status_code == status and text in r.text, (params, r.status_code, r.text)
    # ids of any length: within a server's wider limit, answered as unknown
    wide = TestClient(create_app(catalogue.path, limits=Limits(max_id_length=6_000)),
                      base_url="http://localhost")
    r = wide.get("/explanations", params={"user": "9" * 5_000, "item": ["100"]})
    assert r.status_code == 404 and "..." in r.json()["detail"]
    r = wide.get("/explanations", params={"user": "0", "item": ["7" * 5_000]})
    assert r.status_code == 404
    # a model without item features
    ease = create_model("ease", reg=10.0).fit(catalogue.data)
    r = TestClient(create_app(ease), base_url="http://localhost").get(
        "/explanations", params={"user": "0", "item": ["100"]})
    assert r.status_code == 400 and "no item features" in r.json()["detail"]
    # posted events: a new user explained by what they posted
    app = create_app(catalogue.path, events=tmp_path / "events.sqlite")
    with TestClient(app, base_url="http://localhost") as c:
        posted = [101, 130]
        r = c.post("/interactions", headers={"content-type": "application/json"},
                   json={"events": [{"user": "newbie", "item": i} for i in posted]})
        assert r.status_code == 200, r.text
        body = c.get("/explanations", params={"user": "newbie", "item": ["100", "131"]}).json()
        assert body["user"] == "newbie"
        _check(catalogue, body, set(posted))


# ---------------------------------------------------------------------------------------
def _nearest_by_text(cat: Catalogue, query: str) -> list[int]:
    """Item ids by the cosine between the query's vector and theirs, best first."""
    ids, rows = _group_vectors(cat)["text"]
    q = encode_texts([query])[0].astype(np.float64)
    sims = rows @ (q / np.linalg.norm(q))
    return [ids[j] for j in np.argsort(-sims, kind="stable")]


def test_search_ranks_by_text_vectors_after_title_matches(catalogue, client):
    cat = catalogue
    nearest = _nearest_by_text(cat, TEXT_QUERY)
    assert "cat" in cat.titles[nearest[0]].lower()  # the encoder knows kittens are cats
    body = client.get("/items", params={"query": TEXT_QUERY, "limit": 5}).json()
    ItemSearch.model_validate(body)
    assert body["total"] == 0 and body["text_vectors"] == "text"
    assert [x["item"] for x in body["items"]] == nearest[:5]
    assert {x["match"] for x in body["items"]} == {"text"}
    # title matches first (as before), then the nearest by text
    body = client.get("/items", params={"query": "the", "limit": 40}).json()
    titled = sorted(i for i, t in cat.titles.items() if "the" in t.lower())
    assert body["total"] == len(titled)
    assert sorted(x["item"] for x in body["items"][:len(titled)]) == titled
    assert {x["match"] for x in body["items"][:len(titled)]} == {"title"}
    rest = [x["item"] for x in body["items"][len(titled):]]
    assert rest == [i for i in _nearest_by_text(cat, "the") if i not in titled]
    # match=text: by the vectors alone; match=title: today's answer, unchanged
    body = client.get("/items", params={"query": "Jazz Club", "match": "text"}).json()
    assert body["items"][0]["item"] == 171 and body["total"] == 40
    assert client.get("/items", params={"query": TEXT_QUERY, "match": "title"}).json() == {
        "query": TEXT_QUERY, "total": 0, "items": []}
    hit = client.get("/items", params={"query": "171"}).json()["items"][0]
    assert hit["item"] == 171 and hit["match"] == "id"
    assert client.get("/items", params={"query": "x", "match": "words"}).status_code == 422


def test_search_without_text_vectors_is_unchanged(catalogue):
    """A model without text vectors (genres only): the title search as before, and
    match=text is a clear 400."""
    ids = list(catalogue.titles)
    genres = F.categorical(ids, [catalogue.genres[i] for i in ids], "genres")
    model = create_model("content").fit(catalogue.data, item_features=genres)
    model.attach_item_metadata(pd.DataFrame({"title": list(catalogue.titles.values())},
                                            index=ids))
    c = TestClient(create_app(model), base_url="http://localhost")
    assert c.get("/items", params={"query": "jazz"}).json() == {
        "query": "jazz", "total": 1, "items": [{"item": 171, "title": "Jazz Club"}]}
    r = c.get("/items", params={"query": "jazz", "match": "text"})
    assert r.status_code == 400 and "no item text vectors" in r.json()["detail"]


def test_search_without_the_encoder_falls_back_to_titles(catalogue, monkeypatch):
    """An install without the wordllama package: the title search, and a clear 400 for
    match=text (never a 5xx, never the encoder's ImportError)."""
    import recforge.serving.multimodal as multimodal

    monkeypatch.setattr(multimodal, "_HAS_ENCODER", False)
    c = TestClient(create_app(catalogue.path), base_url="http://localhost")
    assert c.get("/items", params={"query": "jazz"}).json() == {
        "query": "jazz", "total": 1, "items": [{"item": 171, "title": "Jazz Club"}]}
    r = c.get("/items", params={"query": "jazz", "match": "text"})
    assert r.status_code == 400 and "pip install wordllama" in r.json()["detail"]


# ---------------------------------------------------------------------------------------
def test_fuzz_explanations_and_search_never_5xx(catalogue):
    """Generated ids (known, their text, numbers, any text, very long), lists of any
    length, both or neither of user and history, any query and match: a 4xx, or an answer
    of the schema, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    c = TestClient(create_app(catalogue.path, limits=Limits(max_id_length=6_000)),
                   base_url="http://localhost")
    known = [str(i) for i in catalogue.titles]
    short = st.one_of(st.sampled_from(known), st.sampled_from(["0", "3", "29", "1.0", " 7"]),
                      st.integers(-2**70, 2**70).map(str), st.text(max_size=30))
    long = st.sampled_from(["9" * 5_000, "x" * 5_999, "x" * 7_000])  # the limit: 6,000
    ids = st.one_of(short, long)

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    # (a URL's query is at most 64 KiB here: long ids a few at a time)
    @given(items=st.one_of(st.lists(st.sampled_from(known), min_size=1, max_size=10),
                           st.lists(short, max_size=105), st.lists(ids, max_size=3)),
           who=st.sampled_from(["user", "user", "history", "history", "both", "neither"]),
           user=st.one_of(st.sampled_from(["0", "5", "29"]), ids),
           history=st.one_of(st.lists(st.sampled_from(known), max_size=8),
                             st.lists(short, max_size=20), st.lists(ids, max_size=3)),
           query=st.text(max_size=210), match=st.sampled_from(["auto", "title", "text", "x"]),
           limit=st.integers(-1, 1002))
    def check(items, who, user, history, query, match, limit):
        params = {"item": items}
        if who in ("user", "both"):
            params["user"] = user
        if who in ("history", "both"):
            params["history"] = history
        r = c.get("/explanations", params=params)
        assert r.status_code < 500, r.text[:300]
        seen[r.status_code] += 1
        if r.status_code == 200:
            Explanations.model_validate(r.json())
        else:
            assert isinstance(r.json()["detail"], (str, list))
        r = c.get("/items", params={"query": query, "match": match, "limit": limit})
        assert r.status_code < 500, r.text[:300]
        searched[r.status_code] += 1
        if r.status_code == 200:
            ItemSearch.model_validate(r.json())

    seen: Counter[int] = Counter()
    searched: Counter[int] = Counter()
    check()
    # each kind of answer drawn: explained, unknown ids, invalid requests
    assert seen[200] >= 10 and seen[404] >= 10 and seen[422] >= 10, seen
    assert searched[200] >= 30 and searched[422] >= 10, searched


# ---------------------------------------------------------------------------------------
# The web page, in headless Chromium (the fixtures of test_web.py)
@pytest.mark.e2e
def test_page_shows_explanations_and_searches_by_text(catalogue, request):
    from playwright.sync_api import expect

    chromium = request.getfixturevalue("browser")
    cat = catalogue
    with serving(create_app(cat.path)) as url:
        api = TestClient(create_app(cat.path), base_url="http://localhost")
        errors: list[str] = []
        page = chromium.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        expect(page.locator("#model-info")).to_contain_text("item features: genres, text")
        expect(page.locator("#key-form")).to_be_hidden()  # no key: no key form
        expect(page.locator("#search-label")).to_have_text("Title, item id or words")

        # words no title contains: the items nearest by text, said so
        nearest = _nearest_by_text(cat, TEXT_QUERY)
        page.locator("#search-query").fill(TEXT_QUERY)
        page.locator("#search-query").press("Enter")
        first = page.locator("#search-results > li").first
        expect(first.locator("button.item")).to_have_text(
            f"{cat.titles[nearest[0]]} #{nearest[0]}")
        expect(first.locator(".meta")).to_contain_text("(similar text)")
        expect(page.locator("#search-status")).to_have_text(
            f"No item matches “{TEXT_QUERY}”; 20 items by text similarity.")

        # a user: under each recommendation, per history item, its modalities
        user = 7
        page.locator("#user-id").fill(str(user))
        page.locator("#user-id").press("Enter")
        expect(page.locator("#user-status")).to_contain_text(f"User {user}:")
        recs = api.get(f"/users/{user}/recommendations", params={"k": 10}).json()["items"]
        body = api.get("/explanations", params={
            "user": str(user), "item": [r["item"] for r in recs]}).json()
        _check(cat, body, set(cat.frame.loc[cat.frame["user"] == user, "item"]))
        entries = page.locator("#recommendations > li")
        expect(entries).to_have_count(len(recs))
        shown = 0
        for n, explanation in enumerate(body["explanations"]):
            lines: dict[int, list[str]] = {}
            for reason in explanation["because"]:
                text = (f"same genres ({', '.join(reason['shared'])})"
                        if reason["group"] == "genres" else "similar text")
                lines.setdefault(reason["item"], []).append(text)
            want = [f"Because you watched “{cat.titles[i]}”: {', '.join(parts)}"
                    for i, parts in lines.items()]
            expect(entries.nth(n).locator(".modality")).to_have_text(want)
            shown += len(want)
        assert shown >= len(recs)
        # the existing one-line reason is still there
        expect(page.locator("#recommendations .why")).to_have_count(len(recs))

        # a session of the first search result: its next items, each with what it shares
        # with the session's film
        page.locator("#search-results button.add").first.click()
        nxt = api.post("/recommendations", headers={"content-type": "application/json"},
                       json={"history": [nearest[0]], "k": 10}).json()["items"]
        body = api.get("/explanations", params={
            "history": [str(nearest[0])], "item": [r["item"] for r in nxt]}).json()
        _check(cat, body, {nearest[0]})
        entries = page.locator("#session-recs > li")
        expect(entries).to_have_count(len(nxt))
        assert sum(bool(e["because"]) for e in body["explanations"]) >= 5
        for n, explanation in enumerate(body["explanations"]):
            parts = [f"same genres ({', '.join(r['shared'])})" if r["group"] == "genres"
                     else "similar text" for r in explanation["because"]]
            want = ([f"Like “{cat.titles[nearest[0]]}” in the session: {', '.join(parts)}"]
                    if parts else [])
            expect(entries.nth(n).locator(".modality")).to_have_text(want)
        page.close()
    assert errors == []
