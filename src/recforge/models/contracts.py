"""What a model declares about itself, and what one fit hands it.

:class:`Capabilities` is the model's declaration (like scikit-learn's tags): every model
class sets ``capabilities = Capabilities(...)`` once, as a class attribute, and the
registry (:func:`recforge.models.registry.models_with`), the CLI's help and errors, the
workflow, ``tune`` and ``quickstart`` read it there instead of asking the model with
``getattr``. Where a capability depends on a hyperparameter (NCF rates with
``loss="mse"`` only), the class declares what *some* setting of it can do and
:meth:`~recforge.models.base.Recommender.effective_capabilities` narrows it for one
instance.

:class:`FitOptions` carries what one fit is given beyond the training and validation
data (side features; for gradient models the trainer's
:class:`~recforge.training.contracts.FitContext`) from the public ``fit`` to the model's
``_fit(train, valid, options)``, as one object rather than attributes set around ``fit``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recforge.data.features import Features
from recforge.training.contracts import FitContext

__all__ = ["Capabilities", "FitOptions", "SearchSpace"]

#: A tuning search space: hyperparameter -> ``("float"|"int"|"log"|"logint", low, high)``
#: or ``("cat", [choices])`` (read by :func:`recforge.experiment.tune.tune`).
SearchSpace = dict[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared once per class (every field false unless set, but
    ``ranks`` and ``personalized``).

    rates:
        :meth:`predict` gives ratings (rating metrics such as RMSE apply).
    learns_ratings:
        Fitted to rating values: the training data needs a rating column.
    ranks:
        Ranks items for users (every model does).
    personalized:
        Scores depend on the user (false for popularity).
    uses_item_features, requires_item_features, uses_user_features:
        ``fit`` takes ``item_features`` (and needs them) / ``user_features``.
    folds_in_history:
        Scores the history of a user it was not trained on
        (:meth:`~recforge.models.base.Recommender.recommend_for_history`).
    similar_items:
        :meth:`~recforge.models.base.Recommender.similar_items` works.
    gradient:
        Trained by epochs of gradient steps on the shared trainer: per-epoch validation,
        checkpoints and ``--resume``, and DDP (``--nproc``) apply.
    sharded_data:
        Under DDP, each rank may hold only the events of the users it owns.
    sparse_user_updates:
        Its user tables can take row-sparse updates (``--sparse-updates``).
    seeded:
        Takes a ``seed`` (an experiment repeats it over its seeds).
    reads_order:
        Scores the next item from the order of a user's events (sequential and session
        models): :meth:`~recforge.models.base.Recommender.score_sequences` reads each
        user's ordered history instead of an unordered bag.
    """

    rates: bool = False
    learns_ratings: bool = False
    ranks: bool = True
    personalized: bool = True
    uses_item_features: bool = False
    requires_item_features: bool = False
    uses_user_features: bool = False
    folds_in_history: bool = False
    similar_items: bool = False
    gradient: bool = False
    sharded_data: bool = False
    sparse_user_updates: bool = False
    seeded: bool = False
    reads_order: bool = False


@dataclass(frozen=True)
class FitOptions:
    """What one fit is given besides ``train`` and ``valid``.

    item_features, user_features:
        Side features aligned with the fit's item / user vocabularies (models with
        ``uses_item_features`` / ``uses_user_features``; ``None`` when not given).
    training:
        The trainer's options of this fit (gradient models; the defaults otherwise).
    """

    item_features: Features | None = None
    user_features: Features | None = None
    training: FitContext = field(default_factory=FitContext)
