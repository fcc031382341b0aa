"""Serving trained models: a recommendation service and its FastAPI app."""

from recforge.serving.service import RecommendationService

__all__ = ["RecommendationService", "create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003 - lazy import keeps FastAPI optional at import
    from recforge.serving.app import create_app as _create

    return _create(*args, **kwargs)
