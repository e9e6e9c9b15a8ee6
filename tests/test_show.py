"""`netspec show filters|maps|saliency`: the pictures' content, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import netspec  # noqa: E402
from netspec.cli import main  # noqa: E402
from netspec.errors import NetspecError  # noqa: E402
from netspec.show import (  # noqa: E402
    feature_maps,
    filters,
    load,
    maps_figure,
    read_input,
    saliency,
    save,
)

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(ROOT / "specs" / "mnist_cnn.ns")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """mnist_cnn trained briefly on digits (a run folder)."""
    out = tmp_path_factory.mktemp("show") / "run"
    args = ["train", MNIST, "--data", "digits", "--epochs", "3", "--out", str(out), "-q"]
    assert main([*args, "--threads", "1"]) == 0
    return out


@pytest.fixture
def weights(tmp_path) -> Path:
    """mnist_cnn's initial weights as a bare .safetensors file."""
    from netspec.train.checkpoint import cpu_state, save_weights

    path = tmp_path / "w.safetensors"
    save_weights(path, cpu_state(netspec.build(MNIST)))
    return path


# ---- content ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trained_first_layer_filters_differ_from_the_initial_ones(trained: Path) -> None:
    net = load(trained)
    start = load(MNIST, seed=0)  # the run's seed: what training started from
    grid, first = filters(net), filters(start)
    assert grid.layer == first.layer == "conv1" and grid.tiles.shape == (16, 3, 3)
    w = net.model.get_submodule("conv1").weight.detach()
    w0 = start.model.get_submodule("conv1").weight.detach()
    assert (w - w0).abs().max() > 0.05  # trained weights moved
    assert not np.allclose(grid.tiles, first.tiles, atol=0.02)  # and the pictures show it
    # each tile is normalised on its own: its darkest pixel 0, its brightest 1
    assert np.allclose(grid.tiles.reshape(16, -1).min(1), 0)
    assert np.allclose(grid.tiles.reshape(16, -1).max(1), 1)


@pytest.mark.slow
def test_gradcam_of_a_digit_lands_on_the_digit(trained: Path) -> None:
    from netspec.train.data import load_data

    net = load(trained)
    val = load_data("digits", (1, 28, 28), 10, val_split=net.val_split, seed=net.seed).val
    x, _, label = read_input(net, "0")
    assert torch.equal(x, val.x[0]) and label == int(val.y[0])  # the same examples
    on_digit, on_border, wins = [], [], 0
    for x in val.x[:20]:
        s = saliency(net, x)
        digit = x[0].numpy() > 0.5
        border = np.zeros_like(digit)
        border[:3], border[-3:], border[:, :3], border[:, -3:] = True, True, True, True
        border &= ~digit
        on_digit.append(s.gradcam[digit].mean())
        on_border.append(s.gradcam[border].mean())
        wins += on_digit[-1] > on_border[-1]
        assert 0 <= s.probability <= 1 and s.gradcam.shape == (28, 28)
    assert s.layer == "relu2"  # the last stage of at least 7x7 (relu3 is 3x3)
    assert np.mean(on_digit) > 2 * np.mean(on_border) and wins >= 14


def test_a_maps_tile_count_is_the_layers_channels() -> None:
    net = load(MNIST)
    x, caption, label = read_input(net, "5")
    assert label is not None and "digits validation example 5" in caption
    grids = feature_maps(net, x)
    assert [g.layer for g in grids] == ["input", "relu1", "pool1", "relu2", "pool2", "relu3"]
    for grid in grids:
        assert len(grid.tiles) == grid.shape[0]
        assert grid.tiles.shape[1:] == grid.shape[1:]
    grids = feature_maps(net, x, ["conv2"])
    assert len(grids[1].tiles) == net.graph.node("conv2").shape[0]
    # a map is the layer's real output: relu1's tiles are conv1's, clipped at 0, normalised
    conv1 = net.model.get_submodule("conv1")(x[None])[0].detach().relu().numpy()
    span = x.max().item() - x.min().item()
    assert np.allclose(grids[0].tiles, (x.numpy() - x.min().item()) / span, atol=1e-5)
    relu1 = feature_maps(net, x, ["relu1"])[1].tiles
    flat = conv1.reshape(16, -1)
    lo, hi = flat.min(1)[:, None, None], flat.max(1)[:, None, None]
    live = (hi > lo).ravel()
    assert live.any()
    assert np.allclose(relu1[live], ((conv1 - lo) / np.where(hi > lo, hi - lo, 1))[live], atol=1e-5)
    assert np.all(relu1[~live] == 0)  # a map with nothing on is black


@pytest.mark.slow
def test_colour_filters_and_resnet_stages(tmp_path: Path) -> None:
    net = load("zoo:resnet18")
    grid = filters(net)
    assert grid.tiles.shape == (64, 7, 7, 3) and "RGB" in grid.note
    assert "mean over the 64" in filters(net, "layer1.basic1.conv1").note
    x = torch.rand(3, 224, 224)
    grids = feature_maps(net, x)
    assert [g.shape[0] for g in grids] == [3, 64, 64, 128, 256, 512]
    save(maps_figure(grids, "noise"), tmp_path / "maps.png")
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_writes_the_three_pictures(tmp_path: Path, weights: Path, capsys) -> None:
    for what, extra in (
        ("filters", []),
        ("maps", ["--input", "2"]),
        ("saliency", ["--input", "2"]),
    ):
        out = tmp_path / f"{what}.png"
        assert main(["show", what, str(weights), "--spec", MNIST, *extra, "-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
    assert "predicted" in capsys.readouterr().out


# ---- bad input ----------------------------------------------------------------------------------


def _fails(args: list[str], out: Path, capsys) -> str:
    out.write_bytes(b"old")
    assert main([*args, "-o", str(out)]) == 2
    assert out.read_bytes() == b"old"  # no partial (nor new) picture
    return capsys.readouterr().err


def test_unknown_layer_says_did_you_mean(tmp_path: Path, capsys) -> None:
    err = _fails(["show", "filters", MNIST, "--layer", "cnv2"], tmp_path / "f.png", capsys)
    assert "no layer `cnv2`" in err and "did you mean `conv2`" in err


def test_a_layer_without_kernels(tmp_path: Path, capsys) -> None:
    err = _fails(["show", "filters", MNIST, "--layer", "fc1"], tmp_path / "f.png", capsys)
    assert "`fc1` is FC(15): it has no kernels" in err and "conv1, conv2, conv3" in err
    err = _fails(
        ["show", "maps", MNIST, "--input", "0", "--layers", "fc1"], tmp_path / "m.png", capsys
    )
    assert "not a map" in err


def test_an_image_of_the_wrong_size_or_channels(tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((12, 10, 3), dtype=np.uint8)).save(image)
    args = ["show", "maps", MNIST, "--input", str(image)]
    err = _fails(args, tmp_path / "m.png", capsys)
    assert "10x12 with 3 channels" in err and "expects 28x28 with 1" in err
    assert "nothing was resized" in err and "--resize" in err
    out = tmp_path / "ok.png"
    assert main([*args, "--resize", "-o", str(out)]) == 0
    assert "resized from 10x12, colour made gray" in capsys.readouterr().out


def test_a_checkpoint_that_does_not_fit_the_spec(tmp_path: Path, weights: Path, capsys) -> None:
    lenet = str(ROOT / "specs" / "lenet5.ns")
    err = _fails(["show", "filters", str(weights), "--spec", lenet], tmp_path / "f.png", capsys)
    assert "do not fit this network" in err
    err = _fails(["show", "filters", str(weights)], tmp_path / "f.png", capsys)
    assert "holds weights but no spec" in err


def test_an_index_past_the_data(tmp_path: Path, capsys) -> None:
    err = _fails(["show", "saliency", MNIST, "--input", "9999"], tmp_path / "s.png", capsys)
    assert "holds 360 examples" in err or "examples (0 to" in err
    with pytest.raises(NetspecError, match="saliency explains one class score"):
        net = load(str(ROOT / "specs" / "unet.ns"))
        saliency(net, torch.zeros(1, 256, 256))
