"""Serving trained models: a recommendation service and its FastAPI app."""

from recforge.serving.service import RecommendationService

__all__ = ["RecommendationService", "create_app"]


def create_app(*args, **kwargs):  # noqa: ANN002, ANN003
    """:func:`recforge.serving.app.create_app` (see there)."""
    # lazy: `import recforge.serving` (the service alone) does not load FastAPI and the routes
    from recforge.serving.app import create_app as _create

    return _create(*args, **kwargs)
