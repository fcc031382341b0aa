"""Model name -> class, used by the CLI, experiment configs and :meth:`Recommender.load`.

Built-in models are imported lazily (so ``recforge --help`` stays fast), by their
``"module:Class"`` names: this module imports no model module, the base class included,
so that the base class and the artefact reader can resolve names through it. Third-party
packages can add models through the ``recforge.models`` entry-point group.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from importlib.metadata import entry_points
from typing import Any

from recforge.errors import ConfigError
from recforge.models.params import unknown_param_message

#: Built-in models: registry name -> "module:Class".
BUILTIN: dict[str, str] = {
    "pop": "recforge.models.popularity:Popularity",
    "itemknn": "recforge.models.knn:ItemKNN",
    "ease": "recforge.models.ease:EASE",
    "als": "recforge.models.als:ALS",
    "mf": "recforge.models.mf:MF",
    "bpr": "recforge.models.mf:BPR",
    "gmf": "recforge.models.ncf:GMF",
    "mlp": "recforge.models.ncf:MLP",
    "neumf": "recforge.models.ncf:NeuMF",
    "lightgcn": "recforge.models.lightgcn:LightGCN",
    "content": "recforge.models.content:ContentBased",
    "hybrid": "recforge.models.hybrid:Hybrid",
    "hybrid_bpr": "recforge.models.hybrid:HybridBPR",
    "blend": "recforge.models.blend:Blend",
}


def _plugins() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group="recforge.models")}


def available_models() -> list[str]:
    """Names of every model that can be trained."""
    return sorted({**_plugins(), **BUILTIN})


def models_with(flag: str) -> list[str]:
    """Names of the models whose class sets the capability ``flag`` (a class attribute,
    e.g. ``supports_history``) true, sorted."""
    return [n for n in available_models() if getattr(get_model_class(n), flag, False)]


def get_model_class(name: str) -> type[Any]:
    """The class registered under ``name`` (a ``Recommender`` subclass);
    :class:`ConfigError` naming close matches."""
    table = {**_plugins(), **BUILTIN}
    if name not in table:
        hint = get_close_matches(name, list(table), n=1)
        raise ConfigError(f"unknown model {name!r}" + (f"; did you mean {hint[0]!r}?" if hint
                                                        else "")
                          + f" (available: {', '.join(sorted(table))})")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_model(name: str, **params: Any) -> Any:
    """Instantiate model ``name`` (a ``Recommender``) with hyperparameters, checking their
    names."""
    cls = get_model_class(name)
    valid = cls._param_names()
    for key in params:
        if key not in valid:
            raise ConfigError(unknown_param_message(cls, key))
    return cls(**params)
