"""Model name -> class, used by the CLI, experiment configs and :meth:`Recommender.load`.

Built-in models are imported lazily (so ``recforge --help`` stays fast), by their
``"module:Class"`` names: this module imports no model module, the base class included,
so that the base class and the artefact reader can resolve names through it. Third-party
packages can add models through the ``recforge.models`` entry-point group.

What the rest of recforge knows about a model it reads here, from the model's class
(:mod:`recforge.models.contracts`): :func:`models_with` (the models that declare a
capability, e.g. for the CLI's help and errors), :func:`tuning_space` (``recforge tune``)
and :func:`quick_params` (``recforge quickstart``). No model list is written out anywhere
else; reading capabilities imports the model modules (torch), so the CLI asks only when
it prints a subcommand's help or an error.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from difflib import get_close_matches
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from recforge.errors import ConfigError
from recforge.models.params import unknown_param_message

if TYPE_CHECKING:  # the contracts import torch, which this module does not need
    from recforge.models.contracts import SearchSpace

#: Built-in models: registry name -> "module:Class".
BUILTIN: dict[str, str] = {
    "pop": "recforge.models.popularity:Popularity",
    "itemknn": "recforge.models.knn:ItemKNN",
    "userknn": "recforge.models.userknn:UserKNN",
    "ease": "recforge.models.ease:EASE",
    "gfcf": "recforge.models.graphfilter:GFCF",
    "bspm": "recforge.models.graphfilter:BSPM",
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


def models_with(capability: str) -> list[str]:
    """Names of the models whose class declares ``capability`` (a field of
    :class:`~recforge.models.contracts.Capabilities`, e.g. ``"folds_in_history"``): the
    built-in ones in the order of :data:`BUILTIN`, then plug-ins by name."""
    names = [*BUILTIN, *sorted(set(_plugins()) - set(BUILTIN))]
    declared = {n: get_model_class(n).capabilities for n in names}
    known = [f.name for f in fields(declared[names[0]])]
    if capability not in known:
        raise ConfigError(f"unknown capability {capability!r} (known: {', '.join(known)})")
    return [n for n in names if getattr(declared[n], capability)]


def tuning_space(name: str) -> SearchSpace:
    """Model ``name``'s default search space for ``recforge tune`` (a copy; may be empty)."""
    return dict(get_model_class(name).tuning_space)


def quick_params(name: str) -> dict[str, Any]:
    """Model ``name``'s hyperparameters for ``recforge quickstart`` (a copy; may be empty)."""
    return dict(get_model_class(name).quick_params)


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
