"""Checkpoints of a training run: written atomically after every epoch, read to resume.

A checkpoint (``checkpoint.pt``) holds the module's and the optimizer's state, the
learning-rate schedule, the :class:`TrainingState` and the best epoch's weights, tagged
with the model's :meth:`~recforge.training.contracts.TrainableModel.checkpoint_signature`:
a run resumes only from a checkpoint written for the same model, hyperparameters and
data. ``train_log.jsonl`` beside it holds one JSON record per epoch.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recforge._fs import atomic_path, atomic_write_text
from recforge.errors import ConfigError

__all__ = ["CHECKPOINT", "LOG", "TrainingState", "load_checkpoint", "load_module_state",
           "load_optimizer_state", "save_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"


@dataclass
class TrainingState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    best_metric: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(directory: Path, signature: str, module_state: dict[str, torch.Tensor],
                    opt_state: dict[str, Any], sched: Any, state: TrainingState,
                    best: dict[str, torch.Tensor] | None) -> None:
    """Write the checkpoint and the epoch log into ``directory`` (each atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "signature": signature,
        "module": module_state,
        "optimizer": opt_state,
        "scheduler": sched.state_dict() if sched is not None else None,
        "state": json.dumps(asdict(state)),
        "best": best,
    }
    with atomic_path(directory / CHECKPOINT) as tmp:
        torch.save(payload, tmp)
    lines = "".join(json.dumps(r) + "\n" for r in state.history)
    atomic_write_text(directory / LOG, lines)


def load_checkpoint(directory: Path, signature: str, device: torch.device
                    ) -> dict[str, Any] | None:
    """The checkpoint in ``directory`` (``None`` when there is none); a
    :class:`ConfigError` when it cannot be read or was written for another run."""
    path = directory / CHECKPOINT
    if not path.is_file():
        log.info("no checkpoint in %s: starting from scratch", directory)
        return None
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ConfigError(f"{path}: cannot read checkpoint ({exc})") from None
    if payload.get("signature") != signature:
        raise ConfigError(f"{path}: checkpoint was written for other hyperparameters or "
                          "other training data (or other validation data, feature "
                          "tables or max_steps_per_epoch); remove it or train without "
                          "--resume")
    return payload


def load_module_state(module: torch.nn.Module, payload: dict[str, Any],
                      directory: Path) -> None:
    """The checkpoint's weights into ``module`` (a :class:`ConfigError` when they do not
    fit it)."""
    try:
        module.load_state_dict(payload["module"])
    except RuntimeError as exc:  # other shapes or tables than this model's
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"{directory / CHECKPOINT}: the checkpoint's weights do not fit this model "
            f"({detail[:300]}); remove it or train without --resume") from None


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any],
                         where: Path | None) -> None:
    """A checkpoint's optimizer state into ``opt`` (a :class:`ConfigError` when its
    parameter groups differ)."""
    try:
        opt.load_state_dict(state)
    except ValueError as exc:  # e.g. other parameter groups (row-sparse updates or not)
        raise ConfigError(f"{where or 'checkpoint'}: the optimizer state does not fit this run "
                          f"({exc}); resume with the same settings or train afresh") from None
