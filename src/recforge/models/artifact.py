"""The saved-model format: a directory of safetensors weights, JSON metadata and Parquet
vocabularies, written atomically, read back with every part checked; no pickle.

``model.save(dir)`` and ``Recommender.load(dir)`` are the public API
(:mod:`recforge.models.base`); they call :func:`save_model` and :func:`load_model`. A
model declares what it saves with a :data:`StateSpec` (:class:`Array`, :class:`CSR`,
:class:`Module`), checked by :func:`check_state` before the model sees it. This module
reads models through the protocol every :class:`~recforge.models.base.Recommender` has
(``_state``, ``_extra``, ``_state_spec``, ``_restore``, ``_check_scoring_params``) and
resolves classes through the registry: it does not import the base class.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file

from recforge._fs import atomic_dir, read_dir_consistently
from recforge._json import json_safe
from recforge._version import __version__
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError
from recforge.models.params import shown
from recforge.models.registry import get_model_class

log = logging.getLogger(__name__)

FORMAT_NAME = "recforge-model"
FORMAT_VERSION = 1
#: The files of a saved model (item_metadata.parquet only when metadata is attached).
MODEL_FILES = ("meta.json", "weights.safetensors", "users.parquet", "items.parquet",
               "item_metadata.parquet")
_REQUIRED_FILES = {"weights.safetensors", "users.parquet", "items.parquet"}


# ---------------------------------------------------------------------------------------
# saved state: what a model declares it saves, checked in one place when it is loaded
@dataclass(frozen=True)
class Array:
    """A saved array: its ``shape`` (``None``: any length on that axis) and the ``dtype``
    the model uses. A saved array of another dtype of the same kind is cast to it (any
    float for a float; any integer, or bool, for an integer), never across kinds. Floats
    must be finite (and ``>= low`` when ``low`` is given); integers must lie in
    ``low <= v < high`` (both required for an integer array). ``equals``: a value the
    loader derives from other checked state, which the saved array must match."""

    shape: tuple[int | None, ...]
    dtype: torch.dtype = torch.float32
    low: int | None = None
    high: int | None = None
    equals: torch.Tensor | None = None


@dataclass(frozen=True)
class CSR:
    """A sparse matrix of ``shape`` saved as ``KEY_indptr`` (int64), ``KEY_indices``
    (int32 column indices) and ``KEY_data`` (finite float32): checked in full
    (``indptr`` from 0 to nnz, never decreasing; every index in range), also by scipy's
    ``check_format(full_check=True)``."""

    shape: tuple[int, int]


@dataclass(frozen=True)
class Module:
    """The state of a torch module: ``build(checked)`` makes it (on the meta device, so a
    doctored size allocates nothing; ``checked`` holds the arrays of the same spec
    checked so far), and every entry of its ``state_dict`` must be saved under
    ``prefix`` with that shape and dtype, floats finite; a buffer the build computes
    from checked state (a real tensor, not a meta one) must be saved equal to it."""

    build: Callable[[dict[str, torch.Tensor]], torch.nn.Module]
    prefix: str = ""


#: What a model saves: name -> spec (a :class:`CSR` or :class:`Module` covers several
#: arrays, named from its key or prefix).
StateSpec = dict[str, "Array | CSR | Module"]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_array(state: dict[str, torch.Tensor], name: str, spec: Array, where: str
                 ) -> torch.Tensor:
    if name not in state:
        raise ModelError(f"{where}{name}: missing")
    t = state[name]
    if not isinstance(t, torch.Tensor):
        raise ModelError(f"{where}{name}: not an array")
    shape = tuple(t.shape)
    if len(shape) != len(spec.shape) or any(want is not None and got != want
                                            for got, want in zip(shape, spec.shape,
                                                                 strict=True)):
        want_text = tuple("any" if s is None else s for s in spec.shape)
        raise ModelError(f"{where}{name}: shape {shape}, expected {want_text}")
    if spec.dtype.is_floating_point:
        if not t.dtype.is_floating_point:
            raise ModelError(f"{where}{name}: dtype {_dtype_name(t.dtype)}, expected "
                             f"{_dtype_name(spec.dtype)}")
        t = t.to(spec.dtype)
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ModelError(f"{where}{name}: holds NaN or infinite values")
        if spec.low is not None and t.numel() and float(t.min()) < spec.low:
            raise ModelError(f"{where}{name}: values below {spec.low} (from "
                             f"{float(t.min()):g})")
    else:
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise ModelError(f"{where}{name}: dtype {_dtype_name(t.dtype)}, expected "
                             f"{_dtype_name(spec.dtype)}")
        assert spec.low is not None and spec.high is not None, "an integer needs a range"
        wide = t.to(torch.int64)  # (an unsigned 64-bit value past 2**63 turns negative)
        if wide.numel():
            lo, hi = int(wide.min()), int(wide.max())
            if lo < spec.low or hi >= spec.high:
                raise ModelError(f"{where}{name}: values from {lo} to {hi}, expected "
                                 f"{spec.low} to {spec.high - 1}")
        t = wide.to(spec.dtype)
    if spec.equals is not None:
        ref = spec.equals.to(t.dtype)
        same = (torch.allclose(t, ref, rtol=1e-5, atol=1e-7) if t.dtype.is_floating_point
                else torch.equal(t, ref))
        if not same:
            raise ModelError(f"{where}{name}: does not match what the model derives from "
                             "the rest of its saved state")
    return t


def _check_csr(state: dict[str, torch.Tensor], key: str, spec: CSR, where: str
               ) -> dict[str, torch.Tensor]:
    rows, cols = spec.shape
    n_big = 1 << 62
    indptr = _check_array(state, f"{key}_indptr", Array((rows + 1,), torch.int64, 0, n_big),
                          where)
    indices = _check_array(state, f"{key}_indices", Array((None,), torch.int32, 0, cols),
                           where)
    data = _check_array(state, f"{key}_data", Array((len(indices),)), where)
    ptr = indptr.numpy()
    if ptr[0] != 0 or ptr[-1] != len(indices) or bool((np.diff(ptr) < 0).any()):
        raise ModelError(f"{where}{key}_indptr: not the row pointers of {len(indices):,} "
                         "stored values (must run from 0 to that, never decreasing)")
    try:
        sp.csr_matrix((data.numpy(), indices.numpy(), ptr), shape=(rows, cols)
                      ).check_format(full_check=True)
    except ValueError as exc:
        raise ModelError(f"{where}{key}: not a valid sparse matrix ({exc})") from None
    return {f"{key}_indptr": indptr, f"{key}_indices": indices, f"{key}_data": data}


class _SkipMetaInit(torch.overrides.TorchFunctionMode):
    """Skips the in-place initialisation of meta tensors (a module built only for its
    shapes): on the meta device torch runs each through a slow Python decomposition."""

    _INIT = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_,
             torch.Tensor.fill_, torch.nn.init.normal_, torch.nn.init.uniform_,
             torch.nn.init.zeros_, torch.nn.init.constant_}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if func in self._INIT:
            target = args[0] if args else kwargs.get("tensor")
            if getattr(target, "is_meta", False):
                return target
        return func(*args, **kwargs)


def check_state(state: dict[str, torch.Tensor], spec: StateSpec, where: str
                ) -> dict[str, torch.Tensor]:
    """Every array of ``spec`` checked in ``state`` (see :class:`Array`, :class:`CSR`,
    :class:`Module`) and cast to its declared dtype; an array the spec does not name, or
    one that breaks its spec, raises :class:`ModelError` naming ``where`` and the array."""
    out: dict[str, torch.Tensor] = {}
    for key, s in spec.items():
        if isinstance(s, Array):
            out[key] = _check_array(state, key, s, where)
        elif isinstance(s, CSR):
            out.update(_check_csr(state, key, s, where))
    for s in spec.values():
        if not isinstance(s, Module):
            continue
        try:
            with torch.device("meta"), _SkipMetaInit():
                module = s.build(dict(out))
        except (ModelError, ConfigError, DataError):
            raise
        except Exception as exc:  # sizes torch refuses (a negative dimension)
            raise ModelError(f"{where}{s.prefix}*: the saved parameters do not build the "
                             f"model ({type(exc).__name__}: {exc})") from None
        for name, ref in module.state_dict().items():
            full = s.prefix + name
            derived = None if ref.is_meta else ref.detach()
            if ref.dtype.is_floating_point:
                rule = Array(tuple(ref.shape), ref.dtype, equals=derived)
            elif derived is not None:
                rule = Array(tuple(ref.shape), ref.dtype, -(1 << 62), 1 << 62, equals=derived)
            else:
                raise ModelError(f"{where}{full}: an integer array the model neither derives "
                                 "nor bounds")
            out[full] = _check_array(state, full, rule, where)
    stray = sorted(set(state) - set(out))
    if stray:
        raise ModelError(f"{where}{stray[0]}: unexpected array" + (
            f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""))
    return out


def prefixed(spec: StateSpec, prefix: str) -> StateSpec:
    """``spec`` with every array name under ``prefix`` (a blend's components)."""
    out: StateSpec = {}
    for key, s in spec.items():
        if isinstance(s, Module):
            def build(checked: dict[str, torch.Tensor], _b=s.build) -> torch.nn.Module:
                return _b({k[len(prefix):]: v for k, v in checked.items()
                           if k.startswith(prefix)})

            out[prefix + key] = Module(build, prefix + s.prefix)
        else:
            out[prefix + key] = s
    return out



# ---------------------------------------------------------------------------------------
# writing
def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Write the fitted ``model`` to the directory ``path``, replacing an earlier saved
    model there atomically (see :func:`recforge._fs.atomic_dir`)."""
    path = Path(path)
    check_model_target(path)
    tensors: dict[str, torch.Tensor] = {}
    for key, val in model._state().items():
        t = torch.as_tensor(val) if not isinstance(val, torch.Tensor) else val
        tensors[f"model.{key}"] = t.detach().cpu().contiguous()
    seen = model.seen_
    tensors["base.seen_indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
    tensors["base.seen_indices"] = torch.from_numpy(seen.indices.astype(np.int32))
    tensors["base.seen_data"] = torch.from_numpy(seen.data.astype(np.float32))
    tensors["base.item_popularity"] = torch.from_numpy(model.item_popularity_)
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "weights.safetensors"))
        _write_vocab(tmp / "users.parquet", model.users_)
        _write_vocab(tmp / "items.parquet", model.items_)
        names = ["weights.safetensors", "users.parquet", "items.parquet"]
        meta_frame = getattr(model, "item_metadata_", None)
        if meta_frame is not None:
            _write_item_metadata(tmp / "item_metadata.parquet", meta_frame)
            names.append("item_metadata.parquet")
        files = {f: _sha256(tmp / f) for f in names}
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "recforge_version": __version__,
            "model": model.name,
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "params": json_safe(model.get_params()),
            "n_users": model.n_users,
            "n_items": model.n_items,
            "train_fingerprint": model.train_fingerprint_,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "extra": json_safe(model._extra()),
            # how the training data were made implicit (min_rating), when known
            "training_data": json_safe(getattr(model, "training_data_", None) or {}),
            "files": files,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("saved %s to %s", model.name, path)
    return path


def _write_item_metadata(path: Path, frame: pd.DataFrame) -> None:
    out = frame.copy()
    for col in out.columns:  # lists (genres) and mixed objects as text: Parquet-safe
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: "|".join(map(str, v))
                                    if isinstance(v, (list, tuple, np.ndarray))
                                    else (None if v is None else str(v)))
    out.to_parquet(path, index=False)


def _write_vocab(path: Path, vocab: Vocabulary) -> None:
    ids = vocab.ids
    arr = pa.array(ids.astype(np.int64)) if vocab.is_integer else pa.array(ids.tolist(),
                                                                            type=pa.string())
    pq.write_table(pa.table({"id": arr}), path)




def _is_saved_model(path: Path) -> bool:
    """Whether ``path/meta.json`` parses and names the recforge model format."""
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def check_model_target(path: str | os.PathLike) -> None:
    """Refuse to save a model over anything but an earlier saved model or an empty
    directory: saving replaces the whole directory, and anything else there would be lost.

    An earlier model is a directory whose ``meta.json`` parses and names the recforge
    model format and which holds nothing but a saved model's files. A symlink is followed
    (the directory it points to is the one replaced)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ModelError(f"{path}: name the model's own directory (e.g. models/ease), not "
                         "the current or parent directory")
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if not target.exists():
        return
    if not target.is_dir():
        raise ModelError(f"{path} exists and is not a directory; a model is saved as a "
                         "directory of its own")
    names = {p.name for p in target.iterdir()}
    if not names:
        return
    if not _is_saved_model(target):
        what = ("a meta.json that is not a recforge model's" if "meta.json" in names
                else "files that are not a saved recforge model")
        raise ModelError(f"{path} exists and holds {what}; saving would replace the "
                         "directory and everything in it: choose a new or empty one")
    others = sorted(names - set(MODEL_FILES))
    if others:
        raise ModelError(f"{path} holds a saved model but also {shown(others[0])}"
                         + (f" and {len(others) - 1} other file(s)" if len(others) > 1 else "")
                         + ", which saving would delete: move them, or save elsewhere")




def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()



# ---------------------------------------------------------------------------------------
# reading
def load_model(path: str | os.PathLike, expected: type | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """The model saved in ``path`` and the ``meta.json`` it was read from (one read).

    ``expected``: a class the saved model must be an instance of (``None``: any). Whatever
    is wrong raises :class:`ModelError` naming the file and the array or field, never a
    crash later at scoring time (see ``Recommender.load_with_meta``).
    """
    path = Path(path)
    try:
        return _load(path, expected)
    except ModelError as exc:
        if str(path) in str(exc):
            raise
        raise ModelError(f"{path}: {exc}") from None  # "meta.json: extra.mean ..."
    except (ConfigError, DataError) as exc:
        raise ModelError(f"{path}: {exc}") from None
    except Exception as exc:  # a damaged directory must not surface as a traceback
        raise ModelError(f"{path}: cannot load the saved model "
                         f"({type(exc).__name__}: {exc})") from None


def _load(path: Path, expected: type | None) -> tuple[Any, dict[str, Any]]:
    try:
        meta, blobs = read_dir_consistently(path, lambda reader: _read_artifact(path, reader))
    except FileNotFoundError as exc:
        name = os.path.basename(os.fspath(exc.filename or ""))
        if os.fspath(exc.filename or "") == os.fspath(path):
            raise ModelError(f"no such directory: {path} (a model is the directory "
                             "`recforge train --out` or model.save wrote)") from None
        if name == "meta.json":
            inside = _models_inside(path)
            raise ModelError(f"{path}: not a saved recforge model (no meta.json)"
                             + (f"; it holds saved models: {', '.join(inside)}" if inside
                                else "")) from None
        raise ModelError(f"{path / name}: missing from the saved model") from None
    except NotADirectoryError:
        raise ModelError(f"{path}: not a directory (a model is saved as a directory)"
                         ) from None
    return _from_artifact(path, meta, blobs, expected), meta


def _models_inside(path: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` saved models one or two levels below ``path`` (an experiment's
    ``runs/NAME`` holds ``models/LABEL``), for the error of a directory that is none."""
    try:
        found = [str(p.parent) for pattern in ("*/meta.json", "*/*/meta.json")
                 for p in sorted(path.glob(pattern))[:limit]]
    except OSError:
        return []
    return found[:limit]


def _from_artifact(path: Path, meta: dict[str, Any], blobs: dict[str, bytes],
                   expected: type | None) -> Any:
    """The model from ``meta.json`` and the bytes of its files, every part checked."""
    meta_path = path / "meta.json"
    try:
        model_cls = get_model_class(meta["model"])
    except ConfigError as exc:
        raise ModelError(f"{meta_path}: {exc}") from None
    if expected is not None and not issubclass(model_cls, expected):
        raise ModelError(f"{path} holds a {meta['model']!r} model, not {expected.__name__}")
    model = _instantiate(model_cls, meta["params"], meta_path, path)
    model._check_scoring_params(f"{meta_path}: params")
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise ModelError(f"{meta_path}: 'extra' must be a JSON object")
    fingerprint = meta.get("train_fingerprint", "")
    if not isinstance(fingerprint, str):
        raise ModelError(f"{meta_path}: 'train_fingerprint' must be a string")
    weights = path / "weights.safetensors"
    try:
        tensors = load_tensors(blobs["weights.safetensors"])
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights}: cannot read weights ({exc})") from None
    model.users_ = _read_vocab(path / "users.parquet", blobs["users.parquet"])
    model.items_ = _read_vocab(path / "items.parquet", blobs["items.parquet"])
    n_users, n_items = len(model.users_), len(model.items_)
    for key, n in (("n_users", n_users), ("n_items", n_items)):
        if key in meta and meta[key] != n:
            raise ModelError(f"{meta_path}: {key} is {shown(meta[key])} but the "
                             f"vocabulary file holds {n:,} ids")
    base = check_state({k[len("base."):]: v for k, v in tensors.items()
                        if k.startswith("base.")},
                       {"seen": CSR((n_users, n_items)),
                        "item_popularity": Array((n_items,), low=0)},
                       f"{weights}: base.")
    model.seen_ = sp.csr_matrix((base["seen_data"].numpy(), base["seen_indices"].numpy(),
                                 base["seen_indptr"].numpy()), shape=(n_users, n_items))
    model.item_popularity_ = base["item_popularity"].numpy().copy()
    model.train_fingerprint_ = fingerprint
    training = meta.get("training_data", {})  # kept when the model is saved again
    model.training_data_ = dict(training) if isinstance(training, dict) else {}
    if "item_metadata.parquet" in blobs:
        model.item_metadata_ = _read_item_metadata(path / "item_metadata.parquet",
                                                   blobs["item_metadata.parquet"], n_items)
    stray = sorted(k for k in tensors if not k.startswith(("base.", "model.")))
    if stray:
        raise ModelError(f"{weights}: unexpected array(s) {stray[:5]}")
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    checked = check_state(state, model._state_spec(extra), f"{weights}: model.")
    model._restore(checked, extra)
    return model


def _instantiate(model_cls: type, saved: dict[str, Any], meta_path: Path,
                 path: Path) -> Any:
    # A hyperparameter added after a model was saved takes the value that reproduces the
    # saved model (the class's ``saved_before``), not the new default.
    params = {**model_cls.saved_before, **saved}
    defaults = {p.name: p.default for p in inspect.signature(model_cls.__init__)
                .parameters.values()}
    for key, val in params.items():  # JSON has no tuples
        if isinstance(defaults.get(key), tuple) and isinstance(val, list):
            params[key] = tuple(val)
    if not torch.cuda.is_available() and _on_cuda(params):
        log.warning("%s was trained on a GPU; this machine has none: loading it on the CPU",
                    path)
        params = _on_cpu(params)
    try:  # no _validate_params here: a model saved by an earlier version must load
        return model_cls(**params)
    except (TypeError, ConfigError) as exc:
        raise ModelError(f"{meta_path}: parameters do not fit {model_cls.__name__}: {exc}"
                         ) from None


def _read_artifact(path: Path, reader: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``meta.json`` (its structure checked) and the bytes of every file it lists, each
    matching its checksum, all read through ``reader`` (one directory handle)."""
    meta_path = path / "meta.json"
    raw = reader.read("meta.json")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{meta_path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelError(f"{meta_path}: not a recforge model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{meta_path}: format version {shown(meta.get('format_version'))} "
                         f"is not supported (this recforge reads version {FORMAT_VERSION})")
    for key, kind in (("model", str), ("params", dict), ("files", dict)):
        if not isinstance(meta.get(key), kind):
            raise ModelError(f"{meta_path}: {key!r} is missing or not a "
                             f"{'string' if kind is str else 'JSON object'}")
    files = meta["files"]
    unknown = sorted(set(files) - set(MODEL_FILES[1:]))
    if unknown:  # never a path: "../../etc/..." must not be read
        raise ModelError(f"{meta_path}: 'files' names {shown(unknown[0])}, which is not a "
                         f"file of a saved model ({', '.join(MODEL_FILES[1:])})")
    needed = set(_REQUIRED_FILES)
    if "item_metadata.parquet" in reader.names():
        needed.add("item_metadata.parquet")
    if needed - set(files):
        raise ModelError(f"{meta_path}: no checksum for {sorted(needed - set(files))}")
    blobs: dict[str, bytes] = {}
    for fname, digest in files.items():
        data = reader.read(fname)
        if not isinstance(digest, str) or hashlib.sha256(data).hexdigest() != digest:
            raise ModelError(f"{path / fname}: checksum mismatch (file truncated or modified)")
        blobs[fname] = data
    return meta, blobs


def _on_cuda(params: Any) -> bool:
    """Whether saved parameters (a blend's nested ones too) name a CUDA device."""
    if isinstance(params, dict):
        return any((k == "device" and isinstance(v, str) and v.startswith("cuda"))
                   or _on_cuda(v) for k, v in params.items())
    return False


def _on_cpu(params: Any) -> Any:
    """``params`` with every CUDA device replaced by the CPU."""
    if isinstance(params, dict):
        return {k: ("cpu" if k == "device" and isinstance(v, str) and v.startswith("cuda")
                    else _on_cpu(v)) for k, v in params.items()}
    return params


def _read_vocab(path: Path, data: bytes) -> Vocabulary:
    """A vocabulary file's ids: one ``id`` column of int64 or strings, no nulls, each id
    once; :class:`ModelError` naming the file otherwise."""
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ModelError(f"{path}: cannot read vocabulary ({exc})") from None
    if "id" not in table.column_names:
        raise ModelError(f"{path}: no 'id' column")
    col = table.column("id")
    if col.null_count:
        raise ModelError(f"{path}: {col.null_count:,} missing (null) ids")
    if pa.types.is_integer(col.type):
        ids = col.to_numpy().astype(np.int64)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        ids = np.asarray(col.to_pylist(), dtype=object)
    else:
        raise ModelError(f"{path}: ids of type {col.type}, expected integers or strings")
    try:
        return Vocabulary(ids)
    except ValueError as exc:  # a repeated id
        raise ModelError(f"{path}: {exc}") from None


def _read_item_metadata(path: Path, data: bytes, n_items: int) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ModelError(f"{path}: cannot read item metadata ({exc})") from None
    if len(frame) != n_items:
        raise ModelError(f"{path}: {len(frame):,} rows for the model's {n_items:,} items")
    return frame


