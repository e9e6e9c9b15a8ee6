"""Tests for netspec.train.data: every source, the split, and the refusals."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from netspec.errors import NetspecError
from netspec.train.data import DataSplit, load_data, read_idx

DIGITS_TOTAL = 1797


# --- digits ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits28() -> DataSplit:
    return load_data("digits", (1, 28, 28), 10)


def test_digits_fits_a_28x28_input(digits28: DataSplit) -> None:
    train, val = digits28.train, digits28.val
    assert train.x.shape[1:] == (1, 28, 28) and val.x.shape[1:] == (1, 28, 28)
    assert len(train) + len(val) == DIGITS_TOTAL
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert train.class_names == [str(i) for i in range(10)]
    assert float(train.x.min()) >= 0.0 and float(train.x.max()) <= 1.0
    assert float(train.x.max()) > 0.9  # scaled from 0..16, not left at 0..1/16


def test_digits_repeats_the_channel_for_rgb() -> None:
    split = load_data("digits", (3, 32, 32), 10, limit=20)
    x = split.train.x
    assert x.shape == (20, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_digits_at_8x8_are_the_raw_pixels_scaled() -> None:
    from sklearn.datasets import load_digits

    split = load_data("digits", (1, 8, 8), 10, val_split=0.1)
    images = torch.from_numpy(load_digits().images).float() / 16.0
    together = torch.cat([split.train.x, split.val.x])[:, 0]
    assert torch.allclose(together.sum(0), images.sum(0), atol=1e-3)
    assert torch.allclose(together.sum((1, 2)).sort().values, images.sum((1, 2)).sort().values)


def test_digits_are_center_padded_for_a_wide_input() -> None:
    x = load_data("digits", (1, 20, 40), 10, limit=50).train.x
    assert x.shape == (50, 1, 20, 40)
    assert float(x[..., :10].abs().sum()) == 0.0 and float(x[..., 30:].abs().sum()) == 0.0
    assert float(x[..., 10:30].sum()) > 0.0


def test_split_is_deterministic_and_stratified(digits28: DataSplit) -> None:
    again = load_data("digits", (1, 28, 28), 10)
    assert torch.equal(digits28.train.y, again.train.y)
    assert torch.equal(digits28.val.x, again.val.x)
    other = load_data("digits", (1, 28, 28), 10, seed=1)
    assert not torch.equal(digits28.val.y, other.val.y) or not torch.equal(
        digits28.val.x, other.val.x
    )
    val_counts = torch.bincount(digits28.val.y, minlength=10)
    all_counts = val_counts + torch.bincount(digits28.train.y, minlength=10)
    assert torch.all((val_counts.float() - 0.2 * all_counts.float()).abs() <= 1.0)


def test_limit_keeps_a_random_subset_of_training_examples() -> None:
    split = load_data("digits", (1, 8, 8), 10, limit=100)
    assert len(split.train) == 100
    assert len(split.val) == 359  # the validation set is not limited
    assert len(torch.unique(split.train.y)) > 5  # a shuffled sample, not the first class


def test_digits_refuses_a_wrong_class_count() -> None:
    with pytest.raises(NetspecError, match="declares 7 classes but digits has 10"):
        load_data("digits", (1, 28, 28), 7)


def test_digits_refuses_a_non_image_input() -> None:
    with pytest.raises(NetspecError, match=r"\[1, 100\] is not an image"):
        load_data("digits", (1, 100), 10)


# --- source strings --------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "suggested"), [("npy:x.npz", "npz"), ("digit", "digits")])
def test_unknown_prefix_suggests_a_known_one(typed: str, suggested: str) -> None:
    with pytest.raises(NetspecError, match="unknown data source") as info:
        load_data(typed, (1, 28, 28), 10)
    assert info.value.hint == f"did you mean `{suggested}`?"


def test_a_bare_existing_path_gets_a_prefix_hint(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 1, 4, 4)), y=np.zeros(2))
    with pytest.raises(NetspecError) as info:
        load_data(str(path), (1, 4, 4), 2)
    assert info.value.hint == f"name the format of the data: `npz:{path}`"


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NetspecError, match="not found"):
        load_data(f"npz:{tmp_path / 'nope.npz'}", (1, 28, 28), 10)


def test_bad_options_are_refused() -> None:
    with pytest.raises(NetspecError, match="val_split=1.5"):
        load_data("synthetic", (1, 8, 8), 2, val_split=1.5)
    with pytest.raises(NetspecError, match="limit=0"):
        load_data("synthetic", (1, 8, 8), 2, limit=0)


# --- synthetic -------------------------------------------------------------------------------


def test_synthetic_images_and_tokens() -> None:
    images = load_data("synthetic", (3, 16, 16), 4, seed=3)
    assert len(images.train) + len(images.val) == 256
    assert images.train.x.shape[1:] == (3, 16, 16)
    assert torch.equal(images.train.x, load_data("synthetic", (3, 16, 16), 4, seed=3).train.x)
    tokens = load_data("synthetic:40", (12,), 3, vocab=50)
    assert tokens.train.x.dtype == torch.int64 and tokens.train.x.shape[1:] == (12,)
    assert int(tokens.train.x.min()) >= 0 and int(tokens.train.x.max()) < 50


def test_synthetic_tokens_need_a_vocabulary() -> None:
    with pytest.raises(NetspecError, match="vocabulary"):
        load_data("synthetic", (12,), 3)


def test_val_source_replaces_the_split(tmp_path: Path) -> None:
    path = tmp_path / "val.npz"
    np.savez(path, x=np.ones((7, 2, 32), np.float32), y=np.arange(7) % 3)
    split = load_data("synthetic:30", (2, 32), 3, val_source=f"npz:{path}")
    assert len(split.train) == 30 and len(split.val) == 7
    assert torch.equal(split.val.y, torch.arange(7) % 3)


# --- npz -------------------------------------------------------------------------------------


def _save(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_channels_first_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 3, 5, 6)).astype(np.float32)
    y = np.arange(10) % 2
    split = load_data(_save(tmp_path, x=x, y=y), (3, 5, 6), 2, val_split=0.2)
    assert len(split.train) == 8 and len(split.val) == 2
    together = torch.cat([split.train.x, split.val.x])
    assert torch.allclose(together.sum(0), torch.from_numpy(x).sum(0), atol=1e-5)


def test_npz_channels_last_uint8_is_transposed_and_scaled(tmp_path: Path) -> None:
    x = np.zeros((4, 5, 6, 3), np.uint8)
    x[:, 1, 2, 0] = 255
    x[:, 3, 4, 2] = 51
    split = load_data(_save(tmp_path, x_train=x, y_train=np.arange(4)), (3, 5, 6), 4)
    got = split.train.x
    assert got.shape == (4, 3, 5, 6) and got.dtype == torch.float32
    assert torch.all(got[:, 0, 1, 2] == 1.0)
    assert torch.allclose(got[:, 2, 3, 4], torch.full((4,), 0.2))


def test_npz_without_channel_axis_and_with_test_arrays(tmp_path: Path) -> None:
    source = _save(
        tmp_path,
        x_train=np.zeros((6, 4, 4), np.uint8),
        y_train=np.arange(6) % 2,
        x_test=np.full((3, 4, 4), 255, np.uint8),
        y_test=np.array([1, 0, 1]),
    )
    split = load_data(source, (1, 4, 4), 2, val_split=0.0)
    assert split.train.x.shape == (6, 1, 4, 4)
    # x_test/y_test are the test set, never the validation set (issue 23)
    assert split.test is not None and len(split.val) == 0
    assert split.test.x.shape == (3, 1, 4, 4) and float(split.test.x.min()) == 1.0
    assert split.test.y.tolist() == [1, 0, 1]


def test_npz_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    source = _save(tmp_path, x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(NetspecError) as info:
        load_data(source, (1, 28, 28), 10)
    message = str(info.value)
    assert f"data from {source} has images of shape [3, 32, 32]" in message
    assert "but the spec's input is [1, 28, 28]" in message
    assert info.value.hint and "[3, 32, 32]" in info.value.hint


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.array([0, 1, 5])}, r"labels in \[0, 5\]"),
        ({"x": np.zeros((3, 1, 4, 4)), "y": np.array([0, 1])}, "3 examples but 2 labels"),
        ({"x": np.zeros((2, 1, 4, 4)), "y": np.array([0.5, 1.0])}, "not integer class ids"),
        ({"images": np.zeros((2, 1, 4, 4))}, r"no arrays named `x` and `y`. Found: \['images'\]"),
        ({"x": np.full((1, 1, 4, 4), np.nan), "y": np.array([0])}, "NaN"),
    ],
)
def test_npz_bad_contents_are_user_errors(
    tmp_path: Path, arrays: dict[str, np.ndarray], expected: str
) -> None:
    with pytest.raises(NetspecError, match=expected):
        load_data(_save(tmp_path, **arrays), (1, 4, 4), 3)


def test_npz_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    with pytest.raises(NetspecError, match="cannot read"):
        load_data(f"npz:{path}", (1, 4, 4), 3)


def test_npz_tokens_check_the_vocabulary(tmp_path: Path) -> None:
    source = _save(tmp_path, x=np.array([[1, 2, 3], [4, 5, 9]]), y=np.array([0, 1]))
    split = load_data(source, (3,), 2, vocab=10, val_split=0.0)
    assert split.train.x.dtype == torch.int64 and len(split.val) == 0
    with pytest.raises(NetspecError, match="vocabulary"):
        load_data(source, (3,), 2, vocab=8)


# --- idx -------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray) -> None:
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 6, 6), dtype=np.uint8), rng.integers(0, 10, n)


def test_read_idx_round_trip_with_wider_types(tmp_path: Path) -> None:
    values = (np.arange(12).reshape(3, 4) - 5).astype(">i4")  # big-endian on disk
    path = tmp_path / "ints-idx2-int"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 3, 4) + values.tobytes())
    assert np.array_equal(read_idx(path), values.astype(np.int32))


def test_idx_directory_round_trip(tmp_path: Path) -> None:
    images, labels = _mnist_like(20, 0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    split = load_data(f"idx:{tmp_path}", (1, 6, 6), 10, val_split=0.25, limit=None)
    assert len(split.train) + len(split.val) == 20
    got = torch.cat([split.train.x, split.val.x]) * 255
    assert torch.allclose(got.sum(0)[0], torch.from_numpy(images).double().sum(0).float())


def test_idx_gzipped_with_test_set(tmp_path: Path) -> None:
    images, labels = _mnist_like(12, 1)
    test_images, test_labels = _mnist_like(5, 2)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", test_labels)
    split = load_data(f"idx:{tmp_path}", (1, 6, 6), 10, val_split=0.0)
    assert len(split.train) == 12 and len(split.val) == 0 and split.test is not None
    assert torch.equal(split.test.y, torch.from_numpy(test_labels))  # t10k: the test set
    assert torch.allclose(split.test.x[:, 0] * 255, torch.from_numpy(test_images).float())


def test_idx_images_file_finds_its_labels(tmp_path: Path) -> None:
    images, labels = _mnist_like(8, 3)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    split = load_data(f"idx:{tmp_path / 'train-images-idx3-ubyte'}", (1, 6, 6), 10, val_split=0)
    assert sorted(split.train.y.tolist()) == sorted(labels.tolist())


def test_idx_errors(tmp_path: Path) -> None:
    with pytest.raises(NetspecError, match="train-images-idx3-ubyte"):
        load_data(f"idx:{tmp_path}", (1, 6, 6), 10)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(1))
    with pytest.raises(NetspecError, match="not an IDX file"):
        load_data(f"idx:{tmp_path}", (1, 6, 6), 10)
    bad.write_bytes(_idx_bytes(np.zeros((2, 6, 6)))[:-5])
    with pytest.raises(NetspecError, match="needs 72"):
        load_data(f"idx:{tmp_path}", (1, 6, 6), 10)


def test_idx_shape_mismatch(tmp_path: Path) -> None:
    images, labels = _mnist_like(4, 4)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    with pytest.raises(NetspecError, match=r"shape \[6, 6\] but the spec's input is \[1, 28, 28\]"):
        load_data(f"idx:{tmp_path}", (1, 28, 28), 10)


# --- folder ----------------------------------------------------------------------------------


def _write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (7, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_folder_of_pngs(tmp_path: Path) -> None:
    for i in range(3):
        _write_png(tmp_path / "cat" / f"{i}.png", (255, 0, 0))
        _write_png(tmp_path / "dog" / f"{i}.PNG", (0, 0, 255), size=(12, 9))
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    split = load_data(f"folder:{tmp_path}", (3, 4, 4), 2, val_split=1 / 3)
    assert split.train.class_names == ["cat", "dog"]
    assert len(split.train) == 4 and len(split.val) == 2
    for x, y in zip(split.train.x, split.train.y, strict=True):
        channel = 0 if y == 0 else 2
        assert x.shape == (3, 4, 4) and torch.allclose(x[channel], torch.ones(4, 4))
    gray = load_data(f"folder:{tmp_path}", (1, 8, 8), 2, val_split=0)
    assert gray.train.x.shape == (6, 1, 8, 8)


def test_folder_with_train_and_val(tmp_path: Path) -> None:
    for split_name, n in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            for i in range(n):
                _write_png(tmp_path / split_name / name / f"{i}.png", (9, 9, 9))
    split = load_data(f"folder:{tmp_path}", (1, 3, 3), 2)
    assert len(split.train) == 6 and len(split.val) == 2


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(NetspecError, match="no class sub-folders"):
        load_data(f"folder:{tmp_path}", (3, 4, 4), 2)
    _write_png(tmp_path / "only" / "0.png", (1, 2, 3))
    with pytest.raises(NetspecError, match="declares 2 classes but .* has 1 class folders"):
        load_data(f"folder:{tmp_path}", (3, 4, 4), 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NetspecError, match="has no images"):
        load_data(f"folder:{tmp_path}", (3, 4, 4), 2)
    (tmp_path / "empty" / "broken.png").write_text("not an image")
    with pytest.raises(NetspecError, match="cannot read the image"):
        load_data(f"folder:{tmp_path}", (3, 4, 4), 2)
