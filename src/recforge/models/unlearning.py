"""Unlearning: remove users, and what a fitted model learned from them, from the model.

:meth:`Recommender.forget_users <recforge.models.base.Recommender.forget_users>` (``recforge
forget``, the server's ``DELETE /users/{id}``) calls :func:`forget_users`. What it can
promise depends on the model, declared as its class's ``forgetting`` and read with
:func:`unlearning_kind`:

``"exact"`` (``pop``, ``itemknn``, ``userknn``, ``ease``, ``als``, ``gfcf``, ``bspm``)
    The model afterwards is the model trained without those users: its item-side
    parameters equal a fit on the remaining data to float rounding (``tests/
    test_unlearning.py`` checks 1e-6). ``pop`` recounts, ``itemknn`` and the graph filters
    recompute from the remaining matrix, ``ease`` updates its inverse Gram matrix with
    Woodbury's identity (a solve the size of the number of users removed), ``als`` trains
    again from its seed on the remaining matrix (an ALS fit is not convex and its
    initialisation depends on the number of users: re-solving only the item factors
    would not give the model trained without the user, so recforge does not call that
    exact).
``"user_rows"`` (every model trained by gradient descent: ``mf``, ``bpr``, ``neumf``,
``lightgcn``, ``sasrec``, ...)
    The users' own rows (embeddings, biases, stored sequences) are removed and so are
    their training events, so they get the unknown-user answer; the item-side parameters
    were trained with their data and keep its influence until the model is trained again
    (``retrain=True``, ``recforge forget --retrain``).
``"none"``
    Models that keep other user-derived state (``sknn``'s sessions, the rating models'
    biases, feature models, blends): only ``retrain=True`` removes users.

In every case the users leave the model's vocabulary and its stored training matrix
(``seen_``); the model's ``training_data_`` (saved in ``meta.json``) gets an
``erasures`` entry with the time, the number of users and events and the method, never
an id. Item ids stay: the catalogue is not personal data (an item only the removed user
had is still in the vocabulary, with no events).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.models.artifact import CSR, Array, Module, StateSpec, _SkipMetaInit, check_state
from recforge.models.registry import BUILTIN, get_model_class

__all__ = ["EXACT", "USER_ROWS", "NONE", "GUARANTEES", "ForgetReport", "forget_users",
           "unlearning_kind", "models_forgetting"]

EXACT = "exact"
USER_ROWS = "user_rows"
NONE = "none"
#: What each kind of forgetting promises, in the words reports and docs use.
GUARANTEES = {
    EXACT: "exact: the model now equals one trained without these users (item-side "
           "parameters to float rounding); their events left the stored training matrix",
    USER_ROWS: "user rows only: the users' own parameters (embeddings, biases, sequences) "
               "and training events are gone and they get the unknown-user answer, but the "
               "item-side parameters were trained with their data and keep its influence "
               "until the model is retrained (recforge forget --retrain)",
    "retrained": "retrained: the model was fitted again, with its saved hyperparameters, on "
                 "the training data without these users",
}


@dataclass
class ForgetReport:
    """What :func:`forget_users` did. ``unknown`` lists the ids given that the model did not
    know (for the caller to show; never saved with the model)."""

    model: str
    kind: str
    method: str
    users_removed: int
    events_removed: int
    seconds: float
    unknown: list[Any] = field(default_factory=list)

    @property
    def guarantee(self) -> str:
        return GUARANTEES.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "guarantee": self.guarantee}


def unlearning_kind(model: Any) -> str:
    """``"exact"``, ``"user_rows"`` or ``"none"`` for a model or model class (see the
    module docstring). A class's ``forgetting`` holds for a subclass only when the
    subclass trains the same way (does not override ``_fit``): ``hybrid`` is an ``als``
    with item features, and forgetting by ALS's refit would drop them."""
    cls = model if isinstance(model, type) else type(model)
    owner = next((c for c in cls.__mro__ if "forgetting" in vars(c)), None)
    kind = getattr(cls, "forgetting", NONE)
    if kind == EXACT and owner is not None and cls._fit is not owner._fit:
        kind = NONE
    if kind == NONE and getattr(cls.capabilities, "gradient", False):
        kind = USER_ROWS
    return kind


def models_forgetting(kind: str) -> list[str]:
    """The built-in models whose forgetting is ``kind`` (for messages and docs)."""
    return [n for n in BUILTIN if unlearning_kind(get_model_class(n)) == kind]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def forget_users(model: Any, users: Any, *, retrain: bool = False,
                 data: Interactions | None = None) -> ForgetReport:
    """Remove ``users`` (external ids) from the fitted ``model``, in place, all or nothing.

    ``retrain``: fit the model again with its hyperparameters on the training data without
    the users: ``data`` (the original training events, e.g. with timestamps, which the
    model does not keep) or, without it, the model's own stored training matrix. Ids the
    model does not know are reported in ``ForgetReport.unknown`` and otherwise ignored.
    """
    model.check_fitted()
    kind = unlearning_kind(model)
    if not retrain and kind == NONE:
        raise ModelError(
            f"{model.name!r} cannot remove users without retraining (it keeps user-derived "
            f"state that has no exact update); retrain it without them (recforge forget "
            f"--retrain), or use a model that forgets exactly: "
            f"{', '.join(models_forgetting(EXACT))}")
    if data is not None and not retrain:
        raise ConfigError("training data are only read to retrain (retrain=True)")
    start = time.perf_counter()
    ext = np.atleast_1d(np.asarray(users, dtype=object)).ravel()
    idx = model.users_.index(ext) if len(ext) else np.empty(0, np.int64)
    unknown = list(dict.fromkeys(ext[idx < 0].tolist()))
    drop = np.unique(idx[idx >= 0])
    if not len(drop):
        return ForgetReport(model.name, kind if not retrain else "retrained", "nothing", 0, 0,
                            time.perf_counter() - start, unknown)
    keep = np.ones(model.n_users, dtype=bool)
    keep[drop] = False
    if not keep.any():
        raise ModelError(f"cannot forget all {model.n_users:,} users of the model: nothing "
                         "would remain to train on")
    before = dict(model.__dict__)
    try:
        old_seen = model.seen_.tocsr()
        removed = old_seen[drop]
        _drop_user_rows(model, keep)
        if retrain:
            kind, method = "retrained", _retrain(model, data)
        elif kind == EXACT:
            method = model._forget(keep, removed)
        else:
            method = _forget_user_rows(model, keep)
        entry = {"at": _now(), "users": int(len(drop)), "events": int(removed.nnz),
                 "kind": kind, "method": method}
        training = dict(getattr(model, "training_data_", None) or {})
        training["erasures"] = [*training.get("erasures", []), entry]
        model.training_data_ = training
    except BaseException:
        model.__dict__.clear()
        model.__dict__.update(before)
        raise
    return ForgetReport(model.name, kind, method, int(len(drop)), int(removed.nnz),
                        time.perf_counter() - start, unknown)


def _drop_user_rows(model: Any, keep: np.ndarray) -> None:
    """The base state without the users: vocabulary, training matrix, item popularity,
    and the fingerprint of the remaining training matrix (the old one hashed their data)."""
    model.users_ = model.users_.take(np.flatnonzero(keep))
    seen = model.seen_.tocsr()[keep]
    seen.sort_indices()
    model.seen_ = seen
    model.item_popularity_ = np.bincount(seen.indices, minlength=seen.shape[1]).astype(
        np.float32)
    model.train_fingerprint_ = remaining_data(model).fingerprint()


def remaining_data(model: Any) -> Interactions:
    """The model's stored training matrix as :class:`Interactions` (no timestamps: the
    model keeps none) over its vocabularies."""
    coo = model.seen_.tocoo()
    return Interactions(coo.row, coo.col, coo.data.astype(np.float32), users=model.users_,
                        items=model.items_, check=False)


def _retrain(model: Any, data: Interactions | None) -> str:
    """Fit ``model`` again (its hyperparameters) on ``data`` without the removed users, or
    on its stored training matrix; the item metadata and the record of how the training
    data were made survive the fit."""
    if data is not None:
        if not isinstance(data, Interactions):
            raise ConfigError(f"data must be Interactions, got {type(data).__name__}")
        train = data.reindex(model.users_, model.items_, unknown="drop")
        if len(train) == 0:
            raise ModelError("none of the training data's events belong to the remaining "
                             "users and items of the model: is it the model's training data?")
        method = "refit on the given data"
    else:
        if model.effective_capabilities().reads_order:
            raise ModelError(f"{model.name!r} learns from the order of events, which the saved "
                             "model does not keep: give the training data to retrain it "
                             "(recforge forget --retrain --data FILE)")
        train = remaining_data(model)
        if not model.effective_capabilities().rates:
            train = train.with_values(None) if bool(np.all(train.value == 1)) else train
        method = "refit on the stored training matrix"
    keep = {k: model.__dict__[k] for k in ("item_metadata_", "training_data_")
            if k in model.__dict__}
    model.fit(train)
    model.__dict__.update(keep)
    return method


# ---------------------------------------------------------------------------------------
# gradient models: the users' rows of every user-indexed array
def _shapes(spec: StateSpec, checked: dict[str, torch.Tensor], modules: bool
            ) -> tuple[dict[str, tuple[int, ...]], dict[str, torch.Tensor]]:
    """The shape of every array of ``spec`` (its arrays and sparse matrices, or with
    ``modules`` its modules', built on the meta device from ``checked``: nothing is
    allocated; axes declared ``None`` leave the array out), and the values of the buffers
    a module's build derives from ``checked`` (real tensors: e.g. feature tables)."""
    out: dict[str, tuple[int, ...]] = {}
    derived: dict[str, torch.Tensor] = {}
    for key, s in spec.items():
        if isinstance(s, Module) and modules:
            with torch.device("meta"), _SkipMetaInit():
                module = s.build(dict(checked))
            for name, t in module.state_dict().items():
                out[s.prefix + name] = tuple(t.shape)
                if not t.is_meta:
                    derived[s.prefix + name] = t.detach()
        elif isinstance(s, Array) and not modules and all(d is not None for d in s.shape):
            out[key] = tuple(int(d) for d in s.shape)  # type: ignore[arg-type]
        elif isinstance(s, CSR) and not modules:
            out[f"{key}_indptr"] = (s.shape[0] + 1,)
    return out, derived


def _forget_user_rows(model: Any, keep: np.ndarray) -> str:
    """Remove the users' rows from every user-indexed array the model saves, then restore
    the model from the result through the checks a load makes (:func:`check_state`):
    an array is user-indexed where its first axis shrinks by the number of users removed
    (a table of users then items, as LightGCN's, keeps its item rows)."""
    old_n, new_n = len(keep), int(keep.sum())
    state = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().cpu()
             for k, v in model._state().items()}
    extra = model._extra()
    spec = model._state_spec(extra)
    rows = torch.from_numpy(np.flatnonzero(keep))
    out: dict[str, torch.Tensor] = {}

    def cut(keys: list[str], want: dict[str, tuple[int, ...]],
            derived: dict[str, torch.Tensor]) -> None:
        for key in keys:
            t, shape = state[key], want.get(key)
            if key in out:
                continue
            if key in derived:  # a buffer the build computes from the (new) inputs
                out[key] = derived[key]
            elif shape is None or tuple(t.shape) == shape:
                out[key] = t
            elif key.endswith("_indptr") and len(t) == old_n + 1 and shape == (new_n + 1,):
                base = key[: -len("_indptr")]
                mat = sp.csr_matrix((state[f"{base}_data"].numpy(),
                                     state[f"{base}_indices"].numpy(), t.numpy()))[keep]
                out[key] = torch.from_numpy(mat.indptr.astype(np.int64))
                out[f"{base}_indices"] = torch.from_numpy(mat.indices.astype(np.int32))
                out[f"{base}_data"] = torch.from_numpy(mat.data.astype(np.float32))
            elif (t.ndim == len(shape) and t.shape[1:] == shape[1:] and t.shape[0] >= old_n
                  and t.shape[0] - shape[0] == old_n - new_n):
                tail = torch.arange(old_n, t.shape[0])
                out[key] = t[torch.cat([rows, tail])].clone()
            else:
                raise ModelError(f"{model.name}: cannot tell the users' rows of {key!r} "
                                 f"(shape {tuple(t.shape)}, expected {shape} without them); "
                                 "retrain the model without them instead")

    # the arrays and sparse matrices first: a module's build may read them
    plain = _shapes(spec, {}, modules=False)[0]
    parts = {f"{k[:-len('_indptr')]}_{p}" for k in plain if k.endswith("_indptr")
             for p in ("indices", "data")}  # a sparse matrix's, cut with its indptr
    cut([k for k in state if k in plain or k in parts], plain, {})
    cut([k for k in state if k not in out], *_shapes(spec, out, modules=True))
    checked = check_state(out, spec, f"{model.name}: forgetting users: ")
    model._restore(checked, extra)
    return "user rows removed"
