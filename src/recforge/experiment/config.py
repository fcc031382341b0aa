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
    metrics: [ndcg@10, recall@10]
    seeds: [0]
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recforge.errors import ConfigError

__all__ = ["DataConfig", "SplitConfig", "ModelConfig", "ExperimentConfig", "load_config",
           "SPLIT_METHODS"]

SPLIT_METHODS = ("random", "temporal", "user_temporal", "leave_one_out", "cold_start_items",
                 "files")


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
    """

    method: str = "random"
    test_size: float = 0.2
    valid_size: float = 0.0
    by_user: bool = True
    n_test: int = 1
    strategy: str = "last"
    seed: int = 0


@dataclass
class ModelConfig:
    """A model to run: registry name, keyword hyperparameters, and a display label."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class ExperimentConfig:
    """A whole experiment. ``seeds`` repeats every seeded model once per seed."""

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    models: list[ModelConfig] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["ndcg@10", "recall@10"])
    seeds: list[int] = field(default_factory=lambda: [0])
    protocol: str = "full"
    n_bootstrap: int = 1000
    save_models: bool = True
    report: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _err(source: str, path: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {path}: {message}")


def _check_keys(raw: dict[str, Any], cls: type, source: str, path: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            sug = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _err(source, f"{path}.{key}" if path else str(key),
                       f"unknown key{sug}; expected one of {names}")


def _typed(value: Any, kind: str, source: str, path: str) -> Any:
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        expected = {"str": "a string", "int": "an integer", "float": "a number",
                    "bool": "true or false"}[kind]
        raise _err(source, path, f"expected {expected}, got {value!r}")
    return float(value) if kind == "float" else value


def _section(raw: Any, cls: type, source: str, path: str, kinds: dict[str, str]) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise _err(source, path, f"expected a mapping, got {type(raw).__name__}")
    _check_keys(raw, cls, source, path)
    values = {}
    for key, val in raw.items():
        if val is None:
            values[key] = None
            continue
        if kinds[key] == "files" and isinstance(val, list):
            values[key] = [_typed(v, "str", source, f"{path}.{key}[{i}]")
                           for i, v in enumerate(val)]
            continue
        values[key] = _typed(val, "str" if kinds[key] == "files" else kinds[key], source,
                             f"{path}.{key}")
    return cls(**values)


_DATA_KINDS = {"source": "str", "train": "files", "valid": "str", "test": "str", "format": "str",
               "columns": "str", "duplicates": "str", "min_rating": "float", "k_core": "int",
               "item_features": "str", "data_dir": "str"}
_SPLIT_KINDS = {"method": "str", "test_size": "float", "valid_size": "float",
                "by_user": "bool", "n_test": "int", "strategy": "str", "seed": "int"}


def _models(raw: Any, source: str) -> list[ModelConfig]:
    from recforge.models.registry import available_models, get_model_class

    if not isinstance(raw, list) or not raw:
        raise _err(source, "models", "expected a non-empty list of model names or "
                                     "{name, params, label} mappings")
    out: list[ModelConfig] = []
    known = available_models()
    for i, entry in enumerate(raw):
        path = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            raise _err(source, path, f"expected a model name or a mapping, got {entry!r}")
        _check_keys(entry, ModelConfig, source, path)
        name = entry.get("name")
        if not isinstance(name, str):
            raise _err(source, f"{path}.name", "missing or not a string")
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            sug = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _err(source, f"{path}.name", f"unknown model {name!r}{sug}; "
                                               f"available: {', '.join(known)}")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise _err(source, f"{path}.params", "expected a mapping of hyperparameters")
        valid = get_model_class(name)._param_names()
        for key in params:
            if key not in valid:
                hint = difflib.get_close_matches(str(key), valid, n=1)
                sug = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise _err(source, f"{path}.params.{key}",
                           f"{name} has no parameter {key!r}{sug}")
        label = entry.get("label")
        if label is not None and not isinstance(label, str):
            raise _err(source, f"{path}.label", "expected a string")
        if label is not None and (not label or any(c in label for c in "/\\")
                                  or ".." in label):
            # the label names the model's folder under models/
            raise _err(source, f"{path}.label", f"expected a plain name (no '/', '\\' or "
                       f"'..': it names the folder models/LABEL), got {label!r}")
        out.append(ModelConfig(name=name, params=dict(params), label=label))
    labels = [m.display for m in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise _err(source, "models", f"two models are labelled {dup!r}; give them distinct "
                                     "'label's")
    return out


def parse_config(raw: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping (parsed YAML) into an :class:`ExperimentConfig`."""
    from recforge.evaluation.metrics import Metric

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _check_keys(raw, ExperimentConfig, source, "")
    data = _section(raw.get("data"), DataConfig, source, "data", _DATA_KINDS)
    split = _section(raw.get("split"), SplitConfig, source, "split", _SPLIT_KINDS)
    if split.method not in SPLIT_METHODS:
        raise _err(source, "split.method", f"{split.method!r} is not one of {SPLIT_METHODS}")
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
    metrics = raw.get("metrics", ["ndcg@10", "recall@10"])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    if not isinstance(metrics, list) or not metrics:
        raise _err(source, "metrics", "expected a list such as [ndcg@10, recall@10]")
    for i, m in enumerate(metrics):
        try:
            Metric.parse(str(m))
        except ConfigError as exc:
            raise _err(source, f"metrics[{i}]", str(exc)) from None
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise _err(source, "seeds", f"expected a list of integers, got {seeds!r}")
    protocol = raw.get("protocol", "full")
    if protocol not in ("full", "sampled"):
        raise _err(source, "protocol", f"expected 'full' or 'sampled', got {protocol!r}")
    if protocol == "sampled":  # what evaluate would refuse after the first model trained
        lists = [str(m) for m in metrics if Metric.parse(str(m)).kind == "lists"]
        if lists:
            raise _err(source, "protocol", f"'sampled' cannot compute {', '.join(lists)}: "
                       "coverage, ARP, Gini and novelty need the full protocol")
        if split.method == "cold_start_items":
            raise _err(source, "protocol", "'sampled' with split.method cold_start_items: a "
                       "cold-start split ranks among the held-out items, which needs the "
                       "full protocol")
    name = raw.get("name", "experiment")
    if (not isinstance(name, str) or not name or any(c in name for c in "/\\")
            or name in (".", "..")):
        raise _err(source, "name", f"expected a plain folder name (no slashes, not '.' or "
                                   f"'..'), got {name!r}")
    n_boot = raw.get("n_bootstrap", 1000)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 10:
        raise _err(source, "n_bootstrap", "expected an integer >= 10")
    save = raw.get("save_models", True)
    if not isinstance(save, bool):
        raise _err(source, "save_models", "expected true or false")
    report = raw.get("report", True)
    if not isinstance(report, bool):
        raise _err(source, "report", "expected true or false")
    return ExperimentConfig(name=name, data=data, split=split, models=models,
                            metrics=[str(m) for m in metrics], seeds=list(seeds),
                            protocol=protocol, n_bootstrap=n_boot, save_models=save,
                            report=report)


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate an experiment YAML file. Relative data paths are resolved against
    the file's directory."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML: "
                          f"{getattr(exc, 'problem', exc)}") from None
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
    from recforge.data.datasets import is_dataset_name

    if d.source and not os.path.isabs(d.source) and not d.source.startswith("events:") and (
            (base / d.source).is_file() or not is_dataset_name(d.source)):
        d.source = str(base / d.source)
    return config
