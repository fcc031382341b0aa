"""Item images to vectors with a local model (the ``vision`` extra): a folder of pictures
(posters, product photos) becomes an item-vector file that
:func:`recforge.data.vectors.item_vectors` reads, for ``content``, ``hybrid``,
``hybrid_bpr`` and ``vbpr``.

    encode_image_folder("posters/", "resnet18.pth", arch="resnet18", out="image.parquet")

An image's item id is its file name without the extension (``posters/318.jpg`` is item
318). The model comes from a local file only (no hub download, ever):

- ``arch=None``: a program saved by ``torch.export.save`` (a ``.pt2`` file, exported with a
  dynamic batch dimension) or a TorchScript file (``torch.jit.save``, which torch now
  deprecates) of any module mapping a batch of images ``[B, 3, H, W]`` to vectors
  ``[B, D]`` (a CLIP image tower exported once, a fine-tuned CNN); needs only torch and
  Pillow.
- ``arch="resnet50"`` (any name of ``torchvision.models``): that torchvision architecture,
  built without weights, then loaded from the file's ``state_dict`` (``weights_only``); its
  classification head is replaced by the identity, so the vectors are the pooled
  penultimate features. Needs ``pip install 'recforge[vision]'`` (torchvision).

Images are read with Pillow, converted to RGB, resized (shorter side ``image_size``),
centre-cropped to ``image_size`` square and normalized with the ImageNet mean and standard
deviation, as torchvision's and CLIP's image models expect.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recforge.data.vectors import write_item_vectors
from recforge.errors import ConfigError, DataError

__all__ = ["IMAGE_SUFFIXES", "encode_image_folder", "encode_images", "load_image_model"]

#: The files of a folder that are read as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_image_model(weights: str | os.PathLike, arch: str | None = None) -> torch.nn.Module:
    """The image model of a local file (see the module docstring), in eval mode."""
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"image model: no weights file at {str(path)!r}; recforge never "
                          "downloads models: save one where you have network access and "
                          "pass its path")
    if arch is None and path.suffix.lower() == ".pt2":
        try:
            program = torch.export.load(str(path))
        except (RuntimeError, ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"image model {str(path)!r} is not a torch.export program "
                              f"({' '.join(str(exc).split())[:200]})") from None
        return program.module()
    if arch is None:
        try:
            with warnings.catch_warnings():  # deprecated in torch 2.13, still read here
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"image model {str(path)!r} is not a TorchScript file "
                              f"({' '.join(str(exc).split())[:200]}); for a torchvision "
                              "state_dict pass arch= (e.g. arch='resnet50')") from None
        return model.eval()
    try:  # lazy: an optional dependency (the 'vision' extra)
        import torchvision
    except ImportError:
        raise ConfigError("arch= needs torchvision: pip install 'recforge[vision]' (or "
                          "export the model with torch.jit.save and leave arch out)") from None
    try:
        model = torchvision.models.get_model(arch, weights=None)
    except ValueError:
        raise ConfigError(f"unknown torchvision architecture {arch!r}; e.g. resnet18, "
                          "resnet50, efficientnet_b0, vit_b_16") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"cannot read the state_dict in {str(path)!r}: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"the weights in {str(path)!r} do not fit torchvision's {arch}: "
                          f"{' '.join(str(exc).split())[:300]}") from None
    for head in ("fc", "classifier", "heads", "head"):
        if hasattr(model, head):
            setattr(model, head, torch.nn.Identity())
            break
    return model.eval()


def _load_image(path: Path, size: int) -> np.ndarray:
    # lazy: Pillow (a dependency of matplotlib) is only needed to read images
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                           Image.Resampling.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read the image: {' '.join(str(exc).split())[:200]}",
                        source=str(path)) from None
    return ((arr - _MEAN) / _STD).transpose(2, 0, 1)


def encode_images(paths: list[Path], model: torch.nn.Module, *, image_size: int = 224,
                  batch_size: int = 32, device: str = "cpu") -> np.ndarray:
    """``float32 [len(paths), D]`` vectors of the images at ``paths``."""
    if int(image_size) < 8 or int(batch_size) < 1:
        raise ConfigError("image_size must be at least 8 and batch_size at least 1")
    model = model.to(device)
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), int(batch_size)):
            chunk = paths[start:start + int(batch_size)]
            batch = torch.from_numpy(np.stack([_load_image(p, int(image_size))
                                               for p in chunk])).to(device)
            vec = model(batch)
            if isinstance(vec, (tuple, list)):
                vec = vec[0]
            vec = vec.reshape(len(chunk), -1).float().cpu().numpy()
            if not np.isfinite(vec).all():
                bad = chunk[int(np.flatnonzero(~np.isfinite(vec).all(axis=1))[0])]
                raise DataError("the image model gave a NaN or infinite vector",
                                source=str(bad))
            out.append(vec)
    return np.concatenate(out).astype(np.float32)


def encode_image_folder(folder: str | os.PathLike, weights: str | os.PathLike, *,
                        arch: str | None = None, out: str | os.PathLike | None = None,
                        image_size: int = 224, batch_size: int = 32,
                        device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Encode every image of ``folder`` (not its subfolders) with the model in
    ``weights``; returns ``(ids, vectors)`` and, with ``out`` (``.parquet`` or ``.npy``),
    writes them for :func:`~recforge.data.vectors.item_vectors`. Ids are file names
    without extension: integers when every one is an integer."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError("no such folder", source=str(root))
    paths = sorted((p for p in root.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.name)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder",
                        source=str(root))
    stems = [p.stem for p in paths]
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise DataError(f"two images for item {p.stem!r}: {seen[p.stem].name} and "
                            f"{p.name}", source=str(root))
        seen[p.stem] = p
    ids: Any = (np.array([int(s) for s in stems], dtype=np.int64)
                if all(s.lstrip("-").isdigit() and len(s) < 19 for s in stems)
                else np.array(stems, dtype=object))
    vectors = encode_images(paths, load_image_model(weights, arch), image_size=image_size,
                            batch_size=batch_size, device=device)
    if out is not None:
        write_item_vectors(out, ids.tolist(), vectors)
    return ids, vectors
