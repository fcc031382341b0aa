"""Recommendation models. Each family lives in its own module; see :mod:`.registry`."""

from recforge.models.base import Recommender
from recforge.models.registry import available_models, create_model, get_model_class

__all__ = ["Recommender", "available_models", "create_model", "get_model_class"]
