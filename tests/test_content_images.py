"""The vision extra: a folder of item images -> item vectors, with a tiny model the test
builds and saves itself (no download)."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from recforge import ConfigError, DataError, Interactions
from recforge.data.images import encode_image_folder, load_image_model
from recforge.data.vectors import item_vectors
from recforge.models import create_model


class TinyEncoder(nn.Module):
    """Mean colour per channel and a 3x3 convolution's pooled response: 7 numbers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), torch.relu(self.conv(x)).mean(dim=(2, 3))], 1)


@pytest.fixture
def tiny_model(tmp_path):
    """The tiny encoder saved as TorchScript (torch.export: its own test, it is slower)."""
    path = tmp_path / "tiny.pt"
    with warnings.catch_warnings():  # torch.jit.save is deprecated in torch 2.13
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(TinyEncoder()), str(path))
    return path


def _posters(folder, colours):
    folder.mkdir()
    for item, (colour, size) in colours.items():
        Image.new("RGB", size, colour).save(folder / f"{item}.png")
    return folder


def test_a_folder_of_images_becomes_item_vectors(tmp_path, tiny_model):
    folder = _posters(tmp_path / "posters", {
        1: ((220, 20, 20), (40, 60)), 2: ((230, 10, 30), (64, 48)),   # red, other sizes
        3: ((20, 20, 220), (50, 50)), 4: ((10, 30, 230), (32, 80))})  # blue
    (folder / "notes.txt").write_text("not an image")
    ids, vectors = encode_image_folder(folder, tiny_model, image_size=32,
                                       out=tmp_path / "image.parquet")
    assert ids.tolist() == [1, 2, 3, 4] and vectors.shape == (4, 7)
    d = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    assert d[0, 1] < d[0, 2] and d[2, 3] < d[2, 0]  # like colours, like vectors
    direct = TinyEncoder().eval()
    img = np.asarray(Image.new("RGB", (32, 32), (220, 20, 20)), np.float32) / 255.0
    x = torch.from_numpy(((img - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225])
                         .astype(np.float32).transpose(2, 0, 1)[None])
    np.testing.assert_allclose(vectors[0], direct(x)[0].detach().numpy(), atol=1e-4)
    feats = item_vectors(tmp_path / "image.parquet", name="image", dim=7)
    np.testing.assert_allclose(feats.matrix.toarray(), vectors)
    # the vectors carry a cold item in vbpr: items 1-3 have users, item 4 only its poster
    data = Interactions.from_frame(__import__("pandas").DataFrame(
        {"user": [0, 0, 1, 1, 2], "item": [1, 2, 1, 2, 3]}))
    model = create_model("vbpr", embedding_dim=4, visual_dim=4, epochs=2, batch_size=4,
                         device="cpu").fit(data, item_features=feats)
    assert 4 in set(model.items_.ids.tolist())


def test_bad_inputs_are_named(tmp_path, tiny_model):
    folder = _posters(tmp_path / "p", {1: ((0, 0, 0), (20, 20))})
    (folder / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="cannot read the image") as info:
        encode_image_folder(folder, tiny_model, image_size=16)
    assert info.value.source.endswith("2.jpg")
    (folder / "2.jpg").unlink()
    Image.new("RGB", (20, 20)).save(folder / "1.jpg")
    with pytest.raises(DataError, match="two images for item '1'"):
        encode_image_folder(folder, tiny_model, image_size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        encode_image_folder(tmp_path / "empty", tiny_model)
    with pytest.raises(DataError, match="no such folder"):
        encode_image_folder(tmp_path / "missing", tiny_model)
    with pytest.raises(ConfigError, match="never downloads"):
        load_image_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a TorchScript file"):
        load_image_model(tmp_path / "junk.pt")


def test_torchvision_architectures_from_a_local_state_dict(tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ConfigError, match=r"recforge\[vision\]"):
            load_image_model(__file__, arch="resnet18")  # any existing file
        return
    import torchvision

    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = load_image_model(path, arch="resnet18")
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 512)  # the head is gone
    with pytest.raises(ConfigError, match="do not fit"):
        load_image_model(path, arch="resnet34")


def test_a_torch_export_program_gives_the_same_vectors(tmp_path, tiny_model):
    folder = _posters(tmp_path / "posters", {"a": ((200, 40, 40), (30, 30)),
                                             "b": ((40, 40, 200), (40, 30))})
    path = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(TinyEncoder().eval(), (torch.zeros(2, 3, 16, 16),),
                                  dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    ids, exported = encode_image_folder(folder, path, image_size=16)
    _, scripted = encode_image_folder(folder, tiny_model, image_size=16)
    assert ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(exported, scripted, atol=1e-5)
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a torch.export program"):
        load_image_model(tmp_path / "junk.pt2")
