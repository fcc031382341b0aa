"""``blend``: a weighted sum of other models' standardized scores.

Models that learn different things make different mistakes: EASE's item-item weights
capture local co-occurrence, a factor model such as iALS captures global taste. Adding
their scores, each standardized per user (zero mean, unit variance over the catalogue, so
that neither scale dominates), is the simplest ensemble that helps; the weights are
hyperparameters, chosen on validation data like any other (``recforge tune``).

Each component is fitted on the same training data and saved inside the blend's artefact
(its tensors under ``COMPONENT.``), so a blend is served, evaluated and loaded like any other
model. Recommendations for histories (users the model never saw) and similar items are
blended the same way when every component supports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.models.artifact import StateSpec, prefixed
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    MAX_NUMBER,
    ParamRule,
    check_params,
    choice_rule,
    extra_value,
    number_rule,
    optional_rule,
    shown,
)
from recforge.models.registry import create_model, get_model_class

__all__ = ["Blend"]

_DICT_RULE = ParamRule(lambda v: isinstance(v, dict), "a JSON object")
_MODELS_RULE = ParamRule(
    lambda v: (isinstance(v, dict) and len(v) > 0
               and all(isinstance(p, dict) and "." not in k for k, p in v.items())),
    "a non-empty mapping of model names to their hyperparameters")
_WEIGHTS_RULE = ParamRule(
    lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w)
        for w in v.values())),
    "null or a mapping of model names to finite numbers")

NORMALIZATIONS = ("zscore", "none")


def _standardize(scores: torch.Tensor, among: torch.Tensor | None = None) -> torch.Tensor:
    """Per row: zero mean, unit variance (a constant row becomes zeros). ``among``: a mask
    of the entries whose mean and spread count (the others are shifted and scaled alike)."""
    if among is None:
        mean = scores.mean(dim=-1, keepdim=True)
        if scores.shape[-1] < 2:  # one item has no spread: it standardizes to 0
            return torch.zeros_like(scores)
        std = scores.std(dim=-1, keepdim=True).clamp_min(1e-12)
        return (scores - mean) / std
    w = among.to(scores.dtype)
    n = w.sum(dim=-1, keepdim=True)
    mean = (scores * w).sum(dim=-1, keepdim=True) / n.clamp_min(1)
    var = (((scores - mean) * w) ** 2).sum(dim=-1, keepdim=True) / (n - 1).clamp_min(1)
    std = torch.where(n > 1, var.sqrt(), torch.ones_like(var)).clamp_min(1e-12)
    return (scores - mean) / std


class Blend(Recommender):
    """Weighted sum of component models' per-user standardized scores.

    Parameters
    ----------
    models:
        Component name -> its hyperparameters, e.g. ``{"ease": {"reg": 500}, "als":
        {"embedding_dim": 512}}``. Names are registry names (``recforge models``).
    weights:
        Component name -> weight (1 for a component not named). Chosen on validation data.
    normalize:
        ``"zscore"`` (default): each component's scores standardized per user before the
        sum; ``"none"``: raw scores (only when the scales are comparable).

    The defaults, EASE (reg 500) with weight 1 and iALS (512 factors, 20 epochs, ALS's
    own regularisation) with weight 2, were chosen on the validation split of
    ml-1m-implicit (train.txt -> valid.txt, NDCG@20 over ALS weights 0-5); see
    docs/models.md.
    """

    name = "blend"
    #: folds in histories and finds similar items when every component does (the default
    #: blend's do; a component that cannot raises when asked)
    capabilities = Capabilities(folds_in_history=True, similar_items=True)

    def __init__(self, models: dict[str, dict[str, Any]] | None = None,
                 weights: dict[str, float] | None = None, normalize: str = "zscore") -> None:
        default = models is None
        # ALS at 512 factors with ALS's own regularisation (chosen across datasets; not
        # a reg of its own: "reg": 0.012 was right for the weight ALS used until
        # December 2026 and, once ALS's weight changed, left the blend under EASE alone)
        self.models = models if models is not None else {
            "ease": {"reg": 500.0},
            "als": {"embedding_dim": 512, "epochs": 20},
        }
        # The default weights belong to the default models; other models weigh 1 each.
        self.weights = weights if weights is not None else (
            {"ease": 1.0, "als": 2.0} if default else None)
        self.normalize = normalize

    # ----------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        if not isinstance(self.models, dict) or not self.models:
            raise ConfigError("blend: models must be a non-empty mapping of model name -> "
                              "hyperparameters")
        for name, params in self.models.items():
            if not isinstance(name, str):
                raise ConfigError(f"blend: models: a model name is text, got {shown(name)}")
            if name == self.name:
                raise ConfigError("blend: a blend cannot contain a blend")
            try:
                get_model_class(name)  # ConfigError naming close matches
            except ConfigError as exc:
                raise ConfigError(f"blend: models: {exc}") from None
            if not isinstance(params, dict):
                raise ConfigError(f"blend: hyperparameters of {name!r} must be a mapping, "
                                  f"got {type(params).__name__}")
            # each component's own checks now, not when the blend trains it
            component = create_model(name, **params)
            try:
                component._check_finite_params()
                component._validate_params()
            except ConfigError as exc:
                raise ConfigError(f"blend: models.{name}: {exc}") from None
        check_params(self, {"weights": optional_rule(ParamRule(
            lambda v: isinstance(v, dict), "a mapping of model names to numbers"))})
        unknown = [k for k in (self.weights or {}) if k not in self.models]
        if unknown:
            raise ConfigError(f"blend: weights for models not in the blend: "
                              f"{shown(unknown)}")
        for name, w in (self.weights or {}).items():
            if not number_rule(-MAX_NUMBER, MAX_NUMBER).ok(w):
                raise ConfigError(f"blend: weight of {name!r} must be a number, got "
                                  f"{shown(w)}")
        check_params(self, {"normalize": choice_rule(*NORMALIZATIONS)})

    def _weight(self, name: str) -> float:
        return float((self.weights or {}).get(name, 1.0))

    def _component(self, name: str) -> Recommender:
        return create_model(name, **self.models[name])

    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        self.components_: dict[str, Recommender] = {}
        for name in self.models:
            self.components_[name] = self._component(name).fit(train, valid)

    # ----------------------------------------------------------------------------------
    def _combine(self, parts: list[tuple[str, torch.Tensor]],
                 among: list[torch.Tensor] | None = None) -> torch.Tensor:
        total = None
        for j, (name, scores) in enumerate(parts):
            s = scores.float()
            if self.normalize == "zscore":
                s = _standardize(s, None if among is None else among[j])
            s = self._weight(name) * s
            total = s if total is None else total + s
        assert total is not None
        return total

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self._combine([(n, m._score(users)) for n, m in self.components_.items()])

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        parts = []
        for n, m in self.components_.items():
            if not m.supports_history:
                raise ModelError(f"blend: component {n} cannot score a history of a user it "
                                 "never saw")
            parts.append((n, m._score_history(items, values).reshape(1, -1)))
        return self._combine(parts).reshape(-1)

    def _item_similarity(self, items: torch.Tensor) -> torch.Tensor:
        # A similarity of exactly 0 means "no similarity" (similar_items leaves it out), and
        # an item's similarity to itself is not a neighbour's: neither counts in a row's
        # mean and spread, and an item no component finds similar stays at 0.
        parts, among = [], []
        rows = torch.arange(len(items))
        for n, m in self.components_.items():
            try:
                sims = m._item_similarity(items).float().clone()
            except ModelError:
                raise ModelError(f"blend: component {n} does not support similar_items"
                                 ) from None
            sims[rows, items] = 0.0
            parts.append((n, sims))
            among.append(sims != 0)
        total = self._combine(parts, among)
        similar = torch.stack(among).any(dim=0)
        # a similar item whose blended score is exactly 0 (a row's only or equal
        # neighbours standardize to 0) must not read as "no similarity"
        tiny = torch.finfo(total.dtype).tiny
        total = torch.where(similar & (total == 0), torch.full_like(total, tiny), total)
        total[~similar] = 0.0
        return total

    # ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, m in self.components_.items():
            for key, val in m._state().items():
                state[f"{name}.{key}"] = val
        return state

    def _extra(self) -> dict[str, Any]:
        return {name: m._extra() for name, m in self.components_.items()}

    scoring_params = {"models": _MODELS_RULE, "weights": _WEIGHTS_RULE,
                      "normalize": choice_rule(*NORMALIZATIONS)}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        # each component's own spec (its parameters checked as its own), under "NAME."
        spec: StateSpec = {}
        self.components_ = {}
        for name in self.models:
            if name == self.name:
                raise ModelError("meta.json: params.models: a blend cannot contain a blend")
            get_model_class(name)
            m = self._component(name)
            m.users_, m.items_ = self.users_, self.items_
            m.seen_, m.item_popularity_ = self.seen_, self.item_popularity_
            m.train_fingerprint_ = self.train_fingerprint_
            m._check_scoring_params(f"meta.json: params.models.{name}")
            own = extra_value(extra, name, _DICT_RULE, {})
            spec.update(prefixed(m._state_spec(own), name + "."))
            self.components_[name] = m
        return spec

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        for name, m in self.components_.items():  # made and checked by _state_spec
            prefix = name + "."
            m._restore({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                       extra.get(name, {}))
