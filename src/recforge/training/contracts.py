"""What the :class:`~recforge.training.trainer.Trainer` needs, declared.

The trainer knows nothing of recommenders: it trains whatever offers the methods of
:class:`TrainableModel` on the batches of a :class:`Sampler`, and validates through a
callable it is handed (:data:`Validate`). The models layer implements these
(:class:`recforge.models.gradient.GradientRecommender`); ``recforge.training`` imports
neither ``recforge.models`` nor ``recforge.evaluation``.

:class:`FitContext` carries the options of one fit (checkpoints, resuming, DDP, progress,
epoch length, row-sparse updates) from ``fit`` to the trainer as one object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from recforge.data.vocabulary import Vocabulary

__all__ = ["Batch", "FitContext", "Sampler", "TrainableModel", "Validate"]

#: A mini-batch: ``users``, ``items`` and ``values`` (one row per event), and
#: ``negatives`` (``[B, n_negatives]``) when the sampler draws them.
Batch = dict[str, torch.Tensor]

#: The validation metric of the model as it stands, signed so that higher is better
#: (RMSE / MAE negated), the same figure on every DDP rank. Called by the trainer every
#: ``eval_every`` epochs; it may switch the module to eval mode and must leave it in
#: train mode.
Validate = Callable[[], float]


class Sampler(Protocol):
    """Draws the mini-batches of each epoch (:class:`~recforge.training.batches.EpochSampler`)."""

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        """The batches of one epoch; every random draw comes from ``rng``."""
        ...

    def steps_per_epoch(self) -> int:
        """How many batches :meth:`epoch` yields (the same on every DDP rank)."""
        ...

    def use_local_shard(self, events_per_rank: int,
                        item_counts: np.ndarray | None = None) -> None:
        """This rank's data is its own users' shard: draw ``events_per_rank`` events of it
        per epoch; ``item_counts`` (summed over the ranks) weight popularity sampling."""
        ...


class TrainableModel(Protocol):
    """What the trainer reads and calls on a model while it trains it."""

    #: The parameters being trained (moved to the training device by the model).
    module_: torch.nn.Module
    #: Events per batch over all ranks (decides when row-sparse updates pay).
    batch_size: int
    #: The user vocabulary (DDP ranks own users by their ids).
    users_: Vocabulary

    @property
    def name(self) -> str:
        """The model's name, for messages and the progress bar."""
        ...

    @property
    def n_users(self) -> int:
        ...

    @property
    def user_tables_read_by_lookup(self) -> bool:
        """Whether the :meth:`user_parameter_names` tables are ``nn.Embedding`` weights
        read only by looking up user indices (then a rank may hold only its own rows, and
        they may take row-sparse updates)."""
        ...

    @property
    def ddp_broadcast_buffers(self) -> bool:
        """Whether DDP copies rank 0's buffers to every rank before each step."""
        ...

    def training_loss(self, batch: Batch) -> torch.Tensor:
        """The scalar loss of a batch (what backward is called on)."""
        ...

    def after_backward(self) -> None:
        """Called between ``backward`` and the optimizer step (e.g. gradient surgery)."""
        ...

    def user_parameter_names(self) -> list[str]:
        """Names in ``module_`` of the tables with one row per user that a batch reads
        only at its own users' rows."""
        ...

    def checkpoint_signature(self) -> str:
        """What a checkpoint must have been written for to be resumed (model, params,
        data, fit options), as a short hash."""
        ...


@dataclass(frozen=True)
class FitContext:
    """The options of one fit, beyond the model's hyperparameters and the data.

    checkpoint_dir, resume:
        Write ``checkpoint.pt`` and ``train_log.jsonl`` there after every epoch; with
        ``resume=True`` continue from an existing checkpoint.
    progress:
        Show a progress bar (``None``: only on a terminal).
    distributed:
        ``(rank, world_size)`` when running under DDP; only rank 0 writes files.
    sharded:
        Under DDP, each rank's ``train`` and ``valid`` hold only the events of the users
        it owns (false whenever ``world_size`` is 1).
    epoch_callback:
        Called with every epoch's log record; an exception it raises stops training.
    max_steps_per_epoch:
        Stop each epoch after this many batches (``None``: the whole epoch).
    sparse_updates:
        ``"auto"``, ``"on"`` or ``"off"``: row-sparse updates of the user tables (see
        :class:`~recforge.training.trainer.Trainer`).
    """

    checkpoint_dir: str | Path | None = None
    resume: bool = False
    progress: bool | None = None
    distributed: tuple[int, int] = (0, 1)
    sharded: bool = False
    epoch_callback: Callable[[dict[str, Any]], None] | None = None
    max_steps_per_epoch: int | None = None
    sparse_updates: str = "auto"

    def __post_init__(self) -> None:
        # data sharded by user means something only with more than one rank
        object.__setattr__(self, "sharded", bool(self.sharded and self.world > 1))

    @property
    def rank(self) -> int:
        return self.distributed[0]

    @property
    def world(self) -> int:
        return self.distributed[1]
