"""The web page at ``/``, driven in headless Chromium (Playwright) against a real server
(uvicorn on a loopback port, in a thread), with the keyboard only: find an item by title and see similar
items, pick a user and see their history beside explained recommendations. No request may
leave for another host and the console must stay free of errors.

Runs on ml-100k (with its titles) when the shared data is there, else on generated data
with titles. Skipped when Playwright or Chromium (``/usr/bin/chromium``, or the path in
``RECFORGE_CHROMIUM``) is missing. ``make e2e`` runs just these tests (marker ``e2e``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pandas as pd
import pytest
from conftest import random_interactions, shared_data_dir

from recforge.models import create_model
from recforge.serving.app import create_app

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("RECFORGE_CHROMIUM", "/usr/bin/chromium"))
KEY = "page-test-key"


@dataclass
class Case:
    """A saved model and what to look for in it."""

    path: Path
    query: str  # typed into the title search
    first: str  # the title of its first result
    user: str  # a user with a history


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Case:
    """EASE on ml-100k with its titles when the data is there, else on generated data with
    generated titles."""
    out = tmp_path_factory.mktemp("web") / "model"
    base = shared_data_dir()
    if base is not None and (base / "ml-100k" / "u.data").is_file():
        from recforge.data.datasets import load_bundle

        bundle = load_bundle("ml-100k", data_dir=base, download=False)
        model = create_model("ease", reg=200.0).fit(bundle.interactions)
        model.attach_item_metadata(bundle.items[["title", "year", "genres"]])
        return Case(model.save(out), query="toy sto", first="Toy Story", user="1")
    data = random_interactions(n_users=80, n_items=60, seed=3)
    ids = data.items.ids
    titles = pd.DataFrame({"title": [f"Generated film {i}" for i in ids]}, index=ids)
    model = create_model("ease", reg=20.0).fit(data).attach_item_metadata(titles)
    return Case(model.save(out), query=f"generated film {ids[7]}",
                first=f"Generated film {ids[7]}", user=str(data.users.ids[0]))


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Chromium "
                    "(set RECFORGE_CHROMIUM to its path)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its URL.
    (In-process: a `recforge serve` process would spend seconds importing torch again.)"""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def focused(page) -> str:
    """The focused element: its id, or else its text."""
    return page.evaluate("() => document.activeElement.id"
                         " || document.activeElement.textContent.trim()")


def test_explore_with_the_keyboard(browser, case):
    from playwright.sync_api import expect

    with serving(create_app(case.path, api_key=KEY)) as url:
        api = httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=10)
        host = urlsplit(url).netloc
        external: list[str] = []
        served: list[str] = []  # paths asked of the server
        errors: list[str] = []
        keyed: list[bool] = []
        context = browser.new_context()

        def route(r) -> None:
            if urlsplit(r.request.url).netloc != host:
                external.append(r.request.url)
                r.abort()
            else:
                served.append(urlsplit(r.request.url).path)
                r.continue_()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: keyed.append(r.headers.get("x-api-key") == KEY)
                if urlsplit(r.url).path.startswith(("/items", "/users", "/model")) else None)
        kb = page.keyboard

        # The page loads without the key and asks for it; the tab order follows the page.
        assert page.goto(url + "/").status == 200
        expect(page.locator("#api-key")).to_be_focused()
        order = []
        for _ in range(10):
            kb.press("Tab")
            order.append(focused(page))
        assert order == ["Use key", "search-query", "Search", "user-id", "user-k", "Show",
                         "session-item", "Add to session", "session-clear", "/docs"]
        for _ in range(10):
            kb.press("Shift+Tab")
        expect(page.locator("#api-key")).to_be_focused()
        kb.type(KEY)
        kb.press("Enter")
        info = api.get("/model").json()
        expect(page.locator("#model-info")).to_contain_text(f"Model {info['model']}")
        expect(page.locator("#search-query")).to_be_focused()

        # A title, Enter; down to the first result, Enter: its similar items.
        kb.type(case.query)
        kb.press("Enter")
        status = page.locator("#search-status")
        assert status.get_attribute("aria-live") == "polite"
        expect(status).to_contain_text("match")
        kb.press("ArrowDown")
        assert focused(page).startswith(case.first)
        first = api.get("/items", params={"query": case.query}).json()["items"][0]
        kb.press("Enter")
        heading = page.locator("#similar-heading")
        expect(heading).to_have_text(f"Similar to {case.first}")
        expect(heading).to_be_focused()
        similar = api.get(f"/items/{first['item']}/similar", params={"k": 10}).json()
        sim_buttons = page.locator("#similar-results button.item")
        expect(sim_buttons).to_have_count(len(similar["similar"]))
        assert sim_buttons.first.inner_text().startswith(similar["similar"][0]["title"])
        kb.press("Tab")
        assert focused(page).startswith(similar["similar"][0]["title"])
        kb.press("ArrowDown")
        assert focused(page).startswith(similar["similar"][1]["title"])

        # Tab on to the user form: the user's history beside explained recommendations.
        for _ in range(80):  # each item has its "+ session" button beside it
            if focused(page) == "user-id":
                break
            kb.press("Tab")
        assert focused(page) == "user-id"
        kb.type(case.user)
        kb.press("Enter")
        expect(page.locator("#user-status")).to_contain_text(f"User {case.user}:")
        history = api.get(f"/users/{case.user}/history").json()
        recs = api.get(f"/users/{case.user}/recommendations",
                       params={"k": 10, "explain": True}).json()
        expect(page.locator("#history > li")).to_have_count(len(history["items"]))
        assert page.locator("#history button").first.inner_text().startswith(
            history["items"][0]["title"])
        expect(page.locator("#recommendations > li")).to_have_count(len(recs["items"]))
        whys = page.locator("#recommendations .why").all_inner_texts()
        assert len(whys) == len(recs["items"])
        for why, rec in zip(whys, recs["items"], strict=True):
            if rec["because"] is not None:
                assert why == f"Similar to “{rec['because']['title']}”, in the history"
        assert any(r["because"] for r in recs["items"])
        # A recommendation's button shows the items similar to it.
        page.locator("#recommendations button").first.focus()
        kb.press("Enter")
        expect(heading).to_have_text(f"Similar to {recs['items'][0]['title']}")
        to_rec = api.get(f"/items/{recs['items'][0]['item']}/similar", params={"k": 10}).json()
        expect(sim_buttons.first).to_contain_text(to_rec["similar"][0]["title"])
        expect(heading).to_be_focused()

        # A user the model does not know: the most popular items, said so.
        page.locator("#user-id").focus()
        kb.press("Control+A")
        kb.type("nobody-at-all")
        kb.press("Enter")
        expect(page.locator("#user-status")).to_contain_text("unknown to the model")
        expect(page.locator("#history > li")).to_have_count(0)
        expect(page.locator("#recommendations .why").first).to_have_text(
            "Popular with all users (no history to go on)")

        context.close()
        api.close()
    assert external == []
    assert {"/", "/static/app.js", "/static/style.css", "/items"} <= set(served)
    assert errors == []
    assert keyed and all(keyed)  # every API request carried the key


def test_a_session_of_three_items_and_its_next_items(browser, case):
    """Items added from search results (their "+ session" button) and by typing build a
    session; the next items follow it (the answer of POST /recommendations with the
    session as history), with titles; Remove and Clear update them."""
    from playwright.sync_api import expect

    with serving(create_app(case.path)) as url:
        api = httpx.Client(base_url=url, timeout=10)
        errors: list[str] = []
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/")
        status = page.locator("#session-status")
        expect(status).to_have_text("The session is empty.")
        found = api.get("/items", params={"query": case.query, "limit": 20}).json()["items"]
        page.locator("#search-query").fill(case.query)
        page.locator("#search-query").press("Enter")
        adds = page.locator("#search-results button.add")
        expect(adds).to_have_count(len(found))
        session = [found[0]]
        adds.nth(0).click()
        expect(page.locator("#session-items > li")).to_have_count(1)
        # an item typed by its id, then one by its title
        others = api.get(f"/items/{found[0]['item']}/similar", params={"k": 3}).json()
        by_id, by_title = others["similar"][0], others["similar"][1]
        for text, entry in ((str(by_id["item"]), by_id), (by_title["title"], by_title)):
            page.locator("#session-item").fill(text)
            page.locator("#session-item").press("Enter")
            session.append(entry)
            expect(page.locator("#session-items > li")).to_have_count(len(session))
        expect(page.locator("#session-items button.item")).to_have_text(
            [f"{e['title']} #{e['item']}" for e in session])
        want = api.post("/recommendations", headers={"content-type": "application/json"},
                        json={"history": [e["item"] for e in session], "k": 10}).json()
        recs = page.locator("#session-recs button.item")
        expect(recs).to_have_text([f"{r['title']} #{r['item']}" for r in want["items"]])
        expect(status).to_contain_text("10 next items for a session of 3 items")
        # a next item joins the session with its own button: the list moves on
        page.locator("#session-recs button.add").first.click()
        expect(page.locator("#session-items > li")).to_have_count(4)
        # Remove the first item, then Clear
        page.locator("#session-items button.remove").first.click()
        expect(page.locator("#session-items > li")).to_have_count(3)
        rest = [e["item"] for e in session[1:]] + [want["items"][0]["item"]]
        again = api.post("/recommendations", headers={"content-type": "application/json"},
                         json={"history": rest, "k": 10}).json()
        expect(recs).to_have_text([f"{r['title']} #{r['item']}" for r in again["items"]])
        page.locator("#session-clear").click()
        expect(page.locator("#session-items > li")).to_have_count(0)
        expect(page.locator("#session-recs > li")).to_have_count(0)
        expect(status).to_have_text("The session is empty.")
        page.close()
        api.close()
    assert errors == []


def test_a_model_that_cannot_fold_in_a_session_says_so(browser, tmp_path):
    from playwright.sync_api import expect

    data = random_interactions(n_users=30, n_items=20, seed=1)
    path = create_model("pop").fit(data).save(tmp_path / "pop")
    with serving(create_app(path)) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.locator("#session-item").fill(str(data.items.ids[0]))
        page.locator("#session-item").press("Enter")
        expect(page.locator("#session-items > li")).to_have_count(1)
        expect(page.locator("#session-status")).to_contain_text("Sorry: model pop cannot")
        expect(page.locator("#session-recs > li")).to_have_count(0)
        page.close()
