"""Top-K retrieval for serving: exact (the model's own scoring) or approximate.

:class:`IVFIndex` puts the item vectors of a dot-product model (``model.dot_factors()``:
``als``, ``hybrid``, ``bpr``, ``lightgcn``) in a faiss inverted-file index with exact inner
products inside the probed lists (``IndexIVFFlat``, metric inner product). A query asks for
``k`` plus the user's number of seen items and drops the seen ones, so the answer has ``k``
unseen items whenever the probed lists hold them. It pays off for catalogues of hundreds of
thousands of items; ``benchmarks/bench_index.py`` reports its recall@K against exact
retrieval. faiss is an extra: ``pip install 'recforge[ann]'``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from recforge.errors import ConfigError

__all__ = ["IVFIndex"]


class IVFIndex:
    """Approximate maximum-inner-product search over item vectors.

    ``n_lists`` (default ``4 * sqrt(n_items)``) clusters are trained with k-means; a query
    scans the ``n_probe`` nearest. More probes: higher recall, slower queries.
    """

    def __init__(self, item_vectors: torch.Tensor | np.ndarray, *, n_lists: int | None = None,
                 n_probe: int = 8, seed: int = 0) -> None:
        try:
            import faiss  # lazy: faiss is an optional extra (recforge[ann])
        except ImportError:
            raise ConfigError("the approximate index needs faiss: "
                              "pip install 'recforge[ann]' (faiss-cpu)") from None
        vecs = np.ascontiguousarray(np.asarray(item_vectors, dtype=np.float32))
        n, d = vecs.shape
        self.n_items = n
        n_lists = int(n_lists or max(1, min(n // 39, int(4 * math.sqrt(n)))))
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        self.index.train(vecs)
        self.index.add(vecs)
        self.index.nprobe = int(min(n_probe, n_lists))
        self.n_lists, self.n_probe = n_lists, self.index.nprobe

    @classmethod
    def for_model(cls, model: Any, **kwargs: Any) -> tuple[IVFIndex, torch.Tensor]:
        """An index over ``model``'s item vectors, and its user vectors."""
        factors = model.dot_factors()
        if factors is None:
            raise ConfigError(f"model {model.name!r} does not score by dot products of "
                              "user and item vectors; use the exact index")
        users, items = factors
        return cls(items, **kwargs), users.float()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Item indices and scores ``[n, k]`` (``-1`` / ``-inf`` for empty slots)."""
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(-1,
                                                                             self.index.d))
        scores, idx = self.index.search(q, int(min(k, self.n_items)))
        scores = np.where(idx >= 0, scores, -np.inf)
        return idx, scores
