"""Base class of the next-item models (SASRec, GRU4Rec, Caser) on the shared trainer.

A :class:`SequentialRecommender` learns to predict each user's next item from the items
before it, in order. It is a :class:`~recforge.models.gradient.GradientRecommender` like
any other: the shared :class:`~recforge.training.trainer.Trainer` runs its epochs
(validation, early stopping, checkpoints), fed by a
:class:`~recforge.training.sequence_batches.SequenceSampler` of training windows (each
user's last ``max_len + 1`` items, ``inputs = seq[:-1]``, ``targets = seq[1:]``, every
position trained; items are 1-based inside the network, 0 is padding).

A subclass builds a module with

* ``encode(inputs [B, L], users [B] | None) -> [B, L, d]``: the hidden state of every
  position of right-padded 1-based inputs, position ``j`` reading only items ``0..j``;
* ``item_table() -> [n_items + 1, d]``: the output item vectors (row 0: padding);
* optionally ``encode_last(inputs, users) -> [B, d]``: ``encode``'s state at each row's
  last item alone (scoring reads nothing else; SASRec runs its last block for that
  position only, Caser one window per row);

and names its loss (``_loss``; the shared ones are in
:mod:`recforge.training.next_item_losses`). Scores of a history are the last position's
state times the item table.

Inference reads order: :meth:`score_sequences` encodes the last ``max_len`` items of each
user's ordered history; ``recommend(users)`` (``_score``) the training sequences kept in
the model (each user's last ``max_len`` training items, saved with it);
``recommend_for_history([items in order])`` the given list; ``similar_items`` compares
item vectors. Per-epoch validation is the next-item metric (``valid_metric``, default
``ndcg@10``) of each validation event given the user's training sequence, computed as the
test is (:func:`~recforge.evaluation.next_item.evaluate_next_item`: full ranking, seen
items not excluded).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import numpy as np
import torch

from recforge.data.interactions import Interactions
from recforge.errors import ConfigError, ModelError
from recforge.evaluation.metrics import Metric
from recforge.evaluation.next_item import evaluate_next_item
from recforge.models.artifact import Array, Module, StateSpec
from recforge.models.contracts import Capabilities, FitOptions
from recforge.models.gradient import GradientRecommender
from recforge.models.params import (
    MAX_NEGATIVES,
    ParamRule,
    choice_rule,
    int_rule,
    number_rule,
)
from recforge.training import next_item_losses as nil
from recforge.training.contracts import Batch
from recforge.training.sequence_batches import SequenceSampler, right_aligned

__all__ = ["SequentialRecommender", "MAX_LEN", "native_bfloat16"]

#: The longest window a model reads (also bounds a doctored saved model).
MAX_LEN = 4096

#: Rows encoded at once when scoring (bounds the memory of the hidden states).
ENCODE_BLOCK = 512

LOSSES = ("bce", "sampled_softmax", "gbce", "ce")

#: Scores (users x positions x items) a part of a private step holds at once (about 512
#: MB each for the scores, their softmax and their gradient; 181 users of ml-1m-seq).
PRIVATE_LOGITS_AT_ONCE = 2**27


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products natively: a CUDA GPU that supports
    them, a CPU with AVX512-BF16 or AMX tiles. Elsewhere a bfloat16 autocast is emulated
    and slower than float32, so ``precision="auto"`` trains in float32 there."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return False


class SequentialRecommender(GradientRecommender):
    """Shared parameters of next-item models (see the module docstring).

    ``max_len``: items of history read [20, 200]; ``loss``: ``bce`` (one negative per
    position), ``sampled_softmax`` / ``gbce`` (``n_negatives`` shared by a batch), ``ce``
    (full softmax); ``gbce_t``: gSASRec's calibration in [0, 1]; ``negative_sampling``:
    ``uniform`` or ``popularity`` (``sampled_softmax`` only, with the log-q correction);
    ``precision``: ``float32``, ``bfloat16`` (autocast of the training forward pass; the
    weights stay float32 and scoring is float32) or ``auto`` (bfloat16 where the device
    computes it natively: a GPU that supports it, a CPU with AVX512-BF16 or AMX; else
    float32; see :func:`native_bfloat16`);
    ``sort_by_length``: batches of similar lengths (less padding per batch);
    ``random_windows``: the probability that an epoch trains a history longer than
    ``max_len + 1`` on a window ending at a uniformly drawn position instead of its last
    (0: only the last window, as SASRec's reference code; the earlier items of long
    histories are then never trained on).
    """

    embedding_dim: int = 64
    max_len: int = 200
    dropout: float = 0.2
    loss: str = "sampled_softmax"
    n_negatives: int = 256
    gbce_t: float = 0.75
    negative_sampling: str = "uniform"
    precision: str = "float32"
    sort_by_length: bool = True
    random_windows: float = 0.0
    batch_size: int = 128
    learning_rate: float = 0.001
    epochs: int = 20
    lr_schedule: str | None = None
    valid_metric: str | None = "ndcg@10"
    init_std: float = 0.02

    capabilities = Capabilities(folds_in_history=True, similar_items=True, gradient=True,
                                seeded=True, reads_order=True)
    param_rules: ClassVar[dict[str, ParamRule]] = {
        **GradientRecommender.param_rules,
        "max_len": int_rule(1, MAX_LEN), "dropout": number_rule(0, 0.95),
        "loss": choice_rule(*LOSSES), "n_negatives": int_rule(1, MAX_NEGATIVES),
        "gbce_t": number_rule(0, 1), "negative_sampling": choice_rule("uniform", "popularity"),
        "precision": choice_rule("float32", "bfloat16", "auto"),
        "sort_by_length": ParamRule(lambda v: isinstance(v, bool), "true or false"),
        "random_windows": number_rule(0, 1)}
    scoring_params = {**GradientRecommender.scoring_params, "max_len": int_rule(1, MAX_LEN)}
    #: Losses the model offers (a subclass may narrow them).
    losses: ClassVar[tuple[str, ...]] = LOSSES

    def _validate_params(self) -> None:
        super()._validate_params()
        if self.loss not in self.losses:
            raise ConfigError(f"{self.name}: loss must be one of {self.losses}, "
                              f"got {self.loss!r}")
        if self.negative_sampling == "popularity" and self.loss != "sampled_softmax":
            raise ConfigError(f"{self.name}: negative_sampling='popularity' needs "
                              "loss='sampled_softmax' (its log-q correction); gBCE's beta "
                              "assumes uniform negatives")

    # ----------------------------------------------------------------------------------
    # training
    def _setup(self, train: Interactions, options: FitOptions) -> None:
        seqs = train.sequences()
        #: each user's last max_len training items, right-padded, 1-based: what
        #: recommend(users) encodes
        self.sequences_ = torch.from_numpy(
            right_aligned(seqs.last(int(self.max_len), pad=0, offset=1))[0])
        self._train_windows = right_aligned(
            seqs.last(int(self.max_len) + 1, pad=0, offset=1))[0]
        #: the whole sequences, 1-based, for windows drawn anywhere in long histories
        self._train_sequences = ((seqs.indptr, seqs.items.astype(np.int64) + 1)
                                 if float(self.random_windows) > 0 else None)
        counts = self._stats.item_counts.astype(np.float64)
        self._popularity = counts + 1.0
        self._log_q = torch.from_numpy(
            np.log(self._popularity / self._popularity.sum()).astype(np.float32))

    def _negatives_kind(self) -> str:
        return {"bce": "position", "sampled_softmax": "shared", "gbce": "sequence",
                "ce": "none", "bpr_max": "shared"}.get(self.loss, "none")

    #: whether batches carry each window's user index (models with a user table)
    needs_users: ClassVar[bool] = False

    def _sampler(self, train: Interactions, shard: tuple[int, int] = (0, 1)) -> SequenceSampler:
        windows = self._train_windows
        del self._train_windows
        return SequenceSampler(
            windows, int(self.batch_size), self.n_items, negatives=self._negatives_kind(),
            n_negatives=int(self.n_negatives),
            popularity=self._popularity if self.negative_sampling == "popularity" else None,
            sort_chunk=64 if self.sort_by_length else 0,
            users=np.arange(self.n_users) if self.needs_users else None, shard=shard,
            **self._window_options())

    def _window_options(self) -> dict[str, Any]:
        """The sampler's options for windows drawn in long histories (``random_windows``)."""
        sequences = getattr(self, "_train_sequences", None)
        self._train_sequences = None
        return {"sequences": sequences, "random_windows": float(self.random_windows)}

    def training_precision(self) -> str:
        """The precision training runs in: ``precision``, with ``auto`` resolved for the
        device (:func:`native_bfloat16`)."""
        if self.precision == "auto":
            return "bfloat16" if native_bfloat16(self.device_) else "float32"
        return str(self.precision)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The training forward pass's autocast (scoring always runs in float32)."""
        if self.training_precision() == "bfloat16":
            return torch.autocast(self.device_.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def training_loss(self, batch: Batch) -> torch.Tensor:
        inputs, targets = batch["inputs"], batch["targets"]
        with self._autocast():
            hidden = self.module_.encode(inputs, batch.get("users"))
            mask = targets > 0
            items = self.module_.item_table()
            if self.loss == "gbce":  # negatives per sequence: [B, L, K] scores
                pos, neg, same = nil.sequence_negative_scores(
                    hidden, mask, targets, items, batch["negatives"])
                beta = nil.gbce_beta(int(self.n_negatives), self.n_items, float(self.gbce_t))
                return nil.gbce_scores(pos, neg, same, beta).float()
            return self._loss(hidden[mask], targets[mask], items, batch, mask).float()

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, items: torch.Tensor,
              batch: Batch, mask: torch.Tensor) -> torch.Tensor:
        """The loss of the trained positions (``hidden`` ``[N, d]``, ``targets`` ``[N]``)."""
        loss = self.loss
        if loss == "bce":
            return nil.bce_one_negative(hidden, targets, items, batch["negatives"][mask])
        if loss == "sampled_softmax":
            log_q = batch.get("log_q")
            target_log_q = (self._log_q.to(hidden.device)[targets - 1]
                            if log_q is not None else None)
            return nil.sampled_softmax(hidden, targets, items, batch["negatives"], log_q,
                                       target_log_q)
        if loss == "ce":
            return nil.full_softmax(hidden, targets, items)
        raise ConfigError(f"{self.name}: unknown loss {loss!r}")

    # ----------------------------------------------------------------------------------
    # differentially private training (models that define private_loss: sasrec, gru4rec,
    # caser)
    #: per-user gradients materialised: the item table is read at the input and, through
    #: an :class:`~recforge.training.privacy.ItemOutput`, at the output
    private_grad_sample_mode: ClassVar[str] = "hooks"

    #: what ``recforge train sasrec --dp-epsilon E`` starts from (``-p`` wins): about 1,024
    #: users a step (q = 1/6 on ml-1m-seq: the noise of the mean gradient falls with the
    #: users per step), Adam at 0.01, 10 epochs. Chosen at epsilon 8 on ml-1m-seq (test
    #: NDCG@10, seen excluded; docs/privacy.md): lr 0.003 0.0214, lr 0.01 0.0316; with
    #: max_len 50, lr 0.01 0.0269, lr 0.03 0.0201 (popularity 0.0203, not private 0.1619);
    #: validation NDCG@10 agrees (0.003: 0.0125, 0.01: 0.0181, seen kept)
    private_defaults: ClassVar[dict[str, Any]] = {"batch_size": 1024, "learning_rate": 0.01,
                                                  "epochs": 10, "lr_schedule": None}

    def _validate_privacy(self) -> None:
        super()._validate_privacy()
        if not self.private:
            return
        if self.loss != "ce":
            raise ConfigError(f"{self.name}: dp_epsilon trains with loss='ce' (the full "
                              f"softmax, whose item scores Opacus sees per user), not "
                              f"loss={self.loss!r}")
        if float(self.random_windows) > 0:
            raise ConfigError(f"{self.name}: random_windows cannot be used with dp_epsilon "
                              "(a private step reads each sampled user's last window)")

    def _private_users_per_step(self) -> int:
        """``batch_size`` counts sequences here: one window per user."""
        return max(1, int(self.batch_size))

    def _private_batches(self, train: Interactions, spec: Any) -> Any:
        """Each sampled user's last ``max_len + 1`` training items, one window per user
        (:class:`~recforge.training.privacy.UserWindows`); ``dp_max_per_user`` does not
        apply (a user's window is their contribution to a step)."""
        from recforge.training.privacy import UserWindows  # lazy: Opacus, an optional extra

        windows = self._train_windows
        del self._train_windows
        return UserWindows(windows)

    def private_physical_users(self) -> int | None:
        """Users per part of a private step: each user's full-softmax scores ``[max_len,
        n_items]`` and their gradient are held at once, with the per-user gradients of
        the item table; about :data:`PRIVATE_LOGITS_AT_ONCE` scores a part."""
        return max(1, PRIVATE_LOGITS_AT_ONCE // (int(self.max_len) * max(1, self.n_items)))

    def _private_item_tables(self) -> list[torch.nn.Parameter]:
        """The parameters whose concatenation (by columns) is :meth:`item_table`."""
        return [self.module_.item.weight]

    def private_modules(self) -> list[torch.nn.Module]:
        from recforge.training.privacy import ItemOutput  # lazy: Opacus, an optional extra

        self._private_output = ItemOutput(self._private_item_tables())
        return [self._private_output]

    def _private_encode(self, inputs: torch.Tensor, users: torch.Tensor | None
                        ) -> torch.Tensor:
        """The states ``[B, positions, d]`` a private step scores: ``encode``, whose
        layers must see each user's windows in the first dimension of their input."""
        return self.module_.encode(inputs, users)

    def _private_window_loss(self, batch: Batch) -> torch.Tensor:
        """Each user's mean full-softmax cross-entropy over the positions of their window
        ``[B]`` (float32; the scores through the :class:`ItemOutput` Opacus hooks)."""
        inputs, targets = batch["inputs"], batch["targets"]
        hidden = self._private_encode(inputs,
                                      batch.get("users") if self.needs_users else None)
        logits = self._private_output(hidden)
        mask = targets > 0
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), (targets - 1).clamp(min=0).reshape(-1),
            reduction="none").view_as(targets)
        return (ce * mask).sum(1) / mask.sum(1).clamp(min=1)

    def _train_private(self, train: Interactions, valid: Interactions | None,
                       context: Any) -> None:
        try:
            super()._train_private(train, valid, context)
        finally:
            self.__dict__.pop("_private_output", None)

    @contextlib.contextmanager
    def _seeded(self) -> Any:
        """Torch's global generator seeded with ``seed`` for a module's build (its layers
        initialise from it), restored afterwards."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed or 0))
            yield

    def _validate_here(self, train: Interactions, valid: Interactions) -> float:
        """The next-item metric of each validation event given the user's training
        sequence (:func:`~recforge.evaluation.next_item.evaluate_next_item` over
        :meth:`score_sequences`, the protocol of the test), for ``hr``, ``ndcg`` and
        ``mrr``; other metrics as every gradient model validates."""
        metric = Metric.parse(self.valid_metric)  # type: ignore[arg-type]
        if metric.name not in ("hit_rate", "ndcg", "mrr"):
            return super()._validate_here(train, valid)
        return self._validate_part(train, valid)[0]

    def _validate_part(self, train: Interactions, valid: Interactions
                       ) -> tuple[float, float]:
        """The next-item figure of ``valid`` and its number of users (under DDP each rank
        validates a share of the users, see :meth:`GradientRecommender._validate`)."""
        metric = Metric.parse(self.valid_metric)  # type: ignore[arg-type]
        if metric.name not in ("hit_rate", "ndcg", "mrr"):
            return super()._validate_part(train, valid)
        self.module_.eval()
        result = evaluate_next_item(self, train, valid, metrics=[metric], by_length=None)
        if not result.n_users:
            return 0.0, 0.0
        return float(next(iter(result.summary.values()))), float(result.n_users)

    # ----------------------------------------------------------------------------------
    # scoring
    def _encode_last(self, windows: torch.Tensor, users: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """The state after the last item of each right-padded window ``[B, max_len]``
        (in blocks), ``[B, d]``; an empty window reads only padding. A module with an
        ``encode_last(inputs, users) -> [B, d]`` (the state after each window's last
        item, computed for that position alone) is asked for that instead of every
        position's state."""
        m = self.module_
        encode_last = getattr(m, "encode_last", None)
        out = []
        for start in range(0, len(windows), ENCODE_BLOCK):
            w = windows[start:start + ENCODE_BLOCK].to(self.device_)
            lengths = (w > 0).sum(1)
            longest = max(1, int(lengths.max()) if len(w) else 1)
            u = users[start:start + ENCODE_BLOCK].to(self.device_) if users is not None else None
            if encode_last is not None:  # the last position's state alone
                out.append(encode_last(w[:, :longest], u).float())
                continue
            h = m.encode(w[:, :longest], u)
            last = (lengths - 1).clamp(min=0)
            out.append(h[torch.arange(len(w), device=h.device), last].float())
        if not out:
            return torch.zeros(0, int(self.embedding_dim), device=self.device_)
        return torch.cat(out)

    def _scores_of(self, windows: torch.Tensor, users: torch.Tensor | None) -> torch.Tensor:
        if self.module_.training:  # eval() walks every submodule: 0.5 ms of a served answer
            self.module_.eval()
        with torch.no_grad():
            h = self._encode_last(windows, users)
            return h @ self.module_.item_table()[1:].float().T

    def _score_users(self, users: torch.Tensor) -> torch.Tensor:
        users = users.cpu()
        return self._scores_of(self.sequences_[users],
                               users if self.needs_users else None)

    def score_sequences(self, users: np.ndarray, history: Interactions) -> torch.Tensor:
        """Next-item scores ``[len(users), n_items]`` from the last ``max_len`` items of
        each user's ordered history in ``history`` (the model's vocabularies)."""
        self.check_fitted()
        if history.n_items != self.n_items or history.n_users != self.n_users:
            raise ModelError(f"{self.name}: the history must share the model's vocabularies "
                             f"({self.n_users} users, {self.n_items} items), got "
                             f"{history.n_users} users and {history.n_items} items")
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users):
            raise ModelError(f"user index out of range [0, {self.n_users})")
        windows = right_aligned(history.sequences().last(
            int(self.max_len), users=users, pad=0, offset=1))[0]
        u = torch.from_numpy(users) if self.needs_users else None
        return self._scores_of(torch.from_numpy(windows), u).float().cpu()

    def _score_history(self, items: np.ndarray, values: np.ndarray | None) -> torch.Tensor:
        return self._score_histories([items])[0]

    def _score_histories(self, histories: list[np.ndarray]) -> torch.Tensor:
        """Scores ``[len(histories), n_items]`` of anonymous histories (item indices,
        oldest first; each read from its last ``max_len``), encoded as one batch."""
        n = int(self.max_len)
        seqs = [np.asarray(h, dtype=np.int64)[-n:] for h in histories]
        lengths = np.fromiter((len(q) for q in seqs), dtype=np.int64, count=len(seqs))
        window = np.zeros((len(seqs), n), dtype=np.int64)
        row = np.repeat(np.arange(len(seqs)), lengths)
        col = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        window[row, col] = (np.concatenate(seqs) if seqs else np.empty(0, np.int64)) + 1
        return self._scores_of(torch.from_numpy(window), None).cpu()

    def _item_embeddings(self) -> torch.Tensor:
        with torch.no_grad():
            return self.module_.item_table()[1:].detach().float().cpu()

    # ----------------------------------------------------------------------------------
    # saving: the module and the training sequences recommend(users) reads
    def _state(self) -> dict[str, torch.Tensor]:
        return {**super()._state(), "sequences": self.sequences_}

    def _state_spec(self, extra: dict[str, Any]) -> StateSpec:
        self._restore_extra(extra)
        return {"module": Module(lambda checked: self._build()),
                "sequences": Array((self.n_users, int(self.max_len)), torch.int64,
                                   0, self.n_items + 1)}

    def _restore(self, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
        state = dict(state)
        self.sequences_ = state.pop("sequences")
        super()._restore(state, extra)


def sqrt_dim(dim: int) -> float:
    """The scale of item embeddings at the input (Transformer convention)."""
    return math.sqrt(dim)
