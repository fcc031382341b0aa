"""Most-popular items: the baseline every personalised model must beat."""

from __future__ import annotations

import torch

from recforge.data.interactions import Interactions
from recforge.models.artifact import Array, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions


class Popularity(Recommender):
    """Scores every item by the number of training users who interacted with it.

    Not personalised: every user gets the same ranking (minus the items they have seen).
    It sets the floor for every other model, and a wrong evaluator shows up here first.
    """

    name = "pop"
    capabilities = Capabilities(personalized=False)
    forgetting = "exact"

    def __init__(self) -> None:
        pass

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self.scores_ = torch.from_numpy(self.item_popularity_.copy())

    def _forget(self, keep, removed) -> str:
        # the base class recounted item_popularity_ without the users
        self.scores_ = torch.from_numpy(self.item_popularity_.copy())
        return "recount"

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores_.unsqueeze(0).repeat(len(users), 1)

    def _state(self):
        return {"scores": self.scores_}

    def _state_spec(self, extra) -> StateSpec:
        return {"scores": Array((self.n_items,))}

    def _restore(self, state, extra):
        self.scores_ = state["scores"]
