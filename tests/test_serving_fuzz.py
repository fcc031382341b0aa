"""HTTP fuzzing of the app with Schemathesis: every operation of its OpenAPI schema, with
valid and invalid requests, then stateful sequences that follow the schema's links (the
items a recommendation names to their similar items, a posted event's user to their
history, ...). No answer may be a 5xx, and every answer must be what the schema says
(status code, content type, headers, body), errors included: the schema describes the real
answers. Over 2,000 generated requests in all, in-process (ASGI), on a small EASE model with
titles and an event store in a temporary directory, with both keys set.

Two of Schemathesis' checks stay off, for reasons of the API, not of the test:
``positive_data_acceptance`` (a request the schema allows may still be refused for what
no schema states: ``values`` of another length than ``history``, a reload of a directory
that holds no model, a history of unknown items) and ``use_after_free`` (``DELETE
/users/{id}`` erases the user's events; the id stays a valid user id, answered as an
unknown user, by design).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from conftest import random_interactions

from recforge.models import create_model
from recforge.serving.app import create_app

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]' (schemathesis)")

READ_KEY, ADMIN_KEY = "fuzz-read-key", "fuzz-admin-key"
#: Statuses that reject an invalid request: the 4xx of the schema (413: a body over the
#: size limit; 421: a Host the server does not serve).
REJECTED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 421, 422, 428, 429]


class Tally:
    """ASGI wrapper counting the requests and the 5xx answers the app gives."""

    def __init__(self, app) -> None:
        self.app = app
        self.requests = 0
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == "/openapi.json":
            return await self.app(scope, receive, send)
        self.requests += 1

        async def counted(message):
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counted)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app (as a Tally) and its Schemathesis schema, authenticated with both keys."""
    from schemathesis.config import SchemathesisConfig

    data = random_interactions(n_users=40, n_items=30, seed=5)
    model = create_model("ease", reg=20.0).fit(data)
    ids = data.items.ids[:-1]  # the last item has no title
    model.attach_item_metadata(pd.DataFrame({"title": [f"Film {i}" for i in ids]}, index=ids))
    tmp = tmp_path_factory.mktemp("fuzz")
    path = model.save(tmp / "ease")
    # Schemathesis' in-process client sends Host: testserver
    app = Tally(create_app(path, api_key=READ_KEY, admin_key=ADMIN_KEY,
                           events=tmp / "events.sqlite", allowed_hosts=["testserver"]))
    config = SchemathesisConfig.from_dict({
        "auth": {"openapi": {"ReadKey": {"api_key": READ_KEY},
                             "AdminKey": {"api_key": ADMIN_KEY}}},
        "checks": {"positive_data_acceptance": {"enabled": False},
                   "use_after_free": {"enabled": False},
                   "negative_data_rejection": {"expected-statuses": REJECTED}},
    })
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    return app, schema


def test_every_operation_answers_as_its_schema_says(api):
    """Valid and invalid requests to each operation: no 5xx, every answer conforms."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    app, schema = api
    before = app.requests
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11, [op.label for op in operations]
    failures, generated = [], Counter()
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=80, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case):
                generated[case.operation.label] += 1
                case.call_and_validate()

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (GET /health)
                assert mode == GenerationMode.NEGATIVE and op.label == "GET /health"
            except Exception as exc:  # every operation runs; all failures are reported
                failures.append(f"{op.label} ({mode.value}): {exc}")
    sent = app.requests - before  # the generated ones, and the checks' own (without a key...)
    print(f"\nschemathesis, per operation: {sum(generated.values())} generated requests "
          f"({dict(generated)}), {sent} sent in all, statuses {dict(sorted(app.statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert app.server_errors == 0, app.statuses
    # GET /health has nothing to vary: one request; the others 80 valid and 80 invalid
    assert sum(generated.values()) >= 1_400
    assert min(n for label, n in generated.items() if label != "GET /health") >= 100


def test_stateful_sequences_follow_the_links(api):
    """Sequences of requests chained by the schema's links (ids from one answer into the
    next request): no 5xx, every answer conforms."""
    from hypothesis import HealthCheck, settings

    app, schema = api
    before, server_errors = app.requests, app.server_errors
    steps: Counter[str] = Counter()

    class Machine(schema.as_state_machine()):
        def before_call(self, case):
            steps[case.operation.label] += 1

    Machine.run(settings=settings(max_examples=60, stateful_step_count=15, deadline=None,
                                  database=None, derandomize=True,
                                  suppress_health_check=list(HealthCheck)))
    sent = app.requests - before
    print(f"\nschemathesis, stateful: {sum(steps.values())} generated requests "
          f"({dict(steps)}), {sent} sent in all")
    assert app.server_errors == server_errors, app.statuses
    assert sum(steps.values()) >= 600  # with the 1,400 above: over 2,000 in all


# ---------------------------------------------------------------------------------------
# Histories for order-reading models (issue 22): POST /recommendations {"history": [...]},
# events posted then read back as a sequence, batches of such users.

@pytest.fixture(scope="module", params=["sknn", "sasrec"])
def ordered(request, tmp_path_factory):
    """A TestClient on an order-reading model with an event store and limits wide enough
    to let a 10,000-item history and 5,000-character ids through to the model."""
    from fastapi.testclient import TestClient

    from recforge.serving.settings import Limits

    data = random_interactions(n_users=40, n_items=30, seed=7)
    params = ({"epochs": 1, "embedding_dim": 8, "max_len": 20, "device": "cpu",
               "valid_metric": None, "n_negatives": 4} if request.param == "sasrec" else {})
    model = create_model(request.param, **params).fit(data)
    tmp = tmp_path_factory.mktemp("ordered")
    limits = Limits(max_history=20_000, max_id_length=6_000, max_body_bytes=8 << 20)
    app = create_app(model, events=tmp / "events.sqlite", limits=limits)
    return TestClient(app, base_url="http://localhost"), data


def _ids_strategy(data):
    from hypothesis import strategies as st

    known = data.items.ids.tolist()
    return st.one_of(st.sampled_from(known), st.sampled_from([str(i) for i in known]),
                     st.integers(min_value=-2**70, max_value=2**70),
                     st.text(min_size=1, max_size=40), st.just("9" * 300))


def _conforms(body) -> None:
    assert set(body) == {"items", "unknown_items"}
    for rank, entry in enumerate(body["items"], start=1):
        assert entry["rank"] == rank and isinstance(entry["score"], float)


def test_histories_of_any_ids_and_lengths_never_5xx(ordered):
    """Generated histories (known ids, their text, huge integers, any text, repeats) and
    k: a 4xx or an answer of the history schema, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    client, data = ordered
    json_headers = {"content-type": "application/json"}

    @settings(max_examples=120, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(history=st.lists(_ids_strategy(data), max_size=60),
           k=st.one_of(st.integers(min_value=-3, max_value=1200), st.just(10)))
    def check(history, k):
        r = client.post("/recommendations", headers=json_headers,
                        json={"history": history, "k": k})
        assert r.status_code < 500, r.text
        if r.status_code == 200:
            _conforms(r.json())

    check()


def test_extreme_histories_never_5xx(ordered):
    """10,000-item histories (repeats, all unknown, reversed), 5,000-digit ids (as JSON
    numbers and as text), and the same through posted events and batches."""
    client, data = ordered
    json_headers = {"content-type": "application/json"}
    known = data.items.ids.tolist()
    long = [known[i % len(known)] for i in range(10_000)]
    bodies = [{"history": long}, {"history": long[::-1]}, {"history": [known[0]] * 10_000},
              {"history": [f"x{i}" for i in range(10_000)]},
              {"history": ["7" * 5_000, *known[:3]]}]
    statuses = []
    for body in bodies:
        r = client.post("/recommendations", headers=json_headers, json=body)
        statuses.append(r.status_code)
        if r.status_code == 200:
            _conforms(r.json())
    # answered by the model, but for the history of unknown items only (named, 400)
    assert statuses == [200, 200, 200, 400, 200]
    for raw in ('{"history": [' + "7" * 5_000 + "]}",
                '{"history": [1, ' + "8" * 5_000 + ", 2]}",
                '{"users": [' + "9" * 5_000 + "]}"):
        r = client.post("/recommendations", headers=json_headers, content=raw)
        assert 400 <= r.status_code < 500, r.text
    # events: a long run of posts for a known user, a user with a 5,000-character id,
    # unknown items among them; then that user's answers, alone and in a batch
    user = data.users.ids[0].item()
    events = [{"user": user, "item": i} for i in long[:5_000]]
    events += [{"user": "u" * 5_000, "item": i} for i in [*known[:5], "nope", 10**30]]
    for start in range(0, len(events), 1_000):
        r = client.post("/interactions", headers=json_headers,
                        json={"events": events[start:start + 1_000]})
        assert r.status_code == 200, r.text
    for who in (user, "u" * 5_000):
        r = client.get(f"/users/{who}/recommendations", params={"k": 5})
        assert r.status_code == 200, r.text
    r = client.post("/recommendations", headers=json_headers,
                    json={"users": [user, "u" * 5_000, user, "nobody"], "k": 5})
    assert r.status_code == 200, r.text
    assert [x.get("fallback") for x in r.json()["results"]] == [None, "history", None,
                                                                 "popular"]
