"""The typed experiment configuration behind ``recforge run EXPERIMENT.yaml``.

Plain dataclasses, validated field by field: an error names the file and the key path
(``experiment.yaml: models[1].params.regg: ...``) and suggests the closest valid key.

::

    name: ml100k-topk
    data:
      source: ml-100k          # a dataset name, or a file (CSV / TSV / Parquet / adjacency)
      min_rating: 4            # ranking models learn from ratings >= 4; rating models from all
    split:
      method: random           # random | temporal | user_temporal | leave_one_out | cold_start_items | files
      test_size: 0.2
      by_user: true
      seed: 0
    models:
      - ease
      - name: als
        params: {embedding_dim: 64}
      - {name: itemknn, auto: true, auto_budget: 2m}   # tuned on a validation split first
    metrics: [ndcg@10, recall@10]
    seeds: [0]

A next-item experiment (``task: next_item``) predicts each user's next event from the
events before it, with :func:`recforge.evaluation.evaluate_next_item`::

    task: next_item
    data: {source: ml-100k}
    split: {method: leave_last_out, valid_size: 0.1}   # or temporal, last_sessions
    next_item: {exclude_seen: true}                    # sampled: 100 for the old protocol
    models: [pop, sknn, sasrec, ease]
    metrics: [ndcg@10, hr@10, mrr@10]
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recforge.data.datasets import is_dataset_name
from recforge.data.formats import FORMATS as _FORMATS
from recforge.data.frames import DUPLICATE_POLICIES as _DUP_POLICIES
from recforge.data.frames import parse_columns
from recforge.errors import ConfigError, DataError
from recforge.evaluation.metrics import Metric
from recforge.experiment.budget import DEFAULT_BUDGET, parse_budget
from recforge.models.params import param_hint
from recforge.models.params import shown as _shown
from recforge.models.registry import create_model, get_model_class, resolve_name

__all__ = ["DataConfig", "SplitConfig", "ModelConfig", "NextItemConfig", "ExperimentConfig",
           "load_config", "parse_budget", "DEFAULT_BUDGET", "SPLIT_METHODS", "TASKS",
           "NEXT_ITEM_SPLITS", "THRESHOLD_ORDERS"]

SPLIT_METHODS = ("random", "temporal", "user_temporal", "leave_one_out", "leave_last_out",
                 "last_sessions", "cold_start_items", "files")
#: What an experiment measures: top-K lists of held-out items (``topk``), or each user's
#: next event from the events before it (``next_item``).
TASKS = ("topk", "next_item")
#: The splits whose test events are each user's next ones (``leave_one_out`` only with
#: ``strategy: last``; ``files``: the test file's events follow train and valid).
NEXT_ITEM_SPLITS = ("leave_last_out", "leave_one_out", "user_temporal", "temporal",
                    "last_sessions", "files")
#: When ``data.min_rating`` applies: to the whole data before the split (the default, as
#: ``to_implicit`` then ``random_split`` in Python), or to each part after it.
THRESHOLD_ORDERS = ("before_split", "after_split")
#: The next-item metrics (:func:`recforge.evaluation.evaluate_next_item`).
NEXT_ITEM_METRICS = ("hit_rate", "ndcg", "mrr")

#: Bounds on an experiment file: its size, how deep it nests, and how many values it holds
#: with every YAML alias expanded (ten aliases of ten aliases... of one list are a
#: "billion laughs": a few hundred bytes that expand to 10**9 values).
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
#: Bounds on values: seeds (as every seeded model takes them), bootstrap resamples, the
#: events per user of ``n_test`` and ``k_core``, a name or label (a folder name).
MAX_SEED = 2**63 - 1
MAX_BOOTSTRAP = 100_000
MAX_COUNT = 2**31 - 1
MAX_NAME_BYTES = 255


@dataclass
class DataConfig:
    """Where the interactions come from and how they are filtered.

    source: dataset name (``ml-100k``, ``synthetic``) or file path; with ``split.method:
        files``, leave it out and give ``train`` / ``test`` (and optionally ``valid``).
    train, valid, test: files of a ready-made split; ``train`` may be a list of files that
        are concatenated (e.g. ``[train.txt, valid.txt]``).
    format, columns: as for ``recforge train`` (``columns: user=userId,item=movieId``).
    duplicates: policy for repeated (user, item) pairs: error, first, last, sum, max, mean.
    min_rating: ratings >= this are the positives of ranking models and the relevant test
        items; rating models (``mf``) still learn from every rating. ``null``: every event.
    threshold_order: ``before_split`` (default): the data are thresholded, then split, so
        ranking models are trained and judged exactly as ``to_implicit`` then a split in
        Python does, and the rankings exclude the training positives only;
        ``after_split``: every rating is split, each part thresholded afterwards, and the
        rankings exclude every training item, however it was rated.
    k_core: keep users and items with at least this many events (before splitting).
    item_features: ``auto`` (the dataset's metadata for named datasets), a file, or null.
    data_dir: directory with extracted datasets (else ``RECFORGE_DATA_DIR`` / the cache).
    """

    source: str | None = None
    train: str | list[str] | None = None
    valid: str | None = None
    test: str | None = None
    format: str | None = None
    columns: str | None = None
    duplicates: str = "error"
    min_rating: float | None = None
    threshold_order: str = "before_split"
    k_core: int | None = None
    item_features: str | None = "auto"
    data_dir: str | None = None


@dataclass
class SplitConfig:
    """How to split (ignored keys keep their defaults).

    method: one of ``SPLIT_METHODS``.
    test_size, valid_size: fractions (random, temporal, cold_start_items).
    by_user: random split per user (each user keeps ``1 - test_size`` of their events).
    n_test: events per user held out (user_temporal).
    strategy: ``last`` or ``random`` (leave_one_out).
    seed: seed of random splits.
    targets: ``first`` or ``all``: each user's first event after a next-item time cut, or
        every one (``temporal`` with ``task: next_item``).
    gap: seconds of inactivity that end a session (``last_sessions``; ``null``: the data's
        ``session`` column).
    """

    method: str = "random"
    test_size: float = 0.2
    valid_size: float = 0.0
    by_user: bool = True
    n_test: int = 1
    strategy: str = "last"
    seed: int = 0
    targets: str = "first"
    gap: float | None = None


@dataclass
class NextItemConfig:
    """Options of next-item evaluation (``task: next_item``).

    exclude_seen: leave the items of each user's input out of the ranking (never the
        target itself); off by default, as people re-watch and re-buy.
    sampled: ``null`` (full ranking) or a number of sampled negatives per target (the
        protocol of older papers, labelled ``(sampled 1+N)``).
    by_length: bin starts of the breakdown by history length.
    """

    exclude_seen: bool = False
    sampled: int | None = None
    by_length: list[int] = field(default_factory=lambda: [1, 6, 21, 51, 201])


@dataclass
class ModelConfig:
    """A model to run: registry name, keyword hyperparameters, and a display label;
    ``auto: true`` tunes the few hyperparameters that matter first (as ``recforge train
    --auto``: :mod:`recforge.experiment.auto`) within ``auto_budget`` (``60s``, ``5m``, a
    number of seconds; default 60 seconds)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    auto: bool = False
    auto_budget: str | float | None = None

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class ExperimentConfig:
    """A whole experiment. ``seeds`` repeats every seeded model once per seed."""

    name: str = "experiment"
    task: str = "topk"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    models: list[ModelConfig] = field(default_factory=list)
    next_item: NextItemConfig = field(default_factory=NextItemConfig)
    metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@10"])
    seeds: list[int] = field(default_factory=lambda: [0])
    protocol: str = "full"
    n_bootstrap: int = 1000
    save_models: bool = True
    report: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (``parse_config`` reads it back; a top-K config has no
        ``next_item`` section)."""
        out = dataclasses.asdict(self)
        if self.task != "next_item":
            del out["next_item"]
        return out


def _err(source: str, path: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {path}: {message}")


def _key(key: Any) -> str:
    """A mapping key as it appears in a key path (keys need not be text in YAML)."""
    return key if isinstance(key, str) and len(key) <= 60 else _shown(key)


def _check_keys(raw: dict[Any, Any], cls: type, source: str, path: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1) if isinstance(key, str) else []
            sug = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _err(source, f"{path}.{_key(key)}" if path else _key(key),
                       f"unknown key{sug}; expected one of {names}")


def _plain_name(value: Any) -> bool:
    """A folder name: text, not '.' or '..', no separator or control character, at most
    255 bytes (the longest file name of common file systems)."""
    return (isinstance(value, str) and value not in ("", ".", "..")
            and not any(c in "/\\" or not c.isprintable() for c in value)
            and len(value.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES)


@dataclass(frozen=True)
class _Kind:
    """What one config value must be: ``kind`` (str, path, int, float, bool, choice) and
    the bounds or choices that apply."""

    kind: str
    low: float | None = None
    high: float | None = None
    below: bool = False  # high is excluded
    choices: tuple[str, ...] = ()
    nullable: bool = False  # null is a setting (e.g. data.min_rating: every event)


def _typed(value: Any, spec: _Kind, source: str, path: str) -> Any:
    kind = spec.kind
    if kind in ("str", "path", "choice"):
        if not isinstance(value, str):
            raise _err(source, path, f"expected text, got {_shown(value)}")
        if kind == "path" and ("\0" in value or not value):
            raise _err(source, path, f"expected a file or directory name, got {_shown(value)}")
        if kind == "choice" and value not in spec.choices:
            raise _err(source, path, f"expected one of {', '.join(spec.choices)}, got "
                                     f"{_shown(value)}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _err(source, path, f"expected true or false, got {_shown(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind == "int" and not isinstance(value, int)):
        expected = "an integer" if kind == "int" else "a number"
        raise _err(source, path, f"expected {expected}, got {_shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    lo, hi = spec.low, spec.high
    if (not math.isfinite(number) or (lo is not None and number < lo)
            or (hi is not None and (number >= hi if spec.below else number > hi))):
        what = "an integer" if kind == "int" else "a finite number"
        bounds = ("" if lo is None and hi is None else
                  f" in [{lo:g}, {hi:g}{')' if spec.below else ']'}" if kind == "float"
                  and lo is not None and hi is not None else
                  f" in {int(lo)}..{int(hi)}" if lo is not None and hi is not None else
                  f" >= {lo:g}" if lo is not None else f" <= {hi:g}")
        raise _err(source, path, f"expected {what}{bounds}, got {_shown(value)}")
    return number if kind == "float" else value


def _section(raw: Any, cls: type, source: str, path: str, kinds: dict[str, _Kind]) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise _err(source, path, f"expected a mapping, got {type(raw).__name__}")
    _check_keys(raw, cls, source, path)
    values = {}
    for key, val in raw.items():
        if val is None and kinds[key].nullable:
            values[key] = None
            continue
        if key == "train" and isinstance(val, list):  # data.train: one file or a list
            if not val:
                raise _err(source, f"{path}.{key}", "expected a file or a non-empty list of "
                                                    "files")
            values[key] = [_typed(v, kinds[key], source, f"{path}.{key}[{i}]")
                           for i, v in enumerate(val)]
            continue
        if key == "by_length":  # next_item.by_length: a list of increasing bin starts
            if not isinstance(val, list) or not val or len(val) > 100:
                raise _err(source, f"{path}.{key}", f"expected a list of 1 to 100 increasing "
                           f"history lengths such as [1, 6, 21], got {_shown(val)}")
            values[key] = [_typed(v, kinds[key], source, f"{path}.{key}[{i}]")
                           for i, v in enumerate(val)]
            if any(b <= a for a, b in zip(values[key], values[key][1:], strict=False)):
                raise _err(source, f"{path}.{key}", f"expected increasing history lengths, "
                           f"got {_shown(val)}")
            continue
        values[key] = _typed(val, kinds[key], source, f"{path}.{key}")
    return cls(**values)


_PATH = _Kind("path", nullable=True)
_DATA_KINDS = {"source": _PATH, "train": _PATH, "valid": _PATH, "test": _PATH,
               "format": _Kind("choice", choices=_FORMATS, nullable=True),
               "columns": _Kind("str", nullable=True),
               "duplicates": _Kind("choice", choices=_DUP_POLICIES),
               "min_rating": _Kind("float", nullable=True),
               "threshold_order": _Kind("choice", choices=THRESHOLD_ORDERS),
               "k_core": _Kind("int", 0, MAX_COUNT, nullable=True),
               "item_features": _PATH, "data_dir": _PATH}
_SPLIT_KINDS = {"method": _Kind("choice", choices=SPLIT_METHODS),
                "test_size": _Kind("float", 0, 1, below=True),
                "valid_size": _Kind("float", 0, 1, below=True), "by_user": _Kind("bool"),
                "n_test": _Kind("int", 1, MAX_COUNT),
                "strategy": _Kind("choice", choices=("last", "random")),
                "seed": _Kind("int", 0, MAX_SEED),
                "targets": _Kind("choice", choices=("first", "all")),
                "gap": _Kind("float", 0, None, nullable=True)}
_NEXT_ITEM_KINDS = {"exclude_seen": _Kind("bool"),
                    "sampled": _Kind("int", 1, 100_000, nullable=True),
                    "by_length": _Kind("int", 1, MAX_COUNT)}


def check_model_params(model: Any, where: str, *, seeds: list[int] | None = None) -> None:
    """The hyperparameter checks ``fit`` makes, before anything trains, naming ``where``;
    with ``seeds``, a seeded model is checked with each of them (the run sets them)."""
    variants = [model]
    if seeds and "seed" in model._param_names():
        variants = [model.clone().set_params(seed=s) for s in seeds]
    for variant in variants:
        try:
            variant._check_finite_params()
            variant._validate_params()
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _models(raw: Any, source: str) -> list[ModelConfig]:
    if not isinstance(raw, list) or not raw:
        raise _err(source, "models", "expected a non-empty list of model names or "
                                     "{name, params, label} mappings")
    out: list[ModelConfig] = []
    for i, entry in enumerate(raw):
        path = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise _err(source, path, f"expected a model name or a mapping, got "
                                     f"{_shown(entry)}")
        _check_keys(entry, ModelConfig, source, path)
        name = entry.get("name")
        if not isinstance(name, str):
            raise _err(source, f"{path}.name", "missing or not a string")
        try:  # case, aliases, other libraries' names (registry.resolve_name)
            name = resolve_name(name)
        except ConfigError as exc:
            raise _err(source, f"{path}.name", str(exc)) from None
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise _err(source, f"{path}.params", f"expected a mapping of hyperparameters "
                       f"(key: value, e.g. params: {{reg: 100}}), got {_shown(params)}")
        valid = get_model_class(name)._param_names()
        for key in params:
            if key not in valid:
                form = (re.fullmatch(r"\s*(\w+)\s*(?:=|\s)\s*(\S.*?)\s*", key)
                        if isinstance(key, str) and params[key] is None else None)
                if form:  # {alpha=10} or "alpha 10": one key, no value
                    raise _err(source, f"{path}.params.{_key(key)}",
                               f"write a hyperparameter as key: value, e.g. "
                               f"{form[1]}: {form[2]}")
                hint = param_hint(valid, key)
                sug = ("" if hint is None else f" (did you mean {hint[0]!r}?"
                       + (f" {hint[1]})" if hint[1] else ")"))
                raise _err(source, f"{path}.params.{_key(key)}",
                           f"{name} has no parameter {_shown(key)}{sug}")
        if "seed" in params:
            raise _err(source, f"{path}.params.seed", "a seeded model runs once per seed of "
                       "the experiment's 'seeds' list, which sets it; give the seed there")
        label = entry.get("label")
        if label is not None and not _plain_name(label):
            # the label names the model's folder under models/
            raise _err(source, f"{path}.label", f"expected a plain name (it names the "
                       f"folder models/LABEL: no '/' or '\\', not '.' or '..', no control "
                       f"characters, at most {MAX_NAME_BYTES} bytes), got {_shown(label)}")
        auto = entry.get("auto", False)
        if not isinstance(auto, bool):
            raise _err(source, f"{path}.auto", f"expected true or false, got {_shown(auto)}")
        budget = entry.get("auto_budget")
        if budget is not None:
            if not auto:
                raise _err(source, f"{path}.auto_budget", "applies with auto: true")
            try:
                parse_budget(budget)
            except ConfigError as exc:
                raise _err(source, f"{path}.auto_budget", str(exc)) from None
        out.append(ModelConfig(name=name, params=dict(params), label=label, auto=auto,
                               auto_budget=budget))
    labels = [m.display for m in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise _err(source, "models", f"two models are labelled {dup!r}; give them distinct "
                                     "'label's")
    return out


def _metrics(raw: Any, source: str) -> list[str]:
    metrics = raw
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if not isinstance(metrics, list) or not metrics:
        raise _err(source, "metrics", "expected a list such as [ndcg@10, recall@10]")
    labels: dict[str, int] = {}
    for i, m in enumerate(metrics):
        if not isinstance(m, str):
            raise _err(source, f"metrics[{i}]", f"expected a metric name such as ndcg@10, "
                                                f"got {_shown(m)}")
        try:
            label = Metric.parse(m).label
        except ConfigError as exc:
            raise _err(source, f"metrics[{i}]", str(exc)) from None
        if label in labels:
            raise _err(source, f"metrics[{i}]", f"{label} is also metrics[{labels[label]}]")
        labels[label] = i
    return list(metrics)


def _check_next_item(raw: dict[Any, Any], data: DataConfig, split: SplitConfig,
                     metrics: list[str], protocol: Any, source: str) -> None:
    """What a ``task: next_item`` experiment needs: a split whose test events are each
    user's next ones, next-item metrics, no ``protocol`` (``next_item.sampled`` says it)."""
    if split.method not in NEXT_ITEM_SPLITS or (split.method == "leave_one_out"
                                                 and split.strategy != "last"):
        what = (f"{split.method!r} with strategy 'random'" if split.method == "leave_one_out"
                else repr(split.method))
        raise _err(source, "split.method", f"{what} does not hold out each user's next "
                   f"events, which task: next_item predicts; use one of leave_last_out, "
                   f"user_temporal, temporal (a global time cut), last_sessions or files")
    for i, m in enumerate(metrics):
        parsed = Metric.parse(m)
        if parsed.name not in NEXT_ITEM_METRICS or parsed.k is None:
            kind = "a rating metric" if parsed.kind == "rating" else "not a next-item metric"
            raise _err(source, f"metrics[{i}]", f"{m} is {kind}; task: next_item measures "
                       "hr@K (hit_rate), ndcg@K and mrr@K of each user's next event (with "
                       "one target, recall@K is hr@K)")
    if protocol != "full":
        raise _err(source, "protocol", "task: next_item takes the sampled protocol as "
                   "next_item.sampled (e.g. next_item: {sampled: 100}); remove protocol")
    if split.method == "last_sessions" and split.targets != "first":
        raise _err(source, "split.targets", "last_sessions predicts every event of a held-out "
                   "session from its prefix; targets applies to the temporal split")
    if split.method not in ("temporal", "last_sessions") and split.targets != "first":
        raise _err(source, "split.targets", f"only used with split.method temporal (a time "
                   f"cut); {split.method} holds out each user's last events; remove it")


def _check_topk(raw: dict[Any, Any], split: SplitConfig, source: str) -> None:
    """Keys of next-item experiments refused in a top-K one (they would be ignored)."""
    if "next_item" in raw:
        raise _err(source, "next_item", "only used with task: next_item; set task: next_item "
                   "or remove it")
    if split.method == "last_sessions":
        raise _err(source, "split.method", "last_sessions holds out whole sessions to "
                   "predict event by event: a next-item split (set task: next_item)")
    if split.targets != "first":
        raise _err(source, "split.targets", "only used with task: next_item and split.method "
                   "temporal; remove it")


def _seeds(raw: Any, source: str) -> list[int]:
    seeds = [raw] if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(seeds, list) or not seeds:
        raise _err(source, "seeds", f"expected a list of integers, got {_shown(seeds)}")
    seen: set[int] = set()
    for i, s in enumerate(seeds):
        _typed(s, _Kind("int", 0, MAX_SEED), source, f"seeds[{i}]")
        if s in seen:
            raise _err(source, f"seeds[{i}]", f"seed {s} is given twice")
        seen.add(s)
    return list(seeds)


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (parsed YAML) into an :class:`ExperimentConfig`: every key, type
    and bound, and every model's hyperparameters (with each seed) as ``fit`` checks them."""

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _check_keys(raw, ExperimentConfig, source, "")
    task = _typed(raw.get("task", "topk"), _Kind("choice", choices=TASKS), source, "task")
    data = _section(raw.get("data"), DataConfig, source, "data", _DATA_KINDS)
    split = _section(raw.get("split"), SplitConfig, source, "split", _SPLIT_KINDS)
    next_item = _section(raw.get("next_item"), NextItemConfig, source, "next_item",
                         _NEXT_ITEM_KINDS)
    if split.gap is not None and split.gap <= 0:
        raise _err(source, "split.gap", f"expected a number of seconds > 0, got "
                   f"{_shown(split.gap)}")
    if split.gap is not None and split.method != "last_sessions":
        raise _err(source, "split.gap", "only used with split.method last_sessions; remove it")
    if split.test_size + split.valid_size >= 1:
        raise _err(source, "split", f"test_size + valid_size must be < 1, got "
                                    f"{split.test_size:g} + {split.valid_size:g}")
    if data.columns is not None:
        try:
            parse_columns(data.columns)
        except DataError as exc:
            raise _err(source, "data.columns", exc.detail) from None
    if split.method == "files":
        if not (data.train and data.test):
            raise _err(source, "data", "split.method 'files' needs data.train and data.test")
        # keys that would be silently ignored with ready-made files
        if data.source:
            raise _err(source, "data.source", "not used with split.method 'files' (the data "
                       "are data.train / data.valid / data.test); remove it")
        if data.k_core:
            raise _err(source, "data.k_core", "not applied with split.method 'files' (the "
                       "split is given as is); filter the files beforehand or remove it")
    else:
        if not data.source:
            raise _err(source, "data.source", "missing: a dataset name or a file (or use "
                                              "split.method 'files' with data.train / "
                                              "data.test)")
        for key in ("train", "valid", "test"):
            if getattr(data, key):
                raise _err(source, f"data.{key}",
                           f"only used with split.method 'files' (this experiment splits "
                           f"data.source with {split.method!r}); set split.method: files "
                           f"(without data.source) or remove it")
    models = _models(raw.get("models"), source)
    default_metrics = (["ndcg@10", "hr@10", "mrr@10"] if task == "next_item"
                       else ["ndcg@10", "recall@10"])
    metrics = _metrics(raw.get("metrics", default_metrics), source)
    seeds = _seeds(raw.get("seeds", [0]), source)
    protocol = raw.get("protocol", "full")
    if protocol not in ("full", "sampled") or not isinstance(protocol, str):
        raise _err(source, "protocol", f"expected 'full' or 'sampled', got {_shown(protocol)}")
    if task == "next_item":
        _check_next_item(raw, data, split, metrics, protocol, source)
    else:
        _check_topk(raw, split, source)
    if protocol == "sampled":  # what evaluate would refuse after the first model trained
        lists = [m for m in metrics if Metric.parse(m).kind == "lists"]
        if lists:
            raise _err(source, "protocol", f"'sampled' cannot compute {', '.join(lists)}: "
                       "coverage, ARP, Gini and novelty need the full protocol")
        if split.method == "cold_start_items":
            raise _err(source, "protocol", "'sampled' with split.method cold_start_items: a "
                       "cold-start split ranks among the held-out items, which needs the "
                       "full protocol")
    name = raw.get("name", "experiment")
    if not _plain_name(name):
        raise _err(source, "name", f"expected a plain folder name (no '/' or '\\', not '.' "
                   f"or '..', no control characters, at most {MAX_NAME_BYTES} bytes), got "
                   f"{_shown(name)}")
    n_boot = _typed(raw.get("n_bootstrap", 1000), _Kind("int", 10, MAX_BOOTSTRAP), source,
                    "n_bootstrap")
    save = _typed(raw.get("save_models", True), _Kind("bool"), source, "save_models")
    report = _typed(raw.get("report", True), _Kind("bool"), source, "report")
    # Every model as fit will check it (with each seed the run will give it): a config that
    # parses runs, rather than stopping at its third model after two have trained.
    for i, mc in enumerate(models):
        check_model_params(create_model(mc.name, **mc.params), f"{source}: models[{i}] "
                           f"({mc.display})", seeds=seeds)
    return ExperimentConfig(name=name, task=task, data=data, split=split, models=models,
                            next_item=next_item, metrics=metrics, seeds=seeds,
                            protocol=protocol,
                            n_bootstrap=n_boot, save_models=save, report=report)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: a document nests at most ``MAX_DEPTH`` levels (deeper
    recursed until Python's stack ran out), holds at most ``MAX_VALUES`` values with its
    aliases expanded and no alias inside the value it names (the expansion is measured on
    the node graph, before any Python object is built), and no mapping holds a key twice
    (YAML keeps the last silently: a second ``models:`` dropped the first list)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with '<<' may be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class names it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found the key {_shown(key)} twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python reads at most 4,300 digits
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {len(node.value):,} characters is beyond any "
                "setting", node.start_mark) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _check_expansion(root: Any) -> None:
    """Count the values of the node graph with aliases expanded (each node's count is
    computed once, so the work is linear in the document's size), refusing an alias that
    names a value containing it."""
    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children(node))
            if size[key] > MAX_VALUES:
                raise yaml.composer.ComposerError(
                    None, None, f"holds more than {MAX_VALUES:,} values once its aliases "
                    "are expanded", node.start_mark)
            continue
        if key in size:
            continue
        if key in open_:
            raise yaml.composer.ComposerError(
                None, None, "an alias names a value that contains it", node.start_mark)
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with the bounds of :class:`_BoundedLoader`; a :class:`ConfigError`
    naming ``source`` and the line for anything it refuses or cannot parse."""
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment YAML file. Relative data paths are resolved against
    the file's directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    with path.open("rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; an experiment "
                          "file names its data files, it does not hold them")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    raw = load_yaml(text, str(path))
    config = parse_config(raw, str(path))
    base = path.resolve().parent
    d = config.data
    def resolve(value: str) -> str:
        return value if os.path.isabs(value) else str(base / value)

    for key in ("valid", "test", "item_features", "data_dir"):
        value = getattr(d, key)
        if value and value != "auto":
            setattr(d, key, resolve(value))
    if isinstance(d.train, list):
        d.train = [resolve(v) for v in d.train]
    elif d.train:
        d.train = resolve(d.train)
    # A file beside the YAML wins; otherwise a dataset name stays a name, even when a
    # directory of that name (an extracted copy of the dataset) sits beside the YAML.
    # An event store (`events:PATH_OR_URL`) is passed on as written.
    if d.source and not os.path.isabs(d.source) and not d.source.startswith("events:") and (
            (base / d.source).is_file() or not is_dataset_name(d.source)):
        d.source = str(base / d.source)
    return config
