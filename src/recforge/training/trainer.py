"""The one training loop for every gradient-trained model.

A model (anything that offers :class:`~recforge.training.contracts.TrainableModel`, such
as :class:`~recforge.models.gradient.GradientRecommender`) supplies its
``torch.nn.Module`` and a loss for a batch, with a
:class:`~recforge.training.contracts.Sampler` of batches and, for early stopping, a
validation callable; the :class:`Trainer` does the rest: device placement, optimizer and
learning-rate schedule (:mod:`~recforge.training.optim`), epochs of mini-batches,
validation and early stopping, a checkpoint after every epoch and resuming after a kill
(:mod:`~recforge.training.checkpoint`), DDP (:mod:`~recforge.training.ddp`), a progress
bar and a per-epoch JSON log.

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
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recforge.errors import ConfigError, ModelError
from recforge.training import distributed
from recforge.training.allocator import retain_freed_memory
from recforge.training.checkpoint import (
    TrainingState,
    load_checkpoint,
    load_module_state,
    load_optimizer_state,
    save_checkpoint,
)
from recforge.training.contracts import Batch, FitContext, Sampler, TrainableModel, Validate
from recforge.training.ddp import LocalUserTables, ddp_loss
from recforge.training.embedding import embedding_of
from recforge.training.optim import (
    SPARSE_UPDATES,
    check_optimizer,
    check_schedule,
    make_optimizer,
    make_scheduler,
    row_sparse_tables,
)

if TYPE_CHECKING:
    from recforge.training.privacy import PrivacySpec

__all__ = ["Trainer", "TrainingState", "resolve_device"]

log = logging.getLogger(__name__)


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
        With a validation callable, the name of its metric (the key of the epoch log),
        computed every ``eval_every`` epochs; training stops after ``patience``
        evaluations without improvement and the best epoch's weights are restored.
        ``patience=None`` never stops early.
    device, seed:
        Device ("auto" = CUDA when present) and the seed of every random draw.
    max_grad_norm:
        Clip the gradient to this norm before every step (``None``: never).
    privacy:
        Train with differential privacy per user (:mod:`~recforge.training.privacy`,
        on Opacus): ``sampler`` is then a :class:`~recforge.training.privacy.UserBatches`,
        the model offers ``private_loss``, and :attr:`privacy_report` says afterwards what
        was spent. The released weights are the last epoch's (no early stopping).
    context:
        The options of the fit (:class:`~recforge.training.contracts.FitContext`):
        checkpoints and resuming, progress bar, ``distributed=(rank, world_size)`` under
        DDP (only rank 0 writes files), ``sharded`` data (each rank's data holds only the
        events of the users it owns: every rank draws its batches from its own events,
        the same number of steps on every rank, and validates its own users), an epoch
        callback, ``max_steps_per_epoch`` (a partial pass: for timing runs on data too
        large to sweep) and ``sparse_updates``.

    ``sparse_updates`` says whether the user tables (the ``nn.Embedding`` tables a model
    reads only by user index) take *row-sparse* updates: their gradient holds only the rows
    of the batch's users (``nn.Embedding(sparse=True)``) and the optimizer updates only
    those rows, instead of a dense gradient and an optimizer pass over every user's row
    each step. A step's cost then follows the batch, not the user base: with 1.38M users
    the dense passes made an ``mf`` step about 3x as long as with 35K users. Only exact
    with ``adagrad`` (a row with no gradient does not move under Adagrad; under Adam or SGD
    with momentum it does), without ``weight_decay`` or ``max_grad_norm``, and under DDP
    only with sharded data (each rank's own user rows, never all-reduced). ``"auto"``
    (default): on when exact and the user base is at least
    :data:`~recforge.training.optim.SPARSE_ROWS_PER_LOOKUP` times a batch (below that the
    dense passes are the faster, measured on this project's machine); ``"on"``: whenever
    exact (else a :class:`ConfigError`); ``"off"``: never.
    """

    def __init__(self, *, epochs: int, learning_rate: float, optimizer: str = "adam",
                 weight_decay: float = 0.0, lr_schedule: str | None = None,
                 valid_metric: str = "ndcg@20", patience: int | None = None,
                 eval_every: int = 1, device: str | torch.device = "auto", seed: int = 0,
                 max_grad_norm: float | None = None,
                 context: FitContext | None = None,
                 privacy: PrivacySpec | None = None) -> None:
        context = context or FitContext()
        check_optimizer(optimizer)
        check_schedule(lr_schedule)
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        if patience is not None and patience < 1:
            raise ConfigError(f"patience must be >= 1 or None, got {patience}")
        if eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
        steps = context.max_steps_per_epoch
        if steps is not None and steps < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1, got {steps}")
        if context.sparse_updates not in SPARSE_UPDATES:
            raise ConfigError(f"sparse_updates must be one of {SPARSE_UPDATES}, "
                              f"not {context.sparse_updates!r}")
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
        self.max_grad_norm = max_grad_norm
        self.context = context
        self.checkpoint_dir = (Path(context.checkpoint_dir)
                               if context.checkpoint_dir is not None else None)
        self.rank, self.world = context.distributed
        self.sharded_data = context.sharded
        self.privacy = privacy
        #: After a private fit: the privacy spent and how (``PrivateRun.report``).
        self.privacy_report: dict[str, Any] | None = None

    def epoch_torch_seed(self, epoch: int) -> int:
        """The torch seed of ``epoch``'s draws (dropout; a private fit's noise)."""
        return _torch_seed(self.seed, epoch)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def row_sparse_tables(self, model: TrainableModel) -> list[str]:
        """The names of the user tables that take row-sparse updates (``sparse_updates``)."""
        return row_sparse_tables(
            model, mode=self.context.sparse_updates, optimizer=self.optimizer_name,
            weight_decay=self.weight_decay, max_grad_norm=self.max_grad_norm,
            world=self.world, sharded=self.sharded_data)

    # ----------------------------------------------------------------------------------
    def fit(self, model: TrainableModel, sampler: Sampler,
            validate: Validate | None = None) -> TrainingState:
        """Train ``model.module_`` in place on the batches of ``sampler``; with
        ``validate``, stop early on its figure and keep the best epoch's weights. Returns
        the final :class:`TrainingState`."""
        if self.device.type == "cpu":
            retain_freed_memory()
        if self.world > 1 and not distributed.active():
            raise ConfigError("distributed training needs an initialised process group: "
                              "launch with `recforge train --nproc N` or torchrun")
        run: Any
        if self.privacy is not None:
            from recforge.training.privacy import PrivateRun  # lazy: Opacus, an optional extra

            run = PrivateRun(self, model, sampler, self.privacy)  # type: ignore[arg-type]
            steps = run.steps_per_epoch()
        else:
            run = _Run(self, model)
            steps = sampler.steps_per_epoch()
        if self.context.max_steps_per_epoch is not None:
            steps = min(steps, self.context.max_steps_per_epoch)
        state = run.state
        bar = None
        if self.is_main:
            progress = self.context.progress
            bar = tqdm(total=self.epochs * steps, initial=state.epoch * steps,
                       desc=f"{model.name}", unit="batch", leave=False, dynamic_ncols=True,
                       disable=(not sys.stderr.isatty()) if progress is None else not progress)
        try:
            with run.sparse_gradients():
                while state.epoch < self.epochs and not state.stopped_early:
                    epoch = state.epoch
                    record = run.train_epoch(sampler, epoch, steps, bar)
                    # every eval_every epochs, and the last one (not thrown away unevaluated)
                    if validate is not None and ((epoch + 1) % self.eval_every == 0
                                                 or epoch + 1 == self.epochs):
                        run.evaluate(validate(), record)
                    state.history.append(record)
                    state.epoch = epoch + 1
                    self._log_epoch(record, bar)
                    run.checkpoint()
                    if self.context.epoch_callback is not None:  # may raise: a pruned trial
                        self.context.epoch_callback(record)
        finally:
            if bar is not None:
                bar.close()
        run.finish()
        self.privacy_report = getattr(run, "report", None)
        return state

    def _log_epoch(self, record: dict[str, Any], bar: Any) -> None:
        parts = [f"epoch {record['epoch']}/{self.epochs}", f"loss {record['loss']:.4f}"]
        if self.valid_metric in record:
            parts.append(f"{self.valid_metric} {record[self.valid_metric]:.4f}")
        parts.append(f"{record['seconds']:.2f}s")
        if self.is_main:
            log.info("  ".join(parts))
            if bar is not None:
                bar.set_postfix_str("  ".join(parts[1:]))


class _Run:
    """One fit's optimizer, schedule, loss function, user tables and state: resumed from
    a checkpoint when asked, stepped epoch by epoch, checkpointed, then finished."""

    def __init__(self, trainer: Trainer, model: TrainableModel) -> None:
        self.t = trainer
        self.model = model
        self.module = module = model.module_
        self.signature = model.checkpoint_signature()
        loaded = None
        if trainer.context.resume and trainer.checkpoint_dir is not None:
            loaded = load_checkpoint(trainer.checkpoint_dir, self.signature, trainer.device)
            if loaded is not None:
                load_module_state(module, loaded, trainer.checkpoint_dir)
        self.user_tables = (LocalUserTables(model, trainer.rank, trainer.world)
                            if trainer.sharded_data else None)
        sparse_names = trainer.row_sparse_tables(model)
        self.sparse_embeddings = [embedding_of(module, n) for n in sparse_names]
        if sparse_names:
            log.info("row-sparse updates of %s", ", ".join(sparse_names))
        named = dict(module.named_parameters())
        self.opt = make_optimizer(
            trainer.optimizer_name, [p for p in module.parameters() if p.requires_grad],
            lr=trainer.learning_rate, weight_decay=trainer.weight_decay,
            sparse=[named[n] for n in sparse_names])
        self.sched = make_scheduler(trainer.lr_schedule, self.opt, trainer.epochs)
        self.state = TrainingState()
        self.best: dict[str, torch.Tensor] | None = None
        if loaded is not None:
            self._resume(loaded)
        # Under DDP the loss is computed through the wrapper, whose backward pass averages
        # the gradients over all ranks (and whose construction copies rank 0's weights).
        self.compute_loss: Callable[[Batch], torch.Tensor] = model.training_loss
        if trainer.world > 1:
            ignore = self.user_tables.names if self.user_tables is not None else ()
            self.compute_loss = ddp_loss(model, trainer.device, ignore=ignore)

    def _resume(self, loaded: dict[str, Any]) -> None:
        if self.user_tables is not None:
            self.user_tables.load_optimizer_state(self.opt, loaded["optimizer"])
        else:
            load_optimizer_state(self.opt, loaded["optimizer"], self.t.checkpoint_dir)
        if self.sched is not None and loaded.get("scheduler") is not None:
            self.sched.load_state_dict(loaded["scheduler"])
        self.state = TrainingState(**json.loads(loaded["state"]))
        self.best = loaded.get("best")
        log.info("resumed from %s after epoch %d", self.t.checkpoint_dir, self.state.epoch)

    @contextlib.contextmanager
    def sparse_gradients(self) -> Iterator[None]:
        """The row-sparse tables' embeddings give the looked-up rows only in their
        backward pass while training; as built afterwards."""
        was_sparse = [bool(emb is not None and emb.sparse) for emb in self.sparse_embeddings]
        for emb in self.sparse_embeddings:
            assert emb is not None
            emb.sparse = True
        try:
            yield
        finally:
            for emb, sparse in zip(self.sparse_embeddings, was_sparse, strict=True):
                assert emb is not None
                emb.sparse = sparse

    def _step(self, batch: Batch) -> torch.Tensor:
        t, tables = self.t, self.user_tables
        loss = self.compute_loss(batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if tables is not None:
            tables.scale_gradients()
        self.model.after_backward()
        if t.max_grad_norm is not None:
            if tables is not None:
                tables.clip_gradients(self.module, t.max_grad_norm)
            else:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), t.max_grad_norm)
        # torch builds the optimizer's sparse tensors from valid indices; its invariant
        # checks (off by default, with a warning unless chosen) stay off for the step
        with (torch.sparse.check_sparse_tensor_invariants(enable=False)
              if self.sparse_embeddings else contextlib.nullcontext()):
            self.opt.step()
        return loss

    def train_epoch(self, sampler: Sampler, epoch: int, steps: int, bar: Any
                    ) -> dict[str, Any]:
        """One epoch of at most ``steps`` batches; its log record."""
        t = self.t
        t0 = time.perf_counter()
        self.module.train()
        rng = np.random.default_rng([t.seed, epoch])
        total, count = 0.0, 0
        first_batch = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_torch_seed(t.seed, epoch))
            for batch in sampler.epoch(rng):
                if first_batch is None:  # the epoch's sampling is done up front
                    first_batch = time.perf_counter() - t0
                if count >= steps:
                    break
                batch = {k: v.to(t.device, non_blocking=True) for k, v in batch.items()}
                total += float(self._step(batch).detach())
                count += 1
                if bar is not None:
                    bar.update(1)
        lr_used = self.opt.param_groups[0]["lr"]  # this epoch's rate, before the step
        if self.sched is not None:
            self.sched.step()
        steps_taken = count  # optimizer steps (every rank takes as many)
        if t.world > 1:  # the epoch's mean loss over all ranks
            total, count = distributed.all_reduce_sum(
                [total, count], distributed.collective_device(t.device))
        if not math.isfinite(total):  # every rank sees the same reduced total
            raise ModelError(
                f"{self.model.name}: training diverged in epoch {epoch + 1}: the loss is "
                f"{total / max(1, count)}; lower learning_rate (now {t.learning_rate:g}; "
                "the last checkpoint, if any, is of the epoch before)")
        return {"epoch": epoch + 1, "loss": total / max(1, count),
                "seconds": round(time.perf_counter() - t0, 4),
                "sampling_seconds": round(first_batch or 0.0, 4),
                "steps": int(steps_taken), "lr": lr_used}

    def evaluate(self, metric: float, record: dict[str, Any]) -> None:
        """Record the validation figure (signed: higher is better), keep the best epoch's
        weights, count the evaluations without improvement."""
        state = self.state
        record[self.t.valid_metric] = abs(metric) if metric < 0 else metric
        if metric > state.best_metric:
            state.best_metric, state.best_epoch, state.bad_epochs = metric, state.epoch + 1, 0
            current = (self.module.state_dict() if self.user_tables is None
                       else self.user_tables.full_state(self.module))
            self.best = {k: v.detach().clone() for k, v in current.items()}
        else:
            state.bad_epochs += 1
            if self.t.patience is not None and state.bad_epochs >= self.t.patience:
                state.stopped_early = True

    def checkpoint(self) -> None:
        """Write the checkpoint of the epoch just ended (rank 0; with sharded user tables,
        every rank's rows gathered into it first)."""
        t, tables = self.t, self.user_tables
        if t.checkpoint_dir is None:
            return
        if tables is not None:  # every rank's rows into the checkpoint
            module_state = tables.full_state(self.module)
            opt_state = tables.full_optimizer_state(self.opt)
            tables.gather(module_state, opt_state, self.best)
        else:
            module_state, opt_state = self.module.state_dict(), self.opt.state_dict()
        if t.is_main:
            save_checkpoint(t.checkpoint_dir, self.signature, module_state, opt_state,
                            self.sched, self.state, self.best)

    def finish(self) -> None:
        """Free the last gradients, put whole user tables back and restore the best
        epoch's weights (every user's row on every rank)."""
        self.opt.zero_grad(set_to_none=True)
        if self.user_tables is not None:
            self.user_tables.restore_whole_tables(self.module)
        if self.best is not None:
            self.module.load_state_dict(self.best)
            log.info("restored the weights of epoch %d (%s %.4f)", self.state.best_epoch,
                     self.t.valid_metric, self.state.best_metric)
        if self.user_tables is not None:
            self.user_tables.gather()


def _torch_seed(seed: int, epoch: int) -> int:
    """The torch seed of an epoch: ``seed * 100_003 + epoch``, wrapped into 0..2**64-1 (the
    range ``torch.manual_seed`` takes) so that every accepted seed (up to 2**63-1) trains.
    Unchanged for every seed that worked before (the streams of existing runs, and their
    checkpoints, stay)."""
    return (int(seed) * 100_003 + int(epoch)) % 2**64
