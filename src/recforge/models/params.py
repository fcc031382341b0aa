"""Rules for hyperparameters and saved metadata values, and how errors show a value.

A :class:`ParamRule` checks one JSON-able value and says in words what it asks for. Every
model checks each constructor parameter against its rule before anything is built
(:func:`check_params`); a loaded model checks the parameters it scores with and the
values of its ``meta.json`` ``extra`` (:func:`extra_value`). The bounds (``MAX_*``) are the
documented ranges of docs/models.md.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

import numpy as np

from recforge.errors import ConfigError, ModelError


@dataclass(frozen=True)
class ParamRule:
    """A check of one JSON value: ``ok(value)`` and what it asks for, in words."""

    ok: Callable[[Any], bool]
    text: str


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(
            v, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an int beyond float's range (e.g. 400 digits)
        return False


def int_rule(low: int, high: int | None = None) -> ParamRule:
    """An integer in ``low..high``."""
    return ParamRule(lambda v: _is_int(v) and low <= v and (high is None or v <= high),
                     f"an integer >= {low}" if high is None else
                     f"an integer in {low}..{high}")


def number_rule(low: float | None = None, high: float | None = None, *,
                optional: bool = False) -> ParamRule:
    """A finite number in ``[low, high]`` (``optional``: or None)."""
    def ok(v: Any) -> bool:
        if v is None:
            return optional
        return (_is_number(v) and (low is None or float(v) >= low)
                and (high is None or float(v) <= high))

    bounds = ("" if low is None and high is None else f" >= {low}" if high is None
              else f" <= {high}" if low is None else f" in [{low}, {high}]")
    return ParamRule(ok, f"a finite number{bounds}" + (" or null" if optional else ""))


def choice_rule(*values: Any) -> ParamRule:
    """One of ``values`` (of the same type: ``True`` is not ``1``)."""
    return ParamRule(lambda v: any(v == x and type(v) is type(x) for x in values),
                     "one of " + ", ".join(repr(x) for x in values))


#: Upper bounds of hyperparameters, whatever the data (docs/models.md): what a value can
#: size (a layer, a table's width, the negatives per event) or repeat, past any use; above
#: them a value is a typo, and would end in an allocation failure, an overflow in torch,
#: or the kernel's OOM killer instead of an error.
MAX_DIM = 8192            # embedding_dim, layer widths
MAX_EPOCHS = 100_000      # epochs, eval_every, patience
MAX_COUNT = 2**31 - 1     # batch_size, neighbors, block sizes (clipped to the data)
MAX_NEGATIVES = 1000      # sampled negatives per event
MAX_SEED = 2**63 - 1
#: Largest real-valued hyperparameter: they become float32 tensors.
MAX_NUMBER = float(np.finfo(np.float32).max)


def positive_rule(high: float = MAX_NUMBER) -> ParamRule:
    """A finite number in ``(0, high]``."""
    return ParamRule(lambda v: _is_number(v) and 0 < float(v) <= high,
                     f"a finite number > 0 and <= {high:g}")


def fraction_rule() -> ParamRule:
    """A number in ``[0, 1)`` (a dropout rate)."""
    return ParamRule(lambda v: _is_number(v) and 0 <= float(v) < 1, "a number in [0, 1)")


def optional_rule(rule: ParamRule) -> ParamRule:
    """``rule``, or ``None``."""
    return ParamRule(lambda v: v is None or rule.ok(v), f"null or {rule.text}")


def _is_device(v: Any) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda") or (
        v.startswith("cuda:") and 0 < len(v) - 5 <= 4 and v[5:].isascii()
        and v[5:].isdigit()))


#: Where a model trains: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``
#: (whether that device exists is checked when it is resolved).
DEVICE_RULE = ParamRule(_is_device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
SEED_RULE = int_rule(0, MAX_SEED)


def _non_finite(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return isinstance(value, (float, np.floating)) and not math.isfinite(value)


def check_finite(model_name: str, params: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for a NaN or infinite hyperparameter (a NaN passes every
    ``<`` check and trains a model of NaN), nested ones (a blend's components) included."""
    for name, value in params.items():
        if _non_finite(value):
            raise ConfigError(f"{model_name}: {name} must be a finite number, got "
                              f"{shown(value)}")


def check_params(model: Any, rules: dict[str, ParamRule]) -> None:
    """Raise :class:`ConfigError` naming the model and the parameter for the first
    hyperparameter that breaks its rule: ``_validate_params`` checks every constructor
    parameter so, before anything is built."""
    for name, rule in rules.items():
        value = getattr(model, name)
        if not rule.ok(value):
            raise ConfigError(f"{model.name}: {name} must be {rule.text}, got "
                              f"{shown(value)}")


#: ``None`` or a mapping of group names to finite weights >= 0 (``feature_weights``).
WEIGHTS_RULE = ParamRule(
    lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(k, str) and _is_number(w) and float(w) >= 0 for k, w in v.items())),
    "null or a mapping of names to finite numbers >= 0")
#: A list of strings (feature names, groups).
STRINGS_RULE = ParamRule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                         "a list of strings")
BOOL_RULE = ParamRule(lambda v: isinstance(v, bool), "true or false")
#: ``[low, high]``: two finite numbers, ``low <= high`` (a rating range).
RANGE_RULE = ParamRule(
    lambda v: (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)
               and float(v[0]) <= float(v[1])),
    "[low, high]: two finite numbers, low <= high")


class _ShortRepr(reprlib.Repr):
    """A ``repr`` with bounded work and length: a few elements per level, a few levels (a
    YAML alias bomb or a million-element list costs nothing), and an integer too long for
    ``repr`` (Python refuses over 4,300 digits) named by its size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 5, 5, 5
        self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 5
        self.maxstring = self.maxother = self.maxlong = 60

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 200:  # over 60 digits: never converted to text
            digits = int(x.bit_length() * math.log10(2)) + 1  # exact, or one too many
            digits -= abs(x) < 10 ** (digits - 1)
            return f"<an integer of {digits} digits>"
        return super().repr_int(x, level)


def shown(value: Any, limit: int = 60) -> str:
    """``value`` for an error message: bounded in length and in the work it costs."""
    text = _ShortRepr().repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


_MISSING = object()


def extra_value(extra: dict[str, Any], key: str, rule: ParamRule, default: Any = _MISSING
                ) -> Any:
    """``extra[key]`` (or ``default`` when absent and one is given) once it passes
    ``rule``; :class:`ModelError` naming the field otherwise."""
    if key not in extra:
        if default is _MISSING:
            raise ModelError(f"meta.json: extra.{key} is missing")
        return default
    value = extra[key]
    if not rule.ok(value):
        raise ModelError(f"meta.json: extra.{key} must be {rule.text}, got {shown(value)}")
    return value


# ---------------------------------------------------------------------------------------


#: Other libraries' names for hyperparameters: name -> (recforge's names, tried in turn
#: against what the model takes; who uses the name, or None for a generic one). A hint
#: only: a model never takes these names.
PARAM_ALIASES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "factors": (("embedding_dim", "factor_dim"), "implicit"),
    "n_factors": (("embedding_dim", "factor_dim"), "Surprise"),
    "no_components": (("embedding_dim",), "LightFM"),
    "embedding_size": (("embedding_dim",), "RecBole"),
    "num_factors": (("embedding_dim", "factor_dim"), None),
    "latent_dim": (("embedding_dim", "factor_dim"), None),
    "dim": (("embedding_dim", "factor_dim"), None),
    "rank": (("embedding_dim", "factor_dim"), None),
    "regularization": (("reg",), "implicit"),
    "reg_all": (("reg",), "Surprise"),
    "reg_weight": (("reg",), "RecBole"),
    "lambda_reg": (("reg",), "Cornac"),
    "lambda": (("reg",), None),
    "lambda_": (("reg",), None),
    "l2": (("reg",), "Spotlight"),
    "l2_reg": (("reg",), None),
    "iterations": (("epochs",), "implicit"),
    "n_epochs": (("epochs",), "Surprise"),
    "num_epochs": (("epochs",), None),
    "epochs_n": (("epochs",), None),
    "n_iter": (("epochs",), "Spotlight"),
    "max_iter": (("epochs",), "Cornac"),
    "lr": (("learning_rate",), "PyTorch's optimizers"),
    "lr_all": (("learning_rate",), "Surprise"),
    "k": (("neighbors",), "Surprise's KNN"),
    "topk": (("neighbors",), None),
    "n_neighbors": (("neighbors",), "scikit-learn"),
    "num_neighbors": (("neighbors",), None),
    "train_batch_size": (("batch_size",), "RecBole"),
    "num_negatives": (("n_negatives",), None),
    "neg_samples": (("n_negatives",), None),
}


def param_hint(names: list[str], key: Any) -> tuple[str, str | None] | None:
    """What to suggest for a parameter ``key`` that a model taking ``names`` does not
    take: ``(name, note)``, the recforge name of another library's (``factors`` ->
    ``("embedding_dim", "implicit calls it 'factors'")``, only when the model takes it),
    else the closest name (note ``None``); ``None`` when nothing is close."""
    if not isinstance(key, str):
        return None
    alias = PARAM_ALIASES.get(key) or PARAM_ALIASES.get(key.lower())
    if alias is not None:
        target = next((n for n in alias[0] if n in names), None)
        if target is not None:
            return target, (f"{alias[1]} calls it {key!r}" if alias[1] else None)
    close = get_close_matches(key, names, n=1)
    if not close:  # a case slip: 'Reg', 'EPOCHS'
        close = [n for n in names if n.lower() == key.lower()][:1]
    return (close[0], None) if close else None


def unknown_param_message(model_cls: type, key: Any) -> str:
    """The error for a parameter ``key`` that ``model_cls`` (a model class) does not take,
    with the closest name (or the recforge name of another library's, :func:`param_hint`)
    and the list of those it takes."""
    names = model_cls._param_names()  # type: ignore[attr-defined]
    hint = param_hint(names, key)
    return (f"{model_cls.__name__} has no parameter {shown(key)}"
            + (f"; did you mean {hint[0]!r}?" if hint else "")
            + (f" ({hint[1]})" if hint and hint[1] else "")
            + f" (parameters: {', '.join(names)})")
