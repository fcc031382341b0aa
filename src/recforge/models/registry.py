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

Names are given as people already know them (:func:`resolve_name`): case and ``-`` / ``_``
do not matter (``EASE``, ``Hybrid-BPR``), a few other spellings of the same algorithm are
accepted (:data:`ALIASES`), and other libraries' names that are not the same thing get an
error saying what recforge calls the closest model (:data:`HINTS`). The canonical name is
what a model saves and prints.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import fields
from difflib import get_close_matches
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from recforge.errors import ConfigError
from recforge.models.params import shown, unknown_param_message

if TYPE_CHECKING:  # the contracts import torch, which this module does not need
    from recforge.models.contracts import SearchSpace

#: Built-in models: registry name -> "module:Class".
BUILTIN: dict[str, str] = {
    "pop": "recforge.models.popularity:Popularity",
    "itemknn": "recforge.models.knn:ItemKNN",
    "userknn": "recforge.models.userknn:UserKNN",
    "sknn": "recforge.models.sknn:SessionKNN",
    "ease": "recforge.models.ease:EASE",
    "gfcf": "recforge.models.graphfilter:GFCF",
    "bspm": "recforge.models.graphfilter:BSPM",
    "als": "recforge.models.als:ALS",
    "mf": "recforge.models.mf:MF",
    "baseline": "recforge.models.baseline:Baseline",
    "svdpp": "recforge.models.svdpp:SVDpp",
    "knnbaseline": "recforge.models.knnbaseline:KNNBaseline",
    "bpr": "recforge.models.mf:BPR",
    "gmf": "recforge.models.ncf:GMF",
    "mlp": "recforge.models.ncf:MLP",
    "neumf": "recforge.models.ncf:NeuMF",
    "lightgcn": "recforge.models.lightgcn:LightGCN",
    "simgcl": "recforge.models.simgcl:SimGCL",
    "xsimgcl": "recforge.models.simgcl:XSimGCL",
    "content": "recforge.models.content:ContentBased",
    "hybrid": "recforge.models.hybrid:Hybrid",
    "hybrid_bpr": "recforge.models.hybrid:HybridBPR",
    "vbpr": "recforge.models.vbpr:VBPR",
    "blend": "recforge.models.blend:Blend",
    "sasrec": "recforge.models.sasrec:SASRec",
    "gru4rec": "recforge.models.gru4rec:GRU4Rec",
    "caser": "recforge.models.caser:Caser",
}

#: Other spellings of the same algorithm, accepted silently (keys as :func:`_folded`
#: writes them: lower case, no ``-`` / ``_`` / spaces). Only names with one reading: a
#: library's name or a family of models gets a :data:`HINTS` error instead.
ALIASES: dict[str, str] = {
    "popularity": "pop", "mostpop": "pop", "mostpopular": "pop", "toppop": "pop",
    "itemcf": "itemknn", "itembased": "itemknn", "itemitem": "itemknn",
    "usercf": "userknn", "userbased": "userknn",
    "ials": "als", "wmf": "als",  # Hu, Koren & Volinsky's implicit ALS, which als is
    "easer": "ease",  # the paper's EASE^R
    # Surprise's names of the same algorithms
    "baselineonly": "baseline", "svd++": "svdpp", "svdplusplus": "svdpp",
    "vsknn": "sknn", "sessionknn": "sknn",  # V-SKNN (Ludewig & Jannach 2018)
}

#: Names other libraries use for something recforge has under another name, or has only
#: a relative of: an error saying so (keys folded as in :data:`ALIASES`).
HINTS: dict[str, str] = {
    "lightfm": "recforge's LightFM-style model is 'hybrid_bpr' (id plus feature "
               "embeddings, BPR or softmax loss)",
    "implicit": "recforge's counterpart of implicit's AlternatingLeastSquares is 'als' (its "
                "BayesianPersonalizedRanking: 'bpr'; ItemItemRecommender: 'itemknn')",
    "implicitals": "recforge's implicit-feedback ALS (as in implicit) is 'als'",
    "alternatingleastsquares": "recforge's implicit-feedback ALS (as in implicit) is 'als'",
    "svd": "recforge's counterpart of Surprise's SVD (biased matrix factorisation of ratings "
           "by SGD) is 'mf'",
    "funksvd": "recforge's Funk-SVD (biased matrix factorisation of ratings by SGD) is 'mf'",
    "biasedmf": "recforge's biased matrix factorisation of ratings is 'mf'",
    "ncf": "NCF (He et al. 2017) is three models here: 'gmf', 'mlp' and 'neumf' (their "
           "fusion, the paper's best)",
    "slim": "recforge has no SLIM; 'ease' is the closest (a closed-form item-item model, "
            "without SLIM's non-negativity and L1 penalty)",
    "ngcf": "recforge has no NGCF; 'lightgcn' is its simplified successor",
    "knn": "recforge's neighbourhood models are 'itemknn' (item-based) and 'userknn' "
           "(user-based)",
    "itemitemrecommender": "recforge's item-item kNN (as in implicit) is 'itemknn'",
    "bayesianpersonalizedranking": "recforge's BPR matrix factorisation is 'bpr'",
}


def _folded(name: str) -> str:
    """``name`` as names are compared: lower case, without ``-``, ``_`` and spaces."""
    return re.sub(r"[-_\s]", "", name).lower()


def resolve_name(name: Any) -> str:
    """The registry name that ``name`` gives (``EASE`` -> ``ease``, ``popularity`` ->
    ``pop``); :class:`ConfigError` for any other name, saying what recforge calls the
    model when ``name`` is another library's (``lightfm`` -> ``hybrid_bpr``), or naming
    close matches."""
    table = {**_plugins(), **BUILTIN}
    if isinstance(name, str) and name in table:
        return name
    if not isinstance(name, str):
        raise ConfigError(f"a model name must be text, got {shown(name)}")
    key = _folded(name)
    same = sorted(n for n in table if _folded(n) == key)
    if len(same) == 1:
        return same[0]
    available = f" (available: {', '.join(sorted(table))})"
    if same:
        raise ConfigError(f"model name {name!r} is ambiguous: {' or '.join(same)}")
    if key in ALIASES and ALIASES[key] in table:
        return ALIASES[key]
    if key in HINTS:
        raise ConfigError(f"unknown model {name!r}; {HINTS[key]}" + available)
    folded = {_folded(n): n for n in table}
    hint = get_close_matches(key, list(folded), n=1)
    raise ConfigError(f"unknown model {shown(name)}"
                      + (f"; did you mean {folded[hint[0]]!r}?" if hint else "") + available)


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
    """The class registered under ``name`` (a ``Recommender`` subclass; ``name`` as
    :func:`resolve_name` takes it); :class:`ConfigError` naming close matches."""
    name = resolve_name(name)
    module, _, attr = {**_plugins(), **BUILTIN}[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_model(name: str, **params: Any) -> Any:
    """Instantiate model ``name`` (a ``Recommender``; ``name`` as :func:`resolve_name`
    takes it) with hyperparameters, checking their names (another library's name for one
    gets a hint: ``factors`` -> ``embedding_dim``)."""
    cls = get_model_class(name)
    valid = cls._param_names()
    for key in params:
        if key not in valid:
            if str(key).startswith("dp_"):
                raise ConfigError(f"{name} does not support differentially private training "
                                  f"({key}); models that do: {', '.join(private_models())}")
            raise ConfigError(unknown_param_message(cls, key))
    return cls(**params)


def private_models() -> list[str]:
    """The models that train with differential privacy (``dp_epsilon``; imports them)."""
    return [name for name in available_models()
            if getattr(get_model_class(name), "supports_private_training", lambda: False)()]
