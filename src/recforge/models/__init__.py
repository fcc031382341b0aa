"""Recommendation models. Each family lives in its own module; see :mod:`.registry`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recforge.models.registry import available_models, create_model, get_model_class

if TYPE_CHECKING:
    from recforge.models.base import Recommender

__all__ = ["Recommender", "available_models", "create_model", "get_model_class"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":  # model names (the registry) must not need torch
        from recforge.models.base import Recommender  # lazy: imports torch

        return Recommender
    raise AttributeError(f"module 'recforge.models' has no attribute {name!r}")
