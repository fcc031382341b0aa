"""Base class of the models trained by gradient descent on the shared :class:`Trainer`.

The hyperparameters every gradient model shares are declared once, as the fields of
:class:`GradientRecommender` (with :class:`SampledGradientRecommender` adding
``n_negatives``); a subclass is a dataclass of its own parameters, redeclares a shared
field only to change its default, and lists the rules of its own parameters in
``param_rules``. It implements:

* ``_build()`` -> ``torch.nn.Module`` (may read ``self.seen_``, ``self.n_users``,
  ``self.n_items`` and data statistics set in ``_setup``);
* :meth:`training_loss` (batch) -> scalar tensor, for a batch from :class:`EpochSampler`;
* ``_score_users(users)`` -> ``[B, n_items]`` on the model's device;
* optionally ``_setup(train, options)`` (statistics such as the global mean rating, saved through
  ``_extra``; read counts and value statistics from ``self._stats``, a :class:`DataStats`
  that covers every rank's events when each DDP rank holds only its users' shard),
  ``_prepare_scoring()`` (e.g. cache propagated embeddings) and ``_item_embeddings()``.

The model is what the trainer trains
(:class:`~recforge.training.contracts.TrainableModel`); it hands the trainer its sampler
and a validation callable built on :func:`recforge.evaluation.evaluate`. Persistence and
scoring on CPU are handled here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, DataError
from recforge.evaluation import evaluate
from recforge.evaluation.evaluate import NothingToEvaluate
from recforge.evaluation.metrics import Metric
from recforge.models.artifact import Module, StateSpec
from recforge.models.base import Recommender
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.params import (
    DEVICE_RULE,
    MAX_COUNT,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_NEGATIVES,
    MAX_NUMBER,
    SEED_RULE,
    ParamRule,
    check_params,
    choice_rule,
    extra_value,
    int_rule,
    number_rule,
    optional_rule,
    positive_rule,
)
from recforge.models.registry import private_models
from recforge.training import distributed
from recforge.training.batches import EpochSampler
from recforge.training.contracts import Batch, FitContext, Validate
from recforge.training.ddp import balance_shards
from recforge.training.optim import check_optimizer, check_schedule
from recforge.training.shards import DataStats, check_rank_data, combined_fingerprint, gather_seen
from recforge.training.trainer import Trainer, resolve_device

if TYPE_CHECKING:
    from recforge.training.privacy import PrivacySpec

__all__ = ["DataStats", "GradientRecommender", "SampledGradientRecommender", "shared_params"]

#: A metric's name such as ``ndcg@20`` (parsed once the type is known to be text).
_METRIC_RULE = ParamRule(lambda v: isinstance(v, str) and len(v) <= 64,
                         "a metric name such as 'ndcg@20' or 'rmse'")
#: The largest privacy target ``dp_epsilon`` accepted.
MAX_EPSILON = 1000.0


@dataclass_transform(kw_only_default=True, eq_default=False)
@dataclass(eq=False, repr=False, kw_only=True)
class GradientRecommender(Recommender):
    """A recommender whose parameters are learned by the shared :class:`Trainer`.

    The shared hyperparameters (their ranges are documented in ``docs/models.md``):
    ``embedding_dim`` (columns of the tables), ``epochs`` (passes over the training data;
    ``None``: the class's :attr:`auto_epochs`, raised on a log too small for them to make
    ``min_steps`` optimizer steps, see :meth:`fit_epochs`), ``min_steps``, ``batch_size``
    (events per step over all ranks), ``learning_rate``, ``reg`` (L2 on the batch's rows),
    ``optimizer``, ``weight_decay`` and ``lr_schedule`` (see :class:`~recforge.training.trainer.Trainer`),
    ``valid_metric``, ``patience`` and ``eval_every`` (early stopping on validation data),
    ``init_std`` (of the initial weights), ``device`` and ``seed``; and differentially
    private training per user (:mod:`recforge.training.privacy`, on Opacus) for the models
    that offer :meth:`private_loss`: ``dp_epsilon`` (``None``: not private), ``dp_delta``
    (``None``: ``1 / n_users``), ``dp_max_grad_norm`` (each user's gradient is clipped to
    it), ``dp_max_per_user`` (events of a user in a step; ``batch_size //
    dp_max_per_user`` users are expected per step) and ``dp_user_learning_rate`` (the
    user tables, trained on each user's own loss with Adam; ``optimizer`` and
    ``learning_rate`` train the private shared parameters), ``dp_user_epochs``
    (epochs of the user tables alone afterwards, the private item side fixed) and
    ``dp_user_rows`` (``"train"``: the user rows as the steps and ``dp_user_epochs`` leave
    them; ``"solve"``: each user's row solved in closed form against the released item
    side, for models whose scores are dot products, see :meth:`_solve_user_rows`).
    """

    embedding_dim: int = 64
    epochs: int | None = 10
    min_steps: int = 0
    batch_size: int = 4096
    learning_rate: float = 0.002
    reg: float = 0.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str | None = "cosine"
    valid_metric: str | None = "ndcg@20"
    patience: int | None = None
    eval_every: int = 1
    init_std: float = 0.01
    device: str = "auto"
    seed: int = 0
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    dp_max_per_user: int = 32
    dp_user_learning_rate: float = 0.01
    dp_user_epochs: int = 0
    dp_user_rows: str = "train"

    #: Training objective, for documentation and the sampler: "rating" (pointwise values)
    #: or "ranking" (positives with sampled negatives).
    objective: ClassVar[str] = "ranking"
    #: Gradient models declare ``gradient``; ``sharded_data`` (each DDP rank may hold only
    #: its own users' events) for models whose loss reads only a batch's events, not the
    #: whole interaction graph (LightGCN).
    capabilities = Capabilities(gradient=True, seeded=True)
    #: Whether the tables of :meth:`user_parameter_names` are ``nn.Embedding`` weights that
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
    #: The epochs of a fit with ``epochs=None`` on a log large enough for them to make
    #: ``min_steps`` optimizer steps (see :meth:`fit_epochs`); ``None``: the class's default
    #: ``epochs`` (so ``epochs=None`` never means fewer epochs than the default).
    auto_epochs: ClassVar[int | None] = None
    #: The most epochs ``min_steps`` raises a fit with ``epochs=None`` to, as a multiple of
    #: :attr:`auto_epochs` (a log of a few hundred events would otherwise take thousands
    #: of one-step epochs, each validated).
    MAX_EPOCH_FACTOR: ClassVar[int] = 25
    #: The parameters ``recforge train --dp-epsilon`` starts from for this model (those
    #: given with ``-p`` win): a private fit wants other settings than the model's own.
    private_defaults: ClassVar[dict[str, Any]] = {}
    #: The rule of each parameter (a subclass extends it with its own parameters').
    param_rules: ClassVar[dict[str, ParamRule]] = {
        "embedding_dim": int_rule(1, MAX_DIM),
        "epochs": optional_rule(int_rule(1, MAX_EPOCHS)), "min_steps": int_rule(0, MAX_COUNT),
        "batch_size": int_rule(1, MAX_COUNT), "eval_every": int_rule(1, MAX_EPOCHS),
        "learning_rate": positive_rule(), "reg": number_rule(0, MAX_NUMBER),
        "weight_decay": number_rule(0, MAX_NUMBER), "init_std": number_rule(0, MAX_NUMBER),
        "patience": optional_rule(int_rule(1, MAX_EPOCHS)), "device": DEVICE_RULE,
        "seed": SEED_RULE, "valid_metric": optional_rule(_METRIC_RULE),
        "dp_epsilon": optional_rule(positive_rule(MAX_EPSILON)),
        "dp_delta": optional_rule(ParamRule(lambda v: number_rule(0, 1).ok(v) and 0 < v < 1,
                                            "a number in (0, 1)")),
        "dp_max_grad_norm": positive_rule(), "dp_max_per_user": int_rule(1, MAX_COUNT),
        "dp_user_learning_rate": positive_rule(), "dp_user_epochs": int_rule(0, MAX_EPOCHS),
        "dp_user_rows": choice_rule("train", "solve")}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # every subclass is a dataclass of its parameters: its __init__ (what get_params,
        # clone and repr read) is generated from the fields, shared ones declared here
        super().__init_subclass__(**kwargs)
        dataclass(eq=False, repr=False, kw_only=True)(cls)

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
        :class:`~recforge.training.trainer.Trainer`). These options travel to the trainer
        as one :class:`~recforge.training.contracts.FitContext`.
        """
        options = self._fit_options(
            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
            distributed=distributed, sharded=sharded, epoch_callback=epoch_callback,
            max_steps_per_epoch=max_steps_per_epoch, sparse_updates=sparse_updates)
        return self._fit_with(train, valid, options)  # type: ignore[return-value]

    def _fit_options(self, *, checkpoint_dir: str | Path | None = None, resume: bool = False,
                     progress: bool | None = None, distributed: tuple[int, int] = (0, 1),
                     sharded: bool = False, epoch_callback: Any = None,
                     max_steps_per_epoch: int | None = None,
                     sparse_updates: str = "auto") -> FitOptions:
        """``fit``'s options as the trainer's :class:`FitContext` (also what
        ``hybrid_bpr``'s ``fit`` hands on with its features)."""
        return FitOptions(training=FitContext(
            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
            distributed=distributed, sharded=sharded, epoch_callback=epoch_callback,
            max_steps_per_epoch=max_steps_per_epoch, sparse_updates=sparse_updates))

    def _validate_params(self) -> None:
        """Every parameter against its rule (:attr:`param_rules`), the optimizer and the
        schedule against the trainer's; then the device and the validation metric."""
        names = self._param_names()
        check_params(self, {k: r for k, r in self.param_rules.items() if k in names})
        for check, name in ((check_optimizer, "optimizer"), (check_schedule, "lr_schedule")):
            try:
                check(getattr(self, name), name)
            except ConfigError as exc:
                raise ConfigError(f"{self.name}: {exc}") from None
        resolve_device(self.device)
        metric = self.valid_metric
        if metric is not None:
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
        self._validate_privacy()

    @classmethod
    def supports_private_training(cls) -> bool:
        """Whether the model trains with differential privacy: the nearest class (in the
        method resolution order) that defines ``training_loss`` or :meth:`private_loss`
        defines ``private_loss`` (a subclass with a loss of its own, e.g. ``vbpr`` of
        ``bpr``'s kind, must give its private loss too)."""
        for klass in cls.__mro__:
            if "private_loss" in klass.__dict__ or "training_loss" in klass.__dict__:
                return klass is not GradientRecommender and "private_loss" in klass.__dict__
        return False

    @property
    def private(self) -> bool:
        """Whether this model is trained with differential privacy (``dp_epsilon`` set)."""
        return self.dp_epsilon is not None

    def _validate_privacy(self) -> None:
        """The DP parameters: only for models with :meth:`private_loss`, ``dp_delta`` only
        with ``dp_epsilon``, no early stopping (it would choose the released epoch on the
        users' held-out events, outside the accountant)."""
        if not self.private:
            if self.dp_delta is not None:
                raise ConfigError(f"{self.name}: dp_delta is set but dp_epsilon is not; set "
                                  "dp_epsilon to train with differential privacy")
            return
        if not self.supports_private_training():
            raise ConfigError(f"{self.name} does not support differentially private training "
                              "(dp_epsilon); models that do: "
                              f"{', '.join(private_models())}")
        if self.patience is not None:
            raise ConfigError(f"{self.name}: patience (early stopping) cannot be used with "
                              "dp_epsilon: the released weights are the last epoch's")
        if self.dp_user_rows == "solve" and not self.solves_user_rows():
            raise ConfigError(f"{self.name}: dp_user_rows='solve' needs a model whose scores "
                              "are dot products of a user row and item rows (bpr); use "
                              "'train'")

    @classmethod
    def solves_user_rows(cls) -> bool:
        """Whether :meth:`_solve_user_rows` is implemented (``dp_user_rows="solve"``)."""
        return cls._solve_user_rows is not GradientRecommender._solve_user_rows

    def _solve_user_rows(self, train: Interactions) -> None:
        """Set every user's row in closed form from their own events and the released
        item side (override where the scores are dot products)."""
        raise NotImplementedError

    def _check_distributed(self) -> None:
        """Refuse settings that cannot train under DDP (override; raises ConfigError).
        Called by ``fit`` in every rank (all alike: the params are the same) and by
        ``recforge train --nproc`` before it launches the ranks."""

    # ----------------------------------------------------------------------------------
    # what a model implements
    def _setup(self, train: Interactions, options: FitOptions) -> None:
        """Record data statistics the module needs, and what it reads of the fit's
        ``options`` (e.g. item features; override)."""

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """The scalar loss of a batch from the model's sampler (override)."""
        raise NotImplementedError

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def private_loss(self, batch: Batch) -> torch.Tensor:
        """Differentially private training: the loss of each user of a user-level batch
        (:class:`~recforge.training.privacy.UserBatches`), ``[B]``, computed only through
        calls of the module's submodules (``nn.Embedding``, ``nn.Linear``...; never a
        table's ``.weight`` read whole), so that Opacus sees every user's gradient
        (override; a model without it does not support ``dp_epsilon``)."""
        raise NotImplementedError

    def _private_setup(self) -> None:
        """A private fit replaces data statistics that would read every user's events
        into the weights or the loss outside the accountant (override, e.g. ``mf``'s
        global mean and count-scaled L2 weights)."""

    def after_backward(self) -> None:
        """Hook between ``backward`` and the optimizer step (e.g. gradient surgery)."""

    def user_parameter_names(self) -> list[str]:
        """Names (in ``module_``) of the tables with one row per user that a batch reads
        only at its own users' rows: with data sharded by user, each DDP rank keeps them to
        itself instead of all-reducing them. Default: embeddings named ``user`` or
        ``user_bias`` anywhere in the module."""
        return [name for name, _ in self.module_.named_parameters()
                if name.rsplit(".", 2)[-2:-1] in (["user"], ["user_bias"])]

    def _prepare_scoring(self) -> None:
        """Called before validation and after training (e.g. cache propagated embeddings)."""

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> EpochSampler:
        return EpochSampler(train, int(self.batch_size), 0, shard=shard)

    def _generator(self) -> torch.Generator:
        gen = torch.Generator()
        gen.manual_seed(int(self.seed or 0))
        return gen

    def checkpoint_signature(self) -> str:
        """What a checkpoint must have been written for to be resumed: the model, its
        params, the training data, the validation data (its best epoch and early-stopping
        state were measured on it), the epoch length (``max_steps_per_epoch``) and what
        :meth:`_signature_extra` adds (``hybrid_bpr``: its feature matrices); the last
        three are fingerprinted in ``_fit``, which holds the fit's options."""
        payload = json.dumps({"model": self.name, "params": _plain(self.get_params()),
                              "data": self.train_fingerprint_,
                              "fit": self.__dict__.get("_fit_fingerprint")}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def _signature_extra(self) -> dict[str, Any]:
        """More of what a checkpoint is tied to, read after ``_setup`` (override: e.g. the
        fingerprints of feature matrices passed to ``fit``)."""
        return {}

    def _fingerprint_fit_inputs(self, valid: Interactions | None, context: FitContext) -> str:
        """The fingerprint of the validation data, the epoch length and
        :meth:`_signature_extra`, for the checkpoint signature; with data sharded by user,
        one over every rank's (so every rank compares a checkpoint against the same
        signature)."""
        mine = json.dumps({"valid": valid.fingerprint() if valid is not None else None,
                           "max_steps_per_epoch": context.max_steps_per_epoch,
                           "extra": _plain(self._signature_extra())}, sort_keys=True)
        if context.sharded:
            return combined_fingerprint(mine)
        return hashlib.sha256(mine.encode()).hexdigest()[:16]

    # ----------------------------------------------------------------------------------
    def _fit(self, train: Interactions, valid: Interactions | None,
             options: FitOptions) -> None:
        context = options.training
        rank, world = context.distributed
        sharded = context.sharded
        self.device_ = resolve_device(self.device)
        if world > 1 and self.device_.type == "cuda" and self.device_.index is None:
            # One GPU per process: the one the launcher's LOCAL_RANK selected.
            self.device_ = torch.device("cuda", torch.cuda.current_device())
        if world > 1:
            self._check_distributed()
        if sharded and not self.capabilities.sharded_data:
            raise ConfigError(f"{self.name} reads the whole interaction graph in every "
                              "step: every rank needs all events (do not shard its data)")
        collective = distributed.collective_device(self.device_)
        if world > 1:
            check_rank_data(train, valid, rank, world, sharded, self.device_)
        self._stats = DataStats.of(train, sharded=sharded, device=collective)
        if sharded:  # what Recommender.fit took from this rank's events, for all ranks
            self.item_popularity_ = self._stats.item_counts.astype(np.float32)
            self.train_fingerprint_ = combined_fingerprint(self.train_fingerprint_)
        self._setup(train, options)
        self._fit_fingerprint = self._fingerprint_fit_inputs(valid, context)
        try:
            self._train(train, valid, context)
        finally:
            del self._fit_fingerprint
        if sharded:
            self.seen_ = gather_seen(self.seen_, rank)
        self.module_.eval()
        self._prepare_scoring()

    def _train(self, train: Interactions, valid: Interactions | None,
               context: FitContext) -> None:
        """Build the module and run the trainer on it, with the model's sampler and, given
        validation data, a validation callable."""
        if self.private:
            self._private_setup()
        self.module_ = self._build().to(self.device_)
        if self.private:
            self._train_private(train, valid, context)
            return
        self.privacy_ = None
        sampler = self._sampler(train, shard=context.distributed)
        if context.sharded:
            balance_shards(sampler, len(train), self._stats.item_counts, self.device_,
                           is_main=context.rank == 0)
        validate: Validate | None = None
        if valid is not None and self.valid_metric is not None:  # None: no validation
            # before hours of training, not at the first evaluation
            self._check_validation_data(train, valid, context)
            validate = functools.partial(self._validate, train, valid, context)
        steps = sampler.steps_per_epoch()
        if context.max_steps_per_epoch is not None:
            steps = min(steps, context.max_steps_per_epoch)
        trainer = self._trainer(context, patience=self.patience, epochs=self.fit_epochs(steps))
        state = trainer.fit(self, sampler, validate)
        self.history_ = state.history
        self.best_epoch_ = state.best_epoch

    @classmethod
    def default_epochs(cls) -> int:
        """The epochs ``epochs=None`` starts from: :attr:`auto_epochs`, else the class's
        default ``epochs`` (10 where that is None too)."""
        if cls.auto_epochs is not None:
            return int(cls.auto_epochs)
        default = cls.__dataclass_fields__["epochs"].default  # type: ignore[attr-defined]
        return int(default) if isinstance(default, int) else 10

    def fit_epochs(self, steps_per_epoch: int | None = None) -> int:
        """The epochs a fit runs: ``epochs``, or with ``epochs=None``
        :meth:`default_epochs`, raised to ``ceil(min_steps / steps_per_epoch)`` when an epoch
        of this data is too few steps for them to reach ``min_steps`` (at most
        :attr:`MAX_EPOCH_FACTOR` times those). Adam moves the tables by about
        the same amount per step whatever the batch covers, so a count of epochs chosen on
        a log of 600,000 events (150 steps an epoch) leaves one of 40,000 (10 steps)
        under-trained; a floor on the steps makes the default scale-free. The learning-rate
        schedule runs over the raised count. ``steps_per_epoch=None`` (a private fit, whose
        accountant spends its budget over the epochs it is given): no floor."""
        if self.epochs is not None:
            return int(self.epochs)
        epochs = self.default_epochs()
        if steps_per_epoch and self.min_steps:
            floor = -(-int(self.min_steps) // int(steps_per_epoch))
            epochs = max(epochs, min(floor, self.MAX_EPOCH_FACTOR * epochs))
        return epochs

    def _trainer(self, context: FitContext, *, patience: int | None,
                 privacy: PrivacySpec | None = None, epochs: int | None = None) -> Trainer:
        """The shared trainer with this model's optimisation hyperparameters (``epochs``:
        as :meth:`fit_epochs` resolved them; default: without a floor on the steps)."""
        return Trainer(
            epochs=epochs if epochs is not None else self.fit_epochs(),
            learning_rate=float(self.learning_rate), optimizer=self.optimizer, weight_decay=float(self.weight_decay),
            lr_schedule=self.lr_schedule, valid_metric=self.valid_metric,  # type: ignore[arg-type]
            patience=patience, eval_every=int(self.eval_every), device=self.device_,
            seed=int(self.seed or 0), context=context, privacy=privacy)

    def _train_private(self, train: Interactions, valid: Interactions | None,
                       context: FitContext) -> None:
        """Train with differential privacy per user (:mod:`recforge.training.privacy`):
        user-level batches, Opacus's clipping, noise and accountant; the spent budget is
        kept in :attr:`privacy_` (saved with the model)."""
        from recforge.training.privacy import (  # lazy: Opacus, an optional extra
            PrivacySpec,
            require_opacus,
        )

        require_opacus()
        if context.world > 1:
            raise ConfigError(f"{self.name}: differentially private training runs in one "
                              "process (no --nproc)")
        if context.sparse_updates == "on":
            raise ConfigError(f"{self.name}: sparse_updates='on' cannot be used with "
                              "dp_epsilon")
        spec = PrivacySpec(
            epsilon=float(self.dp_epsilon),  # type: ignore[arg-type]
            delta=float(self.dp_delta if self.dp_delta is not None
                        else 1.0 / max(2, self.n_users)),
            max_grad_norm=float(self.dp_max_grad_norm), max_per_user=int(self.dp_max_per_user),
            users_per_step=self._private_users_per_step(),
            user_learning_rate=float(self.dp_user_learning_rate))
        batches = self._private_batches(train, spec)
        validate: Validate | None = None
        if valid is not None and self.valid_metric is not None:  # None: no validation
            self._check_validation_data(train, valid, context)
            validate = functools.partial(self._validate, train, valid, context)
        trainer = self._trainer(context, patience=None, privacy=spec)
        state = trainer.fit(self, batches, validate)  # type: ignore[arg-type]
        self.history_ = state.history
        self.best_epoch_ = state.epoch
        self.privacy_ = trainer.privacy_report
        if self.dp_user_rows == "solve":
            self._solve_user_rows(train)
        if self.dp_user_epochs:
            self._fit_user_rows(train, context)

    def _private_users_per_step(self) -> int:
        """The expected users of a private step: ``batch_size`` counts events, so
        ``batch_size // dp_max_per_user`` (override where a batch counts users)."""
        return max(1, int(self.batch_size) // int(self.dp_max_per_user))

    def _private_batches(self, train: Interactions, spec: Any) -> Any:
        """The user-level batches :meth:`private_loss` reads: up to ``dp_max_per_user``
        events of each sampled user, with ``n_negatives`` negatives each for ranking
        models (:class:`~recforge.training.privacy.UserBatches`; override for other
        batches, e.g. each user's ordered window)."""
        from recforge.training.privacy import UserBatches  # lazy: Opacus, an optional extra

        n_neg = int(getattr(self, "n_negatives", 0)) if self.objective == "ranking" else 0
        return UserBatches(train, spec.max_per_user, n_neg)

    def private_modules(self) -> list[torch.nn.Module]:
        """Modules outside ``module_`` that the private loss calls on shared parameters
        (e.g. an output layer reading the item table that an embedding also owns), for
        Opacus to compute their share of each user's gradient (override)."""
        return []

    def private_physical_users(self) -> int | None:
        """The most users whose per-user gradients a private step computes at once (a
        larger Poisson sample runs in parts, one noise for the whole step; ``None``: all
        at once). Applies to models with ``private_grad_sample_mode = "hooks"`` and no
        user tables."""
        return None

    #: How Opacus computes each user's gradient norm: "ghost" (without materialising
    #: per-user gradients; each shared module called once per step) or "hooks" (per-user
    #: gradients materialised, summed over every call of a parameter: tables read twice,
    #: recurrent cells called once per position).
    private_grad_sample_mode: ClassVar[str] = "ghost"

    def _fit_user_rows(self, train: Interactions, context: FitContext) -> None:
        """``dp_user_epochs`` ordinary epochs of the user tables alone (Adam at
        ``dp_user_learning_rate``), the private shared parameters fixed: each user's row is
        fitted to their own events and the released item side, which joint differential
        privacy allows (a row reads only its own user's events). During the private
        epochs a user's row moves only in the steps that sampled the user."""
        users = set(self.user_parameter_names())
        frozen = [p for n, p in self.module_.named_parameters()
                  if n not in users and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            trainer = Trainer(
                epochs=int(self.dp_user_epochs), learning_rate=float(self.dp_user_learning_rate),
                optimizer="adam", lr_schedule=self.lr_schedule, valid_metric="ndcg@20",
                device=self.device_, seed=int(self.seed or 0) + 1,
                context=FitContext(progress=context.progress, sparse_updates="off"))
            state = trainer.fit(self, self._sampler(train), None)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        self.history_ = [*self.history_, *({**r, "phase": "user rows"} for r in state.history)]

    # ----------------------------------------------------------------------------------
    # validation during training: the callable the trainer is handed
    def _check_validation_data(self, train: Interactions, valid: Interactions,
                               context: FitContext) -> None:
        """Refuse validation data with nothing the evaluator can score (empty, or no user
        with a training event; for RMSE / MAE no such user's event of a known item), on
        every rank alike: with data sharded by user the figures are summed over the ranks
        (one rank's new users are fine while another rank has known ones); otherwise rank
        0's, which it validates on."""
        kind = Metric.parse(self.valid_metric).kind  # type: ignore[arg-type]
        ok = self._evaluable_events(train, valid, kind)
        figures = [float(ok.sum()), float(len(valid)), float(len(np.unique(valid.user)))]
        if context.world > 1:
            if not (context.sharded or context.rank == 0):
                figures = [0.0, 0.0, 0.0]  # rank 0's figures decide, on every rank
            figures = distributed.all_reduce_sum(
                figures, distributed.collective_device(self.device_))
        known, events, users = figures
        if known == 0:
            # (fit drops the events of users and items not in the training data first)
            what = (f"none of the {int(users):,} validation users" if events
                    else "no validation event of a user and an item of the training data: "
                    "none of the validation users")
            need = "a rating of a known item" if kind == "rating" else "a training event"
            raise DataError(f"{what} is known to the model (none with {need}: empty "
                            "validation data, a file in another id space, or a split whose "
                            "users are all new?); nothing to validate on",
                            source=valid.source if context.world == 1 else None)

    def _evaluable_events(self, train: Interactions, valid: Interactions,
                          kind: str) -> np.ndarray:
        """Which of ``valid``'s events the evaluator scores, as it selects them: one per
        (user, item) pair, of users with a training event in ``train``, and for RMSE / MAE
        (``kind == "rating"``) also of items known to the model."""
        if len(valid) == 0:
            return np.zeros(0, dtype=bool)
        pair = valid.user.astype(np.int64) * max(1, valid.n_items) + valid.item
        _, first = np.unique(pair, return_index=True)
        tu = self.users_.index(valid.users.ids)[valid.user[first]]
        has_events = np.zeros(self.n_users, dtype=bool)
        tr = self.users_.index(train.users.ids[np.unique(train.user)])
        has_events[tr[tr >= 0]] = True
        ok = (tu >= 0) & has_events[np.maximum(tu, 0)]
        if kind == "rating":
            ok &= self.items_.index(valid.items.ids)[valid.item[first]] >= 0
        return ok

    def _validate(self, train: Interactions, valid: Interactions,
                  context: FitContext) -> float:
        """The validation metric, signed so that higher is better (RMSE/MAE negated), the
        same on every rank (so every rank makes the same early-stopping decision and they
        stop together): with data sharded by user, combined over every rank's users;
        otherwise every rank evaluates every ``world``-th validation user (it holds the
        whole training data) and the figures are combined the same way: the mean over all
        users that one process would compute, in ``1 / world`` of its time. Leaves the
        module in train mode."""
        if context.sharded:
            metric = self._validate_sharded(train, valid)
        elif context.world > 1:
            mine = valid.subset(valid.user % context.world == context.rank)
            metric = self._validate_sharded(train, mine)
        else:
            metric = self._validate_here(train, valid)
        self.module_.train()
        return metric

    def _validate_here(self, train: Interactions, valid: Interactions) -> float:
        """This process's validation figure, signed so that higher is better."""
        self.module_.eval()
        self._prepare_scoring()
        result = evaluate(self, train, valid, metrics=self.valid_metric)
        value = float(next(iter(result.summary.values())))
        return -value if Metric.parse(self.valid_metric).kind == "rating" else value  # type: ignore[arg-type]

    def _validate_part(self, train: Interactions, valid: Interactions
                       ) -> tuple[float, float]:
        """This process's figure on ``valid`` (unsigned) and its weight in the combined
        mean: its users for per-user metrics, its predicted events for RMSE / MAE (not
        those of unknown users or items, nor repeats), so that the combination equals
        evaluating every rank's events together; ``(0, 0)`` when none can be evaluated."""
        metric = Metric.parse(self.valid_metric)  # type: ignore[arg-type]
        try:
            result = evaluate(self, train, valid, metrics=self.valid_metric)
        except NothingToEvaluate:  # this rank's validation users are all new ones
            return 0.0, 0.0
        value = float(next(iter(result.summary.values())))
        weight = float(self._evaluable_events(train, valid, metric.kind).sum()
                       if metric.kind == "rating" else result.n_users)
        return value, weight

    def _validate_sharded(self, train: Interactions, valid: Interactions) -> float:
        """The validation metric over every rank's users: each rank evaluates the users it
        owns (it holds their whole history, so their seen items are excluded exactly);
        per-user metrics are averaged over all users, RMSE / MAE over all events."""
        self.module_.eval()
        self._prepare_scoring()
        metric = Metric.parse(self.valid_metric)  # type: ignore[arg-type]
        value, weight = self._validate_part(train, valid) if len(valid) else (0.0, 0.0)
        if weight == 0:
            value = 0.0
        rmse = metric.kind == "rating" and metric.name == "rmse"
        if rmse:  # combine mean squared errors
            value = value * value
        total, weights = distributed.all_reduce_sum(
            [value * weight, weight], distributed.collective_device(self.device_))
        if weights == 0:  # every rank alike: the figure is shared
            raise DataError("no rank has a validation user known to the model; nothing to "
                            "validate on")
        combined = total / max(weights, 1e-12)
        if rmse:
            combined = math.sqrt(combined)
        return -combined if metric.kind == "rating" else combined

    # ----------------------------------------------------------------------------------
    def _score(self, users: torch.Tensor) -> torch.Tensor:
        self.module_.eval()
        with torch.no_grad():
            return self._score_users(users.to(self.device_)).float().cpu()

    def _predict_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating models: ``module_(users, items)``, the predicted ratings of the pairs,
        clipped to the training range ``rating_range_``."""
        self.module_.eval()
        with torch.no_grad():
            u = torch.as_tensor(users, dtype=torch.long, device=self.device_)
            i = torch.as_tensor(items, dtype=torch.long, device=self.device_)
            pred = self.module_(u, i).clamp(*self.rating_range_)
        return pred.float().cpu().numpy()

    # ----------------------------------------------------------------------------------
    def _extra_scalars(self) -> dict[str, Any]:
        """Data statistics to save (override together with ``_setup``)."""
        return {}

    def _set_extra_scalars(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_scalars` saved."""

    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module_.state_dict().items()}

    def _extra(self) -> dict[str, Any]:
        extra = {"history": getattr(self, "history_", []),
                 "best_epoch": getattr(self, "best_epoch_", -1),
                 **self._extra_scalars()}
        privacy = getattr(self, "privacy_", None)
        if privacy is not None:
            extra["privacy"] = privacy
        return extra

    #: the module's tables have embedding_dim columns; its build draws with init_std
    scoring_params = {"embedding_dim": int_rule(1), "init_std": number_rule(0)}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        """The training log, best epoch and :meth:`_extra_scalars` from ``extra``, each
        checked (:class:`ModelError` naming the field)."""
        self._set_extra_scalars(extra)
        self.history_ = extra_value(extra, "history", _LIST_RULE, [])
        self.best_epoch_ = extra_value(extra, "best_epoch", int_rule(-1), -1)
        self.privacy_ = extra_value(extra, "privacy", _PRIVACY_RULE, None)

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        # the module's state_dict, as the saved parameters and scalars build it
        self._restore_extra(extra)
        return {"module": Module(lambda checked: self._build())}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        self.device_ = resolve_device(self.device)
        module = self._build()
        module.load_state_dict(state)
        self.module_ = module.to(self.device_).eval()
        self._prepare_scoring()


class SampledGradientRecommender(GradientRecommender):
    """A gradient model whose ranking batches pair each event with ``n_negatives``
    sampled items (BPR, NCF, LightGCN, HybridBPR: all but the rating-only ``mf``)."""

    n_negatives: int = 4

    param_rules = {**GradientRecommender.param_rules,
                   "n_negatives": int_rule(0, MAX_NEGATIVES)}
    #: The fewest negatives the model trains with (NCF's rating loss takes none).
    min_negatives: ClassVar[int] = 1

    def _validate_params(self) -> None:
        super()._validate_params()
        check_params(self, {"n_negatives": int_rule(self.min_negatives, MAX_NEGATIVES)})

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> EpochSampler:
        n_neg = int(self.n_negatives) if self.objective == "ranking" else 0
        return EpochSampler(train, int(self.batch_size), n_neg, shard=shard)


def shared_params(model: SampledGradientRecommender) -> dict[str, Any]:
    """``model``'s values of the parameters every sampled gradient model has (for models
    trained inside another: NeuMF's pretraining)."""
    return {f.name: getattr(model, f.name) for f in fields(SampledGradientRecommender)}


_LIST_RULE = ParamRule(lambda v: isinstance(v, list), "a list")
#: What a private fit saved: the spent ``epsilon`` (a finite number >= 0) and ``delta``
#: among its fields (or nothing: not private).
_PRIVACY_RULE = ParamRule(
    lambda v: v is None or (isinstance(v, dict) and number_rule(0).ok(v.get("epsilon"))
                            and number_rule(0, 1).ok(v.get("delta"))),
    "null or an object with the spent 'epsilon' and 'delta'")


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
