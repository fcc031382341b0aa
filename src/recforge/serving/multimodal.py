"""What a served feature model adds to the page: explanations per modality and item search
by text vectors.

- :meth:`Modalities.explain`: for recommended items and a history (model indices), the
  history item most similar to each by every feature group alone (``genres``, ``text``,
  ``image``...; :func:`recforge.models.modalities.best_in_history`), with the features the
  two share in groups of categories or words.
- :meth:`Modalities.text_scores`: a query's similarity to every item's text vectors: the
  query is encoded by the bundled text encoder (:func:`recforge.data.text_encoders.
  encode_texts`; the model is loaded once per process) and compared with the vectors of
  the model's text group (:meth:`Modalities.text_group`).

Built once per served model, on first use (a reload builds a fresh one with its service).
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import numpy as np

from recforge.data.text_encoders import DEFAULT_TEXT_ENCODER, encode_texts
from recforge.models.modalities import (
    GroupBlock,
    best_in_history,
    feature_kind,
    group_blocks,
    shared_features,
)

__all__ = ["Modalities", "TEXT_GROUP"]

#: The group name of text vectors from ``movielens_item_features``: preferred when several
#: groups hold vectors of the encoder's width.
TEXT_GROUP = "text"
#: Whether the bundled encoder's package is installed (looked up, not imported: importing
#: it configures the root logger, which encode_texts undoes when it loads the model).
_HAS_ENCODER = importlib.util.find_spec("wordllama") is not None
#: Shared categories or words named per explanation.
_SHARED = 5


class Modalities:
    """The feature groups of a served model (one with ``item_features_``; any other has
    none) as unit-length blocks, built on the first call that needs them."""

    def __init__(self, model: Any) -> None:
        f = getattr(model, "item_features_", None)
        self._features = f if f is not None and f.n_features > 0 else None
        self._blocks: list[GroupBlock] | None = None
        self._build = threading.Lock()
        #: ``[{"group", "kind"}]`` of every group, from the feature names alone
        self.summary: list[dict[str, str]] = []
        if self._features is not None:
            for group in dict.fromkeys(self._features.groups.tolist()):
                names = self._features.names[self._features.groups == group]
                self.summary.append({"group": str(group),
                                     "kind": feature_kind(str(group), names)})

    @property
    def available(self) -> bool:
        """Whether the model has item features to explain or search by."""
        return self._features is not None

    def blocks(self) -> list[GroupBlock]:
        if self._blocks is None:
            with self._build:
                if self._blocks is None:
                    self._blocks = group_blocks(self._features) if self.available else []
        return self._blocks

    # ----------------------------------------------------------------------------------
    def explain(self, items: np.ndarray, history: np.ndarray
                ) -> list[list[dict[str, Any]]]:
        """Per recommended item (model indices), its reasons: ``{"group", "kind", "index",
        "similarity", "shared"?}`` per group where a history item resembles it, most
        similar first (``index``: the history item's model index; ``shared``: the labels
        both items have, for groups of categories or words)."""
        blocks = self.blocks()
        best, sims = best_in_history(blocks, items, history)
        reasons: list[list[dict[str, Any]]] = [[] for _ in range(len(items))]
        for g, gb in enumerate(blocks):
            rows = np.flatnonzero(best[g] >= 0)
            if not len(rows):
                continue
            shared = (shared_features(gb, np.asarray(items)[rows], best[g, rows], _SHARED)
                      if gb.kind in ("categories", "words") else None)
            for n, r in enumerate(rows.tolist()):
                reason: dict[str, Any] = {"group": gb.group, "kind": gb.kind,
                                          "index": int(best[g, r]),
                                          "similarity": float(sims[g, r])}
                if shared is not None:
                    reason["shared"] = shared[n]
                reasons[r].append(reason)
        for entry in reasons:
            entry.sort(key=lambda x: -x["similarity"])
        return reasons

    # ----------------------------------------------------------------------------------
    def text_group(self, dim: int) -> GroupBlock | None:
        """The group of text vectors a query of the encoder's ``dim`` is compared with:
        ``text`` if it holds vectors of that width, else the first group of vectors of
        that width; ``None`` when there is none (search by title only)."""
        fits = [b for b in self.blocks() if b.kind == "vectors" and b.block.shape[1] == dim]
        named = [b for b in fits if b.group == TEXT_GROUP]
        return (named or fits or [None])[0]

    def text_scores(self, query: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """``(group, similarity, has_vector)`` over every item: the cosine between the
        query's vector (bundled encoder) and each item's vector in the text group, and
        whether the item has one; ``None`` when the model has no text vectors (or the
        encoder's package, a dependency of recforge, is missing)."""
        if not any(b["kind"] == "vectors" for b in self.summary) or not _HAS_ENCODER:
            return None
        q = encode_texts([query], DEFAULT_TEXT_ENCODER)[0].astype(np.float32)
        group = self.text_group(len(q))
        norm = float(np.linalg.norm(q))
        if group is None or norm == 0:
            return None
        block = group.block
        sims = np.asarray(block @ (q / norm), dtype=np.float64).ravel()
        return group.group, sims, np.diff(block.indptr) > 0
