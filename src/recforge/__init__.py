"""recforge: build, evaluate and serve recommender systems with PyTorch.

The names a program needs first are importable from here::

    from recforge import Interactions, Recommender, create_model, evaluate, load_model

They load on first use (:pep:`562`): ``Recommender``, ``create_model`` and ``evaluate``
import PyTorch, ``Interactions`` and ``Vocabulary`` pandas and SciPy, so ``import recforge``
(and every ``recforge`` command, up to the point where its arguments are checked) stays light.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from recforge._version import __version__
from recforge.errors import ConfigError, DataError, ModelError, RecforgeError

if TYPE_CHECKING:
    from recforge.data.interactions import Interactions
    from recforge.data.vocabulary import Vocabulary
    from recforge.evaluation import evaluate
    from recforge.models import Recommender, create_model

__all__ = [
    "Interactions",
    "Recommender",
    "create_model",
    "load_model",
    "evaluate",
    "Vocabulary",
    "RecforgeError",
    "DataError",
    "ConfigError",
    "ModelError",
    "__version__",
]


def load_model(path: str | os.PathLike) -> Recommender:
    """Load a model saved by :meth:`Recommender.save` (the same as :meth:`Recommender.load`;
    damaged or tampered files raise :class:`ModelError` naming the file)."""
    from recforge.models import Recommender  # lazy: imports torch

    return Recommender.load(path)


def __getattr__(name: str) -> Any:
    if name == "Interactions":
        from recforge.data.interactions import Interactions  # lazy: imports pandas, SciPy

        return Interactions
    if name == "Vocabulary":
        from recforge.data.vocabulary import Vocabulary  # lazy: imports pandas

        return Vocabulary
    if name in ("Recommender", "create_model"):
        import recforge.models  # lazy: imports torch

        return getattr(recforge.models, name)
    if name == "evaluate":
        import recforge.evaluation  # lazy: imports torch

        return recforge.evaluation.evaluate
    raise AttributeError(f"module 'recforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
