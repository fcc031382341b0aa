"""A generated dataset that needs no download: the embedded default of ``recforge quickstart``.

It imitates what makes real interaction logs hard: a long-tailed item popularity, users
whose tastes follow a few genres, activity that varies by orders of magnitude between
users, ratings that follow the (hidden) affinity, and timestamps. Items have titles,
release years and genres, so content-based models have something to read.

Everything is generated with vectorized numpy from one ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError

__all__ = ["SyntheticData", "make_synthetic", "GENRES"]

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
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)

    # Items: 1-3 genres each (some genres more common), a latent vector near its genres'.
    genre_weight = rng.dirichlet(np.full(n_genres, 2.0))
    n_item_genres = rng.choice([1, 2, 3], size=n_items, p=[0.45, 0.4, 0.15])
    keys = rng.random((n_items, n_genres)) ** (1.0 / genre_weight[None, :])
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    item_genre = rank < n_item_genres[:, None]  # [n_items, n_genres] multi-hot
    genre_vec = rng.normal(size=(n_genres, n_factors))
    item_vec = (item_genre @ genre_vec) / item_genre.sum(axis=1, keepdims=True)
    item_vec += 0.5 * rng.normal(size=(n_items, n_factors))

    # Users: tastes around 1-3 favourite genres.
    fav = rng.random((n_users, n_genres)) < rng.uniform(0.05, 0.2, size=(n_users, 1))
    fav[np.arange(n_users), rng.integers(0, n_genres, n_users)] = True
    user_vec = (fav @ genre_vec) / fav.sum(axis=1, keepdims=True)
    user_vec += 0.5 * rng.normal(size=(n_users, n_factors))

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
    chosen = col_rank < activity[:, None]
    users, items = np.nonzero(chosen)

    # Ratings follow the affinity (plus noise), on a 1-5 scale.
    z = affinity[users, items]
    z = (z - z.mean()) / (z.std() + 1e-9)  # chosen items are liked: centre among them
    ratings = np.clip(np.rint(3.5 + 0.9 * z + 0.6 * rng.normal(size=len(z))), 1, 5)

    # Timestamps: each user is active over a window; events spread uniformly within it.
    t0 = 1_500_000_000
    start = t0 + rng.integers(0, 3 * 365 * 86400, size=n_users)
    span = rng.integers(86400, 365 * 86400, size=n_users)
    ts = start[users] + (rng.random(len(users)) * span[users]).astype(np.int64)

    frame = pd.DataFrame({"user": users + 1, "item": items + 1, "rating": ratings,
                          "timestamp": ts})
    interactions = Interactions.from_frame(frame, source="synthetic")

    years = np.clip(np.rint(rng.normal(1995, 15, n_items)), 1930, 2024).astype(np.int64)
    adj = rng.integers(0, len(_ADJECTIVES), n_items)
    noun = rng.integers(0, len(_NOUNS), n_items)
    titles = [f"The {_ADJECTIVES[a]} {_NOUNS[b]}" for a, b in zip(adj, noun, strict=False)]
    genre_names = np.asarray(GENRES, dtype=object)
    item_frame = pd.DataFrame({
        "title": titles,
        "year": pd.array(years, dtype="Int64"),
        "genres": [list(genre_names[row]) for row in item_genre],
    }, index=pd.Index(np.arange(1, n_items + 1), name="item"))
    user_frame = pd.DataFrame({
        "favourite_genres": [list(genre_names[row]) for row in fav],
    }, index=pd.Index(np.arange(1, n_users + 1), name="user"))
    return SyntheticData(interactions=interactions, items=item_frame, users=user_frame)
