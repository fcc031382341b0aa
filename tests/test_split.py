"""Splits: Hypothesis property tests (no leakage) and exact behaviour on small cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recforge import ConfigError, DataError, Interactions
from recforge.data import split as S
from recforge.data.filters import k_core, to_implicit


@st.composite
def interactions(draw, min_events: int = 1):
    n_users = draw(st.integers(1, 12))
    n_items = draw(st.integers(min_events if n_users == 1 else 1, 12))
    pairs = draw(st.sets(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
                         min_size=min_events, max_size=n_users * n_items))
    pairs = sorted(pairs)
    ts = draw(st.lists(st.integers(0, 50), min_size=len(pairs), max_size=len(pairs)))
    frame = pd.DataFrame({"user": [f"u{u}" for u, _ in pairs], "item": [i for _, i in pairs],
                          "rating": np.arange(len(pairs)) % 5 + 1.0, "timestamp": ts})
    return Interactions.from_frame(frame)


def pairs(data: Interactions) -> set[tuple[int, int]]:
    return set(zip(data.user.tolist(), data.item.tolist(), strict=False))


def check_common(data: Interactions, split: S.Split, *, allow_cold_items: bool = False):
    parts = [split.train, split.test] + ([split.valid] if split.valid is not None else [])
    for p in parts:
        assert p.users is data.users and p.items is data.items
    # Disjoint, and nothing invented: every part is a subset of the data.
    assert not pairs(split.train) & pairs(split.test)
    if split.valid is not None:
        assert not pairs(split.valid) & (pairs(split.train) | pairs(split.test))
    assert sum(len(p) for p in parts) <= len(data)
    assert set().union(*map(pairs, parts)) <= pairs(data)
    # Every held-out user was seen in training; items too unless cold start is the point.
    train_users = set(split.train.user.tolist())
    train_items = set(split.train.item.tolist())
    for p in parts[1:]:
        assert set(p.user.tolist()) <= train_users
        if not allow_cold_items:
            assert set(p.item.tolist()) <= train_items


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(interactions(), st.floats(0.0, 0.6), st.booleans(), st.integers(0, 5))
def test_random_split_properties(data, test_size, by_user, seed):
    split = S.random_split(data, test_size=test_size, by_user=by_user, seed=seed)
    check_common(data, split)
    assert len(split.train) + len(split.test) == len(data)  # nothing dropped


@FAST
@given(interactions(), st.floats(0.05, 0.6))
def test_temporal_split_respects_time(data, test_size):
    try:
        split = S.temporal_split(data, test_size=test_size)
    except DataError as exc:  # only when the cut leaves no event to train on
        cut = np.quantile(data.timestamp, 1.0 - test_size, method="higher")
        assert (data.timestamp >= cut).all() and "no training events" in str(exc)
        return
    check_common(data, split)
    if len(split.test):
        assert split.train.timestamp.max() < split.test.timestamp.min()


@FAST
@given(interactions(), st.integers(1, 3), st.integers(0, 2))
def test_user_temporal_split_holds_out_latest(data, n_test, n_valid):
    split = S.user_temporal_split(data, n_test=n_test, n_valid=n_valid)
    check_common(data, split)
    train = split.train.to_frame(external=False)
    held = split.test.to_frame(external=False)
    for u, grp in held.groupby("user"):
        assert len(grp) <= n_test
        assert grp["timestamp"].min() >= train.loc[train.user == u, "timestamp"].max()
    if split.valid is not None:
        valid = split.valid.to_frame(external=False)
        for u, grp in valid.groupby("user"):
            assert grp["timestamp"].min() >= train.loc[train.user == u, "timestamp"].max()


@FAST
@given(interactions(), st.floats(0.1, 0.5), st.integers(0, 3))
def test_cold_start_items_properties(data, test_size, seed):
    split = S.cold_start_items(data, test_size=test_size, seed=seed)
    check_common(data, split, allow_cold_items=True)
    # The held-out items have no training event at all.
    assert not set(split.test.item.tolist()) & set(split.train.item.tolist())


@FAST
@given(interactions(min_events=2), st.integers(2, 4), st.booleans())
def test_kfold_properties(data, k, by_user):
    folds = list(S.kfold(data, k=k, by_user=by_user, seed=1))
    assert len(folds) == k
    seen_in_test: list[tuple[int, int]] = []
    for f in folds:
        check_common(data, f)
        assert len(f.train) + len(f.test) == len(data)
        seen_in_test.extend(pairs(f.test))
    assert len(seen_in_test) == len(set(seen_in_test))  # each event tested at most once


def test_random_split_is_seeded(random_data):
    a = S.random_split(random_data, seed=3)
    b = S.random_split(random_data, seed=3)
    c = S.random_split(random_data, seed=4)
    assert pairs(a.test) == pairs(b.test) and pairs(a.test) != pairs(c.test)
    assert abs(len(a.test) / len(random_data) - 0.2) < 0.05


def test_random_split_by_user_fraction(random_data):
    split = S.random_split(random_data, test_size=0.25, valid_size=0.25, by_user=True)
    n = random_data.user_counts()
    t = split.test.user_counts()
    assert split.valid is not None and len(split.valid) > 0
    big = n >= 8
    assert np.all(np.abs(t[big] - np.rint(n[big] * 0.25)) <= 1)


def test_leave_last_out_exact():
    frame = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3], "item": ["a", "b", "c", "c", "a", "a"],
                          "timestamp": [3, 1, 2, 0, 5, 1]})
    data = Interactions.from_frame(frame)
    split = S.leave_last_out(data, valid=True)
    assert split.test.to_frame()[["user", "item"]].values.tolist() == [[1, "a"]]
    assert split.valid.to_frame()[["user", "item"]].values.tolist() == [[1, "c"]]
    # Users 2 and 3 have too few events to give up two; they stay in training.
    assert len(split.train) == 4
    # A held-out item nobody has in training is dropped (it would need the future).
    cold = Interactions.from_frame(pd.DataFrame({"user": [1, 1, 2], "item": ["a", "z", "a"],
                                                 "timestamp": [1, 2, 0]}))
    assert len(S.leave_last_out(cold).test) == 0


def test_leave_one_out_random(random_data):
    split = S.leave_one_out(random_data, strategy="random", seed=0)
    assert split.test.user_counts().max() == 1
    with pytest.raises(ConfigError):
        S.leave_one_out(random_data, strategy="bogus")


def test_temporal_cutoff_and_errors(random_data):
    split = S.temporal_split(random_data, cutoff=5000)
    assert split.train.timestamp.max() < 5000 <= split.test.timestamp.min()
    no_time = random_data.subset(np.arange(len(random_data)))
    no_time = Interactions(no_time.user, no_time.item, users=no_time.users, items=no_time.items)
    with pytest.raises(DataError, match="needs timestamps"):
        S.temporal_split(no_time)
    with pytest.raises(ConfigError, match="test_size"):
        S.random_split(random_data, test_size=1.5)


def test_temporal_validation_part_is_its_share_of_all_events():
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame({"user": rng.integers(0, 50, n), "item": rng.integers(0, 40, n),
                          "timestamp": rng.permutation(n)})
    data = Interactions.from_frame(frame, duplicates="first")
    ts = np.sort(data.timestamp)
    cutoff = int(ts[int(0.75 * len(ts))])  # an explicit cut holding out a quarter
    for split in (S.temporal_split(data, cutoff=cutoff, valid_size=0.1),
                  S.temporal_split(data, test_size=0.25, valid_size=0.1)):
        assert abs(len(split.valid) / len(data) - 0.1) < 0.005
        assert abs(len(split.test) / len(data) - 0.25) < 0.005
        assert split.train.timestamp.max() < split.valid.timestamp.min()
        assert split.valid.timestamp.max() < split.test.timestamp.min()
    with pytest.raises(ConfigError, match="test_size \\+ valid_size must be < 1"):
        S.temporal_split(data, test_size=0.5, valid_size=0.6)
    with pytest.raises(ConfigError, match="leave no events for training"):
        S.temporal_split(data, cutoff=int(ts[len(ts) // 2]), valid_size=0.5)
    same = Interactions.from_frame(frame.assign(timestamp=7), duplicates="first")
    with pytest.raises(DataError, match="same timestamp"):
        S.temporal_split(same)


def test_k_core_and_threshold():
    frame = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3], "item": ["a", "b", "c", "a", "b", "a"],
                          "rating": [5, 4, 1, 3, 5, 2.0]})
    data = Interactions.from_frame(frame)
    core = k_core(data, min_user=2, min_item=2)
    # c has 1 user -> dropped; then user 3 (1 event) dropped; a, b keep 2 users each.
    assert sorted(core.items.ids.tolist()) == ["a", "b"] and sorted(core.users.ids.tolist()) == [1, 2]
    assert len(core) == 4
    pos = to_implicit(data, 4.0)
    assert len(pos) == 3 and pos.value is None


# ----------------------------------------------------------------------------------------
# next-item splits
def sequence(data: Interactions, u: int) -> list[int]:
    return data.sequences().user(u).tolist()


@FAST
@given(interactions(), st.integers(1, 2), st.booleans())
def test_next_item_history_is_each_users_whole_earlier_sequence(data, n_test, valid):
    split = S.user_temporal_split(data, n_test=n_test, n_valid=int(valid))
    hist = split.history
    assert hist.users is data.users and hist.items is data.items
    valid_pairs = pairs(split.valid) if split.valid is not None else set()
    # nothing held out for testing is an input; validation events are inputs, never training
    assert not pairs(hist) & pairs(split.test)
    assert not pairs(split.train) & valid_pairs
    assert pairs(split.train) | valid_pairs <= pairs(hist)
    # the input beyond train + valid is only validation events dropped as cold items
    train_items = set(split.train.item.tolist())
    assert all(i not in train_items for _, i in pairs(hist) - pairs(split.train) - valid_pairs)
    for u in range(data.n_users):
        full = sequence(data, u)
        cut = n_test if len(full) >= 1 + n_test + int(valid) else 0
        assert sequence(hist, u) == full[:len(full) - cut]  # in order, the test ones off
        if u in set(split.test.user.tolist()):
            assert set(sequence(split.test, u)) <= set(full[len(full) - cut:])
    if not pairs(hist) - pairs(split.train) - valid_pairs:  # test input = train + valid
        both = split.train if split.valid is None else split.train.concat(split.valid)
        for u in range(data.n_users):
            assert sequence(both, u) == sequence(hist, u)


def test_leave_last_out_history_exact():
    frame = pd.DataFrame({"user": [1, 1, 1, 1, 2, 2], "item": ["a", "b", "c", "d", "a", "d"],
                          "timestamp": [3, 1, 2, 4, 0, 5]})
    split = S.leave_last_out(Interactions.from_frame(frame), valid=True)
    assert split.test.to_frame()[["user", "item"]].values.tolist() == [[1, "d"]]
    assert split.valid.to_frame()[["user", "item"]].values.tolist() == [[1, "a"]]
    assert split.history.to_frame()[["user", "item"]].values.tolist() == [
        [1, "a"], [1, "b"], [1, "c"], [2, "a"], [2, "d"]]
    assert split.test_input() is split.history and "history=5" in repr(split)
    # the random holdout has no "earlier": no history; test_input is train + valid
    rnd = S.leave_one_out(Interactions.from_frame(frame), strategy="random", valid=True)
    assert rnd.history is None and len(rnd.test_input()) == len(rnd.train) + len(rnd.valid)


@FAST
@given(interactions(), st.integers(0, 52), st.sampled_from(["first", "all"]))
def test_time_cut_next_item_split(data, cutoff, targets):
    ts = data.timestamp
    try:
        split = S.temporal_split(data, cutoff=cutoff, next_item=True, targets=targets)
    except DataError:
        assert (ts >= cutoff).all()
        return
    hist, test = split.history, split.test
    assert split.valid is None
    assert sorted(map(tuple, hist.to_frame(external=False).values.tolist())) == sorted(
        map(tuple, data.subset(ts < cutoff).to_frame(external=False).values.tolist()))
    assert pairs(split.train) == pairs(hist)  # without validation, the history is train
    assert (test.timestamp >= cutoff).all()
    train_items = set(split.train.item.tolist())
    with_history = set(hist.user.tolist())
    after = data.subset(ts >= cutoff)
    expect = set()
    for u in with_history:
        seq = after.sequences().user(u).tolist()
        chosen = seq[:1] if targets == "first" else seq
        expect |= {(u, i) for i in chosen if i in train_items}
    assert pairs(test) == expect


def test_time_cut_next_item_with_validation():
    frame = pd.DataFrame({"user": [1, 1, 1, 1, 2, 2, 2, 3, 4, 4],
                          "item": ["a", "b", "c", "d", "a", "c", "b", "b", "c", "d"],
                          "timestamp": [1, 2, 5, 8, 6, 7, 9, 9, 0, 0]})
    data = Interactions.from_frame(frame)
    split = S.temporal_split(data, cutoff=8, valid_size=0.3, next_item=True)
    # the validation cut falls at 5: train before it, valid each user's first event in
    # [5, 8) for users with a training event (user 2 has none)
    assert split.train.to_frame()[["user", "item"]].values.tolist() == [
        [1, "a"], [1, "b"], [4, "c"], [4, "d"]]
    assert split.valid.to_frame()[["user", "item"]].values.tolist() == [[1, "c"]]
    # test: each user's first event from 8 on, for users with an event before 8 (not 3)
    assert split.test.to_frame()[["user", "item"]].values.tolist() == [[1, "d"], [2, "b"]]
    assert len(split.history) == 7 and (split.history.timestamp < 8).all()
    late = S.temporal_split(data, cutoff=8, next_item=True, targets="all")
    assert pairs(late.test) == pairs(split.test)
    with pytest.raises(ConfigError, match="targets must be"):
        S.temporal_split(data, cutoff=8, next_item=True, targets="last")


@FAST
@given(interactions(), st.floats(0.1, 0.5), st.integers(0, 10))
def test_last_sessions_split_properties(data, test_size, gap):
    try:
        split = S.last_sessions_split(data, test_size, gap=gap)
    except DataError as exc:
        assert "leaves none to train on" in str(exc)
        return
    # a held-out session's user may be new (session-based data), its items may not
    assert split.train.users is data.users and split.test.items is data.items
    assert not pairs(split.train) & pairs(split.test)
    assert pairs(split.train) | pairs(split.test) <= pairs(data)
    assert set(split.test.item.tolist()) <= set(split.train.item.tolist())
    session = data.sessions(gap)
    place = np.empty(len(data), dtype=np.int64)
    place[data.order()] = np.arange(len(data))
    key = {}
    for e, (u, s) in enumerate(zip(data.user.tolist(), session.tolist(), strict=True)):
        key.setdefault((u, s), []).append(e)
    end = {g: max(place[ev]) for g, ev in key.items()}
    train_items = set(split.train.item.tolist())
    tr = set(zip(split.train.user.tolist(), split.train.session.tolist(), strict=True))
    te = set(zip(split.test.user.tolist(), split.test.session.tolist(), strict=True))
    assert not tr & te
    if tr and te:
        assert max(end[g] for g in tr) < min(end[g] for g in te)
    train_sizes = split.train.to_frame(external=False).groupby(["user", "session"]).size()
    for g, n in train_sizes.items():  # training sessions whole
        assert n == len(key[g])
    counts = split.test.to_frame(external=False).groupby(["user", "session"]).size()
    assert (counts >= 2).all()
    for (u, s), n in counts.items():  # a test session keeps every event of a known item
        assert n == sum(1 for e in key[(u, s)] if data.item[e] in train_items)


def test_last_sessions_split_exact_and_errors():
    frame = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3, 3, 3],
                          "item": ["a", "b", "c", "a", "b", "b", "a", "z"],
                          "session": [7, 7, 8, 7, 7, 1, 1, 1],
                          "timestamp": [1, 2, 10, 3, 4, 5, 6, 9]})
    data = Interactions.from_frame(frame)
    split = S.last_sessions_split(data, test_size=0.25)
    # 4 sessions by end: (1,7)@2, (2,7)@4, (3,1)@9, (1,8)@10 -> (1,8) is held out, but has
    # one event: dropped; test_size 0.5 holds out (3,1) too, whose cold item z goes
    assert len(split.test) == 0 and len(split.train) == 7
    split = S.last_sessions_split(data, test_size=0.5)
    assert split.test.to_frame()[["user", "item"]].values.tolist() == [[3, "b"], [3, "a"]]
    assert split.test.session.tolist() == [1, 1]
    with pytest.raises(ConfigError, match="min_length"):
        S.last_sessions_split(data, min_length=1)
    with pytest.raises(ConfigError, match="test_size"):
        S.last_sessions_split(data, test_size=1.0)
    with pytest.raises(DataError, match="no session column"):
        S.last_sessions_split(Interactions.from_frame(frame.drop(columns="session")))
    with pytest.raises(DataError, match="leaves none to train on"):
        S.last_sessions_split(data, test_size=0.6, valid_size=0.39)
