"""Optimizers and learning-rate schedules of the trainer, and row-sparse updates.

The one place where the optimizer and schedule names are checked
(:func:`check_optimizer`, :func:`check_schedule`: the trainer and the models' parameter
checks both call them) and turned into torch objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from recforge.errors import ConfigError
from recforge.training.contracts import TrainableModel
from recforge.training.embedding import embedding_of

__all__ = ["OPTIMIZERS", "SCHEDULES", "SPARSE_UPDATES", "SPARSE_ROWS_PER_LOOKUP",
           "check_optimizer", "check_schedule", "make_optimizer", "make_scheduler",
           "row_sparse_tables"]

OPTIMIZERS = ("adam", "adamw", "sgd", "adagrad")
SCHEDULES = (None, "cosine", "step")
#: The values of ``Trainer(sparse_updates=...)``.
SPARSE_UPDATES = ("auto", "on", "off")
#: ``sparse_updates="auto"`` turns row-sparse updates on from this many user rows per
#: lookup in a step (users / batch size). On this project's 2-core machine, a step of
#: Adagrad on a 64-wide table with 65,536 lookups took 15 ms dense and 42 ms row-sparse
#: at 138K rows, 68 ms and 44 ms at 1.38M, 340 ms and 41 ms at 6.9M: dense passes win
#: below about 12 rows per lookup.
SPARSE_ROWS_PER_LOOKUP = 16


def _shown(value: Any) -> str:
    return (repr(value) if value is None or (isinstance(value, str) and len(value) <= 60)
            else f"a {type(value).__name__}")


def _check(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ConfigError(f"{name} must be one of {choices}, not {_shown(value)}")


def check_optimizer(value: Any, name: str = "optimizer") -> None:
    """Raise :class:`ConfigError` (naming ``name``) unless ``value`` is in
    :data:`OPTIMIZERS`."""
    _check(name, value, OPTIMIZERS)


def check_schedule(value: Any, name: str = "lr_schedule") -> None:
    """Raise :class:`ConfigError` (naming ``name``) unless ``value`` is in
    :data:`SCHEDULES`."""
    _check(name, value, SCHEDULES)


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float,
                   weight_decay: float, sparse: Sequence[torch.nn.Parameter] = ()
                   ) -> torch.optim.Optimizer:
    """The optimizer ``name`` (SGD with momentum 0.9) over ``params``; the ``sparse``
    ones (row-sparse gradients) in their own group, on the kernel that takes them."""
    groups: list[Any] = list(params)
    if sparse:
        ids = {id(p) for p in sparse}
        groups = [{"params": [p for p in groups if id(p) not in ids]},
                  {"params": list(sparse), "fused": False, "foreach": False}]
    cls, kwargs = {
        "adam": (torch.optim.Adam, {}),
        "adamw": (torch.optim.AdamW, {}),
        "sgd": (torch.optim.SGD, {"momentum": 0.9}),
        "adagrad": (torch.optim.Adagrad, {}),
    }[name]
    # The fused kernels update a parameter in one pass instead of one pass per term:
    # about 10x faster on an embedding table (6 ms instead of 65 ms for 165K x 64 on 2
    # CPU cores), which dominates a step of the embedding models at scale.
    try:
        return cls(groups, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device
        return cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)


def make_scheduler(name: str | None, opt: torch.optim.Optimizer, epochs: int
                   ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``"cosine"`` (to 0 over ``epochs``), ``"step"`` (halve every quarter of ``epochs``)
    or ``None`` (constant rate)."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if name == "step":
        # a quarter of the epochs, rounded up: 3 halvings at most (7 epochs: 1/8, not
        # the 1/64 of halving every epoch)
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, -(-epochs // 4)),
                                               gamma=0.5)
    return None


def row_sparse_tables(model: TrainableModel, *, mode: str, optimizer: str,
                      weight_decay: float, max_grad_norm: float | None, world: int,
                      sharded: bool) -> list[str]:
    """The names of the user tables that take row-sparse updates under ``mode``
    (``sparse_updates``): ``[]`` where they would not be exact (or, for ``"auto"``, not
    faster); ``"on"`` where they would not be exact is a :class:`ConfigError`."""
    if mode == "off":
        return []
    module = model.module_
    names = [n for n in model.user_parameter_names()
             if embedding_of(module, n) is not None] if model.user_tables_read_by_lookup else []
    why = ("the model reads its user tables whole, not by lookup" if not names
           else f"optimizer {optimizer!r} moves rows without a gradient "
           "(row-sparse updates are exact only with 'adagrad')"
           if optimizer != "adagrad"
           else "weight_decay applies to every row" if weight_decay
           else "max_grad_norm needs the whole gradient" if max_grad_norm is not None
           else "under DDP without data sharded by user, DDP all-reduces the user tables "
           "densely" if world > 1 and not sharded
           else None)
    if why is not None:
        if mode == "on":
            raise ConfigError(f"sparse_updates='on' cannot be used: {why}")
        return []
    batch = int(model.batch_size or 1)
    if mode == "auto" and model.n_users < SPARSE_ROWS_PER_LOOKUP * batch:
        return []
    return names
