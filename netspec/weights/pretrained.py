"""Published pretrained weights of the zoo's torchvision twins, as data (no torchvision import).

Every entry was read from torchvision 0.28's `torchvision.models.*_Weights` metadata: the URL,
the accuracy it publishes, and the preprocessing of `weights.transforms()` (resize, crop,
mean, std; bilinear interpolation for all of them but efficientnet_b0's, which torchvision
resizes bicubically: netspec's image reader resizes bilinearly). torchvision publishes no
full SHA-256: its file names embed the first 8 hex digits of the file's SHA-256
(`resnet50-11ad3fa6.pth`), and `torch.hub` checks exactly that prefix; netspec checks the same prefix of the file it reads.

GoogLeNet's and Inception v3's published weights come from TensorFlow and expect inputs scaled
to [-1, 1]: torchvision turns them on with `transform_input=True`, which rescales
ImageNet-normalized input to `(x - 0.5) / 0.5`. netspec folds that into the preprocessing (mean = std = 0.5), so
the network itself is the spec, unchanged.

`--init pretrained` (the zoo spec's default weights) and `--init torchvision:NAME.WEIGHTS` look
for the file in torch's hub cache, `torch.hub.get_dir()/checkpoints/FILE`, where
`torch.hub.load_state_dict_from_url` (and torchvision) put it. netspec never downloads: offline,
the error names the file and the folder to place it in. NETSPEC_HUB_HASH=skip skips the hash
check (a locally made stand-in file; the report says it was not checked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION = "torchvision:"


@dataclass(frozen=True)
class Preprocessing:
    """What a network's weights expect of an image: resize the short side to `resize`
    (bilinear), crop the centre `crop` x `crop`, scale to [0, 1], then (x - mean) / std."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_json(self) -> dict[str, object]:
        return {"resize": self.resize, "crop": self.crop, "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, value: object) -> Preprocessing | None:
        """Read back `to_json`'s dict (None for None or anything else)."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                int(value["resize"]),
                int(value["crop"]),
                tuple(float(v) for v in value["mean"]),
                tuple(float(v) for v in value["std"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def resize_for(self, shape: tuple[int, ...]) -> int | None:
        """The short side to scale an image to before cutting out the centre of a spec's input
        `shape` (C, H, W): `resize` when the input is the weights' `crop`, else in proportion
        (342 -> 299 for Inception v3 at 299; 390 at an input of 341); None for a non-image
        input."""
        if len(shape) != 3:
            return None
        return round(self.resize * max(shape[1:]) / self.crop)

    def apply(self, x: Any) -> Any:
        """(x - mean) / std per channel of a batch `(N, C, H, W)` in [0, 1] (torch or numpy).

        Raises:
            NetspecError: when the images do not have one channel per mean.
        """
        if x.ndim != 4 or x.shape[1] != len(self.mean):
            raise NetspecError(
                f"the weights expect images of {len(self.mean)} channels; the data has "
                f"examples of shape [{', '.join(map(str, x.shape[1:]))}]"
            )
        mean = [[[m]] for m in self.mean]
        std = [[[s]] for s in self.std]
        if hasattr(x, "new_tensor"):  # torch
            return (x - x.new_tensor(mean)) / x.new_tensor(std)
        import numpy as np

        return ((x - np.asarray(mean, x.dtype)) / np.asarray(std, x.dtype)).astype(x.dtype)

    def apply_split(self, split: Any) -> Any:
        """A `DataSplit` with its parts' images normalized (train, validation and any test set)."""
        parts = {
            name: dataclasses.replace(part, x=self.apply(part.x)) if len(part) else part
            for name in ("train", "val", "test")
            if (part := getattr(split, name, None)) is not None
        }
        return dataclasses.replace(split, **parts)

    def describe(self) -> str:
        mean = ", ".join(f"{m:g}" for m in self.mean)
        std = ", ".join(f"{s:g}" for s in self.std)
        return f"resize {self.resize}, crop {self.crop}, mean ({mean}), std ({std})"


@dataclass(frozen=True)
class Weights:
    """One set of published weights of a torchvision model.

    Attributes:
        model: torchvision's model name (`resnet50`).
        name: the weights' enum name (`IMAGENET1K_V2`).
        url: where torchvision downloads them from.
        preprocessing: what the weights expect of the input.
        top1: ImageNet-1K top-1 accuracy as published (%).
        default: torchvision's DEFAULT for the model.
        classes: the classifier's outputs (1000 for ImageNet-1K).
    """

    model: str
    name: str
    url: str
    preprocessing: Preprocessing
    top1: float
    default: bool
    classes: int = 1000

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[1]

    @property
    def hash_prefix(self) -> str:
        """The first hex digits of the file's SHA-256, from its name (torch.hub's check)."""
        return self.file.rsplit(".", 1)[0].rsplit("-", 1)[1]

    @property
    def full_name(self) -> str:
        return f"{self.model}.{self.name}"


def _w(
    model: str, name: str, url: str, resize: int, crop: int, top1: float, default: bool
) -> Weights:
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if model in TRANSFORM_INPUT:  # transform_input=True folded in (see the module's docstring)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return Weights(model, name, url, Preprocessing(resize, crop, mean, std), top1, default)


# torchvision models whose published weights turn on `transform_input` (TensorFlow's weights).
TRANSFORM_INPUT = ("googlenet", "inception_v3")
_URL = "https://download.pytorch.org/models/"
WEIGHTS: tuple[Weights, ...] = (
    _w("alexnet", "IMAGENET1K_V1", _URL + "alexnet-owt-7be5be79.pth", 256, 224, 56.522, True),
    _w("vgg16", "IMAGENET1K_V1", _URL + "vgg16-397923af.pth", 256, 224, 71.592, True),
    _w("vgg19", "IMAGENET1K_V1", _URL + "vgg19-dcbb9e9d.pth", 256, 224, 72.376, True),
    _w("googlenet", "IMAGENET1K_V1", _URL + "googlenet-1378be20.pth", 256, 224, 69.778, True),
    _w(
        "inception_v3",
        "IMAGENET1K_V1",
        _URL + "inception_v3_google-0cc3c7bd.pth",
        342,
        299,
        77.294,
        True,
    ),  # fmt: skip
    _w("resnet18", "IMAGENET1K_V1", _URL + "resnet18-f37072fd.pth", 256, 224, 69.758, True),
    _w("resnet34", "IMAGENET1K_V1", _URL + "resnet34-b627a593.pth", 256, 224, 73.314, True),
    _w("resnet50", "IMAGENET1K_V1", _URL + "resnet50-0676ba61.pth", 256, 224, 76.13, False),
    _w("resnet50", "IMAGENET1K_V2", _URL + "resnet50-11ad3fa6.pth", 232, 224, 80.858, True),
    _w("resnet101", "IMAGENET1K_V1", _URL + "resnet101-63fe2227.pth", 256, 224, 77.374, False),
    _w("resnet101", "IMAGENET1K_V2", _URL + "resnet101-cd907fc2.pth", 232, 224, 81.886, True),
    _w("resnet152", "IMAGENET1K_V1", _URL + "resnet152-394f9c45.pth", 256, 224, 78.312, False),
    _w("resnet152", "IMAGENET1K_V2", _URL + "resnet152-f82ba261.pth", 232, 224, 82.284, True),
    _w(
        "resnext50_32x4d",
        "IMAGENET1K_V1",
        _URL + "resnext50_32x4d-7cdf4587.pth",
        256,
        224,
        77.618,
        False,
    ),  # fmt: skip
    _w(
        "resnext50_32x4d",
        "IMAGENET1K_V2",
        _URL + "resnext50_32x4d-1a0047aa.pth",
        232,
        224,
        81.198,
        True,
    ),  # fmt: skip
    _w(
        "wide_resnet50_2",
        "IMAGENET1K_V1",
        _URL + "wide_resnet50_2-95faca4d.pth",
        256,
        224,
        78.468,
        False,
    ),  # fmt: skip
    _w(
        "wide_resnet50_2",
        "IMAGENET1K_V2",
        _URL + "wide_resnet50_2-9ba9bcbe.pth",
        232,
        224,
        81.602,
        True,
    ),  # fmt: skip
    _w(
        "convnext_tiny", "IMAGENET1K_V1", _URL + "convnext_tiny-983f1562.pth", 236, 224, 82.52, True
    ),
    _w(
        "mobilenet_v3_large",
        "IMAGENET1K_V1",
        _URL + "mobilenet_v3_large-8738ca79.pth",
        256,
        224,
        74.042,
        False,
    ),  # fmt: skip
    _w(
        "mobilenet_v3_large",
        "IMAGENET1K_V2",
        _URL + "mobilenet_v3_large-5c1a4163.pth",
        232,
        224,
        75.274,
        True,
    ),  # fmt: skip
    _w(
        "mobilenet_v3_small",
        "IMAGENET1K_V1",
        _URL + "mobilenet_v3_small-047dcff4.pth",
        256,
        224,
        67.668,
        True,
    ),  # fmt: skip
    _w(
        "efficientnet_b0",
        "IMAGENET1K_V1",
        _URL + "efficientnet_b0_rwightman-7f5810bc.pth",
        256,
        224,
        77.692,
        True,
    ),  # fmt: skip
)

# zoo spec -> its torchvision twin (same layers, order and shapes; tests/test_weights_parity.py
# holds each to the same logits). googlenet_aux is torchvision's GoogLeNet with aux_logits=True.
TWINS: dict[str, str] = {
    "alexnet": "alexnet",
    "vgg16": "vgg16",
    "vgg19": "vgg19",
    "googlenet": "googlenet",
    "googlenet_aux": "googlenet",
    "inception_v3": "inception_v3",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnext50_32x4d": "resnext50_32x4d",
    "wide_resnet50_2": "wide_resnet50_2",
    "convnext_tiny": "convnext_tiny",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "efficientnet_b0": "efficientnet_b0",
}

# Source layers a twin's published file holds that the zoo spec leaves out on purpose:
# torchvision's GoogLeNet file keeps its two auxiliary classifiers, which its inference
# model (aux_logits=False) drops too.
EXTRA_LAYERS: dict[str, tuple[str, ...]] = {"googlenet": ("aux1.", "aux2.")}


def weights_of(model: str) -> list[Weights]:
    """The published weights of a torchvision model, default first."""
    found = [w for w in WEIGHTS if w.model == model]
    return sorted(found, key=lambda w: not w.default)


def for_spec(network: str) -> list[Weights]:
    """The published weights of a zoo spec's twin (none when it has no twin)."""
    twin = TWINS.get(network)
    return weights_of(twin) if twin else []


def lookup(text: str, network: str) -> Weights:
    """`pretrained` (the spec's twin's default weights), `pretrained:NAME`, or
    `torchvision:MODEL[.NAME]`.

    Raises:
        NetspecError: for a spec without a twin, or an unknown model or weights name.
    """
    if text.startswith(TORCHVISION):
        model, _, name = text[len(TORCHVISION) :].partition(".")
        known = sorted({w.model for w in WEIGHTS})
        if model not in known:
            raise NetspecError(
                f"no published weights for the torchvision model `{model}`",
                hint=did_you_mean(model, known) or f"known: {', '.join(known)}",
            )
    else:
        _, _, name = text.partition(":")
        twins = for_spec(network)
        if not twins:
            raise NetspecError(
                f"`{network}` has no torchvision twin, so no published weights: --init pretrained "
                "is for the zoo specs `netspec zoo` marks as pretrained",
                hint="give a weights file instead: --init FILE.pth|.safetensors|.onnx|RUN_DIR",
            )
        model = twins[0].model
    options = weights_of(model)
    if not name:
        return options[0]
    for w in options:
        if w.name == name:
            return w
    names = [w.name for w in options]
    raise NetspecError(
        f"torchvision publishes no weights `{name}` for {model}",
        hint=did_you_mean(name, names) or f"known: {', '.join(names)}",
    )


def hub_dir() -> Path:
    """torch.hub's folder: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else
    ~/.cache/torch/hub (torch.hub.get_dir's rule, without importing torch)."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(cache, "torch")
    return Path(home) / "hub"


def cached_file(weights: Weights) -> Path:
    """The file of `weights` in torch's hub cache, its hash prefix checked.

    Raises:
        NetspecError: when the file is not there (saying where to place it), or its SHA-256
            does not start with the digits in its name.
    """
    path = hub_dir() / "checkpoints" / weights.file
    if not path.is_file():
        raise NetspecError(
            f"the weights {weights.full_name} are not in torch's hub cache: no {path}",
            notes=[f"download {weights.url}", f"and place it at {path}"],
            hint="netspec never downloads; on a machine online, "
            f"`python -c \"import torch; torch.hub.load_state_dict_from_url('{weights.url}')\"` "
            "puts it there (set TORCH_HOME to use another cache folder)",
        )
    if os.environ.get("NETSPEC_HUB_HASH") == "skip":  # a stand-in file (a demo, a test)
        return path
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(weights.hash_prefix):
        raise NetspecError(
            f"{path} is not the published {weights.full_name}: its SHA-256 starts "
            f"{digest.hexdigest()[:8]}, the file's name says {weights.hash_prefix}",
            hint=f"the download was damaged or replaced; delete it and fetch {weights.url} again",
        )
    return path
