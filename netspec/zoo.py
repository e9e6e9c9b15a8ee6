"""The zoo: the specs bundled with netspec, found by name (`zoo:resnet50`), and their published
figures, kept here once for `netspec zoo` and for the tests that hold every spec to them.

The source tree (and editable installs) keep `specs/` beside the package; a wheel maps it in as
`netspec/_zoo` (see setup.py), so an installed netspec knows its zoo without the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from netspec.errors import NetspecError, clip, did_you_mean

PREFIX = "zoo:"
SUFFIX = ".ns"


class Published(NamedTuple):
    """A network's published figures: exact params, multiply-adds in G as printed, source.

    `reference`: nothing is published for it; the figures are those of an independent torch
    reference (tests/helpers/modern_refs.py), which tests/test_zoo_modern.py builds and counts.
    `netspec zoo` shows them as the reference's, never as published."""

    params: int
    gmacs: str | None  # as published ("4.09"), so its precision is known; None: not published
    source: str
    reference: bool = False


# The published numbers (the course's tables and Keras listings, torchvision's model table, the
# papers), never values copied from netspec's own output. torchvision's "GFLOPS" are
# multiply-adds. AlexNet's 0.71 is given to three digits (714 M multiply-adds) so that a 0.5%
# tolerance is meaningful.
PUBLISHED: dict[str, Published] = {
    "lenet5": Published(61_706, None, "the course table's LeNet-5 (deck 001), as usually quoted"),
    "mnist_dense": Published(
        7_960, None, "course deck 003: '2 layers of 10 neurons : 7960 parameters'"
    ),
    "mnist_dense3": Published(
        12_175, None, "course deck 003: '3 layers of 15 neurons : 12175 parameters'"
    ),
    "mnist_cnn": Published(7_135, None, "course deck 003, Keras summary: 'Total params: 7,135'"),
    "cifar_vgg": Published(
        435_882, None, "course deck 003: 'Number of trainable parameters : 435,882'"
    ),
    "cifar_vgg_dropout": Published(435_882, None, "course deck 003, the dropout listing: 435,882"),
    "alexnet": Published(61_100_840, "0.714", "torchvision alexnet"),
    "vgg16": Published(138_357_544, "15.47", "torchvision vgg16"),
    "vgg19": Published(143_667_240, "19.63", "torchvision vgg19"),
    "googlenet": Published(6_624_904, "1.50", "torchvision googlenet"),
    # With its auxiliary head (torchvision's default and published count); the 5.71 GMACs are
    # the main path's (inference), held in tests/test_weights_inception.py.
    "inception_v3": Published(27_161_264, None, "torchvision inception_v3 (aux_logits=True)"),
    "resnet18": Published(11_689_512, "1.81", "torchvision resnet18"),
    "resnet34": Published(21_797_672, "3.66", "torchvision resnet34"),
    "resnet50": Published(25_557_032, "4.09", "torchvision resnet50"),
    "resnet101": Published(44_549_160, "7.80", "torchvision resnet101"),
    "resnet152": Published(60_192_808, "11.51", "torchvision resnet152"),
    "resnext50_32x4d": Published(25_028_904, "4.23", "torchvision resnext50_32x4d"),
    "wide_resnet50_2": Published(68_883_240, "11.398", "torchvision wide_resnet50_2"),
    "convnext_tiny": Published(28_589_128, "4.456", "torchvision convnext_tiny"),
    "efficientnet_b0": Published(5_288_548, "0.386", "torchvision efficientnet_b0"),
    "mobilenet_v3_large": Published(5_483_032, "0.217", "torchvision mobilenet_v3_large"),
    # 0.057 to two significant digits (the paper: 56M): held exactly to the reference's
    # 56,510,400 in tests/test_zoo_modern.py.
    "mobilenet_v3_small": Published(2_542_856, "0.057", "torchvision mobilenet_v3_small"),
    # torchvision's _meta num_params: the checkpoint's model, with its aux classifier (the
    # spec's `aux` head); the main path alone is 32,957,013 (tests/test_fcn.py). Its 152.717
    # GFLOPS are at 520x520, not the spec's 513x513: no MACs figure is held.
    "fcn_resnet50": Published(
        35_322_218, None, "torchvision fcn_resnet50 (COCO_WITH_VOC_LABELS_V1 meta, aux included)"
    ),
    "unet": Published(
        31_030_658,
        "48.096",
        "U-Net (Ronneberger et al. 2015), padded convs, input 1x256x256: the paper gives no "
        "count; the hand-written reference tests/helpers/modern_refs.py R.unet (no torchvision "
        "U-Net)",
        reference=True,
    ),
}


def zoo_dir() -> Path:
    """The folder of bundled specs: `netspec/_zoo` in a wheel, `specs/` in a checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "_zoo"
    return installed if installed.is_dir() else package.parent / "specs"


def names() -> list[str]:
    """Every bundled spec's name, sorted."""
    return sorted(p.stem for p in zoo_dir().glob(f"*{SUFFIX}"))


def path_of(name: str) -> Path:
    """The file of the bundled spec NAME (`resnet50`), or an error with a "did you mean"."""
    known = names()
    if name not in known:
        raise NetspecError(
            f"no spec named `{clip(name)}` in the zoo",
            hint=did_you_mean(name, known) or "`netspec zoo` lists the bundled specs",
        )
    return zoo_dir() / f"{name}{SUFFIX}"


def resolve(spec: str | Path) -> str | Path:
    """`zoo:NAME` -> the bundled spec's path; anything else is returned unchanged."""
    if isinstance(spec, str) and spec.startswith(PREFIX):
        return path_of(spec[len(PREFIX) :])
    return spec


def gmacs_agree(macs: int, published: str) -> bool:
    """MACs round to the published figure at its printed precision and lie within 0.5% of it,
    or within the figure's own rounding interval where that is wider (0.057 stands for
    [0.0565, 0.0575): +-0.88%; tests/helpers/published.py's `assert_gmacs` rule)."""
    decimals = len(published.split(".")[1]) if "." in published else 0
    value = float(published)
    band = max(0.005, 0.5 * 10**-decimals / value)
    return round(macs / 1e9, decimals) == value and abs(macs - value * 1e9) <= band * value * 1e9
