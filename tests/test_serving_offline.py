"""The server offline and observable (issue 25): ``/docs`` loads nothing from other hosts,
the access log writes one line per request, popularity fallbacks carry no counts as
scores, and a clean shutdown leaves no WAL beside the event store."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from conftest import running_server
from fastapi.testclient import TestClient

from recforge.models import create_model
from recforge.serving.access import AccessLog
from recforge.serving.app import create_app

JSON = {"content-type": "application/json"}
CHROMIUM = Path(os.environ.get("RECFORGE_CHROMIUM", "/usr/bin/chromium"))
#: The content type each kind of asset must be served with.
TYPES = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
         ".png": ("image/png",)}


@pytest.fixture(scope="module")
def saved(random_data, tmp_path_factory):
    model = create_model("ease", reg=20.0).fit(random_data)
    return model, model.save(tmp_path_factory.mktemp("offline") / "ease")


def local_client(app) -> TestClient:
    return TestClient(app, base_url="http://localhost")


class _Assets(HTMLParser):
    """The URLs a page loads: scripts' ``src`` and links' ``href``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [v for k, v in attrs if k == wanted and v]


def assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


# -- /docs offline --------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_their_files_from_the_server(saved, page):
    """Swagger UI and ReDoc name no other host, and each file they load is served, with its
    content type, without a key (as /docs itself), and only for an allowed Host."""
    c = local_client(create_app(saved[1], api_key="read", admin_key="admin"))
    res = c.get(page)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert "https://" not in res.text and "http://" not in res.text
    urls = assets(res.text)
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        got = c.get(url)
        assert got.status_code == 200, url
        kind = got.headers["content-type"].split(";")[0]
        assert kind in TYPES[Path(parts.path).suffix], (url, kind)
        assert len(got.content) > 1000
        assert c.get(url, headers={"host": "evil.example"}).status_code == 421
    assert "/docs" not in c.get("/openapi.json").json()["paths"]


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread; yields its URL."""
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


@pytest.mark.e2e
def test_swagger_ui_renders_with_every_other_host_cut_off(saved):
    """In headless Chromium with every request to another host aborted (offline), /docs
    shows the API: its title and an operation of each route."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: the browser test needs Chromium "
                    "(set RECFORGE_CHROMIUM to its path)")
    with serving(create_app(saved[1], api_key="read")) as url, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            host = urlsplit(url).netloc
            external: list[str] = []
            errors: list[str] = []

            def route(r):
                if urlsplit(r.request.url).netloc != host:
                    external.append(r.request.url)
                    return r.abort()
                return r.continue_()

            page.route("**/*", route)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=15_000)
            assert "recforge" in page.inner_text(".info .title")
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/users/{user_id}/recommendations" in t for t in paths), paths
            assert not external and not errors, (external, errors)
        finally:
            browser.close()


# -- the access log -------------------------------------------------------------------------
#: date, time, client, method, path, status, milliseconds
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\S+) (GET|POST|DELETE) (\S+) "
                  r"(\d{3}) (\d+\.\d\d) ms$")


def test_each_request_writes_one_access_line_with_its_status_and_duration(
        saved, random_data):
    stream = io.StringIO()
    c = local_client(create_app(saved[1], access_log=stream))

    def access_lines() -> list[str]:
        return stream.getvalue().splitlines()
    user = random_data.users.ids[2]
    cases = [  # (request, path in the log, status)
        (lambda: c.get(f"/users/{user}/recommendations?k=3"),  # the fast path
         f"/users/{user}/recommendations?k=3", 200),
        (lambda: c.get(f"/users/{user}/recommendations?k=0"),  # the route, a 422
         f"/users/{user}/recommendations?k=0", 422),
        (lambda: c.get("/items/nothing-here/similar"), "/items/nothing-here/similar", 404),
        (lambda: c.get("/health", headers={"host": "evil.example"}), "/health", 421),
        (lambda: c.post("/interactions", content=b"{}"), "/interactions", 415),
        (lambda: c.get("/users/a%0Ab/history"), "/users/a%0Ab/history", 200),
    ]
    for request, path, status in cases:
        before = len(access_lines())
        assert request().status_code == status
        assert len(access_lines()) == before + 1, access_lines()[before:]
        match = LINE.fullmatch(access_lines()[-1])
        assert match is not None, access_lines()[-1]
        assert (match[3], int(match[4])) == (path, status)
        assert float(match[5]) >= 0


def test_an_access_line_stays_one_line_and_a_failure_is_logged_as_500():
    """A line break in a path (HTTP clients refuse to send one, an ASGI caller need not)
    is escaped; an app that fails before answering is logged as the 500 it becomes."""
    import asyncio

    async def fails(scope, receive, send):
        raise RuntimeError("boom")

    async def answers(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def nothing(message):
        return None

    scope = {"type": "http", "method": "GET", "path": "/users/a\nb/history",
             "raw_path": b"/users/a\nb/history", "query_string": b"", "client": None}
    stream = io.StringIO()
    asyncio.run(AccessLog(answers, stream=stream)(scope, None, nothing))
    with pytest.raises(RuntimeError):
        asyncio.run(AccessLog(fails, stream=stream)(scope, None, nothing))
    access_lines = stream.getvalue().splitlines()
    assert len(access_lines) == 2
    assert [LINE.fullmatch(x)[4] for x in access_lines] == ["204", "500"]  # type: ignore[index]
    assert all(LINE.fullmatch(x)[3] == "/users/a\\nb/history"  # type: ignore[index]
               for x in access_lines)


def test_no_access_log_unless_asked(saved, capsys):
    c = local_client(create_app(saved[1]))
    assert c.get("/health").status_code == 200
    assert "/health" not in capsys.readouterr().err
    c = local_client(create_app(saved[1], access_log=True))  # True: standard error
    assert c.get("/health").status_code == 200
    assert LINE.fullmatch(capsys.readouterr().err.strip())


# -- popularity fallbacks -------------------------------------------------------------------
def test_popularity_fallbacks_give_no_counts_as_scores(saved, random_data):
    """An unknown user's items have ``"score": null`` and their number of training users
    as ``"popularity"``; a known user's have model scores and no popularity."""
    c = local_client(create_app(saved[1]))
    counts = dict(zip(random_data.items.ids.tolist(), random_data.item_counts().tolist(),
                      strict=True))
    for body in (c.get("/users/nobody/recommendations?k=5").json(),
                 c.get("/users/nobody/recommendations?k=5&explain=true").json(),
                 c.post("/recommendations", json={"users": ["nobody"], "k": 5}
                        ).json()["results"][0]):
        assert body["fallback"] == "popular"
        assert [x["rank"] for x in body["items"]] == [1, 2, 3, 4, 5]
        assert all(x["score"] is None for x in body["items"])
        pops = [x["popularity"] for x in body["items"]]
        assert pops == [counts[x["item"]] for x in body["items"]] and pops == sorted(
            pops, reverse=True)
    known = c.get(f"/users/{random_data.users.ids[0]}/recommendations?k=5").json()
    assert known["fallback"] is None
    assert all(isinstance(x["score"], float) and "popularity" not in x
               for x in known["items"])
    item = c.get("/openapi.json").json()["components"]["schemas"]["RecommendedItem"]
    assert {"type": "null"} in item["properties"]["score"]["anyOf"]
    assert "popularity" in item["properties"] and "score" in item["required"]


# -- the event store's side files -----------------------------------------------------------
def test_a_clean_shutdown_leaves_no_wal(saved, random_data, tmp_path):
    store = tmp_path / "events.sqlite"
    wal = store.with_name(store.name + "-wal")
    users = random_data.users.ids[:5].tolist()
    with local_client(create_app(saved[1], events=store)) as c:
        for user in users:
            res = c.post("/interactions", headers=JSON, json={"events": [
                {"user": user, "item": int(random_data.items.ids[0])}]})
            assert res.status_code == 200
        assert wal.is_file() and wal.stat().st_size > 0  # written, not yet checkpointed
    assert not wal.exists() or wal.stat().st_size == 0
    shm = store.with_name(store.name + "-shm")
    assert not shm.exists()
    from recforge.data.events import EventStore

    with EventStore(store, create=False) as again:  # every event in the database file
        assert again.count() == len(users)


def test_recforge_serve_logs_requests_and_removes_its_wal_on_sigterm(saved, tmp_path):
    """`recforge serve` in a real process: an access line per request by default, and
    after SIGTERM (a clean shutdown) no WAL beside the event store."""
    store, log = tmp_path / "ev.sqlite", tmp_path / "serve.log"
    with running_server("--model", saved[1], "--events", store, log=log) as (proc, url):
        assert httpx.post(url + "/interactions", headers=JSON, json={"events": [
            {"user": "u1", "item": int(np.asarray(saved[0].items_.ids)[0])}]}
                          ).status_code == 200
        assert httpx.get(url + "/users/u1/recommendations?k=2").status_code == 200
    text = log.read_text()
    # uvicorn shuts down cleanly, then raises the signal again: -15 is a clean exit too
    assert proc.returncode in (0, -signal.SIGTERM), text
    lines = [x for x in text.splitlines() if " ms" in x and "HTTP" not in x]
    assert any(re.search(r" POST /interactions 200 \d+\.\d\d ms$", x) for x in lines), text
    assert any(re.search(r" GET /users/u1/recommendations\?k=2 200 \d+\.\d\d ms$", x)
               for x in lines), text
    wal = store.with_name(store.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
