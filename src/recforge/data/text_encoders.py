"""Text to vectors, offline: the encoders behind item text features.

- ``"wordllama"`` (the default; a core dependency): WordLlama's ``l2_supercat`` model,
  256 dimensions, whose weights (16 MB of safetensors) and tokenizer ship inside the
  ``wordllama`` wheel. It is loaded from the package directory with downloads disabled,
  so it works with no network and no model cache; a text's vector is the mean of its
  tokens' embeddings (token embeddings distilled from Llama 2 70B's, Miller 2024).
  Thousands of titles a second on one CPU core.
- a directory: a sentence-transformers model on disk (the ``text`` extra,
  ``pip install 'recforge[text]'``), for users who bring their own model. recforge never
  downloads a model at run time.

:func:`encode_texts` returns raw vectors; :func:`decorrelate` centres them over a
catalogue and removes their top principal directions ("all-but-the-top", Mu and Viswanath
2018): averaged word vectors share a large common component that makes every pair of
texts look alike under cosine, and removing it is what makes them useful for ranking.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recforge.errors import ConfigError

__all__ = ["DEFAULT_TEXT_ENCODER", "encode_texts", "decorrelate", "wordllama_available",
           "as_documents"]

#: The encoder item text uses unless told otherwise.
DEFAULT_TEXT_ENCODER = "wordllama"


def wordllama_available() -> bool:
    """Whether the ``wordllama`` package (and so the default text encoder) is installed."""
    try:  # lazy: importing wordllama loads tokenizers; only text encoding needs it
        import wordllama  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _wordllama() -> Any:
    """The bundled WordLlama model, loaded once per process from the package directory."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # lazy: an optional-at-import dependency, loaded only when text is encoded
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise ConfigError("the default text encoder needs the wordllama package, a "
                          "dependency of recforge: pip install wordllama (or choose "
                          "text_encoder='tfidf')") from None
    finally:
        # wordllama's inference module calls logging.basicConfig(level=INFO) on import,
        # which would configure the host application's root logger: undo it.
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    package = Path(wordllama.__file__).parent
    # The weights are package/weights/l2_supercat_256.safetensors and the tokenizer
    # package/tokenizers/l2_supercat_tokenizer_config.json: WordLlama looks for the
    # tokenizer in package/tokenizer/ (singular) first, so the package directory is given
    # as its cache directory, where both are found; downloads stay disabled.
    try:
        return WordLlama.load(config="l2_supercat", dim=256, cache_dir=package,
                              disable_download=True)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"the wordllama package at {package} lacks its bundled model "
                          f"({exc}); reinstall it (pip install --force-reinstall "
                          "wordllama)") from None


def as_documents(texts: Sequence[Any]) -> list[str]:
    """Texts as strings: ``None`` / NaN -> ``""``, lists joined by spaces."""
    out = []
    for t in texts:
        if t is None or (isinstance(t, float) and np.isnan(t)):
            out.append("")
        elif isinstance(t, (list, tuple, np.ndarray)):
            out.append(" ".join(str(x) for x in t))
        else:
            out.append(str(t))
    return out


def encode_texts(texts: Sequence[Any], encoder: str | os.PathLike = DEFAULT_TEXT_ENCODER, *,
                 batch_size: int = 256, device: str | None = None) -> np.ndarray:
    """``float32 [len(texts), dim]`` vectors of ``texts``; empty texts get zero rows.

    ``encoder`` is ``"wordllama"`` (bundled, offline) or the directory of a
    sentence-transformers model (the ``text`` extra).
    """
    docs = as_documents(texts)
    empty = np.array([not d.strip() for d in docs], dtype=bool)
    if str(encoder) == "wordllama":
        model = _wordllama()
        out = np.zeros((len(docs), 256), dtype=np.float32)
        # shortest first: a batch is padded to its longest text, and a film with hundreds
        # of tags next to 255 titles would pad them all (10x slower on ml-latest-small)
        keep = np.flatnonzero(~empty)
        keep = keep[np.argsort([len(docs[j]) for j in keep], kind="stable")]
        if len(keep):
            out[keep] = np.asarray(model.embed([docs[j] for j in keep], norm=False,
                                               batch_size=int(batch_size)), np.float32)
        return out
    if str(encoder) == "tfidf":
        raise ConfigError("'tfidf' is not a vector encoder; use recforge.data.features.text "
                          "for TF-IDF features")
    path = Path(encoder)
    if not path.is_dir():
        raise ConfigError(f"text encoder {str(encoder)!r}: not 'wordllama' and no model "
                          "directory there; recforge does not download models at run time. "
                          "Download a sentence-transformers model where you have network "
                          "access (e.g. `huggingface-cli download "
                          "sentence-transformers/all-MiniLM-L6-v2 --local-dir DIR`) and pass "
                          "its directory")
    try:  # lazy: an optional dependency (the 'text' extra)
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ConfigError("a sentence-transformers model directory needs the 'text' extra: "
                          "pip install 'recforge[text]'; the bundled default needs none "
                          "(encoder='wordllama')") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = SentenceTransformer(str(path), device=device or "cpu")
    emb = np.asarray(model.encode(docs, batch_size=int(batch_size), show_progress_bar=False,
                                  normalize_embeddings=True), dtype=np.float32)
    emb[empty] = 0.0
    return emb


def decorrelate(vectors: np.ndarray, drop_components: int = 1) -> np.ndarray:
    """Centre the non-zero rows of ``vectors`` on their mean and remove their top
    ``drop_components`` principal directions (zero rows stay zero: no text, no vector)."""
    x = np.asarray(vectors, dtype=np.float64).copy()
    nz = np.flatnonzero(np.abs(x).sum(axis=1) > 0)
    if len(nz) < 2:
        return x.astype(np.float32)
    x[nz] -= x[nz].mean(axis=0)
    k = min(int(drop_components), len(nz) - 1, x.shape[1])
    if k > 0:
        # principal directions from the d x d covariance (eigh), not an SVD of the n x d
        # matrix: the same directions, 100x less work for 10,000 items
        cov = x[nz].T @ x[nz]
        _, vecs = np.linalg.eigh(cov)
        top = vecs[:, ::-1][:, :k].T
        x[nz] -= (x[nz] @ top.T) @ top
    return x.astype(np.float32)
