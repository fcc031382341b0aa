"""Differentially private training with per-user privacy, on Opacus.

The unit of privacy is a **user**: a training sample is one user, with at most
``max_per_user`` of their events (each with its sampled negatives) drawn for the step, and
the steps' batches are Poisson samples of users (each user joins a step independently
with probability ``q``). Opacus (the maintained PyTorch DP-SGD library) does the rest:
its ``GradSampleModule`` hooks compute each user's gradient of the shared parameters, its
``DPOptimizer`` clips every user's gradient to ``max_grad_norm`` and adds Gaussian noise
to the sum, and its accountant (RDP) chooses the noise for the target ``(epsilon,
delta)`` over the planned epochs and reports the epsilon spent. Nothing here clips,
samples noise or accounts by hand.

What is private. The **shared (item-side) parameters** — item embeddings, item biases,
MLP layers, output layers — are ``(epsilon, delta)``-DP with respect to the addition or
removal of any one user's whole history. The **user tables** (each user's own embedding
row and bias, :meth:`TrainableModel.user_parameter_names`) are not noised: a user's row is
read only by that user's samples and trained, unclipped, by their own Adam optimizer
on that user's own events and the private item parameters. So the model is *jointly*
differentially private (Kearns et al. 2014; Jain, Thakkar & Thakurta 2018): what is
recommended to user ``v`` (their own row with the private item side) is DP with respect to
every other user ``u``; a user's own row is as secret as their history and must not be
published (it is dropped by erasure). Noising the user rows as well would give every row
Gaussian noise every step while its user is sampled in only a fraction ``q`` of steps,
drowning it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from recforge.data.interactions import Interactions
from recforge.data.sampling import PositiveLookup, sample_negatives
from recforge.errors import ConfigError, ModelError
from recforge.training.checkpoint import TrainingState, save_checkpoint
from recforge.training.contracts import Batch, TrainableModel
from recforge.training.embedding import Embedding
from recforge.training.optim import make_optimizer, make_scheduler

__all__ = ["ItemOutput", "PrivacySpec", "PrivateRun", "UserBatches", "UserWindows",
           "require_opacus"]

log = logging.getLogger(__name__)

#: The accountant Opacus computes the noise and the spent epsilon with.
ACCOUNTANT = "rdp"
#: The Renyi orders the accountant optimises over: Opacus's default grid has 99 fractional
#: orders, each a slow series (about 1 s per epsilon at a sampling rate of 0.5 on this
#: project's machine); integer orders have a closed form. Fewer orders can only give a
#: larger (still valid) epsilon; at the rates of real data the difference is small.
ALPHAS = [1.25, 1.5, 1.75, *range(2, 64), 80, 96, 128, 256]


def require_opacus() -> Any:
    """The ``opacus`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import opacus  # lazy: an optional extra (recforge[privacy])
    except ImportError:  # pragma: no cover - the dev install has it
        raise ConfigError("differentially private training (dp_epsilon) needs Opacus: "
                          "pip install 'recforge[privacy]'") from None
    return opacus


@dataclass(frozen=True)
class PrivacySpec:
    """The privacy target of a fit.

    epsilon, delta:
        The ``(epsilon, delta)`` the accountant chooses the noise for, over all the fit's
        epochs (``delta`` usually ``1 / n_users``).
    max_grad_norm:
        Each user's gradient of the shared parameters is clipped to this L2 norm.
    max_per_user:
        At most this many of a user's events (each with its negatives) in a step.
    users_per_step:
        The expected number of users in a step (Poisson sampling rate ``q`` =
        ``1 / ceil(n_users / users_per_step)``).
    user_learning_rate:
        The user tables are trained with Adam at this rate, each row on the gradient of its
        own user's loss (scale-free: it does not depend on how many users share the step,
        nor on the optimizer of the shared parameters).
    """

    epsilon: float
    delta: float
    max_grad_norm: float
    max_per_user: int
    users_per_step: int
    user_learning_rate: float = 0.01

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"dp_epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"dp_delta must be in (0, 1), got {self.delta!r}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ConfigError("dp_max_grad_norm must be a finite number > 0, got "
                              f"{self.max_grad_norm!r}")
        if self.max_per_user < 1 or self.users_per_step < 1:
            raise ConfigError("dp_max_per_user and the users per step must be >= 1")


class UserBatches:
    """User-level batches: for each sampled user, up to ``max_per_user`` of their events
    drawn without replacement (all of them when they have fewer), and ``n_negatives``
    uniformly drawn items they have no event with per event.

    A batch of ``B`` users is ``users`` ``[B]``, ``items`` ``[B, m]``, ``values``
    ``[B, m]``, ``mask`` ``[B, m]`` (which of the ``m = max_per_user`` slots hold an
    event; the others hold item 0 and must not count) and, with negatives, ``negatives``
    ``[B, m, n_negatives]``. Everything is drawn with vectorized numpy, no loop over
    users. Negatives are uniform over the catalogue (popularity-weighted sampling would
    read every user's events into every step).
    """

    def __init__(self, data: Interactions, max_per_user: int, n_negatives: int = 0):
        self.max_per_user = int(max_per_user)
        self.n_negatives = int(n_negatives)
        self.n_users = data.n_users
        order = np.argsort(data.user, kind="stable")
        self._items = data.item[order].astype(np.int64)
        self._values = data.values_or_ones()[order].astype(np.float32)
        counts = np.bincount(data.user, minlength=data.n_users)
        self._indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # the batch width: no user fills more slots than their events (a cap of 2^31 - 1
        # would otherwise allocate [B, 2^31 - 1] arrays; found by the config fuzz)
        self.max_per_user = max(1, min(self.max_per_user, int(counts.max(initial=0))))
        self._positives = data.binary_csr if self.n_negatives > 0 else None
        self._lookup = (PositiveLookup(self._positives) if self._positives is not None
                        else None)

    def batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        """The batch of ``users`` (user indices; no user twice)."""
        users = np.asarray(users, dtype=np.int64)
        m, b = self.max_per_user, len(users)
        starts, counts = self._indptr[users], np.diff(self._indptr)[users]
        total = int(counts.sum())
        group = np.repeat(np.arange(b), counts)
        offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        event = np.repeat(starts, counts) + offset
        # a random order within each user's events; the first m of each are drawn
        order = np.lexsort((rng.random(total), group))
        rank = np.empty(total, dtype=np.int64)
        rank[order] = offset
        keep = rank < m
        items = np.zeros((b, m), dtype=np.int64)
        values = np.zeros((b, m), dtype=np.float32)
        mask = np.zeros((b, m), dtype=bool)
        g, r, e = group[keep], rank[keep], event[keep]
        items[g, r], values[g, r], mask[g, r] = self._items[e], self._values[e], True
        out: Batch = {"users": torch.from_numpy(users), "items": torch.from_numpy(items),
                      "values": torch.from_numpy(values), "mask": torch.from_numpy(mask)}
        if self.n_negatives > 0:
            assert self._positives is not None
            k = self.n_negatives
            neg = (sample_negatives(self._positives, np.repeat(users, m), k, rng=rng,
                                    lookup=self._lookup) if b else np.zeros((0, k)))
            out["negatives"] = torch.from_numpy(neg.astype(np.int64).reshape(b, m, k))
        return out


class UserWindows:
    """User-level batches of a next-item model: each sampled user's training window, their
    last items in order (``windows`` ``[n_users, W]``, right-padded, 1-based, 0 the
    padding; one row per user, users with fewer than two items train nothing), as
    ``inputs`` ``[B, L]`` (all but the last item) and ``targets`` (the items that follow),
    cut to the longest window of the batch, with ``users`` ``[B]``. A user's contribution
    to a step is that one window (``max_per_user``: its positions)."""

    def __init__(self, windows: np.ndarray):
        windows = np.ascontiguousarray(windows, dtype=np.int64)
        self._windows = torch.from_numpy(windows)
        self._lengths = (windows > 0).sum(1)
        self.n_users = len(windows)
        self.max_per_user = max(1, windows.shape[1] - 1)

    def batch(self, users: np.ndarray, rng: np.random.Generator) -> Batch:
        """The batch of ``users`` (user indices; ``rng`` is not used: nothing is drawn)."""
        users = np.asarray(users, dtype=np.int64)
        longest = max(2, int(self._lengths[users].max(initial=0)))
        win = self._windows.index_select(0, torch.from_numpy(users))[:, :longest]
        return {"users": torch.from_numpy(users), "inputs": win[:, :-1],
                "targets": win[:, 1:]}


class ItemOutput(nn.Module):
    """Every item's score ``x @ T[1:].T`` (``[..., n_items]``) for a private loss, where
    ``T`` is the concatenation along columns of ``tables`` (``[n_items + 1, d_i]`` each,
    row 0 the padding item): parameters that other modules own too (a next-item model's
    item table is its input embedding as well). Opacus sums the per-user gradients of all
    the modules that read a parameter (``hooks`` mode), so each user's gradient of a tied
    table is whole when its clipping norm is taken. Not a submodule of the model: it is
    made for the private fit alone and saves nothing."""

    def __init__(self, tables: list[nn.Parameter]):
        super().__init__()
        self.widths = [int(t.shape[1]) for t in tables]
        for i, table in enumerate(tables):
            self.register_parameter(f"table{i}", table)

    def tables(self) -> list[nn.Parameter]:
        return [getattr(self, f"table{i}") for i in range(len(self.widths))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tables = self.tables()
        table = tables[0] if len(tables) == 1 else torch.cat(tables, dim=1)
        return x @ table[1:].T


def _item_output_grad_sample(layer: nn.Module, activations: list[torch.Tensor],
                             backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Each user's gradient of the tables of an :class:`ItemOutput`: ``sum_t g_t x_t^T``
    over the user's positions, ``[B, n_items + 1, d]`` (row 0 zero), split by table."""
    x, g = activations[0], backprops.to(activations[0].dtype)
    if x.dim() == 2:  # one position per user
        x, g = x.unsqueeze(1), g.unsqueeze(1)
    x, g = x.flatten(1, -2), g.flatten(1, -2)  # [B, positions, d] and [B, positions, n]
    grads = torch.zeros(x.shape[0], g.shape[-1] + 1, x.shape[-1], dtype=x.dtype,
                        device=x.device)
    grads[:, 1:] = torch.bmm(g.transpose(1, 2), x)
    out: dict[nn.Parameter, torch.Tensor] = {}
    start = 0
    for table, width in zip(layer.tables(), layer.widths, strict=True):
        if table.requires_grad:
            out[table] = grads[..., start:start + width]
        start += width
    return out


class _Users(torch.utils.data.Dataset):
    """The user indices ``0..n-1``; a batch of them is fetched at once (``__getitems__``)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int]:
        return (int(index),)  # a tuple: Opacus reads the shape of a sample's fields

    def __getitems__(self, indices: list[int]) -> list[int]:
        return list(indices)


class _Collate:
    """Builds a user batch from the indices Opacus's Poisson sampler drew; its generator
    is reseeded every epoch (for the draws of events and negatives)."""

    def __init__(self, batches: UserBatches):
        self.batches = batches
        self.rng = np.random.default_rng(0)

    def __call__(self, users: list[int]) -> Batch:
        return self.batches.batch(np.asarray(users, dtype=np.int64), self.rng)


def _register_samplers() -> None:
    """Opacus finds its per-sample gradient and gradient-norm functions by exact module
    type (in a registry of its own, for the whole process): recforge's
    :class:`~recforge.training.embedding.Embedding` (an ``nn.Embedding`` with a faster
    CPU backward pass) takes ``nn.Embedding``'s gradient function, :class:`ItemOutput`
    its own (:func:`_item_output_grad_sample`); both embeddings take
    :func:`_embedding_norm_sample` (empty Poisson steps) and ``nn.Linear`` takes
    :func:`linear_norm_sample` (many pairs per user)."""
    from opacus.grad_sample import embedding  # lazy: an optional extra
    from opacus.grad_sample.utils import (  # lazy: an optional extra
        register_grad_sampler,
        register_norm_sampler,
    )

    register_grad_sampler(Embedding)(embedding.compute_embedding_grad_sample)
    register_grad_sampler(ItemOutput)(_item_output_grad_sample)
    for kind in (Embedding, nn.Embedding):
        register_norm_sampler(kind)(_embedding_norm_sample)
    register_norm_sampler(nn.Linear)(linear_norm_sample)


def linear_norm_sample(layer: nn.Module, activations: list[torch.Tensor],
                       backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-user gradient norms of a linear layer fed ``[B, T, d_in]`` (a user's T pairs
    of a step), by the cheaper of two exact ways: Opacus's ghost norm builds two
    ``[B, T, T]`` Gram matrices, the per-user gradient ``sum_t g_t a_t^T`` is
    ``[B, d_out, d_in]``. ``neumf`` with 1,000 negatives per event has T = 20,000 pairs a
    user (1.6 GB per Gram matrix) against 512 x 512 weights (1 MB): the gradient, there."""
    from opacus.grad_sample import linear  # lazy: an optional extra

    g = backprops
    if g.dim() != 3 or g.shape[1] ** 2 <= layer.weight.numel():
        return linear.compute_linear_norm_sample(layer, activations, backprops)
    a = activations[0].to(g.dtype)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.einsum("nti,ntj->nij", g, a).flatten(1).norm(dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = g.sum(1).norm(dim=1)
    return out


def _embedding_norm_sample(layer: nn.Module, activations: list[torch.Tensor],
                           backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Opacus's per-user gradient norms of an embedding table, and none for a step whose
    Poisson sample drew no user (Opacus's own function cannot reshape the empty lookup):
    that step still adds the noise, to a zero gradient, as the accountant assumes."""
    from opacus.grad_sample import embedding  # lazy: an optional extra

    if activations[0].shape[0] == 0:
        return {layer.weight: backprops.new_zeros(0)}
    return embedding.compute_embedding_norm_sample(layer, activations, backprops)


class _PerUserLoss(nn.Module):
    """The criterion Opacus's ghost clipping wraps: the model already computed each user's
    loss, so the "per-sample loss" is its input, reduced as ``reduction`` says."""

    def __init__(self) -> None:
        super().__init__()
        self.reduction = "mean"

    def forward(self, per_user: torch.Tensor, _target: Any = None) -> torch.Tensor:
        if self.reduction == "none":
            return per_user
        return per_user.sum() if self.reduction == "sum" else per_user.mean()


class _CallCounter:
    """Counts the calls of the modules Opacus clips (forward pre-hooks): ghost clipping
    keeps one gradient norm per parameter and call, so a module called twice in a step
    would be clipped on a wrong (smaller) norm. Every step checks one call each."""

    def __init__(self, owners: list[nn.Module], names: list[str]):
        self.calls = dict.fromkeys(range(len(owners)), 0)
        self.names = names
        self.handles = [m.register_forward_pre_hook(self._hook(i))
                        for i, m in enumerate(owners)]

    def _hook(self, i: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any) -> None:
            if torch.is_grad_enabled():
                self.calls[i] += 1
        return hook

    def check(self, model: str) -> None:
        wrong = [f"{self.names[i]} ({n} calls)" for i, n in self.calls.items() if n != 1]
        for i in self.calls:
            self.calls[i] = 0
        if wrong:
            raise ModelError(f"{model}: private_loss must call each shared module exactly "
                             f"once per step (Opacus keeps one gradient norm per call): "
                             f"{', '.join(wrong)}")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _first_pass_only(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
    """Forward hook of a user table: its rows take the gradient of the first backward
    pass only. Opacus's ghost clipping runs two: the plain mean loss (whose gradient a
    user's own row should follow), then the loss reweighted by the clipping coefficients
    (for the shared parameters)."""
    if not output.requires_grad:
        return
    passes = [0]

    def hook(grad: torch.Tensor) -> torch.Tensor:
        passes[0] += 1
        return grad if passes[0] == 1 else torch.zeros_like(grad)

    output.register_hook(hook)


class PrivateRun:
    """One DP fit: the same interface as the trainer's ordinary run (``train_epoch``,
    ``evaluate``, ``checkpoint``, ``finish``), with Opacus's private optimizer on the
    shared parameters, its own Adam on the user tables and Poisson-sampled user
    batches."""

    def __init__(self, trainer: Any, model: TrainableModel, batches: UserBatches,
                 spec: PrivacySpec) -> None:
        require_opacus()
        from opacus import PrivacyEngine  # lazy: an optional extra
        from opacus.accountants.utils import get_noise_multiplier  # lazy: an optional extra
        from opacus.validators import ModuleValidator  # lazy: an optional extra

        _register_samplers()
        self.t, self.model, self.batches, self.spec = trainer, model, batches, spec
        if trainer.world > 1:
            raise ConfigError(f"{model.name}: differentially private training runs in one "
                              "process (no --nproc)")
        if trainer.context.resume:
            raise ConfigError(f"{model.name}: a differentially private fit cannot resume "
                              "from a checkpoint (the accountant's steps would restart); "
                              "train again without --resume")
        self.module = module = model.module_
        user_names = set(model.user_parameter_names())
        named = dict(module.named_parameters())
        shared = {n: p for n, p in named.items() if n not in user_names and p.requires_grad}
        users = [p for n, p in named.items() if n in user_names and p.requires_grad]
        if not shared:
            raise ModelError(f"{model.name}: no shared parameters to train privately")
        owners, owner_names = _owners(module, shared)
        extra = list(model.private_modules())  # type: ignore[attr-defined]
        owners += extra
        owner_names += [type(m).__name__ for m in extra]
        self.mode = str(getattr(model, "private_grad_sample_mode", "ghost"))
        errors = ModuleValidator.validate(nn.ModuleList(owners), strict=False)
        if errors:
            raise ModelError(f"{model.name}: modules Opacus cannot train privately: {errors}")
        self.users_params = users
        opt = make_optimizer(trainer.optimizer_name, list(shared.values()),
                             lr=trainer.learning_rate, weight_decay=trainer.weight_decay)
        self.user_opt = (make_optimizer("adam", users, lr=spec.user_learning_rate,
                                        weight_decay=trainer.weight_decay) if users else None)
        self.collate = _Collate(batches)
        n = batches.n_users
        gen = torch.Generator()
        gen.manual_seed(trainer.seed)
        loader = torch.utils.data.DataLoader(
            _Users(n), batch_size=min(n, spec.users_per_step), collate_fn=self.collate,
            generator=gen)
        self.sample_rate = 1.0 / len(loader)
        # the noise for the target over the planned epochs (what make_private_with_epsilon
        # computes, with the orders of ALPHAS)
        try:
            self.noise_multiplier = float(get_noise_multiplier(
                target_epsilon=spec.epsilon, target_delta=spec.delta,
                sample_rate=self.sample_rate, epochs=trainer.epochs, accountant=ACCOUNTANT,
                alphas=ALPHAS))
        except ValueError as exc:  # Opacus: "The privacy budget is too low."
            raise ConfigError(
                f"dp_epsilon={spec.epsilon:g} with dp_delta={spec.delta:g} cannot be met "
                f"over {trainer.epochs} epochs of {len(loader)} steps (sampling rate "
                f"{self.sample_rate:.3g}): no noise level is large enough ({exc}); raise "
                "dp_epsilon or dp_delta, or train fewer epochs") from None
        with warnings.catch_warnings():  # Opacus's note on its seeded (not secure) RNG
            warnings.simplefilter("ignore")
            self.engine = PrivacyEngine(accountant=ACCOUNTANT)
            private = {"module": nn.ModuleList(owners), "optimizer": opt,
                       "data_loader": loader, "noise_multiplier": self.noise_multiplier,
                       "max_grad_norm": spec.max_grad_norm, "poisson_sampling": True,
                       "wrap_model": False}
            if self.mode == "ghost":
                # ghost clipping: each user's gradient norm without materialising their
                # gradient of every item row ([users, n_items, dim], 120 MB a step for bpr
                # on ml-1m, and most of the step's time)
                self.hooks, self.opt, self.criterion, self.loader = self.engine.make_private(
                    **private, criterion=_PerUserLoss(), grad_sample_mode="ghost")
            else:  # per-user gradients, summed over every module call that reads them
                self.hooks, self.opt, self.loader = self.engine.make_private(
                    **private, grad_sample_mode="hooks", loss_reduction="mean")
                self.criterion = _PerUserLoss()
        # ghost clipping keeps one norm per module call; hooks sum the calls' gradients
        self.calls = _CallCounter(owners if self.mode == "ghost" else [], owner_names)
        physical = model.private_physical_users()  # type: ignore[attr-defined]
        self.physical_users = (int(physical) if physical is not None and self.mode == "hooks"
                               and not users else None)
        user_modules = _owners(module, {n: p for n, p in named.items() if n in user_names})[0]
        self.user_hooks = [m.register_forward_hook(_first_pass_only) for m in user_modules]
        self.sched = make_scheduler(trainer.lr_schedule, self.opt, trainer.epochs)
        self.user_sched = (make_scheduler(trainer.lr_schedule, self.user_opt, trainer.epochs)
                           if self.user_opt is not None else None)
        self.state = TrainingState()
        self.steps = 0
        log.info("differentially private training: epsilon %g, delta %.3g, noise multiplier "
                 "%.3f, sampling rate %.4f, clip %g, at most %d events per user per step",
                 spec.epsilon, spec.delta, self.noise_multiplier, self.sample_rate,
                 spec.max_grad_norm, batches.max_per_user)

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def sparse_gradients(self) -> Any:
        import contextlib  # lazy: only the interface of the ordinary run

        return contextlib.nullcontext()

    def _empty(self) -> Batch:
        return self.batches.batch(np.zeros(0, dtype=np.int64), self.collate.rng)

    def _step(self, batch: Batch) -> tuple[float, int]:
        parts = self._physical(batch)
        if len(parts) > 1:
            return self._step_in_parts(parts)
        per_user = self.model.private_loss(batch)  # type: ignore[attr-defined]
        b = int(per_user.shape[0])
        self.calls.check(self.model.name)
        self.opt.zero_grad(set_to_none=True)
        if self.user_opt is not None:
            self.user_opt.zero_grad(set_to_none=True)
        # the mean over the step's users: Opacus takes each user's gradient norm, clips
        # (ghost: a second backward pass of the loss reweighted per user; hooks: each
        # user's materialised gradient), then its optimizer adds the noise and divides by
        # the expected number of users
        self._backward(per_user)
        self.opt.step()
        if self.user_opt is not None:
            for p in self.users_params:  # each user's row: the gradient of its own loss
                if p.grad is not None:
                    p.grad.mul_(float(max(b, 1)))
            self.user_opt.step()
        self.steps += 1
        return float(per_user.detach().sum()), b

    def _backward(self, per_user: torch.Tensor) -> None:
        with warnings.catch_warnings():  # Opacus's hooks on lookups of integer indices
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self.criterion(per_user).backward()

    def _physical(self, batch: Batch) -> list[Batch]:
        """The step's users in parts of at most ``physical_users`` (the model's
        :meth:`private_physical_users`; hooks mode without user tables only), so that the
        per-user gradients of a large Poisson sample fit in memory."""
        size = self.physical_users
        n = len(batch["users"])
        if size is None or n <= size:
            return [batch]
        return [{k: v[start:start + size] for k, v in batch.items()}
                for start in range(0, n, size)]

    def _step_in_parts(self, parts: list[Batch]) -> tuple[float, int]:
        """One private step over the parts of a user batch: Opacus's virtual steps (the
        per-user gradients of each part clipped and summed, ``signal_skip_step``), the
        noise added once, to the sum over all the parts, by the last part's step."""
        total, users = 0.0, 0
        for i, part in enumerate(parts):
            per_user = self.model.private_loss(part)  # type: ignore[attr-defined]
            self.opt.zero_grad(set_to_none=True)  # keeps the sum of the parts before
            # the mean over this part: Opacus's hooks rescale it to each user's own
            # gradient, and its optimizer divides the noised sum by the expected number of
            # users of the whole step
            self._backward(per_user)
            if i < len(parts) - 1:
                self.opt.signal_skip_step(do_skip=True)
            self.opt.step()
            total, users = total + float(per_user.detach().sum()), users + len(per_user)
        self.steps += 1
        return total, users

    def train_epoch(self, sampler: Any, epoch: int, steps: int, bar: Any) -> dict[str, Any]:
        t = self.t
        t0 = time.perf_counter()
        self.module.train()
        self.collate.rng = np.random.default_rng([t.seed, epoch])
        total, users, count = 0.0, 0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.epoch_torch_seed(epoch))  # the noise's draws
            for batch in _batches(self.loader, self._empty):
                if count >= steps:
                    break
                batch = {k: v.to(t.device) for k, v in batch.items()}
                s, b = self._step(batch)
                total, users, count = total + s, users + b, count + 1
                if bar is not None:
                    bar.update(1)
        lr_used = self.opt.param_groups[0]["lr"]
        for sched in (self.sched, self.user_sched):
            if sched is not None:
                sched.step()
        if not math.isfinite(total):
            raise ModelError(f"{self.model.name}: training diverged in epoch {epoch + 1}: "
                             f"the loss is {total / max(1, users)}; lower learning_rate "
                             f"(now {t.learning_rate:g})")
        return {"epoch": epoch + 1, "loss": total / max(1, users),
                "seconds": round(time.perf_counter() - t0, 4), "sampling_seconds": 0.0,
                "steps": count, "lr": lr_used, "users": users,
                "epsilon": round(self.spent_epsilon(), 6)}

    def spent_epsilon(self) -> float:
        if not self.steps:
            return 0.0
        # the RDP conversion can come out below 0 when delta is large (1 / n_users of a
        # few dozen users) and the noise enormous: no mechanism spends less than nothing
        return max(0.0, float(self.engine.accountant.get_epsilon(self.spec.delta,
                                                                  alphas=ALPHAS)))

    def evaluate(self, metric: float, record: dict[str, Any]) -> None:
        """Record the validation figure only: the released weights are the last epoch's
        (choosing the best epoch on the users' held-out events is not covered by the
        accountant), and there is no early stopping."""
        record[self.t.valid_metric] = abs(metric) if metric < 0 else metric
        self.state.best_metric, self.state.best_epoch = metric, self.state.epoch + 1

    def checkpoint(self) -> None:
        """The epoch's weights and log (for inspection; a DP fit does not resume)."""
        if self.t.checkpoint_dir is None:
            return
        save_checkpoint(self.t.checkpoint_dir, self.model.checkpoint_signature(),
                        self.module.state_dict(),
                        self.opt.original_optimizer.state_dict(), self.sched, self.state,
                        None)

    def finish(self) -> None:
        """Remove Opacus's hooks and per-sample gradients; record what was spent."""
        self.opt.zero_grad(set_to_none=True)
        if self.user_opt is not None:
            self.user_opt.zero_grad(set_to_none=True)
        self.hooks.cleanup()
        self.calls.remove()
        for h in self.user_hooks:
            h.remove()
        for p in self.module.parameters():
            for attr in ("grad_sample", "_current_grad_sample", "_forward_counter",
                         "_norm_sample"):
                if hasattr(p, attr):
                    delattr(p, attr)
        self.report = {
            "epsilon": self.spent_epsilon(), "delta": self.spec.delta,
            "target_epsilon": self.spec.epsilon, "unit": "user",
            "max_grad_norm": self.spec.max_grad_norm,
            "max_per_user": int(self.batches.max_per_user),
            "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
            "expected_users_per_step": self.sample_rate * self.batches.n_users,
            "steps": self.steps, "accountant": ACCOUNTANT, "library": "opacus",
            "covers": "the shared (item-side) parameters; each user's own rows are trained "
                      "on that user's events only (joint differential privacy)"}
        log.info("differentially private training spent epsilon %.4f (delta %.3g, target "
                 "%g) over %d steps", self.report["epsilon"], self.spec.delta,
                 self.spec.epsilon, self.steps)


def _batches(loader: Any, empty: Any) -> Iterator[Batch]:
    """The loader's batches; an empty Poisson sample (Opacus gives ``[]`` when the first
    batch of a loader is empty) as the empty user batch: it still takes a noised step."""
    for batch in loader:
        yield batch if isinstance(batch, dict) else empty()


def _owners(module: nn.Module, params: dict[str, nn.Parameter]
            ) -> tuple[list[nn.Module], list[str]]:
    """The submodules that own ``params`` directly, each once, and their names; a module
    that owns both a shared parameter and a user table cannot be split for Opacus."""
    owners: dict[int, nn.Module] = {}
    names: dict[int, str] = {}
    for name in params:
        owner_name = name.rpartition(".")[0]
        owner = module.get_submodule(owner_name) if owner_name else module
        own = {id(p) for p in owner.parameters(recurse=False)}
        if not own <= {id(p) for p in params.values()}:
            raise ModelError(f"module {owner_name or '(root)'!r} holds both shared "
                             "parameters and user tables; it cannot be trained privately")
        owners[id(owner)] = owner
        names[id(owner)] = owner_name or "(root)"
    return list(owners.values()), list(names.values())
