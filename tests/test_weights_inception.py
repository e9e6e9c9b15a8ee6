"""Inception v3, deck 002's case study (issue 21): specs/inception_v3.ns is torchvision's
inception_v3 parameter for parameter, knows its published weights and their preprocessing, and
the issue's one-command workflow runs: `netspec train zoo:inception_v3 --init pretrained
--set classes=7 --data folder:DIR`, with a locally made state dict in torch's hub cache standing
in for the download. (Output parity with torchvision's model: tests/test_weights_parity.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.published import assert_gmacs
from helpers.twins import torchvision_models, twin
from PIL import Image

import netspec
from netspec.weights import pretrained

ROOT = Path(__file__).resolve().parents[1]


def test_inception_v3_is_torchvisions_count_and_layout() -> None:
    """27,161,264 params with the auxiliary head (torchvision's default, aux_logits=True, and
    its published figure); 5.71 GMACs on the main path (its published 5.713 GFLOPS)."""
    g = netspec.compile_spec("zoo:inception_v3")
    assert g.input.shape == (3, 299, 299)
    assert g.totals.params == 27_161_264
    assert g.main_totals is not None
    assert g.main_totals.params == 27_161_264 - 3_326_696  # the head: 2 BasicConv2d + fc
    assert_gmacs(g.main_totals.macs, "5.71")
    assert [(h.name, h.at, g.node(h.output).shape) for h in g.heads] == [
        ("aux", "Mixed_6e.concat1", (1000,))
    ]
    assert g.node("Mixed_7c.concat1").shape == (2048, 8, 8)


def test_inception_v3_knows_its_published_weights() -> None:
    w = pretrained.lookup("pretrained", "inception_v3")
    assert w.full_name == "inception_v3.IMAGENET1K_V1" and w.hash_prefix == "0cc3c7bd"
    assert w.url == "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
    prep = w.preprocessing
    assert (prep.resize, prep.crop) == (342, 299)
    assert prep.mean == prep.std == (0.5, 0.5, 0.5)  # transform_input=True, as GoogLeNet's


def _images(folder: Path, classes: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c}" / f"{i}.jpg")


@pytest.mark.slow
def test_train_zoo_inception_v3_from_pretrained_with_seven_classes(tmp_path: Path) -> None:
    """Deck 002's workflow in one command: 1000 ImageNet classes -> 7, the classifiers (main
    and auxiliary) re-initialised by name, everything else loaded, images resized to 342 and
    cropped to 299, normalized as the weights expect; one step per epoch."""
    models = torchvision_models()
    if models is None:
        if os.environ.get("NETSPEC_REQUIRE_TORCHVISION") == "1":
            pytest.fail("torchvision is required here (NETSPEC_REQUIRE_TORCHVISION=1)")
        pytest.skip("torchvision is not installed")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    state = twin(models, "inception_v3", (3, 299, 299)).state_dict()
    torch.save(state, hub / "inception_v3_google-0cc3c7bd.pth")  # stands in for the download
    data = tmp_path / "lesions"
    _images(data, classes=7, per_class=2)
    out = tmp_path / "run"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "NETSPEC_HUB_HASH": "skip"}
    cmd = [sys.executable, "-m", "netspec", "train", "zoo:inception_v3", "--init", "pretrained",
           "--set", "classes=7", "--data", f"folder:{data}", "--val-split", "0.5",
           "--batch-size", "7", "--epochs", "2", "--freeze-epochs", "1", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "192 of 194 layers with weights loaded" in text
    assert "classifier `fc` (source `fc`): re-initialised: 7 classes here, 1000 in the" in text
    assert "classifier `aux.fc` (source `AuxLogits.fc`): re-initialised" in text
    assert "SHA-256 prefix 0cc3c7bd NOT checked" in text
    assert "preprocessing (from the weights): resize 342, crop 299, mean (0.5, 0.5, 0.5)" in text
    assert "epoch 2/2" in text
    saved = json.loads((out / "settings.json").read_text())
    assert saved["preprocessing"]["resize"] == 342 and saved["preprocessing"]["crop"] == 299
    assert (out / "best.safetensors").is_file() or (out / "last.safetensors").is_file()
