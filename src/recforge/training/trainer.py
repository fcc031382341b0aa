"""The one training loop for every gradient-trained model.

A model (a :class:`~recforge.models.gradient.GradientRecommender`) supplies its
``torch.nn.Module``, an :class:`~recforge.training.batches.EpochSampler` and a loss for a
batch; the :class:`Trainer` does the rest: device placement, optimizer and learning-rate
schedule, epochs of mini-batches, validation with the evaluator and early stopping, a
checkpoint after every epoch (atomic), resuming after a kill, a progress bar and a
per-epoch JSON log.

Randomness is derived per epoch from ``(seed, epoch)`` (numpy generator for sampling, a
forked torch generator for dropout), so an interrupted and resumed run draws exactly the
batches an uninterrupted run would have drawn, and two runs with one seed give the same
numbers on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from recforge._fs import atomic_path, atomic_write_text
from recforge.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from recforge.data.interactions import Interactions
    from recforge.models.gradient import GradientRecommender

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
SCHEDULES = (None, "cosine", "step")
CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


def retain_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of unmapping it.

    Every training step frees and allocates the dense gradient of each embedding table (35
    MB for 138K users x 64). glibc serves blocks that large with a fresh ``mmap`` and
    unmaps them on free, so each step pays a page fault per 4 KB page again: zeroing such a
    table took 25 ms instead of 2 ms here, and BPR's backward pass at 20M events 67 ms
    instead of 42 ms per step. With ``M_MMAP_MAX = 0`` large blocks come from the heap and,
    with a high ``M_TRIM_THRESHOLD``, stay there once freed (the process keeps its peak
    memory until it exits). A process-wide setting, applied once by the trainer on CPU;
    ``RECFORGE_RETAIN_FREED_MEMORY=0`` turns it off. Returns whether it is in effect.
    """
    global _RETAINED
    if _RETAINED is not None:
        return _RETAINED
    _RETAINED = False
    if os.environ.get("RECFORGE_RETAIN_FREED_MEMORY", "1") in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        _RETAINED = bool(libc.mallopt(m_mmap_max, 0)) and bool(
            libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        _RETAINED = False
    return _RETAINED


_RETAINED: bool | None = None

#: The values of ``Trainer(sparse_updates=...)``.
SPARSE_UPDATES = ("auto", "on", "off")
#: ``sparse_updates="auto"`` turns row-sparse updates on from this many user rows per
#: lookup in a step (users / batch size). On this project's 2-core machine, a step of
#: Adagrad on a 64-wide table with 65,536 lookups took 15 ms dense and 42 ms row-sparse
#: at 138K rows, 68 ms and 44 ms at 1.38M, 340 ms and 41 ms at 6.9M: dense passes win
#: below about 12 rows per lookup.
SPARSE_ROWS_PER_LOOKUP = 16


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


@dataclass
class TrainingState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Runs the epochs of a gradient model.

    Parameters
    ----------
    epochs:
        Maximum number of passes over the training events.
    learning_rate, optimizer, weight_decay:
        ``optimizer`` is one of ``adam``, ``adamw``, ``sgd`` (momentum 0.9), ``adagrad``;
        ``weight_decay`` is the optimizer's own (decoupled for ``adamw``).
    lr_schedule:
        ``None`` (constant), ``"cosine"`` (cosine decay to 0 over ``epochs``) or ``"step"``
        (halve every quarter of ``epochs``).
    valid_metric, patience, eval_every:
        With validation data, the metric computed by the evaluator every ``eval_every``
        epochs; training stops after ``patience`` evaluations without improvement and the
        best epoch's weights are restored. ``patience=None`` never stops early.
    device, seed:
        Device ("auto" = CUDA when present) and the seed of every random draw.
    checkpoint_dir, resume:
        Write ``checkpoint.pt`` and ``train_log.jsonl`` there after every epoch; with
        ``resume=True`` continue from an existing checkpoint.
    progress:
        Show a progress bar (``None``: only on a terminal).
    distributed:
        ``(rank, world_size)`` when running under DDP; only rank 0 writes files.
    sharded_data:
        Under DDP, each rank's ``train`` and ``valid`` hold only the events of the users it
        owns: every rank draws its batches from its own events (the same number of steps
        on every rank) and validates its own users; the figures are combined over ranks.
    max_steps_per_epoch:
        Stop each epoch after this many batches (a partial pass: for timing runs on data
        too large to sweep, and for quick checks). ``None``: the whole epoch.
    sparse_updates:
        Whether the user tables (the ``nn.Embedding`` tables a model reads only by user
        index) take *row-sparse* updates: their gradient holds only the rows of the batch's
        users (``nn.Embedding(sparse=True)``) and the optimizer updates only those rows,
        instead of a dense gradient and an optimizer pass over every user's row each step.
        A step's cost then follows the batch, not the user base: with 1.38M users the dense
        passes made an ``mf`` step about 3x as long as with 35K users. Only exact with
        ``adagrad`` (a row with no gradient does not move under Adagrad; under Adam or SGD
        with momentum it does), without ``weight_decay`` or ``max_grad_norm``, and under DDP
        only with ``sharded_data`` (each rank's own user rows, never all-reduced). ``"auto"``
        (default): on when exact and the user base is at least
        :data:`SPARSE_ROWS_PER_LOOKUP` times a batch (below that the dense passes are the
        faster, measured on this project's machine); ``"on"``: whenever exact (else a
        :class:`ConfigError`); ``"off"``: never.
    """

    def __init__(self, *, epochs: int, learning_rate: float, optimizer: str = "adam",
                 weight_decay: float = 0.0, lr_schedule: str | None = None,
                 valid_metric: str = "ndcg@20", patience: int | None = None,
                 eval_every: int = 1, device: str | torch.device = "auto", seed: int = 0,
                 checkpoint_dir: str | Path | None = None, resume: bool = False,
                 progress: bool | None = None, max_grad_norm: float | None = None,
                 distributed: tuple[int, int] = (0, 1), sharded_data: bool = False,
                 epoch_callback: Callable[[dict[str, Any]], None] | None = None,
                 max_steps_per_epoch: int | None = None,
                 sparse_updates: str = "auto") -> None:
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
        if lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {SCHEDULES}, not {lr_schedule!r}")
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        if patience is not None and patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {patience}")
        if eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
        self.epochs = int(epochs)
        self.learning_rate = float(learning_rate)
        self.optimizer_name = optimizer
        self.weight_decay = float(weight_decay)
        self.lr_schedule = lr_schedule
        self.valid_metric = valid_metric
        self.patience = patience
        self.eval_every = int(eval_every)
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume = resume
        self.progress = progress
        self.max_grad_norm = max_grad_norm
        self.rank, self.world = distributed
        self.sharded_data = bool(sharded_data and self.world > 1)
        self.epoch_callback = epoch_callback
        if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1, got {max_steps_per_epoch}")
        self.max_steps_per_epoch = max_steps_per_epoch
        if sparse_updates not in SPARSE_UPDATES:
            raise ConfigError(f"sparse_updates must be one of {SPARSE_UPDATES}, "
                              f"not {sparse_updates!r}")
        self.sparse_updates = sparse_updates

    # ----------------------------------------------------------------------------------
    def row_sparse_tables(self, model: GradientRecommender) -> list[str]:
        """The names of the user tables that take row-sparse updates (``sparse_updates``)."""
        if self.sparse_updates == "off":
            return []
        module = model.module_
        names = [n for n in model._user_parameter_names()
                 if _embedding_of(module, n) is not None] if model.user_tables_read_by_lookup else []
        why = ("the model reads its user tables whole, not by lookup" if not names
               else f"optimizer {self.optimizer_name!r} moves rows without a gradient "
               "(row-sparse updates are exact only with 'adagrad')"
               if self.optimizer_name != "adagrad"
               else "weight_decay applies to every row" if self.weight_decay
               else "max_grad_norm needs the whole gradient" if self.max_grad_norm is not None
               else "under DDP without data sharded by user, DDP all-reduces the user tables "
               "densely" if self.world > 1 and not self.sharded_data
               else None)
        if why is not None:
            if self.sparse_updates == "on":
                raise ConfigError(f"sparse_updates='on' cannot be used: {why}")
            return []
        batch = int(getattr(model, "batch_size", 1) or 1)
        if self.sparse_updates == "auto" and model.n_users < SPARSE_ROWS_PER_LOOKUP * batch:
            return []
        return names

    def _optimizer(self, params, sparse: Sequence[torch.nn.Parameter] = ()
                   ) -> torch.optim.Optimizer:
        lr, wd = self.learning_rate, self.weight_decay
        params = list(params)
        if sparse:  # their own group, on the kernel that takes sparse gradients
            ids = {id(p) for p in sparse}
            params = [{"params": [p for p in params if id(p) not in ids]},
                      {"params": list(sparse), "fused": False, "foreach": False}]
        cls, kwargs = {
            "adam": (torch.optim.Adam, {}),
            "adamw": (torch.optim.AdamW, {}),
            "sgd": (torch.optim.SGD, {"momentum": 0.9}),
            "adagrad": (torch.optim.Adagrad, {}),
        }[self.optimizer_name]
        # The fused kernels update a parameter in one pass instead of one pass per term:
        # about 10x faster on an embedding table (6 ms instead of 65 ms for 165K x 64 on 2
        # CPU cores), which dominates a step of the embedding models at scale.
        try:
            return cls(params, lr=lr, weight_decay=wd, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device
            return cls(params, lr=lr, weight_decay=wd, **kwargs)

    def _scheduler(self, opt) -> torch.optim.lr_scheduler.LRScheduler | None:
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        if self.lr_schedule == "step":
            # a quarter of the epochs, rounded up: 3 halvings at most (7 epochs: 1/8, not
            # the 1/64 of halving every epoch)
            return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, -(-self.epochs // 4)),
                                                   gamma=0.5)
        return None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ----------------------------------------------------------------------------------
    def fit(self, model: GradientRecommender, train: Interactions,
            valid: Interactions | None = None) -> TrainingState:
        """Train ``model.module_`` in place; return the final :class:`TrainingState`."""
        module = model.module_
        if self.device.type == "cpu":
            retain_freed_memory()
        if self.world > 1:
            from recforge.training import distributed

            if not distributed.active():
                raise ConfigError("distributed training needs an initialised process group: "
                                  "launch with `recforge train --nproc N` or torchrun")
        sampler = model._sampler(train, shard=(self.rank, self.world))
        if self.sharded_data:
            import torch.distributed as dist

            from recforge.training.distributed import collective_device

            n = torch.tensor([len(train)], dtype=torch.int64,
                             device=collective_device(self.device))
            total = n.clone()
            dist.all_reduce(n, op=dist.ReduceOp.MIN)
            dist.all_reduce(total)
            smallest, events = int(n.item()), int(total.item())
            if self.is_main and smallest * self.world < 0.9 * events:
                log.warning("the ranks' shards are uneven: every rank takes the smallest "
                            "shard's %s events per epoch, %.0f%% of the %s training events "
                            "(users hashed to ranks; a few very active users can cause it)",
                            f"{smallest:,}", 100.0 * smallest * self.world / max(events, 1),
                            f"{events:,}")
            stats = getattr(model, "_stats", None)
            sampler.use_local_shard(smallest, None if stats is None else stats.item_counts)
        if valid is not None:  # before hours of training, not at the first evaluation
            self._check_validation_data(model, train, valid)
        state = TrainingState()
        best_weights: dict[str, torch.Tensor] | None = None
        signature = model._checkpoint_signature()

        loaded = None
        if self.resume and self.checkpoint_dir is not None:
            loaded = self._load_checkpoint(signature)
            if loaded is not None:
                try:
                    module.load_state_dict(loaded["module"])
                except RuntimeError as exc:  # other shapes or tables than this model's
                    detail = " ".join(str(exc).split())
                    raise ConfigError(
                        f"{self.checkpoint_dir / CHECKPOINT}: the checkpoint's weights do not "
                        f"fit this model ({detail[:300]}); remove it or train without "
                        "--resume") from None

        # With data sharded by user, a rank's batches touch only the rows of the users it
        # owns: those tables stay local (DDP neither broadcasts nor all-reduces them, which
        # removes most of the bytes each step sends; where the model allows, a rank holds
        # only its users' rows), and are gathered when a checkpoint or the final model
        # needs every row.
        user_tables = _LocalUserTables(model, self.rank, self.world) if self.sharded_data else None
        sparse_names = self.row_sparse_tables(model)
        sparse_embeddings = [_embedding_of(module, n) for n in sparse_names]
        was_sparse = [bool(emb is not None and emb.sparse) for emb in sparse_embeddings]
        # torch builds the optimizer's sparse tensors from valid indices; its invariant
        # checks (off by default, with a warning unless chosen) stay off for the step
        step_context = (contextlib.nullcontext if not sparse_names else
                        lambda: torch.sparse.check_sparse_tensor_invariants(enable=False))
        if sparse_names:
            log.info("row-sparse updates of %s", ", ".join(sparse_names))
        named = dict(module.named_parameters())
        opt = self._optimizer([p for p in module.parameters() if p.requires_grad],
                              sparse=[named[n] for n in sparse_names])
        sched = self._scheduler(opt)
        if loaded is not None:
            if user_tables is not None:
                user_tables.load_optimizer_state(opt, loaded["optimizer"])
            else:
                _load_optimizer_state(opt, loaded["optimizer"], self.checkpoint_dir)
            if sched is not None and loaded.get("scheduler") is not None:
                sched.load_state_dict(loaded["scheduler"])
            state = TrainingState(**json.loads(loaded["state"]))
            best_weights = loaded.get("best")
            log.info("resumed from %s after epoch %d", self.checkpoint_dir, state.epoch)
        # Under DDP the loss is computed through the wrapper, whose backward pass averages
        # the gradients over all ranks (and whose construction copies rank 0's weights).
        compute_loss = model._loss
        if self.world > 1:
            compute_loss = _ddp_loss(model, self.device,
                                     ignore=user_tables.names if user_tables is not None else ())

        steps = sampler.steps_per_epoch()
        if self.max_steps_per_epoch is not None:
            steps = min(steps, self.max_steps_per_epoch)
        bar = None
        if self.is_main:
            from tqdm.auto import tqdm

            disable = (not sys.stderr.isatty()) if self.progress is None else not self.progress
            bar = tqdm(total=self.epochs * steps, initial=state.epoch * steps,
                       desc=f"{model.name}", unit="batch", disable=disable, leave=False,
                       dynamic_ncols=True)
        for emb in sparse_embeddings:
            assert emb is not None
            emb.sparse = True  # its backward pass gives the looked-up rows only
        try:
            while state.epoch < self.epochs and not state.stopped_early:
                epoch = state.epoch
                t0 = time.perf_counter()
                module.train()
                rng = np.random.default_rng([self.seed, epoch])
                total, count = 0.0, 0
                first_batch = None
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(_torch_seed(self.seed, epoch))
                    for batch in sampler.epoch(rng):
                        if first_batch is None:  # the epoch's sampling is done up front
                            first_batch = time.perf_counter() - t0
                        if count >= steps:
                            break
                        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                        loss = compute_loss(batch)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if user_tables is not None:
                            user_tables.scale_gradients()
                        model._after_backward()
                        if self.max_grad_norm is not None:
                            if user_tables is not None:
                                user_tables.clip_gradients(module, self.max_grad_norm)
                            else:
                                torch.nn.utils.clip_grad_norm_(module.parameters(),
                                                               self.max_grad_norm)
                        with step_context():
                            opt.step()
                        total += float(loss.detach())
                        count += 1
                        if bar is not None:
                            bar.update(1)
                lr_used = opt.param_groups[0]["lr"]  # this epoch's rate, before the step
                if sched is not None:
                    sched.step()
                steps_taken = count  # optimizer steps (every rank takes as many)
                if self.world > 1:  # the epoch's mean loss over all ranks
                    from recforge.training.distributed import all_reduce_sum, collective_device

                    total, count = all_reduce_sum([total, count],
                                                  collective_device(self.device))
                if not math.isfinite(total):  # every rank sees the same reduced total
                    raise ModelError(
                        f"{model.name}: training diverged in epoch {epoch + 1}: the loss is "
                        f"{total / max(1, count)}; lower learning_rate (now "
                        f"{getattr(model, 'learning_rate', self.learning_rate):g}; the last "
                        "checkpoint, if any, is of the epoch before)")
                record: dict[str, Any] = {
                    "epoch": epoch + 1, "loss": total / max(1, count),
                    "seconds": round(time.perf_counter() - t0, 4),
                    "sampling_seconds": round(first_batch or 0.0, 4),
                    "steps": int(steps_taken), "lr": lr_used}
                # every eval_every epochs, and the last one (not thrown away unevaluated)
                if valid is not None and ((epoch + 1) % self.eval_every == 0
                                          or epoch + 1 == self.epochs):
                    if self.sharded_data:  # each rank its own users, combined
                        metric = self._validate_sharded(model, train, valid)
                    elif self.world > 1:
                        # Rank 0 evaluates; every rank takes its figure, so every rank makes
                        # the same early-stopping decision and they stop together.
                        from recforge.training.distributed import (
                            broadcast_float,
                            collective_device,
                        )

                        mine = self._validate(model, train, valid) if self.is_main else 0.0
                        metric = broadcast_float(mine, device=collective_device(self.device))
                    else:
                        metric = self._validate(model, train, valid)
                    record[self.valid_metric] = abs(metric) if metric < 0 else metric
                    if metric > state.best_metric:
                        state.best_metric, state.best_epoch, state.bad_epochs = metric, epoch + 1, 0
                        current = (module.state_dict() if user_tables is None
                                   else user_tables.full_state(module))
                        best_weights = {k: v.detach().clone() for k, v in current.items()}
                    else:
                        state.bad_epochs += 1
                        if self.patience is not None and state.bad_epochs >= self.patience:
                            state.stopped_early = True
                    model._to_train_mode()
                state.history.append(record)
                state.epoch = epoch + 1
                self._log_epoch(record, bar)
                if self.checkpoint_dir is not None:
                    if user_tables is not None:  # every rank's rows into the checkpoint
                        module_state = user_tables.full_state(module)
                        opt_state = user_tables.full_optimizer_state(opt)
                        user_tables.gather(module_state, opt_state, best_weights)
                    else:
                        module_state, opt_state = module.state_dict(), opt.state_dict()
                    if self.is_main:
                        self._save_checkpoint(signature, module_state, opt_state, sched,
                                              state, best_weights)
                if self.epoch_callback is not None:  # may raise to stop (e.g. a pruned trial)
                    self.epoch_callback(record)
        finally:
            if bar is not None:
                bar.close()
            for emb, sparse in zip(sparse_embeddings, was_sparse, strict=True):
                assert emb is not None
                emb.sparse = sparse
        opt.zero_grad(set_to_none=True)  # the trained model does not keep the last gradients
        if user_tables is not None:
            user_tables.restore_whole_tables(module)
        if best_weights is not None:
            module.load_state_dict(best_weights)
            log.info("restored the weights of epoch %d (%s %.4f)", state.best_epoch,
                     self.valid_metric, state.best_metric)
        if user_tables is not None:  # the trained model has every user's row on every rank
            user_tables.gather()
        return state

    def _check_validation_data(self, model: GradientRecommender, train: Interactions,
                               valid: Interactions) -> None:
        """Refuse validation data with nothing the evaluator can score (empty, or no user
        with a training event; for RMSE / MAE no such user's event of a known item), on
        every rank alike: with data sharded by user the figures are summed over the ranks
        (one rank's new users are fine while another rank has known ones); otherwise rank
        0's, which it validates on."""
        from recforge.evaluation.metrics import Metric

        kind = Metric.parse(self.valid_metric).kind
        ok = _evaluable_events(model, train, valid, kind)
        figures = [float(ok.sum()), float(len(valid)),
                   float(len(np.unique(valid.user)))]
        if self.world > 1:
            from recforge.training.distributed import all_reduce_sum, collective_device

            if not (self.sharded_data or self.is_main):
                figures = [0.0, 0.0, 0.0]  # rank 0's figures decide, on every rank
            figures = all_reduce_sum(figures, collective_device(self.device))
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
                            source=valid.source if self.world == 1 else None)

    def _validate(self, model: GradientRecommender, train: Interactions,
                  valid: Interactions) -> float:
        """The validation metric, signed so that higher is better (RMSE/MAE negated)."""
        from recforge.evaluation import evaluate
        from recforge.evaluation.metrics import Metric

        model.module_.eval()
        model._prepare_scoring()
        result = evaluate(model, train, valid, metrics=self.valid_metric)
        value = float(next(iter(result.summary.values())))
        return -value if Metric.parse(self.valid_metric).kind == "rating" else value

    def _validate_sharded(self, model: GradientRecommender, train: Interactions,
                          valid: Interactions) -> float:
        """The validation metric over every rank's users: each rank evaluates the users it
        owns (it holds their whole history, so their seen items are excluded exactly);
        per-user metrics are averaged over all users, RMSE / MAE over all events."""
        from recforge.evaluation import evaluate
        from recforge.evaluation.metrics import Metric
        from recforge.training.distributed import all_reduce_sum, collective_device

        model.module_.eval()
        model._prepare_scoring()
        kind = Metric.parse(self.valid_metric).kind
        value, weight = 0.0, 0.0
        if len(valid):
            from recforge.evaluation.evaluate import NothingToEvaluate

            try:
                result = evaluate(model, train, valid, metrics=self.valid_metric)
                value = float(next(iter(result.summary.values())))
                # RMSE / MAE: the events the evaluator predicted (not those of unknown
                # users or items, nor repeats), so the combined figure is the one of
                # evaluating every rank's events together
                weight = float(_evaluable_events(model, train, valid, kind).sum()
                               if kind == "rating" else result.n_users)
            except NothingToEvaluate:  # this rank's validation users are all new ones
                value, weight = 0.0, 0.0
            if weight == 0:
                value = 0.0
        name = Metric.parse(self.valid_metric).name if kind == "rating" else ""
        if name == "rmse":  # combine mean squared errors
            value = value * value
        total, weights = all_reduce_sum([value * weight, weight],
                                        collective_device(self.device))
        if weights == 0:  # every rank alike: the figure is shared
            raise DataError("no rank has a validation user known to the model; nothing to "
                            "validate on")
        combined = total / max(weights, 1e-12)
        if name == "rmse":
            combined = math.sqrt(combined)
        return -combined if kind == "rating" else combined

    def _log_epoch(self, record: dict[str, Any], bar: Any) -> None:
        parts = [f"epoch {record['epoch']}/{self.epochs}", f"loss {record['loss']:.4f}"]
        if self.valid_metric in record:
            parts.append(f"{self.valid_metric} {record[self.valid_metric]:.4f}")
        parts.append(f"{record['seconds']:.2f}s")
        if self.is_main:
            log.info("  ".join(parts))
            if bar is not None:
                bar.set_postfix_str("  ".join(parts[1:]))

    # ----------------------------------------------------------------------------------
    def _save_checkpoint(self, signature: str, module_state: dict[str, torch.Tensor],
                         opt_state: dict[str, Any], sched, state: TrainingState,
                         best: dict[str, torch.Tensor] | None) -> None:
        assert self.checkpoint_dir is not None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "signature": signature,
            "module": module_state,
            "optimizer": opt_state,
            "scheduler": sched.state_dict() if sched is not None else None,
            "state": json.dumps(asdict(state)),
            "best": best,
        }
        with atomic_path(self.checkpoint_dir / CHECKPOINT) as tmp:
            torch.save(payload, tmp)
        lines = "".join(json.dumps(r) + "\n" for r in state.history)
        atomic_write_text(self.checkpoint_dir / LOG, lines)

    def _load_checkpoint(self, signature: str) -> dict[str, Any] | None:
        assert self.checkpoint_dir is not None
        path = self.checkpoint_dir / CHECKPOINT
        if not path.is_file():
            log.info("no checkpoint in %s: starting from scratch", self.checkpoint_dir)
            return None
        try:
            payload = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # torch raises several types for a damaged file
            raise ConfigError(f"{path}: cannot read checkpoint ({exc})") from None
        if payload.get("signature") != signature:
            raise ConfigError(f"{path}: checkpoint was written for other hyperparameters or "
                              "other training data (or other validation data, feature "
                              "tables or max_steps_per_epoch); remove it or train without "
                              "--resume")
        return payload



class _LossModule(torch.nn.Module):
    """The model's parameters, with the model's batch loss as ``forward`` (what DDP wraps)."""

    def __init__(self, model: GradientRecommender) -> None:
        super().__init__()
        self.net = model.module_
        self._loss = model._loss

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._loss(batch)


class _LocalUserTables:
    """The user-indexed parameter tables of a model trained on data sharded by user.

    Rank ``r`` trains only the rows of the users it owns. Its gradient for such a row comes
    from its local batch alone, whose loss is a mean over ``batch_size / world`` events; the
    gradient one process would compute on the whole batch is ``1/world`` of it, so
    :meth:`scale_gradients` divides by ``world``.

    When the model reads these tables only through ``nn.Embedding`` lookups
    (``user_tables_read_by_lookup``), each becomes *compact*: a parameter holding only
    this rank's rows, looked up through a forward pre-hook that maps global user indices
    to local rows. The optimizer, the gradient and every step's pass over the table then
    cover ``1/world`` of the users. Otherwise each rank keeps whole tables and trains its
    rows in them. Either way, :meth:`full_state` and :meth:`full_optimizer_state` give
    whole tables (for checkpoints), in which :meth:`gather` writes every owner's rows with
    one all-reduce of the masked tables; :meth:`restore_whole_tables` puts whole tables
    back into the model at the end.
    """

    def __init__(self, model: GradientRecommender, rank: int, world: int) -> None:
        from recforge.data.sharding import owner_of_ids

        module = model.module_
        params = dict(module.named_parameters())
        self.names = [n for n in model._user_parameter_names()
                      if n in params and params[n].shape[0] == model.n_users]
        self.world = world
        self.n_users = model.n_users
        device = params[self.names[0]].device if self.names else torch.device("cpu")
        owned = owner_of_ids(model.users_.ids, world) == rank
        self._others = torch.from_numpy(~owned).to(device)
        self._embeddings = {n: _embedding_of(module, n) for n in self.names}
        self.compact = bool(self.names and model.user_tables_read_by_lookup
                            and all(e is not None for e in self._embeddings.values()))
        self._hooks: list[Any] = []
        if self.compact:
            self.rows = torch.from_numpy(np.flatnonzero(owned)).to(device)
            remap = torch.full((self.n_users,), -1, dtype=torch.long, device=device)
            remap[self.rows] = torch.arange(len(self.rows), device=device)

            def to_local(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
                # index_select: 0.08 ms for 32,768 users where remap[idx] takes 0.27 ms
                idx = args[0]
                return (remap.index_select(0, idx.reshape(-1)).view(idx.shape), *args[1:])

            for emb in self._embeddings.values():
                assert emb is not None
                emb.weight = torch.nn.Parameter(emb.weight.detach()[self.rows])
                self._hooks.append(emb.register_forward_pre_hook(to_local))
        params = dict(module.named_parameters())
        self.params = [params[n] for n in self.names]

    # ----------------------------------------------------------------------------------
    def scale_gradients(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad.div_(self.world)

    def clip_gradients(self, module: torch.nn.Module, max_norm: float) -> None:
        """Clip by the norm of the whole model's gradient: the shared parameters' (equal
        on every rank after DDP's all-reduce) and every rank's user rows together, so every
        rank scales by the same factor and the replicas stay equal."""
        from recforge.training.distributed import all_reduce_sum, collective_device

        mine = {id(p) for p in self.params}
        grads = [(id(p) in mine, p.grad) for p in module.parameters() if p.grad is not None]
        shared = sum(float(g.pow(2).sum()) for is_user, g in grads if not is_user)
        own_users = sum(float(g.pow(2).sum()) for is_user, g in grads if is_user)
        (all_users,) = all_reduce_sum([own_users], collective_device(self._others.device))
        scale = max_norm / (math.sqrt(shared + all_users) + 1e-6)
        if scale < 1.0:
            for _, g in grads:
                g.mul_(scale)

    # ----------------------------------------------------------------------------------
    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        """A whole-table tensor holding this rank's rows of the compact ``t``."""
        full = torch.zeros((self.n_users, *t.shape[1:]), dtype=t.dtype, device=t.device)
        full[self.rows] = t
        return full

    def full_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with whole user tables: this rank's rows, and zeros
        (compact tables) or stale values (whole tables) at other ranks' rows until
        :meth:`gather`. A compact table's whole form is built here, when a checkpoint or
        the end of training needs it, not kept: between checkpoints a rank holds only its
        own users' rows."""
        state = module.state_dict()
        if self.compact:
            for n in self.names:
                state[n] = self._expand(state[n].detach())
        return state

    def _optimizer_index(self, opt: torch.optim.Optimizer) -> dict[int, str]:
        names = {id(p): n for n, p in zip(self.names, self.params, strict=True)}
        order = [p for group in opt.param_groups for p in group["params"]]
        return {i: names[id(p)] for i, p in enumerate(order) if id(p) in names}

    def full_optimizer_state(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        """``opt.state_dict()`` with the per-row state of the user tables as whole tables
        (zero at the rows of other ranks' users until :meth:`gather`)."""
        state = opt.state_dict()
        if not self.compact:
            return state
        per_param = dict(state["state"])
        for i, name in self._optimizer_index(opt).items():
            if i in per_param:
                shape = self.params[self.names.index(name)].shape
                per_param[i] = {k: self._expand(v) if torch.is_tensor(v)
                                and v.shape == shape else v for k, v in per_param[i].items()}
        return {**state, "state": per_param}

    def load_optimizer_state(self, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load a checkpoint's optimizer state (whole tables) into the optimizer of the
        compact tables."""
        if self.compact:
            per_param = dict(state["state"])
            for i in self._optimizer_index(opt):
                if i in per_param:
                    per_param[i] = {k: v[self.rows.to(v.device)] if torch.is_tensor(v)
                                    and v.dim() > 0 and v.shape[0] == self.n_users else v
                                    for k, v in per_param[i].items()}
            state = {**state, "state": per_param}
        _load_optimizer_state(opt, state, None)

    # ----------------------------------------------------------------------------------
    def _gather_tensor(self, t: torch.Tensor) -> None:
        import torch.distributed as dist

        from recforge.training.distributed import collective_device

        with torch.no_grad():
            t[self._others.to(t.device)] = 0
            buf = t.to(collective_device(t.device))  # t itself when already there
            dist.all_reduce(buf)
            if buf is not t:
                t.copy_(buf)

    def gather(self, module_state: dict[str, torch.Tensor] | None = None,
               optimizer_state: dict[str, Any] | None = None,
               best: dict[str, torch.Tensor] | None = None) -> None:
        """Every owner's rows into every rank's whole tables, in place: those of
        ``module_state`` (:meth:`full_state`; default: the model's own tables, when they
        are whole), of ``optimizer_state`` (:meth:`full_optimizer_state`) and of the best
        epoch's saved weights (which a resumed run restores at its end)."""
        tables = ([module_state[n] for n in self.names] if module_state is not None
                  else [] if self.compact else [p.data for p in self.params])
        for t in tables:
            self._gather_tensor(t)
        if optimizer_state is not None:
            for per_param in optimizer_state["state"].values():
                for v in per_param.values():
                    if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == self.n_users:
                        self._gather_tensor(v)
        if best is not None:
            for n in self.names:
                if n in best:
                    self._gather_tensor(best[n])

    def restore_whole_tables(self, module: torch.nn.Module) -> None:
        """Put whole tables back into the model, this rank's trained rows written into
        them (the rows of other ranks' users: call :meth:`gather`)."""
        if not self.compact:
            return
        state = self.full_state(module)
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for n, emb in self._embeddings.items():
            assert emb is not None
            emb.weight = torch.nn.Parameter(state[n])
        self.compact = False
        params = dict(module.named_parameters())
        self.params = [params[n] for n in self.names]


def _torch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch: ``seed * 100_003 + epoch``, wrapped into 0..2**64-1 (the
    range ``torch.manual_seed`` takes) so that every accepted seed (up to 2**63-1) trains.
    Unchanged for every seed that worked before (the streams of existing runs, and their
    checkpoints, stay)."""
    return (int(seed) * 100_003 + int(epoch)) % 2**64


def _evaluable_events(model: GradientRecommender, train: Interactions,
                      valid: Interactions, kind: str) -> np.ndarray:
    """Which of ``valid``'s events the evaluator scores, as it selects them: one per
    (user, item) pair, of users with a training event in ``train``, and for RMSE / MAE
    (``kind == "rating"``) also of items known to the model."""
    if len(valid) == 0:
        return np.zeros(0, dtype=bool)
    pair = valid.user.astype(np.int64) * max(1, valid.n_items) + valid.item
    _, first = np.unique(pair, return_index=True)
    tu = model.users_.index(valid.users.ids)[valid.user[first]]
    has_events = np.zeros(model.n_users, dtype=bool)
    tr = model.users_.index(train.users.ids[np.unique(train.user)])
    has_events[tr[tr >= 0]] = True
    ok = (tu >= 0) & has_events[np.maximum(tu, 0)]
    if kind == "rating":
        ok &= model.items_.index(valid.items.ids)[valid.item[first]] >= 0
    return ok


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any],
                          where: Path | None) -> None:
    try:
        opt.load_state_dict(state)
    except ValueError as exc:  # e.g. other parameter groups (row-sparse updates or not)
        raise ConfigError(f"{where or 'checkpoint'}: the optimizer state does not fit this run "
                          f"({exc}); resume with the same settings or train afresh") from None


def _embedding_of(module: torch.nn.Module, name: str) -> torch.nn.Embedding | None:
    """The ``nn.Embedding`` whose ``weight`` is the parameter ``name`` (else None)."""
    owner, _, attr = name.rpartition(".")
    sub = module.get_submodule(owner) if owner else module
    return sub if isinstance(sub, torch.nn.Embedding) and attr == "weight" else None


def _ddp_loss(model: GradientRecommender, device: torch.device, ignore: Sequence[str] = ()
              ) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    from torch.nn.parallel import DistributedDataParallel

    wrapper = _LossModule(model)
    if ignore:  # tables each rank keeps to itself (rows of the users it owns)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            wrapper, [f"net.{n}" for n in ignore])
    ddp = DistributedDataParallel(
        wrapper, device_ids=[device.index if device.index is not None
                             else torch.cuda.current_device()] if device.type == "cuda" else None,
        find_unused_parameters=bool(getattr(model, "ddp_find_unused_parameters", False)),
        # gradients live in DDP's communication buckets: no copy in and out every step
        gradient_as_bucket_view=True, **_buffer_sync(model))
    return ddp


def _buffer_sync(model: GradientRecommender) -> dict[str, bool]:
    """DDP's option that keeps it from broadcasting the module's buffers (a collective,
    and their bytes) before every step, unless the model asks for it. Newer torch calls it
    ``forward_sync_buffers`` (and still copies rank 0's buffers once, when it wraps the
    model); before 2.13, ``broadcast_buffers``, which also skips that first copy: the
    buffers are built alike on every rank from data statistics summed over the ranks."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    sync = bool(getattr(model, "ddp_broadcast_buffers", False))
    names = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers" if "forward_sync_buffers" in names
            else "broadcast_buffers": sync}
