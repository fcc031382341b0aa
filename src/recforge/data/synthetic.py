"""A generated dataset that needs no download: the embedded default of ``recforge quickstart``.

It imitates what makes real interaction logs hard: a long-tailed item popularity, users
whose tastes follow a few genres, activity that varies by orders of magnitude between
users, ratings that follow the (hidden) affinity, and timestamps. Items have titles,
release years and genres, so content-based models have something to read.

Everything is generated with vectorized numpy from one ``seed``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recforge._fs import atomic_path
from recforge.data.interactions import Interactions
from recforge.errors import ConfigError

__all__ = ["SyntheticData", "make_synthetic", "make_sequential", "write_sequential_parquet",
           "write_synthetic_parquet", "GENRES", "ML20M_EVENTS_PER_USER"]

#: MovieLens 20M's interactions per user (20M ratings by 138K users): the proportion in which
#: ``recforge datasets generate`` chooses a number of users (as the scale benchmarks do).
ML20M_EVENTS_PER_USER = 20_000_000 / 138_000

GENRES = ("Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western")

_ADJECTIVES = ("Silent", "Last", "Golden", "Broken", "Hidden", "Dark", "Electric", "Lonely",
               "Crimson", "Frozen", "Wild", "Secret", "Distant", "Burning", "Midnight", "Lost",
               "Iron", "Velvet", "Hollow", "Bright")
_NOUNS = ("River", "Empire", "Garden", "Horizon", "Machine", "Kingdom", "Station", "Letter",
          "Harbor", "Forest", "Signal", "Mirror", "Voyage", "Island", "Promise", "Shadow",
          "Frontier", "Orchestra", "Detective", "Summer", "Winter", "Engine", "Crown", "Tide")


@dataclass
class SyntheticData:
    """Generated interactions with item metadata (same fields as MovieLens data)."""

    interactions: Interactions
    items: pd.DataFrame
    users: pd.DataFrame
    tags: pd.DataFrame | None = None
    name: str = "synthetic"


def make_synthetic(n_users: int = 1000, n_items: int = 800, *, mean_per_user: float = 50.0,
                   n_factors: int = 16, popularity_exponent: float = 0.9,
                   taste_strength: float = 3.0, seed: int = 0) -> SyntheticData:
    """Generate a dataset.

    Parameters
    ----------
    n_users, n_items:
        Sizes. Every user gets at least 5 events, so every user can be split.
    mean_per_user:
        Mean number of events per user (activity is log-normal around it).
    popularity_exponent:
        Zipf exponent of item popularity (0 = flat, 1 = strongly long-tailed).
    taste_strength:
        Weight of the user-item affinity against popularity (0 = popularity only).
    """
    if n_users < 2 or n_items < 10:
        raise ConfigError("make_synthetic needs n_users >= 2 and n_items >= 10")
    rng = np.random.default_rng(seed)  # one stream, drawn from in the order of the steps
    item_genre, genre_vec, item_vec = _items(rng, n_items, n_factors)
    fav, user_vec = _users(rng, n_users, genre_vec)
    users, items, affinity = _choose(rng, user_vec, item_vec, mean_per_user,
                                     popularity_exponent, taste_strength)
    frame = _events(rng, users, items, affinity, n_users)
    interactions = Interactions.from_frame(frame, source="synthetic")
    genre_names = np.asarray(GENRES, dtype=object)
    user_frame = pd.DataFrame({
        "favourite_genres": [list(genre_names[row]) for row in fav],
    }, index=pd.Index(np.arange(1, n_users + 1), name="user"))
    return SyntheticData(interactions=interactions, items=_item_frame(rng, item_genre),
                         users=user_frame)


def _items(rng: np.random.Generator, n_items: int,
           n_factors: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items: 1-3 genres each (some genres more common), a latent vector near its genres'.
    Returns the multi-hot ``[n_items, n_genres]`` genres, the genres' and items' vectors."""
    n_genres = len(GENRES)
    genre_weight = rng.dirichlet(np.full(n_genres, 2.0))
    n_item_genres = rng.choice([1, 2, 3], size=n_items, p=[0.45, 0.4, 0.15])
    keys = rng.random((n_items, n_genres)) ** (1.0 / genre_weight[None, :])
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    item_genre = rank < n_item_genres[:, None]  # [n_items, n_genres] multi-hot
    genre_vec = rng.normal(size=(n_genres, n_factors))
    item_vec = (item_genre @ genre_vec) / item_genre.sum(axis=1, keepdims=True)
    item_vec += 0.5 * rng.normal(size=(n_items, n_factors))
    return item_genre, genre_vec, item_vec


def _users(rng: np.random.Generator, n_users: int,
           genre_vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Users: tastes around 1-3 favourite genres (multi-hot) and a vector near them."""
    n_genres, n_factors = genre_vec.shape
    fav = rng.random((n_users, n_genres)) < rng.uniform(0.05, 0.2, size=(n_users, 1))
    fav[np.arange(n_users), rng.integers(0, n_genres, n_users)] = True
    user_vec = (fav @ genre_vec) / fav.sum(axis=1, keepdims=True)
    user_vec += 0.5 * rng.normal(size=(n_users, n_factors))
    return fav, user_vec


def _choose(rng: np.random.Generator, user_vec: np.ndarray, item_vec: np.ndarray,
            mean_per_user: float, popularity_exponent: float,
            taste_strength: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (user, item) pairs of the events and the users x items affinity."""
    n_users, n_factors = user_vec.shape
    n_items = len(item_vec)
    # Popularity: Zipf over a random order of items.
    pop_rank = rng.permutation(n_items) + 1
    log_pop = -popularity_exponent * np.log(pop_rank)
    # Activity: log-normal, at least 5, at most half the catalogue.
    activity = rng.lognormal(np.log(mean_per_user) - 0.5, 1.0, size=n_users)
    activity = np.clip(np.rint(activity), 5, n_items // 2).astype(np.int64)
    # Each user picks `activity` items without replacement, with probability proportional to
    # exp(taste * affinity + log popularity): the Gumbel-top-k trick, one sort per block.
    affinity = (user_vec @ item_vec.T) / np.sqrt(n_factors)
    affinity = (affinity - affinity.mean()) / (affinity.std() + 1e-9)
    logits = taste_strength * affinity + log_pop[None, :]
    gumbel = -np.log(-np.log(rng.random(logits.shape)))
    order = np.argsort(-(logits + gumbel), axis=1)
    col_rank = np.empty_like(order)
    np.put_along_axis(col_rank, order, np.arange(n_items)[None, :].repeat(n_users, 0), axis=1)
    users, items = np.nonzero(col_rank < activity[:, None])
    return users, items, affinity


def _events(rng: np.random.Generator, users: np.ndarray, items: np.ndarray,
            affinity: np.ndarray, n_users: int) -> pd.DataFrame:
    """The events with ratings and timestamps, ids from 1."""
    # Ratings follow the affinity (plus noise), on a 1-5 scale.
    z = affinity[users, items]
    z = (z - z.mean()) / (z.std() + 1e-9)  # chosen items are liked: centre among them
    ratings = np.clip(np.rint(3.5 + 0.9 * z + 0.6 * rng.normal(size=len(z))), 1, 5)
    # Timestamps: each user is active over a window; events spread uniformly within it.
    t0 = 1_500_000_000
    start = t0 + rng.integers(0, 3 * 365 * 86400, size=n_users)
    span = rng.integers(86400, 365 * 86400, size=n_users)
    ts = start[users] + (rng.random(len(users)) * span[users]).astype(np.int64)
    return pd.DataFrame({"user": users + 1, "item": items + 1, "rating": ratings,
                         "timestamp": ts})


def _item_frame(rng: np.random.Generator, item_genre: np.ndarray) -> pd.DataFrame:
    """Item metadata: a made-up title, a year, the genres' names, indexed by item id."""
    n_items = len(item_genre)
    years = np.clip(np.rint(rng.normal(1995, 15, n_items)), 1930, 2024).astype(np.int64)
    adj = rng.integers(0, len(_ADJECTIVES), n_items)
    noun = rng.integers(0, len(_NOUNS), n_items)
    titles = [f"The {_ADJECTIVES[a]} {_NOUNS[b]}" for a, b in zip(adj, noun, strict=False)]
    genre_names = np.asarray(GENRES, dtype=object)
    return pd.DataFrame({
        "title": titles,
        "year": pd.array(years, dtype="Int64"),
        "genres": [list(genre_names[row]) for row in item_genre],
    }, index=pd.Index(np.arange(1, n_items + 1), name="item"))


# ---------------------------------------------------------------------------------------
# ordered data
def make_sequential(n_users: int = 20_000, n_items: int = 20_000, *, mean_length: float = 12.0,
                    n_topics: int = 200, follow: float = 0.5, stay: float = 0.3,
                    n_next: int = 4, popularity_exponent: float = 1.0,
                    seed: int = 0) -> Interactions:
    """A generated log whose order carries the signal, for next-item and session models.

    Each item belongs to one topic (uneven sizes) and has a Zipf popularity
    (``popularity_exponent``) and ``n_next`` successors drawn from its topic by popularity
    (sequels, accessories: chosen with weights 1/2, 1/4, ...). A user has 1-3 favourite
    topics and a history whose length is log-normal around ``mean_length`` (at least 3).
    The first item comes from a favourite topic by popularity; after an item, with
    probability ``follow`` the next is one of its successors, with probability ``stay``
    another item of its topic by popularity, otherwise an item of a favourite topic. A
    user does not repeat an item (a draw that would is redrawn, three times from a
    favourite topic, then from the whole catalogue; what still repeats is dropped).
    Timestamps increase strictly within a user: minutes apart within a session, days
    between sessions (one gap in ten).

    So the order matters (``follow``), the user's tastes matter (``stay`` and the jumps) and
    popularity alone is weak: a next-item model should beat both ``pop`` and an unordered
    model. Everything is vectorized over users, one step per position.
    """
    if n_users < 2 or n_items < 10 or n_topics < 1 or n_next < 1:
        raise ConfigError("make_sequential needs n_users >= 2, n_items >= 10, n_topics >= 1 "
                          "and n_next >= 1")
    if not (follow >= 0 and stay >= 0 and follow + stay <= 1):
        raise ConfigError(f"follow and stay are probabilities with follow + stay <= 1, got "
                          f"{follow} and {stay}")
    if not mean_length >= 3:
        raise ConfigError(f"mean_length must be >= 3, got {mean_length}")
    rng = np.random.default_rng(seed)
    cdf_topic, by_topic, _, nonempty = _catalogue(rng, n_items, n_topics, popularity_exponent)
    topic_of = np.empty(n_items, dtype=np.int64)
    topic_of[by_topic] = np.ceil(cdf_topic).astype(np.int64) - 1

    def in_topic(topics: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(cdf_topic, topics + rng.random(len(topics)), side="right")
        return by_topic[np.minimum(pos, n_items - 1)]

    successors = in_topic(np.repeat(topic_of, n_next)).reshape(n_items, n_next)
    next_cdf = np.cumsum(0.5 ** np.arange(1, n_next + 1))
    next_cdf /= next_cdf[-1]
    favs = nonempty[rng.integers(0, len(nonempty), size=(n_users, 3))]
    n_fav = rng.integers(1, 4, size=n_users)
    sigma = 1.0
    lengths = rng.lognormal(np.log(mean_length) - sigma ** 2 / 2, sigma, size=n_users)
    cap = int(min(n_items // 2, 50 * mean_length))
    lengths = np.clip(np.rint(lengths), 3, max(3, cap)).astype(np.int64)

    def favourite(users: np.ndarray) -> np.ndarray:
        return in_topic(favs[users, (rng.random(len(users)) * n_fav[users]).astype(np.int64)])

    seqs = np.full((n_users, int(lengths.max())), -1, dtype=np.int32)
    seqs[:, 0] = favourite(np.arange(n_users))
    for t in range(1, seqs.shape[1]):  # positions, each vectorized over the users
        users = np.flatnonzero(lengths > t)
        prev = seqs[users, t - 1]
        r = rng.random(len(users))
        nxt = favourite(users)
        follows = r < follow
        pick = np.searchsorted(next_cdf, rng.random(int(follows.sum())), side="right")
        nxt[follows] = successors[prev[follows], np.minimum(pick, n_next - 1)]
        stays = (r >= follow) & (r < follow + stay)
        nxt[stays] = in_topic(topic_of[prev[stays]])
        for attempt in range(6):  # redraw repeats: from a favourite topic, then anywhere
            again = (seqs[users, :t] == nxt[:, None]).any(axis=1)
            if not again.any():
                break
            nxt[again] = (favourite(users[again]) if attempt < 3
                          else rng.integers(0, n_items, int(again.sum())))
        seqs[users, t] = nxt
    user = np.repeat(np.arange(n_users), lengths)
    item = seqs[seqs >= 0]  # row-major: each user's items in order
    gaps = np.where(rng.random(len(item)) < 0.1, rng.exponential(3 * 86400, len(item)),
                    rng.exponential(600, len(item)))
    gaps = gaps.astype(np.int64) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    csum = np.cumsum(gaps)
    ts = 1_600_000_000 + csum - (csum - gaps)[offsets][user]
    frame = pd.DataFrame({"user": user + 1, "item": item + 1, "timestamp": ts})
    frame = frame[~frame.duplicated(["user", "item"])]
    return Interactions.from_frame(frame, source="synthetic-sequential")


def write_sequential_parquet(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """Write :func:`make_sequential` (``kwargs``: its parameters) to Parquet: columns user,
    item, timestamp, sorted by user then time, written to a temporary name and renamed
    when complete. Returns a summary: events, users, items, seconds, bytes."""
    start = time.perf_counter()
    log = make_sequential(**kwargs)
    frame = log.to_frame()
    table = pa.table({"user": frame["user"].to_numpy(np.int32),
                      "item": frame["item"].to_numpy(np.int32),
                      "timestamp": frame["timestamp"].to_numpy(np.int64)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        size = os.path.getsize(tmp)
    return {"path": str(path), "events": len(log), "users": log.n_users,
            "items": log.n_items, "seconds": round(time.perf_counter() - start, 2),
            "bytes": size}


# ---------------------------------------------------------------------------------------
# data at scale
def write_synthetic_parquet(path: str | os.PathLike, *, n_users: int = 138_000,
                            n_items: int = 27_000, n_interactions: int = 20_000_000,
                            n_genres: int = 20, popularity_exponent: float = 1.0,
                            taste_strength: float = 0.6, min_per_user: int = 20,
                            block_users: int = 8192, seed: int = 0) -> dict[str, Any]:
    """Write an ML-20M-sized interaction log to Parquet, block of users by block of users.

    The defaults match MovieLens 20M (138K users, 27K items, 20M ratings). The log has what
    makes real data hard: a Zipf item popularity (``popularity_exponent``), user activity
    that is log-normal with a floor of ``min_per_user`` events (or half the mean activity,
    where that is fewer), and tastes: each event comes
    with probability ``taste_strength`` from one of the user's favourite genres (popularity
    within the genre), else from the whole catalogue by popularity. Ratings (0.5-5 stars)
    are higher for taste events; timestamps spread over each user's active window. (user,
    item) pairs are distinct.

    Memory stays bounded by one block (``block_users`` users), so the size of the output is
    limited only by disk; the file is written to a temporary name and renamed when complete.
    Returns a summary: events, users, items, seconds, bytes.
    """
    _check_scale(n_users, n_items, n_interactions, taste_strength)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    cdf_genre, by_genre, cdf_all, nonempty = _catalogue(rng, n_items, n_genres,
                                                        popularity_exponent)
    activity = _activity(rng, n_users, n_items, n_interactions, min_per_user)
    written = 0
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, _SCALE_SCHEMA, compression="zstd") as writer:
            for lo in range(0, n_users, block_users):
                hi = min(n_users, lo + block_users)
                table = _block_table(np.random.default_rng([seed, lo]), lo, activity[lo:hi],
                                     nonempty, taste_strength, cdf_genre, by_genre, cdf_all)
                writer.write_table(table)
                written += table.num_rows
        size = os.path.getsize(tmp)  # (the output may be standard output or a device)
    return {"path": str(path), "events": written, "users": n_users, "items": n_items,
            "seconds": round(time.perf_counter() - start, 2),
            "bytes": size}


#: The columns of :func:`write_synthetic_parquet`'s file.
_SCALE_SCHEMA = pa.schema([("user", pa.int32()), ("item", pa.int32()),
                           ("rating", pa.float32()), ("timestamp", pa.int64())])


def _check_scale(n_users: int, n_items: int, n_interactions: int,
                 taste_strength: float) -> None:
    """Refuse sizes that cannot be drawn (each user has at most ``n_items // 2`` items)."""
    if n_users < 2 or n_items < 10 or n_interactions < n_users:
        raise ConfigError("write_synthetic_parquet needs n_users >= 2, n_items >= 10 and "
                          "n_interactions >= n_users")
    if n_interactions > n_users * (n_items // 2):
        raise ConfigError(f"{n_interactions:,} interactions cannot be drawn: a user has at most "
                          f"n_items // 2 = {n_items // 2:,} distinct items, "
                          f"{n_users * (n_items // 2):,} events for {n_users:,} users")
    if not 0.0 <= taste_strength <= 1.0:
        raise ConfigError(f"taste_strength must be in [0, 1], got {taste_strength}")


def _catalogue(rng: np.random.Generator, n_items: int, n_genres: int,
               popularity_exponent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """Items: a popularity (Zipf over a random order) and one genre each (uneven sizes).

    Returns the within-genre popularity CDFs laid end to end (genre g occupies [g, g + 1)),
    the items grouped by genre, the catalogue's popularity CDF and the non-empty genres.
    """
    pop = (rng.permutation(n_items) + 1.0) ** -float(popularity_exponent)
    genre_of = rng.choice(n_genres, size=n_items, p=rng.dirichlet(np.full(n_genres, 2.0)))
    by_genre = np.argsort(genre_of, kind="stable")  # items grouped by genre
    counts = np.bincount(genre_of, minlength=n_genres)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    within = pop[by_genre]
    cdf_genre = np.empty(n_items)
    for g in range(n_genres):  # n_genres iterations, each vectorized
        seg = within[bounds[g]:bounds[g + 1]]
        if len(seg):
            cdf_genre[bounds[g]:bounds[g + 1]] = g + np.cumsum(seg) / seg.sum()
    cdf_all = np.cumsum(pop) / pop.sum()
    return cdf_genre, by_genre, cdf_all, np.flatnonzero(counts)


def _activity(rng: np.random.Generator, n_users: int, n_items: int, n_interactions: int,
              min_per_user: int) -> np.ndarray:
    """Events per user: log-normal, scaled to the requested total, above a floor that
    leaves at least half of the total to the skew, at most ``n_items // 2``."""
    floor = max(1, min(int(min_per_user), n_interactions // n_users // 2))
    activity = rng.lognormal(0.0, 1.1, size=n_users)
    activity = activity / activity.sum() * (n_interactions - floor * n_users)
    activity = np.minimum(np.floor(activity).astype(np.int64) + floor, n_items // 2)
    short = n_interactions - int(activity.sum())
    if short > 0:  # hand the rounding remainder to random users with room left
        room = np.flatnonzero(activity < n_items // 2)
        activity[rng.choice(room, size=short, replace=len(room) < short)] += 1
    activity = np.minimum(activity, n_items // 2)
    # What the cap of n_items // 2 took from the heaviest users (a small catalogue) goes
    # to the others, evenly, until the total is reached.
    while (short := n_interactions - int(activity.sum())) > 0:
        room = np.flatnonzero(activity < n_items // 2)
        activity[room] = np.minimum(
            activity[room] + rng.multinomial(short, np.full(len(room), 1.0 / len(room))),
            n_items // 2)
    return activity


def _block_table(brng: np.random.Generator, lo: int, quota: np.ndarray,
                 nonempty: np.ndarray, taste_strength: float, cdf_genre: np.ndarray,
                 by_genre: np.ndarray, cdf_all: np.ndarray) -> pa.Table:
    """The events of the users ``lo, lo + 1, ...`` (``quota`` each), shuffled, ids from 1."""
    n_block = len(quota)
    # Favourite genres: 1-3 per user, drawn once per block.
    favs = nonempty[brng.integers(0, len(nonempty), size=(n_block, 3))]
    n_fav = brng.integers(1, 4, size=n_block)
    user, item, taste = _draw_block(brng, quota, favs, n_fav, taste_strength, cdf_genre,
                                    by_genre, cdf_all)
    n = len(user)
    stars = 3.0 + 0.8 * taste + brng.normal(0.0, 0.9, size=n)
    rating = np.clip(np.round(stars * 2) / 2, 0.5, 5.0).astype(np.float32)
    begin = 1_000_000_000 + brng.integers(0, 8 * 365 * 86400, size=n_block)
    span = brng.integers(86400, 2 * 365 * 86400, size=n_block)
    ts = begin[user] + (brng.random(n) * span[user]).astype(np.int64)
    perm = brng.permutation(n)  # a log is not sorted by user
    return pa.table({"user": (user[perm] + lo + 1).astype(np.int32),
                     "item": (item[perm] + 1).astype(np.int32),
                     "rating": rating[perm], "timestamp": ts[perm]}, schema=_SCALE_SCHEMA)


def _draw_block(rng: np.random.Generator, quota: np.ndarray, favs: np.ndarray,
                n_fav: np.ndarray, taste_strength: float, cdf_genre: np.ndarray,
                by_genre: np.ndarray, cdf_all: np.ndarray,
                max_rounds: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (user, item) events for one block: ``quota[u]`` per user where possible.

    Each round draws what every user still lacks (oversampled), drops pairs already drawn,
    and keeps a random subset up to the quota; heavy users need a few rounds because their
    draws collide on popular items. After ``max_rounds`` what is still lacking (users whose
    quota nears half of a small catalogue) is drawn uniformly from the catalogue, where at
    least half of every draw is fresh, so each quota is met.
    """
    n_items = len(cdf_all)
    n_users = len(quota)
    have_key = np.empty(0, dtype=np.int64)
    have_taste = np.empty(0, dtype=bool)
    for round_ in range(max_rounds + 200):
        count = np.bincount(have_key // n_items, minlength=n_users)
        lack = quota - count
        if lack.max() <= 0:
            break
        draw = np.where(lack > 0, (lack * 1.3 + 8).astype(np.int64), 0)
        user = np.repeat(np.arange(n_users), draw)
        m = len(user)
        if round_ >= max_rounds:  # the rest uniformly
            taste = np.zeros(m, dtype=bool)
            item = rng.integers(0, n_items, size=m)
        else:
            taste = rng.random(m) < taste_strength
            item = np.empty(m, dtype=np.int64)
            nt = int(taste.sum())
            if nt:
                tu = user[taste]
                g = favs[tu, (rng.random(nt) * n_fav[tu]).astype(np.int64)]
                pos = np.searchsorted(cdf_genre, g + rng.random(nt), side="right")
                item[taste] = by_genre[np.minimum(pos, n_items - 1)]
            item[~taste] = np.minimum(
                np.searchsorted(cdf_all, rng.random(m - nt), side="right"), n_items - 1)
        key = user * n_items + item
        _, first = np.unique(key, return_index=True)  # distinct within the round
        key, taste = key[first], taste[first]
        fresh = ~np.isin(key, have_key, assume_unique=True)
        key, taste = key[fresh], taste[fresh]
        # A random subset of each user's fresh pairs, up to what the user lacks.
        user = key // n_items
        order = np.lexsort((rng.random(len(key)), user))
        key, taste, user = key[order], taste[order], user[order]
        rank = np.arange(len(key)) - np.searchsorted(user, user)
        keep = rank < lack[user]
        have_key = np.concatenate([have_key, key[keep]])
        have_taste = np.concatenate([have_taste, taste[keep]])
    order = np.argsort(have_key, kind="stable")
    have_key, have_taste = have_key[order], have_taste[order]
    return have_key // n_items, have_key % n_items, have_taste
