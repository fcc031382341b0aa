"""Base class of the models trained by gradient descent on the shared :class:`Trainer`.

A subclass declares its hyperparameters in ``__init__`` (the common ones are listed in
:data:`COMMON_PARAMS`) and implements:

* ``_build()`` -> ``torch.nn.Module`` (may read ``self.seen_``, ``self.n_users``,
  ``self.n_items`` and data statistics set in ``_setup``);
* ``_loss(batch)`` -> scalar tensor, for a batch from :class:`EpochSampler`;
* ``_score_users(users)`` -> ``[B, n_items]`` on the model's device;
* optionally ``_setup(train)`` (statistics such as the global mean rating, saved through
  ``_extra``; read counts and value statistics from ``self._stats``, a :class:`DataStats`
  that covers every rank's events when each DDP rank holds only its users' shard),
  ``_prepare_scoring()`` (e.g. cache propagated embeddings) and ``_item_embeddings()``.

The trainer, the sampler, persistence and scoring on CPU are handled here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError
from recforge.models.base import (
    DEVICE_RULE,
    MAX_COUNT,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_NEGATIVES,
    MAX_NUMBER,
    SEED_RULE,
    Module,
    ParamRule,
    Recommender,
    StateSpec,
    check_params,
    choice_rule,
    extra_value,
    int_rule,
    number_rule,
    optional_rule,
    positive_rule,
)
from recforge.training.batches import EpochSampler
from recforge.training.trainer import OPTIMIZERS, SCHEDULES, Trainer, resolve_device

#: A metric's name such as ``ndcg@20`` (parsed once the type is known to be text).
_METRIC_RULE = ParamRule(lambda v: isinstance(v, str) and len(v) <= 64,
                         "a metric name such as 'ndcg@20' or 'rmse'")

#: Hyperparameters shared by gradient models (names fixed by docs/conventions.md).
COMMON_PARAMS = ("embedding_dim", "epochs", "batch_size", "learning_rate", "reg", "optimizer",
                 "weight_decay", "lr_schedule", "n_negatives", "valid_metric", "patience",
                 "eval_every", "device", "seed")


@dataclass
class DataStats:
    """Counts and value statistics of the training events: of this process's data, or of
    every rank's shard together when each rank holds only the events of its users."""

    n_events: int
    user_counts: np.ndarray
    item_counts: np.ndarray
    value_sum: float = 0.0
    value_min: float = float("nan")
    value_max: float = float("nan")

    @property
    def value_mean(self) -> float:
        return self.value_sum / max(1, self.n_events)

    @classmethod
    def of(cls, train: Interactions, *, sharded: bool = False,
           device: torch.device | None = None) -> DataStats:
        stats = cls(n_events=len(train), user_counts=train.user_counts(),
                    item_counts=train.item_counts())
        if train.value is not None and len(train):
            v = train.value.astype(np.float64)
            stats.value_sum, stats.value_min, stats.value_max = (
                float(v.sum()), float(v.min()), float(v.max()))
        if not sharded:
            return stats
        import torch.distributed as dist

        dev = device or torch.device("cpu")
        counts = torch.from_numpy(np.concatenate(
            [stats.user_counts, stats.item_counts, [stats.n_events]]).astype(np.int64)).to(dev)
        dist.all_reduce(counts)
        counts = counts.cpu().numpy()
        total = torch.tensor([stats.value_sum], dtype=torch.float64, device=dev)
        dist.all_reduce(total)
        inf = float("inf")
        lo = torch.tensor([stats.value_min if stats.value_min == stats.value_min else inf],
                          dtype=torch.float64, device=dev)
        hi = torch.tensor([stats.value_max if stats.value_max == stats.value_max else -inf],
                          dtype=torch.float64, device=dev)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        nu = len(stats.user_counts)
        return cls(n_events=int(counts[-1]), user_counts=counts[:nu],
                   item_counts=counts[nu:-1], value_sum=float(total.item()),
                   value_min=float(lo.item()) if train.value is not None else float("nan"),
                   value_max=float(hi.item()) if train.value is not None else float("nan"))


class GradientRecommender(Recommender):
    """A recommender whose parameters are learned by the shared :class:`Trainer`."""

    #: Training objective, for documentation and the sampler: "rating" (pointwise values)
    #: or "ranking" (positives with sampled negatives).
    objective: str = "ranking"
    #: Whether each DDP rank may hold only the events of its own users (``sharded=True``):
    #: true for models whose loss reads only a batch's events; false for models that read
    #: the whole interaction graph (LightGCN).
    supports_sharded_data: ClassVar[bool] = True
    #: Whether the tables of :meth:`_user_parameter_names` are ``nn.Embedding`` weights that
    #: training and scoring read only by calling the embedding with user indices (never
    #: the ``.weight`` whole). Then, with data sharded by user, each DDP rank trains a
    #: compact table of its own users' rows (the trainer maps user indices through the
    #: embedding's input), so no rank passes over every user's row each step.
    user_tables_read_by_lookup: ClassVar[bool] = True
    #: Whether DDP copies rank 0's buffers to every rank before each step. recforge's
    #: buffers are constants built from data statistics that every rank computes alike
    #: (the mean rating, which items are warm, the feature matrices of ``hybrid_bpr``,
    #: several MB at scale); set it for a module whose buffers change while it trains
    #: (BatchNorm's running statistics).
    ddp_broadcast_buffers: ClassVar[bool] = False

    # ----------------------------------------------------------------------------------
    def fit(self, train: Interactions, valid: Interactions | None = None, *,
            checkpoint_dir: str | Path | None = None, resume: bool = False,
            progress: bool | None = None,
            distributed: tuple[int, int] = (0, 1),
            sharded: bool = False,
            epoch_callback: Any = None,
            max_steps_per_epoch: int | None = None,
            sparse_updates: str = "auto") -> GradientRecommender:
        """Train on ``train``; ``valid`` enables early stopping on ``valid_metric``.

        ``checkpoint_dir`` keeps a checkpoint and a per-epoch JSON log there after every
        epoch; ``resume=True`` continues a killed run from its last checkpoint.
        ``distributed=(rank, world_size)`` trains this process's part of a DDP job (the
        process group must be initialised, see :mod:`recforge.training.distributed`).
        ``sharded=True`` says that ``train`` (and ``valid``) hold only the events of the
        users this rank owns (:func:`recforge.data.sharding.user_shard`, or a reader's
        ``shard=``): counts and statistics are then summed over the ranks, each rank
        validates its own users, and rank 0 collects every rank's events at the end so the
        saved model knows every user's seen items.
        ``epoch_callback(record)`` is called after every epoch with that epoch's log record
        (loss, seconds, validation metric); an exception it raises stops training (used to
        prune hyperparameter trials). ``max_steps_per_epoch`` cuts every epoch short after
        that many batches (timing runs at scale). ``sparse_updates`` (``"auto"``, ``"on"``,
        ``"off"``) says whether the user tables take row-sparse updates, which touch only
        the batch's users' rows each step (exact with ``adagrad``; see
        :class:`~recforge.training.trainer.Trainer`).
        """
        self._fit_options = {"checkpoint_dir": checkpoint_dir, "resume": resume,
                             "progress": progress, "distributed": distributed,
                             "sharded": bool(sharded and distributed[1] > 1),
                             "epoch_callback": epoch_callback,
                             "max_steps_per_epoch": max_steps_per_epoch,
                             "sparse_updates": sparse_updates}
        try:
            return super().fit(train, valid)  # type: ignore[return-value]
        finally:
            del self._fit_options
            self.__dict__.pop("_fit_fingerprint", None)

    def _validate_common(self) -> None:
        """The parameters every gradient model shares (those it has), each against its
        rule; then the device and the validation metric."""
        rules = {
            "embedding_dim": int_rule(1, MAX_DIM), "epochs": int_rule(1, MAX_EPOCHS),
            "batch_size": int_rule(1, MAX_COUNT), "eval_every": int_rule(1, MAX_EPOCHS),
            "learning_rate": positive_rule(), "reg": number_rule(0, MAX_NUMBER),
            "weight_decay": number_rule(0, MAX_NUMBER),
            "init_std": number_rule(0, MAX_NUMBER),
            "optimizer": choice_rule(*OPTIMIZERS), "lr_schedule": choice_rule(*SCHEDULES),
            "n_negatives": int_rule(0, MAX_NEGATIVES),
            "patience": optional_rule(int_rule(1, MAX_EPOCHS)), "device": DEVICE_RULE,
            "seed": SEED_RULE, "valid_metric": optional_rule(_METRIC_RULE)}
        names = self._param_names()
        check_params(self, {k: r for k, r in rules.items() if k in names})
        resolve_device(self.device)
        metric = getattr(self, "valid_metric", None)
        if metric is not None:
            from recforge.evaluation.metrics import Metric

            try:
                kind = Metric.parse(metric).kind
            except ConfigError as exc:
                raise ConfigError(f"{self.name}: valid_metric: {exc}") from None
            if kind == "lists":  # coverage, ARP, Gini, novelty: no "better" to stop on
                raise ConfigError(f"{self.name}: valid_metric must be a ranking metric "
                                  f"(ndcg@K, recall@K...) or rmse/mae, got {metric!r}")
            if kind == "rating" and not self.predicts_ratings:
                raise ConfigError(f"{self.name}: valid_metric {metric!r} needs a model that "
                                  "predicts ratings; use a ranking metric such as ndcg@20")

    def _validate_params(self) -> None:
        self._validate_common()

    def _check_distributed(self) -> None:
        """Refuse settings that cannot train under DDP (override; raises ConfigError).
        Called by ``fit`` in every rank (all alike: the params are the same) and by
        ``recforge train --nproc`` before it launches the ranks."""

    # ----------------------------------------------------------------------------------
    def _setup(self, train: Interactions) -> None:
        """Record data statistics the module needs (override)."""

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_backward(self) -> None:
        """Hook between ``backward`` and the optimizer step (e.g. gradient surgery)."""

    def _user_parameter_names(self) -> list[str]:
        """Names (in ``module_``) of the tables with one row per user that a batch reads
        only at its own users' rows: with data sharded by user, each DDP rank keeps them to
        itself instead of all-reducing them. Default: embeddings named ``user`` or
        ``user_bias`` anywhere in the module."""
        return [name for name, _ in self.module_.named_parameters()
                if name.rsplit(".", 2)[-2:-1] in (["user"], ["user_bias"])]

    def _prepare_scoring(self) -> None:
        """Called before validation and after training (e.g. cache propagated embeddings)."""

    def _to_train_mode(self) -> None:
        self.module_.train()

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> EpochSampler:
        n_neg = int(getattr(self, "n_negatives", 0)) if self.objective == "ranking" else 0
        return EpochSampler(train, int(self.batch_size), n_neg, shard=shard)

    def _generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(int(getattr(self, "seed", 0) or 0))
        return gen

    def _checkpoint_signature(self) -> str:
        """What a checkpoint must have been written for to be resumed: the model, its
        params, the training data, the validation data (its best epoch and early-stopping
        state were measured on it), the epoch length (``max_steps_per_epoch``) and what
        :meth:`_signature_extra` adds (``hybrid_bpr``: its feature matrices)."""
        options = getattr(self, "_fit_options", {})
        payload = json.dumps({"model": self.name, "params": _plain(self.get_params()),
                              "data": self.train_fingerprint_,
                              "fit": getattr(self, "_fit_fingerprint", None),
                              "max_steps_per_epoch": options.get("max_steps_per_epoch")},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _signature_extra(self) -> dict[str, Any]:
        """More of what a checkpoint is tied to, read after ``_setup`` (override: e.g. the
        fingerprints of feature matrices passed to ``fit``)."""
        return {}

    def _fingerprint_fit_inputs(self, valid: Interactions | None, sharded: bool) -> None:
        """The fingerprint of the validation data and of :meth:`_signature_extra`, for the
        checkpoint signature; with data sharded by user, one over every rank's (so every
        rank compares a checkpoint against the same signature)."""
        mine = json.dumps({"valid": valid.fingerprint() if valid is not None else None,
                           "extra": _plain(self._signature_extra())}, sort_keys=True)
        if sharded:
            import torch.distributed as dist

            prints: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(prints, mine)
            mine = "|".join(prints)
        self._fit_fingerprint = hashlib.sha256(mine.encode()).hexdigest()[:16]

    def _fit(self, train: Interactions, valid: Interactions | None) -> None:
        self.device_ = resolve_device(getattr(self, "device", "auto"))
        options = getattr(self, "_fit_options", {})
        rank, world = options.get("distributed", (0, 1))
        if world > 1 and self.device_.type == "cuda" and self.device_.index is None:
            # One GPU per process: the one the launcher's LOCAL_RANK selected.
            self.device_ = torch.device("cuda", torch.cuda.current_device())
        if world > 1:
            self._check_distributed()
        sharded = bool(options.get("sharded", False))
        if sharded and not self.supports_sharded_data:
            raise ConfigError(f"{self.name} reads the whole interaction graph in every "
                              "step: every rank needs all events (do not shard its data)")
        from recforge.training.distributed import collective_device

        if world > 1:
            self._check_rank_data(train, valid, rank, world, sharded)

        self._stats = DataStats.of(train, sharded=sharded,
                                   device=collective_device(self.device_))
        if sharded:  # what Recommender.fit took from this rank's events, for all ranks
            self.item_popularity_ = self._stats.item_counts.astype(np.float32)
            self._combine_fingerprints()
        self._setup(train)
        self._fingerprint_fit_inputs(valid, sharded)
        self.module_ = self._build().to(self.device_)
        trainer = Trainer(
            epochs=int(self.epochs), learning_rate=float(self.learning_rate),
            optimizer=getattr(self, "optimizer", "adam"),
            weight_decay=float(getattr(self, "weight_decay", 0.0)),
            lr_schedule=getattr(self, "lr_schedule", None),
            valid_metric=getattr(self, "valid_metric", "ndcg@20"),
            patience=getattr(self, "patience", None),
            eval_every=int(getattr(self, "eval_every", 1)),
            device=self.device_, seed=int(getattr(self, "seed", 0) or 0),
            checkpoint_dir=options.get("checkpoint_dir"), resume=options.get("resume", False),
            progress=options.get("progress"), distributed=options.get("distributed", (0, 1)),
            sharded_data=sharded, epoch_callback=options.get("epoch_callback"),
            max_steps_per_epoch=options.get("max_steps_per_epoch"),
            sparse_updates=options.get("sparse_updates", "auto"))
        state = trainer.fit(self, train, valid)
        self.history_ = state.history
        self.best_epoch_ = state.best_epoch
        if sharded:
            self._collect_seen(rank)
        self.module_.eval()
        self._prepare_scoring()

    # ----------------------------------------------------------------------------------
    # data sharded by user across DDP ranks
    def _check_rank_data(self, train: Interactions, valid: Interactions | None, rank: int,
                         world: int, sharded: bool) -> None:
        """Refuse, on every rank alike, data that does not match ``sharded``: with
        ``sharded=True`` a rank holding events of users another rank owns (they would be
        trained twice, and the compact user tables cannot look them up); with
        ``sharded=False`` ranks holding different numbers of events (each rank's shard,
        which would train on part of the data, or end in a collective mismatch)."""
        import torch.distributed as dist

        from recforge.training import distributed
        from recforge.training.distributed import collective_device

        if not distributed.active():
            raise ConfigError("distributed training needs an initialised process group: "
                              "launch with `recforge train --nproc N` or torchrun")
        foreign = 0
        if sharded:
            from recforge.data.sharding import owner_of_ids

            for data in (train, valid):
                if data is not None and len(data):
                    ids = data.users.ids[np.unique(data.user)]
                    foreign += int((owner_of_ids(ids, world) != rank).sum())
        figures = torch.tensor([foreign, len(train), -len(train)], dtype=torch.int64,
                               device=collective_device(self.device_))
        dist.all_reduce(figures, op=dist.ReduceOp.MAX)
        foreign_max, most, fewest = (int(figures[0]), int(figures[1]), -int(figures[2]))
        if sharded and foreign_max:
            raise DataError(f"sharded=True, but a rank holds the events of {foreign_max:,} "
                            "users that another rank owns: give each rank only its users' "
                            "events (recforge.data.sharding.user_shard, or a reader's "
                            "shard=), or pass sharded=False when every rank holds all events")
        if not sharded and most != fewest:
            raise DataError(f"sharded=False, but the ranks hold different training data "
                            f"({fewest:,} to {most:,} events): every rank needs all events; "
                            "pass sharded=True when each rank holds its own users' shard")
    def _combine_fingerprints(self) -> None:
        """One training-data fingerprint of every rank's shard (checkpoints, meta.json)."""
        import torch.distributed as dist

        prints: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(prints, self.train_fingerprint_)
        self.train_fingerprint_ = hashlib.sha256("|".join(prints).encode()).hexdigest()[:16]

    def _collect_seen(self, rank: int) -> None:
        """Rank 0 gathers every rank's training events (the seen items a saved model keeps
        for every user); the other ranks keep their own."""
        import scipy.sparse as sp
        import torch.distributed as dist

        coo = self.seen_.tocoo()
        mine = (coo.row.astype(np.int32), coo.col.astype(np.int32),
                coo.data.astype(np.float32))
        if dist.get_backend() == "nccl":  # gather_object is not implemented for NCCL
            parts: list[Any] | None = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        else:
            parts = [None] * dist.get_world_size() if rank == 0 else None
            dist.gather_object(mine, parts, dst=0)
        if rank == 0:
            assert parts is not None
            rows = np.concatenate([p[0] for p in parts])
            cols = np.concatenate([p[1] for p in parts])
            vals = np.concatenate([p[2] for p in parts])
            self.seen_ = sp.csr_matrix((vals, (rows, cols)), shape=self.seen_.shape)

    # ----------------------------------------------------------------------------------
    def _score(self, users: torch.Tensor) -> torch.Tensor:
        self.module_.eval()
        with torch.no_grad():
            return self._score_users(users.to(self.device_)).float().cpu()

    # ----------------------------------------------------------------------------------
    def _extra_scalars(self) -> dict[str, Any]:
        """Data statistics to save (override together with ``_setup``)."""
        return {}

    def _set_extra_scalars(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_scalars` saved."""

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module_.state_dict().items()}

    def _extra(self) -> dict[str, Any]:
        return {"history": getattr(self, "history_", []),
                "best_epoch": getattr(self, "best_epoch_", -1),
                **self._extra_scalars()}

    #: the module's tables have embedding_dim columns; its build draws with init_std
    scoring_params = {"embedding_dim": int_rule(1), "init_std": number_rule(0)}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        """The training log, best epoch and :meth:`_extra_scalars` from ``extra``, each
        checked (:class:`ModelError` naming the field)."""
        self._set_extra_scalars(extra)
        self.history_ = extra_value(extra, "history", _LIST_RULE, [])
        self.best_epoch_ = extra_value(extra, "best_epoch", int_rule(-1), -1)

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        # the module's state_dict, as the saved parameters and scalars build it
        self._restore_extra(extra)
        return {"module": Module(lambda checked: self._build())}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.device_ = resolve_device(getattr(self, "device", "auto"))
        module = self._build()
        module.load_state_dict(state)
        self.module_ = module.to(self.device_).eval()
        self._prepare_scoring()


_LIST_RULE = ParamRule(lambda v: isinstance(v, list), "a list")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
