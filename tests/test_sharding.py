"""Partitioning events by user for distributed training (each rank reads its shard)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import event_frame, random_interactions

from recforge.data.readers import read_interactions, read_many, read_parquet
from recforge.data.sharding import owner_of_ids, user_shard
from recforge.errors import ConfigError, DataError
from recforge.training.batches import EpochSampler


@pytest.mark.parametrize("string_ids", [False, True])
def test_owners_depend_only_on_the_id(string_ids):
    ids = np.arange(1, 5001)
    if string_ids:
        ids = np.asarray([f"user-{i}" for i in ids], dtype=object)
    owners = owner_of_ids(ids, 4)
    assert owners.min() == 0 and owners.max() == 3
    counts = np.bincount(owners, minlength=4)
    assert counts.min() > 0.2 * len(ids)  # balanced, not by parity or by prefix
    shuffled = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(owner_of_ids(ids[shuffled], 4), owners[shuffled])
    if not string_ids:  # the integer width does not matter
        np.testing.assert_array_equal(owner_of_ids(ids.astype(np.int32), 4), owners)
    assert not owner_of_ids(ids, 1).any()


def test_an_integer_id_written_as_text_has_the_integer_owner():
    ids = np.asarray([1, 5, 6, 7, 123456789012345678, 2**62, -3], dtype=np.int64)
    as_text = np.asarray([str(i) for i in ids], dtype=object)
    np.testing.assert_array_equal(owner_of_ids(as_text, 4), owner_of_ids(ids, 4))
    mixed = np.asarray(["abc", "5", "007", str(2**64 - 1), "5.0"], dtype=object)
    owners = owner_of_ids(mixed, 4)  # text that is not an int64 integer hashes as text
    assert owners[1] == owner_of_ids(np.asarray([5]), 4)[0]
    assert owners.min() >= 0 and owners.max() < 4


def test_parquet_ids_integer_in_one_batch_and_text_in_another_meet_on_one_rank(tmp_path):
    """Read batch by batch, a text id column is integers in the first batches and mixed
    with words in the last: a user's events must still be on one rank, under one id."""
    users = [str(u) for u in range(1, 41)] * 5 + ["u-a", "u-b"] + [str(u) for u in range(1, 11)]
    items = list(range(len(users)))
    p = tmp_path / "m.parquet"
    pd.DataFrame({"user": users, "item": items}).to_parquet(p, row_group_size=50)
    whole = read_parquet(p)
    parts = [read_parquet(p, batch_rows=50, shard=(r, 2)) for r in range(2)]
    assert sum(len(x) for x in parts) == len(whole) == len(users)
    owners = [set(x.users.ids[np.unique(x.user)].tolist()) for x in parts]
    assert not owners[0] & owners[1]  # "7" from an integer batch and "7" from a text one
    assert parts[0].users == whole.users and len(whole.users) == 42


def test_user_shards_partition_the_events_by_user():
    data = random_interactions(n_users=80, n_items=30, density=0.3, seed=2)
    shards = [user_shard(data, r, 3) for r in range(3)]
    assert sum(len(s) for s in shards) == len(data)
    users = [set(np.unique(s.user).tolist()) for s in shards]
    assert not (users[0] & users[1]) and not (users[1] & users[2]) and not (users[0] & users[2])
    for s in shards:  # a user's whole history is on one rank
        assert s.users == data.users and s.items == data.items
        for u in np.unique(s.user)[:10]:
            assert (s.user == u).sum() == (data.user == u).sum()
    with pytest.raises(ConfigError, match="rank"):
        user_shard(data, 3, 3)


@pytest.mark.parametrize("string_ids", [False, True])
def test_streamed_parquet_shards_equal_shards_of_the_whole_file(tmp_path, string_ids):
    frame = event_frame(3000, string_ids=string_ids, n_users=400, n_items=150)
    p = tmp_path / "e.parquet"
    frame.to_parquet(p, row_group_size=500)
    whole = read_parquet(p)
    for rank in range(2):
        streamed = read_parquet(p, batch_rows=311, shard=(rank, 2))
        expected = user_shard(whole, rank, 2)
        # every rank knows every id, so indices mean the same on all ranks
        assert streamed.users == whole.users and streamed.items == whole.items
        np.testing.assert_array_equal(streamed.user, expected.user)
        np.testing.assert_array_equal(streamed.item, expected.item)
        np.testing.assert_array_equal(streamed.value, expected.value)
        np.testing.assert_array_equal(streamed.timestamp, expected.timestamp)
    # CSV through the same entry point (read, then filtered) agrees with Parquet
    c = tmp_path / "e.csv"
    frame.to_csv(c, index=False)
    from_csv = read_interactions(c, shard=(1, 2))
    np.testing.assert_array_equal(from_csv.user, user_shard(whole, 1, 2).user)


def test_sharded_parquet_errors_still_name_the_file_row(tmp_path):
    events = event_frame(1000, n_users=400, n_items=150)
    frame = pd.concat([events, events.iloc[[10]]], ignore_index=True)
    p = tmp_path / "dup.parquet"
    frame.to_parquet(p)
    owner = owner_of_ids(frame["user"].to_numpy()[[10]], 2)[0]
    with pytest.raises(DataError, match=r"first seen at row 11") as err:
        read_parquet(p, batch_rows=64, shard=(int(owner), 2))
    assert "row 1001" in str(err.value)


def test_train_and_valid_files_are_sharded_alike(tmp_path):
    frame = event_frame(2000, n_users=400, n_items=150)
    a, b = tmp_path / "train.csv", tmp_path / "valid.csv"
    frame.iloc[:1500].to_csv(a, index=False)
    frame.iloc[1500:].to_csv(b, index=False)
    full = read_many([a, b])
    for rank in range(2):
        train, valid = read_many([a, b], shard=(rank, 2))
        assert train.users == full[0].users
        mine = set(np.unique(train.users.ids[train.user]).tolist())
        theirs = set(np.unique(user_shard(full[0], 1 - rank, 2).users.ids[
            user_shard(full[0], 1 - rank, 2).user]).tolist())
        valid_users = set(np.unique(valid.users.ids[valid.user]).tolist())
        assert not valid_users & theirs and not mine & theirs
        assert len(valid) == len(user_shard(full[1], rank, 2))


def test_a_local_shard_sampler_draws_only_its_own_events_with_equal_steps():
    data = random_interactions(n_users=90, n_items=40, density=0.25, seed=4)
    shards = [user_shard(data, r, 2) for r in range(2)]
    smallest = min(len(s) for s in shards)
    for rank, shard in enumerate(shards):
        s = EpochSampler(shard, batch_size=64, n_negatives=2, shard=(rank, 2))
        s.use_local_shard(smallest, item_counts=data.item_counts())
        assert s.steps_per_epoch() == -(-smallest // 32)
        batches = list(s.epoch(np.random.default_rng([5, 0])))
        users = np.concatenate([b["users"].numpy() for b in batches])
        assert len(users) == smallest
        assert set(users.tolist()) <= set(np.unique(shard.user).tolist())
        csr = shard.binary_csr  # the rank holds its users' whole history: exact exclusion
        neg = np.concatenate([b["negatives"].numpy() for b in batches])
        assert not np.asarray(csr[np.repeat(users, 2), neg.ravel()]).any()

