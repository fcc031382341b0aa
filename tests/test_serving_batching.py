"""Next-item serving at speed (issue 22): SASRec's and Caser's last-position encoders equal
the full forward pass, session-kNN's sparse neighbour search gives the dense one's scores
exactly, a batch of anonymous histories answers as each history alone, and the server's
micro-batcher groups the sessions that arrive together without changing an answer."""

from __future__ import annotations

import asyncio
import copy
import itertools

import httpx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_serving_sequences import N_ITEMS, SMALL, chain_data

from recforge.models import create_model
from recforge.models.sknn import (
    MAX_DECAY_STEP,
    _ordered_rows,
    _row_of,
    score_decay,
)
from recforge.serving.app import create_app
from recforge.serving.batching import HistoryBatcher
from recforge.serving.fastpath import FastRecommendations
from recforge.serving.sequences import score_histories

# ---------------------------------------------------------------------------------------
# the dense neighbour search that the sparse one replaced, kept as its reference

def dense_block(self, cur: sp.csr_matrix, owners: np.ndarray) -> np.ndarray:
    """Scores of a block of current sessions: its ``[B, n_sessions]`` overlaps and
    similarities, dense (the block is sized to bound them), then one sparse product."""
    n_rows = cur.shape[0]
    n_sessions = self.sessions_.shape[0]
    length, entry_row, w, m, coded = self._coded_rows(cur)  # the rows as the model codes them
    both = torch.from_numpy((coded @ self._binary_t).toarray())
    overlap = torch.floor(both)
    slen = torch.from_numpy(self._session_len)[None, :]
    candidate = (overlap > 0) & ~dense_own(self, cur, owners)
    if self.sample_size:  # the most recent candidates: columns are most recent first
        candidate &= torch.cumsum(candidate.to(torch.int32), dim=1) <= int(self.sample_size)
    if self.similarity == "jaccard":
        sim = overlap / (torch.from_numpy(length.astype(np.float64))[:, None] + slen
                         - overlap).clamp_min(1.0)
    else:
        dot = (both - overlap) * torch.from_numpy(m)[:, None]
        norm = np.sqrt(np.bincount(entry_row, weights=w * w, minlength=n_rows))
        denom = torch.from_numpy(norm)[:, None] * slen.sqrt()
        sim = torch.where(denom > 0, dot / denom.clamp_min(1e-300), torch.zeros((),
                          dtype=torch.float64))
    sim = torch.where(candidate & (sim > 0), sim.float(), torch.zeros(()))
    # the top `neighbors` per row; equal similarities: the more recent session first
    k = min(int(self.neighbors), n_sessions)
    kth = torch.topk(sim, k, dim=1).values[:, -1:]
    above = sim > kth
    tied = (sim == kth) & (sim > 0)
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (torch.cumsum(tied.to(torch.int32), dim=1) <= room))
    b, s = (t.numpy() for t in torch.nonzero(chosen, as_tuple=True))
    weight = sim[b, s].numpy().astype(np.float64)
    if self.weighting_score != "same":
        weight *= score_decay(dense_last_step(self, cur, length, entry_row, b, s),
                              self.weighting_score)
    weights = sp.csr_matrix((weight, (b, s)), shape=(n_rows, n_sessions))
    scores = np.asarray((weights @ self._binary).toarray(), dtype=np.float64)
    if self.idf_weighting:
        scores *= 1.0 + float(self.idf_weighting) * self._idf[None, :]
    if not self.remind:
        scores[entry_row, cur.indices] = 0.0
    return scores.astype(np.float32)

def dense_own(self, cur: sp.csr_matrix, owners: np.ndarray) -> torch.Tensor:
    """``[B, n_sessions]``: the sessions of user ``owners[b]`` that current session
    ``b`` contains (the session itself, or a part of it): never its neighbours."""
    own = torch.zeros(cur.shape[0], self.sessions_.shape[0], dtype=torch.bool)
    theirs = self._user_sessions[np.maximum(owners, 0)]
    theirs = (sp.diags((owners >= 0).astype(np.float32)) @ theirs).tocsr()
    theirs.eliminate_zeros()
    b, s = _row_of(theirs), theirs.indices.astype(np.int64)
    if len(b):
        ones = cur.copy()
        ones.data = np.ones(len(cur.data), dtype=np.float32)
        shared = np.asarray(ones[b].multiply(self._binary[s]).sum(axis=1)).ravel()
        inside = shared >= self._session_len[s]
        own[torch.from_numpy(b[inside]), torch.from_numpy(s[inside])] = True
    return own

def dense_last_step(self, cur: sp.csr_matrix, length: np.ndarray,
                      entry_row: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """For each (current row ``b``, session ``s``) pair, how many places back (1: the
    last item) the most recent current item that ``s`` holds is, capped at
    ``MAX_DECAY_STEP``: the sum over shared items of ``4^-step`` lies in
    ``[4^-t, 4^-t * 4/3)`` for the smallest step ``t``, so ``-log4`` of it rounds
    back to ``t`` exactly (in float64, ``4^-500`` is still a normal number)."""
    step = np.minimum(length[entry_row] - cur.data.astype(np.int64) + 1, MAX_DECAY_STEP)
    coded = cur.astype(np.float64)
    coded.data = np.power(4.0, -step.astype(np.float64))
    total = (coded @ self._binary_t.astype(np.float64)).toarray()[b, s]
    return np.rint(-np.log(total) / np.log(4.0) + 0.1)



# ---------------------------------------------------------------------------------------
# fixtures
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def data():
    return chain_data()


@pytest.fixture(scope="module")
def sasrec(data):
    # one epoch: the checks compare paths of one network, whatever it learned
    return create_model("sasrec", **{**SMALL, "epochs": 1, "n_blocks": 2, "n_heads": 2}
                        ).fit(data)


def windows(n_rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Right-padded 1-based windows of every length 0..length (row 0 is empty)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randint(1, N_ITEMS + 1, (n_rows, length), generator=gen)
    cut = torch.arange(n_rows) % (length + 1)
    w[torch.arange(length)[None, :] >= cut[:, None]] = 0
    return w


def same_answer(a: dict, b: dict) -> bool:
    """The same items in the same order, scores equal to float rounding."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    scores = [np.array([e.pop("score") for e in x["items"]], dtype=float) for x in (a, b)]
    return a == b and np.allclose(*scores, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------
# the last position alone
def test_sasrec_last_position_equals_the_full_forward(sasrec):
    """encode_last (the last block and the final norm for the last item only, its
    attention over the row's own positions) equals the full forward pass at each row's
    last item, to 1e-5, for rows of every length in one batch, the empty one included;
    and the model's scores come from it."""
    module = sasrec.module_.eval()
    w = windows(21, 20)
    with torch.no_grad():
        full = module.encode(w)
        last = ((w > 0).sum(1) - 1).clamp(min=0)
        expected = full[torch.arange(len(w)), last]
        got = module.encode_last(w)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    scores = sasrec._scores_of(w, None)
    assert torch.allclose(scores, expected @ module.item_table()[1:].T, atol=1e-5)


def test_caser_last_position_equals_the_full_forward():
    model = create_model("caser", **{**SMALL, "epochs": 1}).fit(chain_data(30, 6))
    module = model.module_.eval()
    w = windows(21, 20, seed=1)
    users = torch.arange(len(w)) % model.n_users
    with torch.no_grad():
        last = ((w > 0).sum(1) - 1).clamp(min=0)
        for u in (None, users):
            full = module.encode(w, u)[torch.arange(len(w)), last]
            assert torch.allclose(module.encode_last(w, u), full, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# session-kNN: sparse neighbours, the dense scores
GRID = [dict(zip(("similarity", "weighting", "weighting_score", "sample_size", "neighbors"),
                 v, strict=True))
        for v in itertools.product(("cosine", "jaccard"), ("linear", "same", "log"),
                                   ("same", "div", "linear"), (0, 7), (1, 5, 500))]


@pytest.fixture(scope="module")
def session_data():
    """Users of 3 to 10 items from overlapping item groups, each ordered: neighbours of
    many similarities, ties among them."""
    rng = np.random.default_rng(3)
    rows = []
    for u in range(90):
        start = int(rng.integers(0, 40))
        items = (start + rng.choice(10, int(rng.integers(3, 11)), replace=False)) % 45
        rows += [(u, int(i)) for i in items]
    import pandas as pd

    from recforge.data.interactions import Interactions
    frame = pd.DataFrame(rows, columns=["user", "item"])
    return Interactions.from_frame(frame)


@pytest.mark.parametrize("params", GRID, ids=lambda p: "-".join(map(str, p.values())))
def test_sknn_sparse_neighbours_give_the_dense_scores(session_data, params):
    """Every option of the neighbour search, on current sessions of known users (their
    own sessions left out) and anonymous ones: the sparse search's scores are the dense
    reference's, bit for bit."""
    model = create_model("sknn", **params).fit(session_data)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 24)
    rows = np.repeat(np.arange(24), lengths)
    items = rng.integers(0, model.n_items, int(lengths.sum()))
    cur = _ordered_rows(rows, items, 24, model.n_items)
    owners = np.where(np.arange(24) % 3 == 0, -1, np.arange(24) % model.n_users)
    expected = dense_block(model, cur, owners)
    got = model._score_block(cur, owners)
    np.testing.assert_array_equal(got, expected)
    known = np.arange(model.n_users)  # recommend(users): their last sessions, own left out
    np.testing.assert_array_equal(
        model._score(torch.from_numpy(known)).numpy(),
        dense_block(model, model.sessions_[model.user_last_[known]], known))


# ---------------------------------------------------------------------------------------
# a batch of histories answers as each alone
@pytest.fixture(scope="module", params=["sasrec", "sknn", "ease"])
def served(request, data, sasrec):
    if request.param == "sasrec":
        return sasrec
    if request.param == "sknn":
        return create_model("sknn").fit(data)
    return create_model("ease", reg=5.0).fit(data)  # no batched scoring: one by one


HISTORIES = [([11, 12, 13, 14], 5), ([5], 3), (list(range(29, 5, -1)), 10), ([2, 2, 9, 3], 4),
             (["nope", 7, 8, 10**30], 5), ([str(i % N_ITEMS) for i in range(40)], 1)]


def test_histories_scored_together_answer_as_each_alone(served):
    """recommend_histories (one scoring call, one top-k) gives each request the answer
    recommend_history gives it alone: the same items, ranks, unknown items and (to float
    rounding) scores; the scores equal the library's recommend_for_history."""
    from recforge.serving.service import RecommendationService

    service = RecommendationService(served)
    together = service.recommend_histories(HISTORIES)
    for (history, k), got in zip(HISTORIES, together, strict=True):
        assert same_answer(got, service.recommend_history(history, k))
        lib = served.recommend_for_history(history, k=k, unknown="skip")
        assert [e["item"] for e in got["items"]] == lib["item"].tolist()
        assert got["unknown_items"] == lib.attrs["unknown_items"]
    idx = [served.items_.index(np.asarray(h, dtype=object)) for h, _ in HISTORIES[:4]]
    many = score_histories(served, idx)
    for row, i in zip(many, idx, strict=True):
        assert torch.allclose(row, served._score_history(i, None).float(), atol=1e-5)


# ---------------------------------------------------------------------------------------
# the micro-batcher
class Recorder:
    """A stand-in service: answers each request with its own history and records the
    groups it was asked to score; a history holding "bad" fails."""

    def __init__(self) -> None:
        self.groups: list[int] = []

    def recommend_histories(self, requests):
        self.groups.append(len(requests))
        if any("bad" in h for h, _ in requests):
            raise ValueError("bad request in the group")
        return [{"history": h, "k": k} for h, k in requests]

    def recommend_history(self, history, k):
        if "bad" in history:
            raise ValueError("bad")
        return {"history": history, "k": k, "alone": True}


def test_the_batcher_groups_one_loop_turn_and_isolates_errors():
    """Requests made in one turn of the event loop are scored by one call (split at
    max_batch); a lone request is answered in the next turn, alone; a group holding a bad
    request is answered request by request, the bad one getting its own error; a request
    whose client left (cancelled) is not scored."""
    service = Recorder()
    batcher = HistoryBatcher(lambda: service, max_batch=4)

    async def scenario():
        lone = await batcher.answer([1], 3)
        group = await asyncio.gather(*(batcher.answer([j], j) for j in range(6)))
        mixed = await asyncio.gather(batcher.answer([1], 1), batcher.answer(["bad"], 1),
                                     batcher.answer([2], 1), return_exceptions=True)
        left = asyncio.ensure_future(batcher.answer([9], 1))
        stays = asyncio.ensure_future(batcher.answer([8], 1))
        await asyncio.sleep(0)  # both queued
        left.cancel()
        return lone, group, mixed, await stays

    lone, group, mixed, stays = asyncio.run(scenario())
    assert lone == {"history": [1], "k": 3}
    assert group == [{"history": [j], "k": j} for j in range(6)]
    assert isinstance(mixed[1], ValueError)
    assert mixed[0] == {"history": [1], "k": 1, "alone": True} and mixed[2]["history"] == [2]
    assert stays == {"history": [8], "k": 1}
    assert service.groups == [1, 4, 2, 3, 1]
    assert batcher.batches == 5 and batcher.requests == 1 + 6 + 3 + 1


def test_concurrent_sessions_are_scored_together_with_the_same_answers(served, tmp_path):
    """Concurrent POST /recommendations {"history"} requests to the app go through the
    fast path's micro-batcher in groups (fewer scoring calls than requests) and each gets
    the answer the service gives it alone; a request the fast path cannot answer (all
    items unknown) still gets the route's error."""
    app = create_app(served, events=tmp_path / "events.sqlite")
    service = app.state.service
    bodies = [{"history": h, "k": k} for h, k in HISTORIES] * 3
    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            answers = await asyncio.gather(*(c.post("/recommendations", json=b, headers=JSON)
                                             for b in bodies))
            missing = await c.post("/recommendations", json={"history": ["nope"]},
                                   headers=JSON)
        return answers, missing

    answers, missing = asyncio.run(scenario())
    for body, r in zip(bodies, answers, strict=True):
        assert r.status_code == 200, r.text
        assert same_answer(r.json(), service.recommend_history(body["history"], body["k"]))
    assert missing.status_code == 400 and "none of the history" in missing.json()["detail"]
    layer = app.middleware_stack  # built by the first request: find the fast path in it
    while not isinstance(layer, FastRecommendations):
        layer = layer.app
    assert layer.batcher.requests == len(bodies) + 1
    assert layer.batcher.batches < len(bodies) // 2
