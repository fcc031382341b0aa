"""The recommendation service behind the HTTP app: a loaded model plus fast per-request
paths that return plain lists (no DataFrame per request)."""

from __future__ import annotations

import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge._locks import FairLock
from recforge.data.sharding import INTEGER_ID
from recforge.errors import ConfigError, ModelError
from recforge.models.base import Recommender
from recforge.models.history import history_index
from recforge.ranking import rank_ties, top_k
from recforge.serving.index import IVFIndex
from recforge.serving.multimodal import Modalities
from recforge.serving.sequences import compile_encoder, ordered_history, score_histories

__all__ = ["RecommendationService", "NotFound", "Resolved"]


def _display_text(value: Any) -> str | None:
    """A display column's value as text: ``None`` for a missing one, ``1999`` (not
    ``1999.0``) for a whole number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class NotFound(ModelError):
    """An id the model does not know, where no fallback applies."""

MAX_K = 1000
#: Items one explanations request may ask about (GET /explanations).
MAX_EXPLAINED = 100


def _short(value: Any, limit: int = 60) -> str:
    """An id as a message quotes it: its repr, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer of over 4,300 digits: Python will not print it
        return "(an integer too long to print)"
    return text if len(text) <= limit else text[:limit] + "...'"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


#: Text that an integer vocabulary could read as one of its ids ("1.0", " 01", "1e3").
#: (No two parts can match the same digits: linear time on text of any length; the
#: earlier ``\d+\.?\d*`` backtracked quadratically, 8 s of event loop for 16,000 digits.)
_NUMBER_LIKE = re.compile(r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?\s*")
_INTEGER_ID = re.compile(INTEGER_ID)
#: Recommended items whose similarity rows an explanation computes at a time.
_EXPLAIN_BLOCK = 32
#: The longest text of an int64 in INTEGER_ID's form: "-9223372036854775808".
_INT64_CHARS = 20
#: Posted items kept per user, in order, for order-reading models (the newest; a
#: sequence model reads at most its max_len of them).
MAX_POSTED_SEQUENCE = 4096


class Resolved(NamedTuple):
    """A user id as given, its model index (-1: unknown or forgotten) and the key its
    posted items and its forgetting are kept under."""

    user: Any
    index: int
    key: str


def _made_at(meta: dict[str, Any]) -> float | None:
    """When a saved model was made (``created`` in its meta.json), in seconds since the
    epoch; ``None`` when unknown (a model given in memory)."""
    created = meta.get("created")
    try:
        when = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        return None
    if when is None:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


class RecommendationService:
    """Answers recommendation requests for one trained model.

    ``model`` is a fitted :class:`Recommender` or the directory of a saved one.
    """

    def __init__(self, model: Recommender | str | Path, events: Any = None, *,
                 index: str = "exact", n_probe: int = 8) -> None:
        #: whether the model's encoder runs as a TorchScript trace (compile_encoder)
        self.compiled = False
        if isinstance(model, Recommender):
            self.model = model
            self.path: Path | None = None
            self.meta: dict[str, Any] = {"model": model.name, "params": model.get_params()}
        else:
            self.path = Path(model)
            # The metadata of the very read that gave the model: a second read of meta.json
            # could meet a save that landed in between (and date the model wrongly).
            self.model, self.meta = Recommender.load_with_meta(self.path)
            # the server's own copy: a next-item network's encoder traced once (a served
            # 50-item SASRec answer: half the forward pass's time)
            self.compiled = compile_encoder(self.model)
        self.model.check_fitted()
        if index not in ("exact", "ivf"):
            raise ConfigError(f"index must be 'exact' or 'ivf', got {index!r}")
        self._ann = None
        if index == "ivf":
            self._ann, self._ann_users = IVFIndex.for_model(self.model, n_probe=n_probe)
        #: Optional :class:`~recforge.data.events.EventStore`: posted events count as
        #: seen items at once; forgotten users are answered as unknown ones.
        self.events = events
        # Writes (posted events, forgotten users) change the store and the in-memory sets
        # together, one at a time: two posts for one user must not lose each other's items.
        # First come, first served: an erasure never waits behind a stream of posts.
        self._write_lock = FairLock()
        # Erased users, by mark (a keyed hash of the id: EventStore.mark) -> when; no id is
        # kept. The model's row of such a user is not answered from (_cut_off).
        self._erasures: dict[str, float] = {}
        # Other spellings of a user's id that events were stored under (an earlier version
        # kept ids as posted): key -> spellings, so that an erasure reaches them by index.
        self._spellings: dict[str, set[str]] = {}
        # (last event id, erasure state) of the last read of the store: the next read (a
        # reload's, just before the swap) fetches only what came since.
        self._synced: tuple[int, tuple[int, float]] | None = None
        self._made_at = _made_at(self.meta)
        # Posted items per user, as model indices, kept in memory: the hot path must not
        # query the database (a SQLite read per request cost a third of the throughput).
        # user -> (item indices, values; NaN where none was posted), replaced as one tuple so
        # that a reader never sees the items of one post with the values of another
        self._posted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        #: For a model that reads order (``capabilities.reads_order``): each user's posted
        #: item indices in the order posted (repeats kept; the newest
        #: MAX_POSTED_SEQUENCE), appended to the user's training sequence when scoring.
        self._reads_order = bool(self.model.effective_capabilities().reads_order)
        self._sequence: dict[str, np.ndarray] = {}
        # what unknown users get, and the order of equal scores (the more popular item
        # first), as the library's recommend has them
        self._popular = self.model.popular_items()
        self._ties = rank_ties(torch.from_numpy(self.model.popularity_rank().copy()))
        # Ids arrive as text (URL paths) or JSON values: one hash lookup on their string
        # form (Vocabulary.index's type coercion costs ~0.3 ms per call).
        self._user_ids = pd.Index(self.model.users_.ids.astype(str))
        self._item_ids = pd.Index(self.model.items_.ids.astype(str))
        self._item_pos: dict[str, int] | None = None
        self.sync_events()
        meta = getattr(self.model, "item_metadata_", None)
        self._titles: list[Any] | None = None
        if meta is not None and "title" in meta.columns:  # missing titles -> null, not NaN
            self._titles = [None if t is None or (isinstance(t, float) and math.isnan(t))
                            else str(t) for t in meta["title"].tolist()]
        # The other display columns (genres, year, ...) of each item, as ``"metadata"``.
        self._display: list[dict[str, Any]] | None = None
        extra = [c for c in (meta.columns if meta is not None else []) if c not in
                 ("item", "title")]
        if extra:
            self._display = [{c: _display_text(v) for c, v in zip(extra, row, strict=True)}
                             for row in meta[extra].itertuples(index=False, name=None)]
        # The title search index, built on the first search (``_search_index``).
        self._search: tuple[Any, Any, Any] | None = None
        # Item feature groups: explanations per modality, search by text vectors
        # (serving/multimodal; its blocks built on first use).
        self._modalities = Modalities(self.model)

    # ----------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        m = self.model
        return {"model": m.name, "params": self.meta.get("params", m.get_params()),
                "n_users": m.n_users, "n_items": m.n_items,
                "recforge_version": self.meta.get("recforge_version"),
                "created": self.meta.get("created"),
                "train_fingerprint": self.meta.get("train_fingerprint"),
                "supports_history": bool(m.supports_history),
                "reads_order": self._reads_order,
                # a private fit's spent (epsilon, delta) and how (docs/privacy.md)
                "privacy": getattr(m, "privacy_", None),
                # users removed from the model since it was trained (forget_users): count only
                "forgotten_users": sum(int(e.get("users", 0)) for e in (
                    getattr(m, "training_data_", None) or {}).get("erasures", [])),
                # the directory's name only: an answer never shows where the server's files are
                "directory": self.path.name if self.path is not None else None,
                # item feature groups (GET /explanations, search by text vectors)
                "modalities": self._modalities.summary}

    @staticmethod
    def _check_k(k: int) -> int:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise ConfigError(f"k must be an integer in 1..{MAX_K}, got {k!r}")
        return int(k)

    def _items(self, idx: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        # ids and scores to Python objects in one call each (not one numpy scalar per item)
        ids, titles = self.model.items_.ids[idx].tolist(), self._titles
        out = [{"item": i, "rank": r + 1, "score": float(s)}
               for r, (i, s) in enumerate(zip(ids, scores.tolist(), strict=True))
               if math.isfinite(s)]
        if titles is not None:
            for entry, i in zip(out, idx.tolist(), strict=False):
                entry["title"] = titles[i]
        if self._display is not None:
            for entry, i in zip(out, idx.tolist(), strict=False):
                entry["metadata"] = self._display[i]
        return out

    def _popular_items(self, idx: np.ndarray, counts: np.ndarray) -> list[dict[str, Any]]:
        """A popularity fallback's items: ``"score": null`` (no model score: a count of
        training users would sit beside model scores of another scale) and the item's
        number of training users as ``"popularity"``."""
        out = [{"item": i, "rank": r + 1, "score": None, "popularity": int(c)}
               for r, (i, c) in enumerate(zip(self.model.items_.ids[idx].tolist(),
                                              counts.tolist(), strict=True))]
        if self._titles is not None:
            for entry, i in zip(out, idx.tolist(), strict=True):
                entry["title"] = self._titles[i]
        if self._display is not None:
            for entry, i in zip(out, idx.tolist(), strict=True):
                entry["metadata"] = self._display[i]
        return out

    def _by_ids(self, frame_items: Any, ranks: Any, scores: Any) -> list[dict[str, Any]]:
        idx = self.model.items_.index(np.asarray(list(frame_items), dtype=object))
        return self._items(idx, np.asarray(scores, dtype=np.float64))

    def user_index(self, user: Any) -> int:
        return self._lookup(user)[0]

    def _lookup(self, user: Any) -> tuple[int, str]:
        """The user's model index (-1: unknown) and the key of its posted items and of its
        forgetting: the id as the model writes it, so that ``"1.0"`` or ``"01"`` is user 1
        of an integer vocabulary here as everywhere in recforge (``Vocabulary.index``)."""
        text = str(user)
        try:
            loc = self._user_ids.get_loc(text)  # the id as the model writes it: one lookup
        except KeyError:
            loc = None
        if isinstance(loc, (int, np.integer)):
            return int(loc), text
        if not self.model.users_.is_integer or not _NUMBER_LIKE.fullmatch(text):
            return -1, text  # nothing to coerce: a miss at the cost of one lookup
        u = int(self.model.users_.index(np.asarray([user], dtype=object))[0])
        return (u, str(self.model.users_.ids[u])) if u >= 0 else (-1, text)

    def _echo(self, user: Any) -> Any:
        """An unknown user's id as answers write it: in a model with integer ids, the text
        of an int64 comes back as a JSON number, like the known users' ids. (Text of more
        than 20 characters is no int64: it is not parsed, so an id of any length answers;
        Python refuses to parse integers of over 4,300 digits.)"""
        if (isinstance(user, str) and len(user) <= _INT64_CHARS
                and self.model.users_.is_integer and _INTEGER_ID.fullmatch(user)
                and -2**63 <= int(user) < 2**63):
            return int(user)
        return user

    def resolve(self, user: Any) -> Resolved:
        """``user`` (an external id, any type or length) with its model index (-1: unknown
        or forgotten) and the key of its posted items: what answering it needs, found once
        (a batch resolves every id before the first byte of its answer)."""
        u, key = self._lookup(user)
        if self._cut_off(u, key):
            u = -1
        return Resolved(user, u, key)

    def resolve_users(self, users: list[Any]) -> list[Resolved]:
        return [self.resolve(u) for u in users]

    def recommend_user(self, user: Any, k: int = 10, include_seen: bool = False
                       ) -> dict[str, Any]:
        """Top-``k`` for one user (external id); unknown users get the most popular items,
        marked ``"fallback": "popular"``, each with ``"score": null`` and its number of
        training users as ``"popularity"``."""
        return self._recommend(self.resolve(user), self._check_k(k), include_seen)

    def _recommend(self, who: Resolved, k: int, include_seen: bool) -> dict[str, Any]:
        """:meth:`recommend_user` for a resolved user and a checked ``k``."""
        m = self.model
        user, u, key = who
        posted, vals = self._posted_entry(key)
        # an order-reading model: what the user posted since training, in order
        sequence = self._sequence.get(key) if self._reads_order else None
        if u < 0 and len(posted) and m.supports_history:
            if sequence is not None and len(sequence):  # the posted order, newest last
                items = self._history_items(sequence, None, k)
            else:
                items = self._history_items(posted, self._fold_in_values(vals), k)
            return {"user": self._echo(user), "items": items, "fallback": "history"}
        score = self._score_rows
        if u >= 0 and sequence is not None and len(sequence):
            # the training sequence, then the posted items: next-item scores that follow
            # what the user just did, without retraining
            def score(rows: np.ndarray) -> torch.Tensor:
                return self._sequence_scores(rows, [sequence])
        elif u >= 0 and self._ann is not None:
            seen = (np.concatenate([m.seen_.indices[m.seen_.indptr[u]:m.seen_.indptr[u + 1]],
                                    posted]) if not include_seen else posted[:0])
            idx, sc = self._ann.search(self._ann_users[u].numpy(), k + len(seen))
            keep = (idx[0] >= 0) & ~np.isin(idx[0], seen)
            # the lists probed can hold fewer than k items: then the exact path answers
            if keep.sum() >= min(k, m.n_items - len(np.unique(seen))):
                return {"user": _plain(m.users_.ids[u]),
                        "items": self._items(idx[0][keep][:k], sc[0][keep][:k]),
                        "fallback": None}
        # the library's ranking: the user's scores with the seen and posted items masked,
        # or for an unknown user the most popular items
        pos, vals = top_k(score, np.array([u], dtype=np.int64), k, m.n_items,
                          exclude=None if include_seen else m.seen_,
                          extra=None if include_seen else posted, ties=self._ties,
                          popular=self._popular)
        if u < 0:
            return {"user": self._echo(user),
                    "items": self._popular_items(pos.numpy()[0], vals.numpy()[0]),
                    "fallback": "popular"}
        return {"user": _plain(m.users_.ids[u]),
                "items": self._items(pos.numpy()[0], vals.numpy()[0]), "fallback": None}

    def _score_rows(self, rows: np.ndarray) -> torch.Tensor:
        """The model's scores of users ``rows`` (a copy: the ranking masks it)."""
        with torch.no_grad():
            return self.model._score(torch.from_numpy(rows)).float().clone()

    def _sequence_scores(self, users: np.ndarray, posted: list[np.ndarray]) -> torch.Tensor:
        """Next-item scores ``[len(users), n_items]`` of known users (internal indices)
        from their training sequences followed by ``posted[b]`` (item indices in the order
        posted): one :meth:`~recforge.models.base.Recommender.score_sequences` call for
        the batch (the model reads at most its own max length, newest last)."""
        uniq, first, inverse = np.unique(users, return_index=True, return_inverse=True)
        history = ordered_history(self.model, uniq, [posted[i] for i in first])
        with torch.no_grad():
            scores = self.model.score_sequences(uniq, history).float()
        return scores[torch.from_numpy(inverse.reshape(-1))] if len(uniq) < len(users) \
            else scores

    def _history_items(self, idx: np.ndarray, values: Any, k: int
                       ) -> list[dict[str, Any]]:
        """The answer's items for an anonymous history of item indices ``idx`` (in
        order), the history's own items left out: the model's fold-in, ranked as
        :meth:`~recforge.models.base.Recommender.recommend_for_history` ranks it, without
        its DataFrame."""
        m = self.model
        vals = None if values is None else np.asarray(values, dtype=np.float32)
        with torch.no_grad():
            scores = m._score_history(np.asarray(idx, dtype=np.int64), vals)
            scores = scores.float().reshape(1, -1).clone()
        pos, top = top_k(lambda _: scores, np.zeros(1, np.int64), k, m.n_items,
                         extra=np.asarray(idx, dtype=np.int64), ties=self._ties)
        return self._items(pos.numpy()[0], top.numpy()[0])

    def _history_index(self, items: list[Any], values: list[float] | None
                       ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:func:`~recforge.models.history.history_index` (unknown items skipped and
        listed), the common case (no values, every id as the model writes it) in one hash
        lookup: ``Vocabulary.index``'s type coercion costs a third of a 50-item answer."""
        if values is None and items:
            try:
                text = [i if isinstance(i, str) else str(i) for i in items]
            except ValueError:  # an integer of over 4,300 digits: Python will not print it
                text = None
            if text is not None:
                if self._item_pos is None:  # built on the first history
                    self._item_pos = {t: j for j, t in enumerate(self._item_ids.tolist())}
                get = self._item_pos.get
                idx = np.fromiter((get(t, -1) for t in text), dtype=np.int64, count=len(text))
                if (idx >= 0).all():  # each item once, at its last place (history_index)
                    _, last = np.unique(idx[::-1], return_index=True)
                    return (idx[np.sort(len(idx) - 1 - last)].astype(np.int64), None,
                            np.empty(0, dtype=object))
        return history_index(self.model.items_, items, values, "skip")

    _EMPTY = np.empty(0, np.int64)

    def sync_events(self) -> None:
        """Read the posted items and the erasures from the event store: all of it the first
        time; the next time (a reload calls it again just before the swap, so that no write
        made while the new model was loading is missing) only the events stored since,
        unless a user was erased in between."""
        if self.events is None:
            return
        with self._write_lock:
            state = self.events.erasure_state()
            last = self.events.last_id()
            full = self._synced is None or self._synced[1] != state
            if not full:
                by_user = self.events.user_values_after(self._synced[0])  # type: ignore[index]
            else:
                self._erasures = self.events.erasures()
                self._posted, self._spellings, self._sequence = {}, {}, {}
                by_user = self.events.all_user_values()
            for user, pairs in by_user.items():
                key = self._lookup(user)[1]
                if key != user:
                    self._spellings.setdefault(key, set()).add(user)
                self._remember(key, [i for i, _ in pairs], [v for _, v in pairs])
            if full and self._reads_order:
                self._read_sequences()
            self._synced = (last, state)

    def _read_sequences(self) -> None:
        """Each user's posted items in the order stored, repeats kept (what an
        order-reading model appends to the training sequence): the per-user read above
        keeps one entry per user and item, at its first posting."""
        frame = self.events.to_frame()
        self._sequence = {}
        if frame.empty:
            return
        idx = self.model.items_.index(frame["item"].to_numpy(dtype=object))
        users = frame["user"].to_numpy(dtype=object)
        keep = idx >= 0
        order = np.argsort(pd.factorize(users[keep])[0], kind="stable")
        users, idx = users[keep][order], idx[keep][order].astype(np.int64)
        if not len(users):
            return
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(users)], strict=True):
            key = self._lookup(users[start])[1]  # once per user: a server's start
            seq = np.concatenate([self._sequence.get(key, self._EMPTY), idx[start:stop]])
            self._sequence[key] = seq[-MAX_POSTED_SEQUENCE:]

    def _cut_off(self, u: int, key: str) -> bool:
        """Whether the model's row of user ``u`` (key ``key``) must not be answered from:
        the user was erased, and the model was made before the erasure (it may hold their
        old data) or its row holds an item the user has not posted since (a copy of old
        data from elsewhere). A model made later from the store alone serves them again."""
        if u < 0 or not self._erasures:
            return False
        at = self._erasures.get(self.events.mark(key))
        if at is None:
            return False
        if self._made_at is None or self._made_at <= at:
            return True
        seen = self.model.seen_
        row = seen.indices[seen.indptr[u]:seen.indptr[u + 1]]
        return not np.isin(row, self._posted_entry(key)[0]).all()

    def _remember(self, user_key: str, items: list[Any],
                  values: list[float | None] | None = None) -> None:
        """Add posted items (and their values: a rating, a weight; None where none was
        given) to the user's in-memory sets; a later value of an item replaces an earlier
        one, a missing one keeps it."""
        idx = self.model.items_.index(np.asarray([str(i) for i in items], dtype=object))
        vals = np.asarray([np.nan if v is None else float(v)
                           for v in (values or [None] * len(items))], dtype=np.float64)
        keep = idx >= 0
        idx, vals = idx[keep].astype(np.int64), vals[keep]
        if self._reads_order:
            seq = np.concatenate([self._sequence.get(user_key, self._EMPTY), idx])
            self._sequence[user_key] = seq[-MAX_POSTED_SEQUENCE:]
        old, old_vals = self._posted_entry(user_key)
        all_idx = np.concatenate([old, idx])
        all_vals = np.concatenate([old_vals, vals])
        merged = np.unique(all_idx)
        out = np.full(len(merged), np.nan)
        where = np.searchsorted(merged, all_idx)
        given = ~np.isnan(all_vals)
        out[where[given]] = all_vals[given]  # in order: the latest given value stays
        self._posted[user_key] = (merged, out)

    _NO_POSTS = (np.empty(0, np.int64), np.empty(0, np.float64))

    def _posted_entry(self, user_key: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's posted item indices and their values (NaN: none posted)."""
        return self._posted.get(user_key, self._NO_POSTS)

    def _fold_in_values(self, vals: np.ndarray) -> list[float] | None:
        """Posted values for a fold-in: only a rating model reads them (others take
        weights of their own kind, e.g. positive confidences), and an item posted without
        one counts as rated at the top of the model's range."""
        m = self.model
        if not m.predicts_ratings or not np.isfinite(vals).any():
            return None
        top = float(getattr(m, "rating_range_", (0.0, np.nanmax(vals)))[1])
        return np.where(np.isfinite(vals), vals, top).tolist()

    def _posted_items(self, user_key: str) -> np.ndarray:
        """Model indices of the items this user posted to the event store."""
        return self._posted_entry(user_key)[0]

    def add_events(self, events: list[tuple[Any, Any, float | None, int | None]]) -> int:
        if self.events is None:
            raise ModelError("this server has no event store (start it without --no-events)")
        with self._write_lock:
            # stored under the id as the model writes it ("1.0" and "01" are user 1), so
            # that a DELETE under any spelling finds every event of the user
            key = {u: self._lookup(u)[1] for u in {e[0] for e in events}}  # once per user
            events = [(key[e[0]], *e[1:]) for e in events]
            n = self.events.append(events)  # a forgotten user stays cut off from the model
            by_user: dict[str, list[Any]] = {}
            for e in events:
                by_user.setdefault(e[0], []).append(e)
            for user, rows in by_user.items():
                self._remember(user, [e[1] for e in rows], [e[2] for e in rows])
        return n

    def forget_user(self, user: Any) -> int:
        if self.events is None:
            raise ModelError("this server has no event store (start it without --no-events)")
        with self._write_lock:
            key = self._lookup(user)[1]
            # the other spellings events were stored under, and the one asked for: each is
            # erased (by the store's index: no scan) and leaves a mark
            spellings = sorted((self._spellings.pop(key, set()) | {str(user)}) - {key})
            at = time.time()
            n = self.events.delete_user(key, spellings=spellings, at=at)
            for name in (key, *spellings):
                self._erasures[self.events.mark(name)] = at
            self._posted.pop(key, None)
            self._sequence.pop(key, None)
        return n

    def recommend_users(self, users: list[Any], k: int = 10, include_seen: bool = False
                        ) -> list[dict[str, Any]]:
        return self.recommend_resolved(self.resolve_users(users), k, include_seen)

    def recommend_resolved(self, users: list[Resolved], k: int = 10,
                           include_seen: bool = False) -> list[dict[str, Any]]:
        """:meth:`recommend_user` for each of ``users`` (from :meth:`resolve_users`)."""
        k = self._check_k(k)
        m = self.model
        if self._reads_order and self.events is not None:
            return self._recommend_sequences(users, k, include_seen)
        if self.events is not None or self._ann is not None:  # the per-user path
            return [self._recommend(who, k, include_seen) for who in users]
        idx = np.fromiter((who.index for who in users), dtype=np.int64, count=len(users))
        out: list[dict[str, Any] | None] = [None] * len(users)
        known = np.flatnonzero(idx >= 0)
        exclude = None if include_seen else m.seen_
        pos = 0
        for ub, items, scores in m.iter_top_k(idx[known], k, exclude=exclude,
                                              tie_rank=m.popularity_rank()):
            for row in range(len(ub)):
                j = known[pos + row]
                out[j] = {"user": _plain(m.users_.ids[idx[j]]),
                          "items": self._items(items[row].numpy(), scores[row].numpy()),
                          "fallback": None}
            pos += len(ub)
        for j in np.flatnonzero(idx < 0):
            out[j] = self._recommend(users[j], k, include_seen)
        return out  # type: ignore[return-value]

    def _recommend_sequences(self, users: list[Resolved], k: int, include_seen: bool
                             ) -> list[dict[str, Any]]:
        """:meth:`recommend_resolved` for an order-reading model with an event store:
        the known users scored in one :meth:`_sequence_scores` call (training sequence,
        then posted items), each with its seen and posted items masked; the unknown ones
        one by one (popular items, or their posted history)."""
        m = self.model
        idx = np.fromiter((who.index for who in users), dtype=np.int64, count=len(users))
        known = np.flatnonzero(idx >= 0)
        out: list[dict[str, Any] | None] = [None] * len(users)
        if len(known):
            seqs = [self._sequence.get(users[j].key, self._EMPTY) for j in known]
            scores = self._sequence_scores(idx[known], seqs)
            exclude = None
            if not include_seen:  # each row's training and posted items
                posted = [self._posted_entry(users[j].key)[0] for j in known]
                n = np.fromiter((len(p) for p in posted), dtype=np.int64, count=len(posted))
                extra = sp.csr_matrix(
                    (np.ones(int(n.sum()), np.float32),
                     (np.repeat(np.arange(len(known)), n),
                      np.concatenate([self._EMPTY, *posted]))), shape=(len(known), m.n_items))
                exclude = (m.seen_[idx[known]] + extra).tocsr()
            pos, vals = top_k(lambda _: scores, np.arange(len(known), dtype=np.int64), k,
                              m.n_items, exclude=exclude, ties=self._ties)
            ids = m.users_.ids[idx[known]].tolist()
            for row, j in enumerate(known.tolist()):
                out[j] = {"user": ids[row],
                          "items": self._items(pos[row].numpy(), vals[row].numpy()),
                          "fallback": None}
        for j in np.flatnonzero(idx < 0).tolist():
            out[j] = self._recommend(users[j], k, include_seen)
        return out  # type: ignore[return-value]

    def recommend_history(self, items: list[Any], k: int = 10,
                          values: list[float] | None = None) -> dict[str, Any]:
        """Top-``k`` for an anonymous history (fold-in; for a model that reads order, the
        history's order is the session's, newest last); unknown items are listed."""
        k = self._check_k(k)
        m = self.model
        if not m.supports_history:
            raise ModelError(f"model {m.name!r} cannot score an anonymous history")
        idx, vals, bad = self._history_index(items, values)
        return {"items": self._history_items(idx, vals, k),
                "unknown_items": [_plain(x) for x in bad.tolist()]}

    def recommend_histories(self, requests: list[tuple[list[Any], int]]
                            ) -> list[dict[str, Any]]:
        """:meth:`recommend_history` (no values) of several ``(items, k)`` at once: one
        scoring call and one top-k for all (the server's micro-batches, serving/batching)."""
        m = self.model
        if not m.supports_history:
            raise ModelError(f"model {m.name!r} cannot score an anonymous history")
        ks = [self._check_k(k) for _, k in requests]
        found = [self._history_index(items, None) for items, _ in requests]
        idx = [np.asarray(f[0], dtype=np.int64) for f in found]
        with torch.no_grad():
            scores = score_histories(m, idx).cpu()  # a new tensor: written below
        n = np.fromiter((len(i) for i in idx), dtype=np.int64, count=len(idx))
        # each history's own items left out (through numpy's view of the scores)
        scores.numpy()[np.repeat(np.arange(len(idx)), n), np.concatenate(idx)] = -np.inf
        pos, top = top_k(lambda _: scores, np.arange(len(idx)), max(ks), m.n_items,
                         ties=self._ties)
        pos, top = pos.numpy(), top.numpy()
        return [{"items": self._items(pos[b, :k], top[b, :k]),
                 "unknown_items": [_plain(x) for x in found[b][2].tolist()]}
                for b, k in enumerate(ks)]

    def similar(self, item: Any, k: int = 10) -> dict[str, Any]:
        k = self._check_k(k)
        if self.model.items_.index(np.asarray([item], dtype=object))[0] < 0:
            raise NotFound(f"unknown item id {item!r}")
        frame = self.model.similar_items([item], k=min(k, self.model.n_items - 1))
        own = self.model.items_.ids[self.model.items_.index(np.asarray([item], dtype=object))[0]]
        return {"item": _plain(own),
                "similar": self._by_ids(frame["similar"], frame["rank"], frame["score"])}

    # ----------------------------------------------------------------------------------
    # for the web page: title search, a user's history, explanations
    def _search_index(self) -> tuple[Any, Any, Any]:
        """``(titles, padded_titles, ids)``: case-folded text Series to match queries on
        (titles empty where missing; ids as text). Built once, on the first search."""
        if self._search is None:
            titles = [(t or "").casefold() for t in (self._titles or [])]
            ids = [str(i).casefold() for i in self.model.items_.ids.tolist()]
            frame = pd.Series(titles if self._titles is not None else [""] * len(ids),
                              dtype=str)
            self._search = (frame, " " + frame, pd.Series(ids, dtype=str))
        return self._search

    def search_items(self, query: str, limit: int = 10, match: str = "auto"
                     ) -> dict[str, Any]:
        """Items whose title contains ``query`` (case-insensitive), best matches first: the
        item with that id, then titles equal to the query, starting with it, with a word
        starting with it, containing it; ties go to the more popular item. A model saved
        without titles is searched by item id (ids containing the query).

        ``match``: ``"title"`` is that search alone. ``"auto"`` (the default) adds, when
        the model has text vectors (serving/multimodal), the other items by the cosine
        between the query's vector (the bundled text encoder) and theirs, after the title
        matches; ``"text"`` ranks by that cosine alone (a model without text vectors:
        :class:`ModelError`). Ranked by text, the answer names the group
        (``"text_vectors"``) and every item says how it matched (``"match"``: ``"id"``,
        ``"title"`` or ``"text"``) and its ``"similarity"`` (null: no vector)."""
        limit = self._check_k(limit)
        if match not in ("auto", "title", "text"):
            raise ConfigError(f"match must be 'auto', 'title' or 'text', got {match!r}")
        q = str(query).strip().casefold()
        if not q:
            raise ConfigError("query must contain a non-blank character")
        text = self._modalities.text_scores(str(query).strip()) if match != "title" else None
        if match == "text" and text is None:
            raise ModelError(f"model {self.model.name!r} has no item text vectors to search "
                             "by (vectors of the bundled encoder: fit it with item text "
                             "features, and pip install wordllama where it is missing); "
                             "search by title instead (match=title)")
        titles, padded, ids = self._search_index()
        tier = np.full(self.model.n_items, 9, dtype=np.int8)
        if match != "text":
            if self._titles is not None:
                # Assigned from the loosest match to the strictest: the strictest one wins.
                tier[titles.str.contains(q, regex=False).to_numpy(bool)] = 4
                tier[padded.str.contains(" " + q, regex=False).to_numpy(bool)] = 3
                tier[titles.str.startswith(q).to_numpy(bool)] = 2
                tier[(titles == q).to_numpy(bool)] = 1
            else:
                tier[ids.str.contains(q, regex=False).to_numpy(bool)] = 4
            tier[(ids == q).to_numpy(bool)] = 0
        hits = np.flatnonzero(tier < 9)
        order = np.lexsort((hits, -self.model.item_popularity_[hits], tier[hits]))
        top = hits[order[:limit]]
        if text is not None and len(top) < limit:  # then the nearest by text vectors
            _, sims, has = text
            rest = np.flatnonzero(has & (tier == 9))
            near = np.lexsort((rest, -self.model.item_popularity_[rest], -sims[rest]))
            top = np.concatenate([top, rest[near[:limit - len(top)]]])
        out: list[dict[str, Any]] = [{"item": _plain(self.model.items_.ids[i])}
                                     for i in top.tolist()]
        if self._titles is not None:
            for entry, i in zip(out, top.tolist(), strict=True):
                entry["title"] = self._titles[i]
        answer: dict[str, Any] = {"query": query, "total": len(hits), "items": out}
        if text is not None:
            group, sims, has = text
            if match == "text":  # the items ranked: those with a text vector
                answer["total"] = int(has.sum())
            how = np.where(tier[top] == 0, "id", np.where(
                tier[top] < 9, "title" if self._titles is not None else "id", "text"))
            for entry, i, m in zip(out, top.tolist(), how.tolist(), strict=True):
                entry["match"] = m
                entry["similarity"] = float(sims[i]) if has[i] else None
            answer["text_vectors"] = group
        return answer

    def _history_indices(self, user: Any
                         ) -> tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """``(u, training, (posted, values))``: the user's model index (-1: unknown or
        forgotten), the model indices of its training items, of the items it posted since and
        their values."""
        u, key = self._lookup(user)
        if self._cut_off(u, key):
            u = -1
        seen = self.model.seen_
        training = (seen.indices[seen.indptr[u]:seen.indptr[u + 1]].astype(np.int64)
                    if u >= 0 else self._EMPTY)
        return u, training, self._posted_entry(key)

    def history(self, user: Any, limit: int = 50) -> dict[str, Any]:
        """What the model knows of ``user``: items posted to the event store since training
        (``"source": "events"``) first, then the training items, highest value (rating)
        first. An unknown (or forgotten) user has ``"known": false`` and no training items."""
        limit = self._check_k(limit)
        m = self.model
        u, training, (posted, posted_values) = self._history_indices(user)
        values = (m.seen_.data[m.seen_.indptr[u]:m.seen_.indptr[u + 1]] if u >= 0
                  else np.empty(0, np.float32))
        is_fresh = ~np.isin(posted, training)
        fresh = posted[is_fresh]
        fresh_values = posted_values[is_fresh]
        order = np.lexsort((training, -m.item_popularity_[training], -values))
        rows = ([(int(i), None if np.isnan(v) else float(v), "events")
                 for i, v in zip(fresh.tolist(), fresh_values.tolist(), strict=True)]
                + [(int(training[j]), float(values[j]), "training") for j in order.tolist()])
        out: list[dict[str, Any]] = []
        for i, value, source in rows[:limit]:
            entry: dict[str, Any] = {"item": _plain(m.items_.ids[i]), "value": value,
                                     "source": source}
            if self._titles is not None:
                entry["title"] = self._titles[i]
            out.append(entry)
        return {"user": _plain(m.users_.ids[u]) if u >= 0 else self._echo(user),
                "known": u >= 0,
                "total": len(rows), "items": out}

    def explain(self, user: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Add ``"because"`` to each item of a :meth:`recommend_user` answer: the item of
        the user's history most similar to it by the model's item-item similarity (the one
        ``similar`` ranks by), as ``{"item", "title"?, "similarity"}``. ``None`` where there
        is no such item with a positive similarity, for popularity fallbacks, and for models
        without item similarities (``pop``...)."""
        items = result["items"]
        for entry in items:
            entry["because"] = None
        _, training, (posted, _) = self._history_indices(user)
        hist = np.unique(np.concatenate([training, posted]))
        if not items or not len(hist) or result.get("fallback") == "popular":
            return result
        m = self.model
        rec = m.items_.index(np.asarray([x["item"] for x in items], dtype=object))
        rec = rec.astype(np.int64)
        # similarity rows of _EXPLAIN_BLOCK items at a time: k = 1,000 on a catalogue of
        # 500,000 items would be 2 GB in one block
        values: list[float] = []
        positions: list[int] = []
        for start in range(0, len(rec), _EXPLAIN_BLOCK):
            block = rec[start:start + _EXPLAIN_BLOCK]
            try:
                with torch.no_grad():
                    sims = m._item_similarity(torch.from_numpy(block)).float()
            except ModelError:  # no item-item similarity for this model
                return result
            sub = sims[:, torch.from_numpy(hist)]  # a copy (advanced indexing)
            sub[torch.from_numpy(block[:, None] == hist[None, :])] = -math.inf  # not itself
            best = sub.max(dim=1)
            values += best.values.tolist()
            positions += best.indices.tolist()
        for entry, score, j in zip(items, values, positions, strict=True):
            if math.isfinite(score) and score > 0:
                i = int(hist[j])
                because: dict[str, Any] = {"item": _plain(m.items_.ids[i]),
                                           "similarity": float(score)}
                if self._titles is not None:
                    because["title"] = self._titles[i]
                entry["because"] = because
        return result

    def explanations(self, items: list[Any], user: Any = None,
                     history: list[Any] | None = None) -> dict[str, Any]:
        """Why each of ``items`` (recommended item ids) resembles what ``user`` knows (its
        training items and the items posted since) or an anonymous ``history``: per feature
        group (modality) of the model, the history item most similar to it by that group
        alone (serving/multimodal). Answer: ``{"user" | "unknown_items", "explanations":
        [{"item", "title"?, "because": [{"group", "kind", "item", "title"?, "similarity",
        "shared"?}]}]}``, reasons most similar first; an empty ``because``: no history
        item resembles the item in any group.

        A model without item features: :class:`ModelError`; an unknown item, or a user
        unknown to the model with no posted items: :class:`NotFound`."""
        m = self.model
        if not self._modalities.available:
            raise ModelError(f"model {m.name!r} has no item features to explain by: "
                             "content, hybrid_bpr and vbpr fitted with item features keep "
                             "them in their saved model; hybrid only in memory")
        if (user is None) == (history is None):
            raise ConfigError("give exactly one of user and history")
        if not 1 <= len(items) <= MAX_EXPLAINED:
            raise ConfigError(f"give 1 to {MAX_EXPLAINED} items to explain, got {len(items)}")
        rec = m.items_.index(np.asarray(items, dtype=object))
        if (rec < 0).any():
            raise NotFound(f"unknown item id {_short(items[int(np.argmax(rec < 0))])}")
        answer: dict[str, Any] = {}
        if user is not None:
            u, training, (posted, _) = self._history_indices(user)
            if u < 0 and not len(posted):
                raise NotFound(f"unknown user id {_short(user)}: no history to explain by")
            hist = np.unique(np.concatenate([training, posted]))
            answer["user"] = _plain(m.users_.ids[u]) if u >= 0 else self._echo(user)
        else:
            hist, _, bad = self._history_index(list(history or []), None)
            hist = np.unique(hist)
            answer["unknown_items"] = [_plain(x) for x in bad.tolist()]
        reasons = self._modalities.explain(rec.astype(np.int64), hist)
        titles = self._titles
        out = []
        for i, why in zip(rec.tolist(), reasons, strict=True):
            entry: dict[str, Any] = {"item": _plain(m.items_.ids[i])}
            if titles is not None:
                entry["title"] = titles[i]
            for reason in why:
                j = reason.pop("index")
                reason["item"] = _plain(m.items_.ids[j])
                if titles is not None:
                    reason["title"] = titles[j]
            entry["because"] = why
            out.append(entry)
        answer["explanations"] = out
        return answer

