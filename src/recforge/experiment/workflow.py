"""The workflow every command runs: read the data -> resolve item features and display
metadata -> train -> save -> evaluate.

``recforge train`` and ``recforge evaluate`` (:mod:`recforge.cli`), ``recforge run``
(:mod:`~recforge.experiment.runner`), ``recforge tune`` (:mod:`~recforge.experiment.tune`)
and ``recforge quickstart`` go through these functions, so that they read files, find item
features, train, save and score a model the same way:

- data: :func:`read_data` (files and dataset names into shared vocabularies),
  :func:`concat`, :func:`positives`, and :func:`prepare_data` (an experiment's split as a
  :class:`PreparedData`);
- item side: :func:`item_features` and :func:`display_metadata`;
- training: :func:`build_model`, :func:`fit_model` (item features to the models that use
  them, running out of memory as a :class:`~recforge.errors.ModelError` through
  :func:`fit_within_memory`), :func:`save_model` and :func:`train_and_save` (the whole of
  ``recforge train``);
- evaluation policy: :func:`split_metrics`, :func:`applicable_metrics`,
  :func:`evaluate_split` (ranking metrics on the positives, rating metrics on every rating)
  and :func:`evaluate_files` (``recforge evaluate``).

What the workflow reads of a model's capabilities (its declared
:class:`~recforge.models.contracts.Capabilities`, narrowed by its hyperparameters) it reads
through the helpers of the first section (:func:`uses_item_features`...), in this module
only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge._fs import check_output_dir
from recforge.data import split as S
from recforge.data.datasets import is_named_dataset, load_bundle, load_many
from recforge.data.features import movielens_item_features, read_features
from recforge.data.filters import k_core, to_implicit
from recforge.data.interactions import Interactions
from recforge.data.metadata import read_item_metadata
from recforge.errors import ConfigError, ModelError
from recforge.evaluation import EvaluationResult, evaluate
from recforge.evaluation.metrics import Metric, parse_metrics
from recforge.evaluation.next_item import evaluate_next_item, evaluate_sessions
from recforge.experiment.config import ExperimentConfig
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities
from recforge.models.params import shown as _shown
from recforge.models.registry import create_model, get_model_class
from recforge.training.checkpoint import CHECKPOINT, LOG

log = logging.getLogger(__name__)

__all__ = ["EVAL_SEED", "PreparedData", "ReadOptions", "TrainRequest", "TrainResult",
           "applicable_metrics", "build_model", "concat", "display_metadata",
           "evaluate_files", "evaluate_split", "fit_model", "fit_within_memory",
           "is_gradient", "is_seeded", "item_features", "learns_ratings", "named_bundle",
           "output_dir", "positives", "prepare_data", "read_data", "remove_checkpoint",
           "requires_item_features", "save_model", "split_data", "split_metrics",
           "supports_sharded_data", "train_and_save", "uses_item_features",
           "evaluate_next_item_split"]

# Sampled negatives and tie-breaks of every evaluation: one seed for all models and model
# seeds, so a leaderboard compares them on the same candidates (and the per-user paired
# test pairs values computed on the same negatives); evaluate's default, so that
# `recforge evaluate` on a saved model gives its row again.
EVAL_SEED = 0


# ---------------------------------------------------------------------------------------
# what the workflow reads of a model (a model instance or its class)
def _capabilities(model: Recommender | type[Recommender]) -> Capabilities:
    """A class's declared capabilities; an instance's as its hyperparameters narrow them."""
    return model.capabilities if isinstance(model, type) else model.effective_capabilities()


def uses_item_features(model: Recommender | type[Recommender]) -> bool:
    """Whether ``model`` learns from item features when they are given."""
    return _capabilities(model).uses_item_features


def requires_item_features(model: Recommender | type[Recommender]) -> bool:
    """Whether ``model`` cannot be fitted without item features."""
    return _capabilities(model).requires_item_features


def is_gradient(model: Recommender | type[Recommender]) -> bool:
    """Whether ``model`` (or a model class) trains by epochs of gradient steps: checkpoints,
    resuming, sparse updates and DDP apply to it."""
    return _capabilities(model).gradient


def is_seeded(model: Recommender | type[Recommender]) -> bool:
    """Whether ``model`` (or a model class) takes a ``seed``."""
    return _capabilities(model).seeded


def supports_sharded_data(model: Recommender | type[Recommender]) -> bool:
    """Whether each DDP rank of ``model`` may read only the events of the users it owns."""
    return _capabilities(model).sharded_data


def learns_ratings(model: Recommender | type[Recommender]) -> bool:
    """Whether ``model`` is fitted to rating values (it needs a rating column)."""
    return _capabilities(model).learns_ratings


# ---------------------------------------------------------------------------------------
# data
@dataclass(frozen=True)
class ReadOptions:
    """How data files are read (the options of ``recforge train`` / ``evaluate``)."""

    format: str | None = None
    columns: str | None = None
    duplicates: str = "error"
    data_dir: Path | None = None
    min_rating: float | None = None
    header: bool | None = None
    encoding: str = "utf-8"


def read_data(specs: Sequence[str], options: ReadOptions, *,
              shard: tuple[int, int] | None = None) -> list[Interactions]:
    """Each of ``specs`` (dataset names or files) read into shared vocabularies; with
    ``options.min_rating``, the events rated at least that, as implicit positives."""
    parts = load_many(list(specs), format=options.format, columns=options.columns,
                      duplicates=options.duplicates,  # type: ignore[arg-type]
                      data_dir=options.data_dir, shard=shard, header=options.header,
                      encoding=options.encoding)
    if options.min_rating is not None:
        parts = [to_implicit(p, options.min_rating) for p in parts]
    return parts


def concat(parts: Sequence[Interactions], duplicates: str | None = None) -> Interactions:
    """Several parts read together as one; ``duplicates`` (a policy, or ``None`` to keep
    every event) treats a pair found in two parts as the readers treat one within a file."""
    first, *rest = parts
    return first.concat(*rest, duplicates=duplicates) if rest else first  # type: ignore[arg-type]


def positives(data: Interactions | None, min_rating: float | None) -> Interactions | None:
    """The events rated at least ``min_rating`` as implicit positives; ``data`` as it is
    without a threshold or without ratings."""
    if data is None or min_rating is None or data.value is None:
        return data
    return to_implicit(data, min_rating)


@dataclass
class PreparedData:
    """The split an experiment runs on.

    ``train`` keeps ratings (rating models learn from it); ``train_pos`` / ``valid_pos`` /
    ``test_pos`` hold the positives (``min_rating``) that ranking models learn from and
    are judged on. With ``threshold_order`` ``before_split`` (the default) the positives
    are a split of the thresholded data, the rankings exclude the training (and
    validation) positives, and ``train`` is every rating of the same split method and
    seed less the held-out positives (rating models never see a test positive);
    ``after_split``: the parts of one split of every rating, thresholded afterwards, and
    the rankings exclude every training item.

    A next-item experiment (``task`` ``next_item``) adds ``history``, the events the
    test targets are predicted from (each user's whole earlier sequence), and its options:
    ``sessions`` (targets are the events of held-out sessions, predicted from their
    prefix), ``exclude_seen``, ``sampled``, ``by_length`` and ``gap``.
    """

    train: Interactions
    test: Interactions
    valid: Interactions | None
    train_pos: Interactions
    test_pos: Interactions
    valid_pos: Interactions | None
    item_features: Any = None
    candidates: np.ndarray | None = None
    description: str = ""
    item_metadata: pd.DataFrame | None = None
    threshold_order: str = "after_split"
    task: str = "topk"
    history: Interactions | None = None
    sessions: bool = False
    exclude_seen: bool = False
    sampled: int | None = None
    by_length: Any = None
    gap: float | None = None
    #: the dataset bundle ``item_features`` was built from (``auto``), else ``None``
    feature_bundle: Any = None

    def features_for(self, model: Any) -> Any:
        """The item features ``model`` is fitted with: :attr:`item_features`, or for a
        model that maps MovieLens text best as words and vector together
        (``movielens_words``) the bundle's features built that way (once)."""
        if self.feature_bundle is None or not getattr(model, "movielens_words", False):
            return self.item_features
        return self._features_with_words

    @functools.cached_property
    def _features_with_words(self) -> Any:
        return movielens_item_features(self.feature_bundle, words=True)

    @functools.cached_property
    def seen_at_test(self) -> Interactions:
        """The events excluded from the rankings at test time: at test time a user's
        training and validation items are both known to be theirs (left in the ranking,
        validation items would count as misses: EASE on ml-100k with a 10 % validation
        part, NDCG@10 0.271 instead of 0.303). Thresholded before the split, those are the
        positives; after it, every training event."""
        train, valid = ((self.train_pos, self.valid_pos)
                        if self.threshold_order == "before_split"
                        else (self.train, self.valid))
        return train if valid is None else train.concat(valid)

    def seen_for(self, model: Any) -> Interactions:
        """The events excluded from ``model``'s rankings at test time: what it learned
        from (its training and validation parts: every rating for a model that learns
        ratings, the positives for the others); with ``after_split``, every training
        and validation event."""
        if self.threshold_order != "before_split":
            return self.seen_at_test
        train, valid = self.training_parts(model)
        return train if valid is None else train.concat(valid)

    def training_parts(self, model: Any) -> tuple[Interactions, Interactions | None]:
        """What ``model`` learns from, and validates on: every rating for a model that
        predicts ratings, the positives for the others."""
        if model.predicts_ratings:
            return self.train, self.valid
        return self.train_pos, self.valid_pos


def split_data(cfg: ExperimentConfig, data: Interactions, *, valid: bool | None = None
               ) -> tuple[Any, np.ndarray | None]:
    """The config's split of ``data`` (with a validation part when ``valid``, by default
    when the config asks for one), and the candidate items of a cold-start split."""
    sp_cfg = cfg.split
    m, seed = sp_cfg.method, sp_cfg.seed
    valid_size = sp_cfg.valid_size if valid is None else (
        (sp_cfg.valid_size or 0.1) if valid else 0.0)
    next_item = cfg.task == "next_item"
    if m == "random":
        return S.random_split(data, sp_cfg.test_size, valid_size,
                              by_user=sp_cfg.by_user, seed=seed), None
    if m == "temporal":
        return S.temporal_split(data, sp_cfg.test_size, valid_size=valid_size,
                                next_item=next_item,
                                targets=sp_cfg.targets), None  # type: ignore[arg-type]
    if m == "user_temporal":
        return S.user_temporal_split(data, n_test=sp_cfg.n_test,
                                     n_valid=1 if valid_size > 0 else 0), None
    if m in ("leave_one_out", "leave_last_out"):
        strategy = "last" if m == "leave_last_out" else sp_cfg.strategy
        return S.leave_one_out(data, strategy=strategy,  # type: ignore[arg-type]
                               valid=valid_size > 0, seed=seed), None
    if m == "last_sessions":
        return S.last_sessions_split(data, sp_cfg.test_size, valid_size,
                                     gap=sp_cfg.gap), None
    split = S.cold_start_items(data, sp_cfg.test_size, valid_size, seed=seed)
    return split, data.items.ids[np.unique(split.test.item)]


def _without_pairs(data: Interactions, *held: Interactions | None) -> Interactions:
    """``data`` less the events whose (user, item) pair is one of ``held``'s (all over
    ``data``'s vocabularies)."""
    parts = [h for h in held if h is not None and len(h)]
    if not parts:
        return data
    n = np.int64(data.n_items)
    key = data.user.astype(np.int64) * n + data.item
    out = np.concatenate([h.user.astype(np.int64) * n + h.item for h in parts])
    return data.subset(np.flatnonzero(~np.isin(key, out)))


def _rating_side(cfg: ExperimentConfig) -> bool:
    """Whether the experiment needs every rating split (a model that learns or predicts
    ratings, or a rating metric)."""
    if split_metrics(cfg.metrics)[0]:
        return True
    return any(learns_ratings(m) or m.predicts_ratings
               for m in (create_model(mc.name, **mc.params) for mc in cfg.models))


def _read_files(cfg: ExperimentConfig) -> tuple[Interactions, Interactions,
                                                Interactions | None, str]:
    """Train, test and validation files (``split.method: files``) and their description."""
    d = cfg.data
    train_files = [d.train] if isinstance(d.train, str) else list(d.train)  # type: ignore[arg-type]
    specs = [*train_files, *([d.valid] if d.valid else []), d.test]
    parts = load_many(specs, format=d.format, columns=d.columns,  # type: ignore[arg-type]
                      duplicates=d.duplicates, data_dir=d.data_dir)  # type: ignore[arg-type]
    n = len(train_files)
    # a pair in two training files follows data.duplicates, as within one file
    train = concat(parts[:n], duplicates=d.duplicates)
    valid = parts[n] if d.valid else None
    desc = (f"files: train {' + '.join(Path(f).name for f in train_files)}, "
            f"test {Path(d.test).name}"  # type: ignore[arg-type]
            + (f", valid {Path(d.valid).name}" if d.valid else ""))
    return train, parts[-1], valid, desc


def prepare_data(cfg: ExperimentConfig, *, rating_side: bool | None = None) -> PreparedData:
    """Load, filter and split the data as the config says, with the item features and
    display metadata of a dataset that has them.

    ``data.min_rating`` applies as ``data.threshold_order`` says (see
    :class:`PreparedData`); with ``before_split`` every rating is split too (same method
    and seed) when ``rating_side`` (by default: when the experiment has a model that
    learns or predicts ratings, or a rating metric)."""
    d = cfg.data
    bundle = None
    candidates = None
    history = None
    before = d.threshold_order == "before_split" and d.min_rating is not None
    if cfg.split.method == "files":
        train, test, valid, desc = _read_files(cfg)
        train_pos, test_pos, valid_pos = (positives(p, d.min_rating)
                                          for p in (train, test, valid))
        if cfg.task == "next_item":
            history = train_pos if valid_pos is None else train_pos.concat(  # type: ignore[union-attr]
                valid_pos)
    else:
        if is_named_dataset(d.source):  # type: ignore[arg-type]
            bundle = load_bundle(d.source, data_dir=d.data_dir)  # type: ignore[arg-type]
            data = bundle.interactions
        else:
            data = load_many([d.source], format=d.format,  # type: ignore[list-item, arg-type]
                             columns=d.columns, duplicates=d.duplicates,  # type: ignore[arg-type]
                             data_dir=d.data_dir)[0]
        if d.k_core:
            data = k_core(data, d.k_core, d.k_core, compact=False)
        if before and data.value is not None:
            # threshold, then split: what to_implicit then a split does in Python
            split, candidates = split_data(cfg, positives(data, d.min_rating))  # type: ignore[arg-type]
            train_pos, test_pos, valid_pos = split.train, split.test, split.valid
            if rating_side if rating_side is not None else _rating_side(cfg):
                every, _ = split_data(cfg, data)
                # rating models learn every rating but the held-out positives
                train = _without_pairs(every.train, test_pos, valid_pos)
                test = every.test
                valid = (None if every.valid is None
                         else _without_pairs(every.valid, test_pos))
            else:
                train, test, valid = train_pos, test_pos, valid_pos
        else:
            split, candidates = split_data(cfg, data)
            train, test, valid = split.train, split.test, split.valid
            train_pos, test_pos, valid_pos = (positives(p, d.min_rating)
                                              for p in (train, test, valid))
        history = split.history
        if cfg.task == "next_item" and history is None:  # last_sessions: the prefixes
            history = split.test_input()
        desc = f"{d.source}: {cfg.split.method} split ({split!r})"
        if d.min_rating is not None:
            desc += (f", ratings >= {d.min_rating:g} kept before the split" if before
                     else f", ratings >= {d.min_rating:g} relevant in each part")
    src = d.item_features
    features = item_features(None if src in (None, "auto") else src,
                             bundle if src == "auto" else None)
    ni = cfg.next_item
    return PreparedData(train=train, test=test, valid=valid,
                        train_pos=train_pos, test_pos=test_pos,  # type: ignore[arg-type]
                        valid_pos=valid_pos, item_features=features,
                        feature_bundle=(bundle if src == "auto" and features is not None
                                        else None),
                        candidates=candidates, description=desc,
                        item_metadata=display_metadata(None, bundle),
                        threshold_order=d.threshold_order, task=cfg.task, history=history,
                        sessions=cfg.split.method == "last_sessions",
                        exclude_seen=ni.exclude_seen, sampled=ni.sampled,
                        by_length=list(ni.by_length), gap=cfg.split.gap)


# ---------------------------------------------------------------------------------------
# item features and display metadata
def named_bundle(specs: Sequence[str], data_dir: Path | None) -> Any:
    """The dataset (with its metadata) when ``specs`` is one dataset name, else ``None``."""
    if len(specs) == 1 and is_named_dataset(specs[0]):
        return load_bundle(specs[0], data_dir=data_dir)
    return None


def item_features(table: str | Path | None, bundle: Any = None, *,
                  id_column: str | None = None, model: Any = None) -> Any:
    """Item features read from ``table`` (CSV / TSV / Parquet, kinds inferred), or else a
    dataset bundle's metadata (genres, title and tag text, year; with the TF-IDF words of
    the text beside its vector for a ``model`` whose class sets ``movielens_words``);
    ``None`` when neither."""
    if table is not None:
        return read_features(table, id_column)
    if bundle is not None and getattr(bundle, "items", None) is not None:
        return movielens_item_features(bundle, words=bool(getattr(model, "movielens_words",
                                                                   False)))
    return None


def display_metadata(table: Path | None, bundle: Any = None, *,
                     id_column: str | None = None) -> pd.DataFrame | None:
    """Display metadata to keep with a trained model: ``table``'s ``title`` column when it
    has one, or else a dataset bundle's titles, years and genres; ``None`` when neither."""
    if table is not None:
        suffix = table.suffix.lower()
        frame = pd.read_parquet(table) if suffix in (".parquet", ".pq") else \
            pd.read_csv(table, sep="\t" if suffix in (".tsv", ".tab") else ",")
        col = id_column or next((c for c in ("item", "id") if c in frame.columns),
                                frame.columns[0])
        return frame.set_index(col)[["title"]] if "title" in frame.columns else None
    items = getattr(bundle, "items", None) if bundle is not None else None
    if items is None:
        return None
    cols = [c for c in ("title", "year", "genres") if c in items.columns]
    return items[cols] if cols else None


# ---------------------------------------------------------------------------------------
# training
def build_model(name: str, params: dict[str, Any], *, seed: int | None = None) -> Recommender:
    """Model ``name`` built from ``params`` (and ``seed`` when it takes one), its
    hyperparameters checked before any data is read (minutes at scale), not when fit
    starts."""
    if seed is not None:
        if is_seeded(get_model_class(name)):
            params = {**params, "seed": seed}
        else:
            log.info("%s is deterministic; --seed has no effect", name)
    model = create_model(name, **params)
    model._check_finite_params()
    model._validate_params()
    return model


def fit_within_memory(model: Any, where: str, *args: Any, **kwargs: Any) -> Any:
    """``model.fit(*args, **kwargs)``; running out of memory is a :class:`ModelError`
    naming ``where`` and the model's sizes, not a traceback (the sizes are bounded by
    validation, but what they allocate grows with the data)."""
    try:
        return model.fit(*args, **kwargs)
    except (MemoryError, RuntimeError) as exc:
        # numpy raises MemoryError, torch OutOfMemoryError on a GPU, and on a CPU a
        # RuntimeError that only its message tells apart from any other
        if not (isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError))
                or "can't allocate memory" in str(exc)):
            raise
        sizes = {k: v for k, v in model.get_params().items()
                 if k in ("embedding_dim", "mlp_embedding_dim", "layers", "batch_size",
                          "n_negatives", "neighbors", "block_size")}
        raise ModelError(f"{where}: out of memory while training ({_shown(str(exc))}); "
                         f"smaller sizes need less ({sizes})") from None


def fit_model(model: Any, where: str, train: Interactions, valid: Interactions | None = None,
              *, features: Any = None, **fit_kw: Any) -> Any:
    """Fit ``model`` on ``train`` (``valid`` for early stopping), with ``features`` when it
    uses item features; see :func:`fit_within_memory` for ``where``."""
    if features is not None and uses_item_features(model):
        fit_kw["item_features"] = features
    return fit_within_memory(model, where, train, valid, **fit_kw)


def save_model(model: Recommender, target: Path, metadata: pd.DataFrame | None = None) -> None:
    """Save ``model`` to ``target`` with its display ``metadata`` (titles...)."""
    if metadata is not None:
        model.attach_item_metadata(metadata)
    model.save(target)


def remove_checkpoint(ckpt: Path) -> None:
    """Remove what training wrote in ``ckpt`` (its checkpoint, its log, temporary files of
    theirs), and the directory only if that leaves it empty: a checkpoint directory may
    hold other files, even the saved model."""
    if not ckpt.is_dir():
        return
    for f in ckpt.iterdir():
        ours = f.name in (CHECKPOINT, LOG) or any(
            f.name.startswith(f".{name}.") for name in (CHECKPOINT, LOG))
        if ours and f.is_file():
            f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: other files stay, and so does it
        ckpt.rmdir()


@dataclass(frozen=True)
class TrainRequest:
    """What ``recforge train`` is asked to do: model ``model`` on ``data`` (files or one
    dataset name, concatenated) saved to ``out``."""

    model: str
    data: list[str]
    out: Path
    valid: str | None = None
    read: ReadOptions = ReadOptions()
    item_features: Path | None = None
    item_id_column: str | None = None
    item_metadata: Path | None = None
    resume: bool = False
    keep_checkpoint: bool = False
    sparse_updates: str = "auto"


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_and_save` did: events trained on, seconds, processes (DDP)."""

    n_events: int
    seconds: float
    processes: int = 1
    backend: str | None = None


def train_and_save(request: TrainRequest, model: Any, *, checkpoint_dir: Path,
                   dist_ctx: Any = None, choose: Any = None) -> TrainResult | None:
    """Read the data, fit ``model`` (built by :func:`build_model`), save it with its
    display metadata and remove its checkpoint unless kept. Under DDP (``dist_ctx``) every
    rank trains and rank 0 saves; the other ranks return ``None``. ``choose(model, train,
    features)``, once the data are read, returns the model to fit instead and what the
    saved model records of that choice in ``training_data`` (``--auto``)."""
    main_rank = dist_ctx is None or dist_ctx.is_main
    # Under DDP each rank reads only the events of the users it owns (Parquet is filtered
    # while it streams), except for models that propagate over the whole graph.
    shard = dist_ctx.shard if dist_ctx is not None and supports_sharded_data(model) else None
    specs = [*request.data, *([request.valid] if request.valid else [])]
    parts = read_data(specs, request.read, shard=shard)
    valid = parts.pop() if request.valid else None
    # several data files: a pair in two of them follows the duplicates policy as in a file
    train = concat(parts, duplicates=request.read.duplicates)
    if dist_ctx is not None:
        log.info("rank %d of %d: %s events (%s)", dist_ctx.rank, dist_ctx.world_size,
                 f"{len(train):,}", "the users it owns" if shard is not None
                 else "all: the model needs the whole graph")
    bundle = (named_bundle(request.data, request.read.data_dir)
              if request.item_features is None and (main_rank or uses_item_features(model))
              else None)
    features = (item_features(request.item_features, bundle, id_column=request.item_id_column,
                              model=model)
                if uses_item_features(model) else None)
    if features is not None:
        log.info("item features: %s", features)
    fit_kw: dict[str, Any] = {}
    if is_gradient(model):
        if dist_ctx is not None:
            fit_kw.update(distributed=dist_ctx.shard, sharded=shard is not None)
        fit_kw.update(checkpoint_dir=checkpoint_dir, resume=request.resume,
                      sparse_updates=request.sparse_updates)
    recorded: dict[str, Any] = {}
    if choose is not None:
        model, recorded = choose(model, train, features)
    log.info("training %s on %s", request.model, train)
    start = time.perf_counter()
    fit_model(model, request.model, train, valid, features=features, **fit_kw)
    seconds = time.perf_counter() - start
    if not main_rank:  # rank 0 writes the model
        return None
    # how the data were made implicit, for `recforge evaluate` to judge the same way
    model.training_data_ = {**recorded, "min_rating": request.read.min_rating}
    metadata = (read_item_metadata(request.item_metadata, request.item_id_column)
                if request.item_metadata is not None else
                display_metadata(request.item_features, bundle,
                                 id_column=request.item_id_column))
    save_model(model, request.out, metadata)
    if is_gradient(model) and not request.keep_checkpoint:
        remove_checkpoint(checkpoint_dir)
    return TrainResult(n_events=model._stats.n_events if shard is not None else len(train),
                       seconds=seconds,
                       processes=1 if dist_ctx is None else dist_ctx.world_size,
                       backend=None if dist_ctx is None else dist_ctx.backend)


# ---------------------------------------------------------------------------------------
# evaluation policy
def split_metrics(metrics: Sequence[str]) -> tuple[list[str], list[str]]:
    """``metrics`` as (rating metrics: RMSE, MAE; ranking and list metrics)."""
    rating = [m for m in metrics if Metric.parse(m).kind == "rating"]
    return rating, [m for m in metrics if m not in rating]


def applicable_metrics(model: Any, metrics: Sequence[str]) -> list[str]:
    """The metrics that apply to ``model``: rating metrics only to a model that predicts
    ratings, ranking metrics to every model."""
    return list(metrics) if model.predicts_ratings else split_metrics(metrics)[1]


def evaluate_split(model: Any, data: PreparedData, metrics: Sequence[str], *,
                   protocol: str = "full", n_negatives: int = 100,
                   seed: int = EVAL_SEED) -> EvaluationResult:
    """``model`` scored on ``data``'s test part: ranking metrics on the positives
    (``test_pos``, what training and validation events are excluded from the rankings,
    only ``candidates`` ranked when given); rating metrics on every test rating."""
    if data.task == "next_item":
        return evaluate_next_item_split(model, data, metrics, seed=seed)
    rating, ranking = split_metrics(metrics)
    result = None
    if ranking:
        result = evaluate(model, data.seen_for(model), data.test_pos, metrics=ranking,
                          protocol=protocol, n_negatives=n_negatives,  # type: ignore[arg-type]
                          candidates=data.candidates, seed=seed)
    if rating:
        errors = evaluate(model, data.train, data.test, metrics=rating, seed=seed)
        if result is None:
            return errors
        result.summary.update(errors.summary)
        result.notes.extend(n for n in errors.notes if n not in result.notes)
        result.seconds += errors.seconds
    if result is None:
        return EvaluationResult(summary={}, per_user=pd.DataFrame({"user": []}),
                                protocol=protocol, n_users=0, seconds=0.0)
    return result


def evaluate_next_item_split(model: Any, data: PreparedData, metrics: Sequence[str], *,
                             seed: int = EVAL_SEED) -> EvaluationResult:
    """``model``'s next-item metrics on ``data``'s test targets: each predicted from the
    user's history (:func:`~recforge.evaluation.evaluate_next_item`), or each event of a
    held-out session from its prefix (:func:`~recforge.evaluation.evaluate_sessions`),
    with the experiment's ``exclude_seen`` and ``sampled``. The per-user frame holds each
    user's mean over their targets; ``by_length`` (the breakdown by history length) is
    kept on the result."""
    opts = {"metrics": list(metrics), "exclude_seen": data.exclude_seen,
            "sampled": data.sampled, "by_length": data.by_length, "seed": seed}
    if data.sessions:
        res = evaluate_sessions(model, data.test_pos, gap=data.gap, **opts)
    else:
        res = evaluate_next_item(model, data.history, data.test_pos, **opts)  # type: ignore[arg-type]
    cols = list(res.summary)
    per_user = (res.per_target.groupby("user", sort=True)[cols].mean().reset_index()
                if len(res.per_target) else pd.DataFrame({"user": []}))
    if len(per_user):  # each user's number of targets: the leaderboard's interval weights
        per_user["targets"] = res.per_target.groupby("user", sort=True).size().to_numpy()
    out = EvaluationResult(summary=dict(res.summary), per_user=per_user,
                           protocol=res.protocol, n_users=res.n_users, seconds=res.seconds,
                           notes=list(res.notes))
    out.by_length = res.by_length  # type: ignore[attr-defined]
    out.n_targets = res.n_targets  # type: ignore[attr-defined]
    return out


def evaluate_files(model: Any, train: Interactions, test: Interactions,
                   metrics: Sequence[str], *, min_rating: float | None = None,
                   protocol: str = "full", n_negatives: int = 100) -> EvaluationResult:
    """``recforge evaluate``: ``model`` on ``test``, ``train``'s items excluded from the
    rankings. Ranking metrics count the test ratings >= ``min_rating`` as relevant (the
    test data must have ratings then) and exclude what the model learned from: the
    training ratings >= ``min_rating`` (the positives, as ``recforge run`` and
    ``to_implicit`` then a split in Python do), or every training rating for a model that
    learns ratings; RMSE / MAE are computed on every test rating."""
    parse_metrics(list(metrics))  # none, or one that is no metric: evaluate's own error
    ranking = split_metrics(metrics)[1]
    thresholded = min_rating is not None and bool(ranking)
    test_pos = to_implicit(test, min_rating) if thresholded else test
    train_pos = positives(train, min_rating) if thresholded else train
    data = PreparedData(train=train, test=test, valid=None,
                        train_pos=train_pos,  # type: ignore[arg-type]
                        test_pos=test_pos, valid_pos=None, threshold_order="before_split")
    return evaluate_split(model, data, metrics, protocol=protocol, n_negatives=n_negatives)


# ---------------------------------------------------------------------------------------
# outputs
def output_dir(out: str | Path, *, make: bool = True) -> Path:
    """``out`` made (``make``) or checked as the directory of a command's outputs;
    :class:`ConfigError` for a path that cannot be one (``-``, ``/dev/stdout``, a FIFO, a
    file) or a name with a NUL character."""
    out = Path(out)
    try:
        check_output_dir(out)
        if make:
            out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        name = str(out) if str(out).isprintable() and len(str(out)) <= 200 else _shown(
            str(out))
        raise ConfigError(f"output directory {name}: {what}") from None
    return out
