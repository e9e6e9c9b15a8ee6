"""Training and evaluating dense outputs (issue 9, item 10): per-pixel labels `y` [N, H, W]
from an npz, per-pixel cross-entropy, pixel accuracy and mean IoU in `train` and `eval`,
augmentation that moves the labels with the images, and clear refusals of data that does not
fit. The task is built here: 16x16 images, a pixel is class 1 inside a bright square.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.backends.lower_torch import build
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text
from netspec.train.augment import AugmentConfig, augment_batch, augment_pair
from netspec.train.checkpoint import load_weights
from netspec.train.data import IGNORE, load_data
from netspec.train.device import Runtime
from netspec.train.evaluate import evaluate, iou, mean_iou
from netspec.train.report import CSV_COLUMNS, DENSE_COLUMNS
from netspec.train.trainer import objective

DENSE = """network squares "a tiny dense net"
input [1, 16, 16]
classes 2 per pixel
INPUT -> CONV(8) -> RELU -> CONV(8) -> RELU -> CONV(2, 1) -> SOFTMAX
"""
# Its output map is 8x8, not the input's 16x16.
HALF = """input [1, 16, 16]
classes 2 per pixel
INPUT -> CONV(8) -> RELU -> POOL -> CONV(2, 1) -> SOFTMAX
"""
CLASSIFIER = """input [1, 16, 16]
classes 2
INPUT -> CONV(8) -> RELU -> GAP -> FC(2) -> SOFTMAX
"""
CPU = Runtime(torch.device("cpu"))


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


def squares(n: int, seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Dim noise in [0, 0.5) with one bright square (4 to 8 pixels a side, values in
    [0.6, 1)) per image; its pixels are class 1 (about 15% of all pixels)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, size, size), dtype=np.float32) * 0.5
    y = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        side = int(rng.integers(4, 9))
        r, c = rng.integers(0, size - side + 1, size=2)
        x[i, 0, r : r + side, c : c + side] = 0.6 + 0.4 * rng.random((side, side), np.float32)
        y[i, r : r + side, c : c + side] = 1
    return x, y


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def npz(tmp_path: Path, name: str = "squares.npz", **arrays: np.ndarray) -> str:
    if not arrays:
        x, y = squares(300)
        arrays = {"x": x, "y": y}
    np.savez(tmp_path / name, **arrays)
    return f"npz:{tmp_path / name}"


def refused(capsys, *args: str) -> str:
    """Run the CLI; it must refuse with exit 2 and a message, never a traceback."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "error: " in err.splitlines()[0]
    return " ".join(err.split())  # rich wraps long lines


# --- the task, end to end -----------------------------------------------------------------


def test_a_tiny_segmentation_learns_and_eval_agrees(tmp_path: Path, capsys) -> None:
    """All-background scores 85% pixel accuracy and 43% mean IoU: the net must do far better.
    Six epochs (about a second) measured 99.7% to 99.9% and 0.987 to 0.996 over six seeds."""
    spec, data, out = write(tmp_path, "squares.ns", DENSE), npz(tmp_path), tmp_path / "run"
    args = ["--data", data, "--epochs", "6", "--lr", "0.02", "--batch-size", "16"]
    assert main(["train", spec, *args, "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "per-pixel labels: acc is the pixel accuracy, miou the mean IoU" in printed
    assert re.search(
        r"epoch 6/6: loss \S+ acc \S+ miou \S+ \| val_loss \S+ val_acc \S+ val_miou", printed
    )
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert tuple(rows[0]) == DENSE_COLUMNS == (*CSV_COLUMNS, "train_miou", "val_miou")
    result = json.loads((out / "result.json").read_text())
    assert result["best_val_acc"] >= 0.97 and result["best_val_miou"] >= 0.90
    assert float(rows[-1]["val_miou"]) == pytest.approx(result["final_val_miou"])
    assert float(rows[-1]["train_miou"]) >= 0.85

    # eval reads the run's best weights, spec and data: the same figures as training's
    assert main(["eval", "--weights", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "IoU" in shown and "confusion matrix (pixels" in shown
    last = re.search(
        r"pixel accuracy: ([\d.]+)% \(([\d,]+)/([\d,]+) labelled pixels\); mean IoU: ([\d.]+)%",
        shown,
    )
    assert last is not None, shown
    assert float(last[1]) == pytest.approx(100 * result["best_val_acc"], abs=0.006)
    assert float(last[4]) == pytest.approx(100 * result["best_val_miou"], abs=0.006)
    assert int(last[3].replace(",", "")) == 60 * 16 * 16  # the 20% held out, every pixel

    # and the IoU is the textbook one, computed here from the predictions themselves
    graph = load_spec_text(DENSE, "squares.ns").instantiate({})
    model = build(graph)
    model.load_state_dict(load_weights(out / "best.safetensors"))
    val = load_data(data, graph.input.shape, 2, label_map=(16, 16)).val
    with torch.no_grad():
        predicted = model(val.x).argmax(1)
    truth = val.y
    ours = [
        float(((predicted == c) & (truth == c)).sum())
        / float(((predicted == c) | (truth == c)).sum())
        for c in (0, 1)
    ]
    assert float(last[4]) == pytest.approx(100 * sum(ours) / 2, abs=0.006)


def test_a_resumed_dense_run_keeps_its_mean_iou(tmp_path: Path, capsys) -> None:
    spec, data, out = write(tmp_path, "squares.ns", DENSE), npz(tmp_path), tmp_path / "run"
    assert main(["train", spec, "--data", data, "--epochs", "1", "--out", str(out), "-q"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "2", "-q"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 < float(r["val_miou"]) <= 1.0 for r in rows)


def test_synthetic_data_has_per_pixel_labels_for_a_dense_spec(tmp_path: Path, capsys) -> None:
    data = load_data("synthetic:40", (3, 16, 16), 3, label_map=(8, 8))
    assert tuple(data.train.x.shape[1:]) == (3, 16, 16) and data.train.per_pixel
    assert tuple(data.train.y.shape[1:]) == (8, 8) and set(data.train.y.unique().tolist()) == {
        0,
        1,
        2,
    }
    spec = write(tmp_path, "half.ns", HALF)
    assert (
        main(
            ["train", spec, "--data", "synthetic:64", "--epochs", "1", "--out", str(tmp_path / "r")]
        )
        == 0
    )
    assert "val_miou" in capsys.readouterr().out


def test_channels_last_images_and_a_channel_axis_on_the_labels(tmp_path: Path) -> None:
    x, y = squares(20)
    data = load_data(
        npz(tmp_path, x=x.transpose(0, 2, 3, 1), y=y[:, None]), (1, 16, 16), 2, label_map=(16, 16)
    )
    assert "channels-last" in data.notes[0]
    assert tuple(data.train.y.shape[1:]) == (16, 16)


# --- loss and metrics ---------------------------------------------------------------------


def test_iou_convention() -> None:
    # rows true, columns predicted; class 2 is neither labelled nor predicted: left out
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    assert iou(confusion)[:2] == [5 / 8, 3 / 6] and math.isnan(iou(confusion)[2])
    assert mean_iou(confusion) == pytest.approx((5 / 8 + 3 / 6) / 2)
    # a class only predicted (a false positive) counts, with IoU 0
    assert mean_iou(torch.tensor([[4, 1], [0, 0]])) == pytest.approx((4 / 5 + 0) / 2)


def test_ignored_pixels_count_nowhere() -> None:
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, :2] = IGNORE
    keep = y != IGNORE
    result = evaluate(lambda x: scores, scores, y, ["a", "b", "c"], CPU)
    assert result.count == int(keep.sum()) == 24 and result.per_pixel
    manual = torch.nn.functional.cross_entropy(scores.permute(0, 2, 3, 1)[keep], y[keep])
    assert result.loss == pytest.approx(float(manual), rel=1e-6)
    assert float(objective(scores, y)) == pytest.approx(float(manual), rel=1e-6)
    hits = (scores.argmax(1) == y) & keep
    assert result.accuracy == pytest.approx(float(hits.sum()) / 24)
    # a batch with no labelled pixel has no loss, not NaN
    assert float(objective(scores, torch.full_like(y, IGNORE))) == 0.0


def test_ignore_labels_load_and_all_ignored_is_refused(tmp_path: Path) -> None:
    x, y = squares(10)
    y[:, 0, :] = IGNORE
    data = load_data(npz(tmp_path, x=x, y=y), (1, 16, 16), 2, label_map=(16, 16), val_split=0)
    assert int((data.train.y == IGNORE).sum()) == 10 * 16
    with pytest.raises(NetspecError, match="every training pixel .* is labelled 255"):
        load_data(
            npz(tmp_path, "void.npz", x=x, y=np.full_like(y, IGNORE)),
            (1, 16, 16),
            2,
            label_map=(16, 16),
        )


# --- augmentation moves the labels with the images -----------------------------------------


def test_augmented_labels_follow_their_images() -> None:
    # the image is its labels + 1 (blocks of 4x4): wherever the warped image is exactly a
    # label value (inside a block), the warped label must be that value; outside, IGNORE
    y = torch.randint(0, 2, (8, 4, 4)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x = (y + 1).float().unsqueeze(1)
    cfg = AugmentConfig(shift=0.2, flip=True, rotate=15, zoom=0.2)
    gen = torch.Generator().manual_seed(3)
    moved_x, moved_y = augment_pair(x, y, cfg, gen)
    assert torch.equal(moved_x, augment_batch(x, cfg, torch.Generator().manual_seed(3)))
    value = moved_x[:, 0]
    inside = (value - value.round()).abs() < 1e-4
    assert inside.float().mean() > 0.5  # most pixels are checked
    assert torch.equal(
        moved_y[inside & (value.round() > 0)],
        (value.round() - 1).long()[inside & (value.round() > 0)],
    )
    assert (moved_y[inside & (value.round() == 0)] == IGNORE).all()
    assert (moved_y == IGNORE).any() and not torch.equal(moved_y, y)


def test_a_flip_alone_flips_both() -> None:
    y = torch.arange(16).view(1, 4, 4).repeat(16, 1, 1)
    x = y.float().unsqueeze(1)
    moved_x, moved_y = augment_pair(
        x, y, AugmentConfig(flip=True), torch.Generator().manual_seed(0)
    )
    assert torch.equal(moved_x[:, 0].long(), moved_y)
    assert {tuple(r[0].tolist()) for r in moved_y} == {(0, 1, 2, 3), (3, 2, 1, 0)}


def test_geometric_augmentation_of_a_smaller_output_map_is_refused(tmp_path: Path, capsys) -> None:
    spec, data = write(tmp_path, "half.ns", HALF), "synthetic:32"
    out = tmp_path / "run"
    err = refused(
        capsys, "train", spec, "--data", data, "--augment", "flip,contrast=0.2", "--out", str(out)
    )
    assert "--augment flip moves pixels" in err and "(8x8) is not the input's size (16x16)" in err
    assert not out.exists()
    assert (
        main(
            [
                "train",
                spec,
                "--data",
                data,
                "--augment",
                "contrast=0.2",
                "--epochs",
                "1",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )


# --- data that does not fit ---------------------------------------------------------------


def test_labels_of_the_wrong_size(tmp_path: Path, capsys) -> None:
    x, y = squares(40)
    spec = write(tmp_path, "squares.ns", DENSE)
    err = refused(capsys, "train", spec, "--data", npz(tmp_path, x=x, y=y[:, :8, :8]))
    assert "per-pixel labels of shape [40, 8, 8] but the spec's output map is [2, 16, 16]" in err
    assert "expected labels of shape [40, 16, 16]" in err and "nearest" in err


def test_labels_outside_the_classes(tmp_path: Path, capsys) -> None:
    x, y = squares(40)
    y[0, 0, 0], y[1, 0, :3] = 2, 7
    spec = write(tmp_path, "squares.ns", DENSE)
    err = refused(capsys, "train", spec, "--data", npz(tmp_path, x=x, y=y))
    assert "per-pixel labels 2, 7 (4 pixels)" in err
    assert "labels must lie in [0, 1], or be 255 (a pixel to ignore)" in err


def test_a_dense_spec_given_one_label_per_example(tmp_path: Path, capsys) -> None:
    x, y = squares(40)
    spec = write(tmp_path, "squares.ns", DENSE)
    flat = npz(tmp_path, x=x, y=(y.mean(axis=(1, 2)) > 0.15).astype(np.int64))
    err = refused(capsys, "train", spec, "--data", flat)
    assert "has one class id per example (labels [40])" in err
    assert "the spec's output is a class per pixel [2, 16, 16]" in err and "[40, 16, 16]" in err
    # eval refuses it the same way, and digits (one label per image) too
    out = tmp_path / "run"
    assert (
        main(["train", spec, "--data", "synthetic:32", "--epochs", "1", "--out", str(out), "-q"])
        == 0
    )
    err = refused(capsys, "eval", spec, "--weights", str(out), "--data", flat)
    assert "has one class id per example" in err
    err = refused(capsys, "train", spec, "--data", "digits")
    assert "`digits` holds one label per image, not per pixel" in err


def test_a_classifier_given_per_pixel_labels(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path, "cls.ns", CLASSIFIER)
    err = refused(capsys, "train", spec, "--data", npz(tmp_path))
    assert "labels of shape [300, 16, 16]; expected one class id per example, shape [300]" in err
    assert "declare `classes K per pixel`" in err


def test_side_heads_must_output_the_main_shape(tmp_path: Path, capsys) -> None:
    """Every head's loss reads the same labels: a per-example head on a dense spec (or the
    reverse) is refused at the head, before any data is read; a per-pixel head trains."""
    body = "INPUT -> CONV(8) as c1 -> RELU -> CONV(8) -> RELU -> CONV(2, 1) -> SOFTMAX\n"
    top = "input [1, 16, 16]\nclasses 2 per pixel\n"
    spec = write(tmp_path, "aux.ns", top + body + "head aux at c1: GAP -> FC(2) -> SOFTMAX\n")
    err = refused(capsys, "train", spec, "--data", "synthetic:32", "--out", str(tmp_path / "r"))
    assert "aux.ns:4:1" in err and "side head `aux` outputs [2] but the main output" in err
    assert "a class per pixel [2, 16, 16]" in err and not (tmp_path / "r").exists()
    classifier = (
        CLASSIFIER.replace("RELU", "RELU as r1") + "head aux at r1: CONV(2, 1) -> SOFTMAX\n"
    )
    err = refused(capsys, "train", write(tmp_path, "c.ns", classifier), "--data", "synthetic:32")
    assert "outputs [2, 16, 16] but the main output is one class per example [2]" in err
    deep = write(tmp_path, "deep.ns", top + body + "head aux at c1: CONV(2, 1) -> SOFTMAX\n")
    args = ["--data", "synthetic:32", "--epochs", "1", "--out", str(tmp_path / "d"), "-q"]
    assert main(["train", deep, *args]) == 0


def test_int8_export_refuses_a_dense_output_clearly(tmp_path: Path, capsys) -> None:
    """--int8 counts top-1 per example; with per-pixel labels its message would mislead."""
    spec = write(tmp_path, "squares.ns", DENSE)
    args = ["--int8", "--calibrate", npz(tmp_path), "-o", str(tmp_path / "s.onnx")]
    err = refused(capsys, "export", spec, *args)
    assert "per-pixel output; --int8 does not quantize dense outputs yet" in err
    assert not (tmp_path / "s.onnx").exists()
