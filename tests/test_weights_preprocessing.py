"""Pretrained weights' resize and crop are applied, not only recorded (issue 21): image files are
scaled to the weights' short side and their centre cut out, as torchvision's `Resize` and
`CenterCrop` do, in training (`folder:` data), in `netspec eval MODEL.onnx` and in `netspec run`;
arrays (digits, npz) are resized to the spec's input as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.twins import torchvision_models
from PIL import Image

from netspec import deploy
from netspec.cli import main
from netspec.deploy.runtime import open_session
from netspec.io import read_image
from netspec.ir.build import load_spec_text
from netspec.train import data as data_module
from netspec.train.data import load_data
from netspec.train.launch import train
from netspec.train.settings import resolve_settings
from netspec.train.trainer import Job
from netspec.weights.pretrained import Preprocessing

TINY = """network tiny "a tiny CNN"
input [1, 8, 8]
classes 2
INPUT -> CONV(4) -> RELU -> POOL -> FC(classes) -> SOFTMAX
"""
# The weights expect 16 -> centre 8: on a 16 x 16 image, the centre 8 x 8 alone.
PREP = {"resize": 16, "crop": 8, "mean": [0.5], "std": [0.25]}


def _framed(path: Path, size: int = 16, inner: int = 255, frame: int = 0) -> Path:
    """A gray image: its centre half `inner`, the frame around it `frame`."""
    pixels = np.full((size, size), frame, np.uint8)
    q = size // 4
    pixels[q : size - q, q : size - q] = inner
    Image.fromarray(pixels).save(path)
    return path


def test_resize_scales_the_short_side_then_cuts_out_the_centre(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    got = read_image(path, 3, 32, 32, resize=36)
    assert got.shape == (32, 32, 3)
    with Image.open(path) as image:  # short side 40 -> 36, so 60 -> 54; centre 32 x 32
        want = np.asarray(image.resize((54, 36), Image.Resampling.BILINEAR).crop((11, 2, 43, 34)))
    assert np.array_equal(got, want)
    assert not np.array_equal(got, read_image(path, 3, 32, 32))  # not a plain resize


@pytest.mark.slow  # importing torchvision takes seconds
def test_resize_and_crop_are_torchvisions(tmp_path: Path) -> None:
    if torchvision_models() is None:
        pytest.skip("torchvision is not installed")
    from torchvision import transforms

    rng = np.random.default_rng(1)
    for h, w in ((40, 60), (75, 50), (33, 33)):
        path = tmp_path / f"{h}x{w}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        with Image.open(path) as image:
            want = transforms.CenterCrop(29)(transforms.Resize(33)(image.convert("RGB")))
        assert np.array_equal(read_image(path, 3, 29, 29, resize=33), np.asarray(want))


def test_preprocessing_scales_the_resize_to_the_spec_input() -> None:
    inception = Preprocessing(342, 299, (0.5,) * 3, (0.5,) * 3)
    assert inception.resize_for((3, 299, 299)) == 342
    assert inception.resize_for((3, 150, 150)) == 172  # the same share of the image
    assert inception.resize_for((299,)) is None  # tokens: no image


def test_folder_images_are_cropped_when_the_weights_say_so(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            _framed(tmp_path / name / f"{i}.png", inner=255 if name == "a" else 0, frame=128)
    plain = load_data(f"folder:{tmp_path}", (1, 8, 8), 2, val_split=0.0)
    cropped = load_data(f"folder:{tmp_path}", (1, 8, 8), 2, val_split=0.0, resize=16)
    a = cropped.train.x[cropped.train.y == 0]
    assert bool((a == 1.0).all())  # the centre only: every pixel white
    assert not bool((plain.train.x[plain.train.y == 0] == 1.0).all())  # the frame shows


@pytest.mark.slow  # a training run through the CLI
def test_train_from_weights_with_preprocessing_crops_the_folder_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`netspec train --init RUN` (a run that recorded its weights' preprocessing) reads the
    folder with the weights' resize and crop, then normalizes; the new run records it."""
    spec = tmp_path / "tiny.ns"
    spec.write_text(TINY)
    images = tmp_path / "images"
    for name, inner in (("a", 255), ("b", 0)):
        (images / name).mkdir(parents=True)
        for i in range(4):
            _framed(images / name / f"{i}.png", inner=inner, frame=128)
    graph = load_spec_text(TINY, "tiny.ns").instantiate({})
    pre = tmp_path / "pre"
    pre.mkdir()
    s = resolve_settings(graph.train, {"epochs": 1, "batch_size": 4})
    data = load_data("synthetic:16", graph.input.shape, 2, seed=0)
    train(Job(graph, s, data, pre, device="cpu", quiet=True, threads=1))
    (pre / "settings.json").write_text(json.dumps({"preprocessing": PREP}))

    seen: list[tuple[object, object]] = []
    real = data_module.load_data

    def spy(*args, **kwargs):
        split = real(*args, **kwargs)
        seen.append((kwargs.get("resize"), split))
        return split

    monkeypatch.setattr(data_module, "load_data", spy)
    out = tmp_path / "tuned"
    argv = ["train", str(spec), "--init", str(pre), "--data", f"folder:{images}",
            "--epochs", "1", "--batch-size", "4", "--val-split", "0.5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    ((resize, split),) = seen
    assert resize == 16
    x = np.concatenate([split.train.x.numpy(), split.val.x.numpy()])  # type: ignore[attr-defined]
    y = np.concatenate([split.train.y.numpy(), split.val.y.numpy()])  # type: ignore[attr-defined]
    # cropped to the centre: class a all white, b all black, not the gray frame (normalized
    # after loading: the line printed says so)
    assert bool((x[y == 0] == 1.0).all()) and bool((x[y == 1] == 0.0).all())
    assert json.loads((out / "settings.json").read_text())["preprocessing"]["resize"] == 16


def test_run_crops_images_as_the_model_metadata_says(tmp_path: Path) -> None:
    graph = load_spec_text(TINY, "tiny.ns").instantiate({})
    run = tmp_path / "run"
    run.mkdir()
    s = resolve_settings(graph.train, {"epochs": 1, "batch_size": 8})
    train(Job(graph, s, load_data("synthetic:16", graph.input.shape, 2), run, device="cpu",
              quiet=True, threads=1))  # fmt: skip
    (run / "settings.json").write_text(json.dumps({"preprocessing": PREP}))
    model = tmp_path / "m.onnx"
    assert deploy.export(graph, model, weights=run, logits=True) is not None
    image = _framed(tmp_path / "x.png", inner=255, frame=0)
    got = deploy.predict(model, [str(image)], provider="cpu")
    session = open_session(model, "cpu")
    centre = np.full((1, 1, 8, 8), (1.0 - 0.5) / 0.25, np.float32)  # cropped, then normalized
    assert np.allclose(got.outputs, session.run(centre), atol=1e-6)
    whole = (read_image(image, 1, 8, 8).astype(np.float32)[None, None] / 255 - 0.5) / 0.25
    assert not np.allclose(session.run(whole), session.run(centre), atol=1e-4)
