"""The hand-written torch references of the modern CNN families, held to published figures.

These references are the ground truth the netspec zoo specs of issue 9 will be compared with:
parameters must equal torchvision's published num_params exactly, and the multiply-adds counted by
`modern_refs.count_macs` must round to torchvision's published GFLOPS (which are multiply-adds).
Where nothing is published (GoogLeNet's aux heads, the U-Net) the counts are checked against
arithmetic written out from the architecture's tables, independently of the modules.
"""

from __future__ import annotations

import helpers.modern_refs as R
import pytest
import torch
from helpers.published import IMAGENET, PUBLISHED, assert_gmacs, run
from torch import nn


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_params_and_macs(name: str) -> None:
    _, params, gmacs, source = PUBLISHED[name]
    r = run(name)
    assert r.params == params, source
    assert_gmacs(r.macs, gmacs)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_logits_at_batch_1(name: str) -> None:
    assert run(name).out == (1, 1000)


# --- the counter ---------------------------------------------------------------------------------


def macs_of(model: nn.Module, *shape: int) -> int:
    with torch.no_grad(), R.count_macs(model) as counter:
        model(torch.randn(*shape))
    return counter.macs


def test_counter_conv_rule_with_groups_stride_and_bias() -> None:
    conv = nn.Conv2d(8, 12, (3, 5), stride=2, padding=1, groups=4, bias=True)
    out = conv(torch.randn(1, 8, 11, 13))
    # out elements x (cin / groups) x kernel area; the bias is not a multiply-add.
    assert macs_of(conv, 1, 8, 11, 13) == out.numel() * 2 * 15
    conv1d = nn.Conv1d(4, 6, 3)
    assert macs_of(conv1d, 1, 4, 10) == 6 * 8 * 4 * 3


def test_counter_conv_transpose_rule_with_overlap() -> None:
    # k=3 s=2: the kernel windows overlap, so input-based and output-based counts differ.
    up = nn.ConvTranspose2d(6, 4, 3, stride=2, groups=2)
    assert up(torch.randn(1, 6, 5, 7)).shape == (1, 4, 11, 15)
    assert macs_of(up, 1, 6, 5, 7) == 5 * 7 * 6 * (4 // 2) * 9


def test_counter_linear_counts_every_position() -> None:
    assert macs_of(nn.Linear(10, 7), 1, 10) == 70
    # ConvNeXt applies Linear to [N, H, W, C]: in*out per position.
    assert macs_of(nn.Linear(10, 7), 1, 3, 5, 10) == 70 * 15


def test_counter_is_per_sample_and_ignores_free_layers() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.Hardswish(),
        nn.MaxPool2d(2),
        R.SqueezeExcitation(4, 8, scale_activation=nn.Hardsigmoid),
        R.LayerNorm2d(4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()
    conv = 4 * 6 * 6 * 3 * 9
    se = 4 * 8 + 8 * 4  # the two 1x1 convs on the 1x1 map; the rescaling multiply is free
    assert macs_of(model, 1, 3, 8, 8) == conv + se + 4 * 2
    assert macs_of(model, 3, 3, 8, 8) == conv + se + 4 * 2


def test_counter_hooks_are_removed() -> None:
    conv = nn.Conv2d(1, 1, 1)
    with R.count_macs(conv) as counter:
        pass
    conv(torch.randn(1, 1, 2, 2))
    assert counter.macs == 0 and not conv._forward_hooks


# --- MobileNetV3 ---------------------------------------------------------------------------------


def test_make_divisible_follows_torchvision() -> None:
    assert [R._make_divisible(v, 8) for v in (4, 18, 30, 36, 60, 120)] == [8, 24, 32, 40, 64, 120]


@pytest.mark.parametrize(
    ("builder", "squeezes"),
    [
        (R.mobilenet_v3_large, [24, 32, 32, 120, 168, 168, 240, 240]),
        (R.mobilenet_v3_small, [8, 24, 64, 64, 32, 40, 72, 144, 144]),
    ],
)
def test_mobilenet_v3_se_squeeze_channels(builder: object, squeezes: list[int]) -> None:
    model = builder()  # type: ignore[operator]
    se = [m for m in model.modules() if isinstance(m, R.SqueezeExcitation)]
    assert [m.fc1.out_channels for m in se] == squeezes
    assert all(m.fc1.bias is not None and m.fc2.bias is not None for m in se)
    assert all(isinstance(m.scale_activation, nn.Hardsigmoid) for m in se)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {m.eps for m in bns} == {0.001}


def test_mobilenet_v3_large_classifier_and_residuals() -> None:
    model = R.mobilenet_v3_large()
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert (model.classifier[0].in_features, model.classifier[0].out_features) == (960, 1280)
    assert model.classifier[2].p == 0.2
    blocks = [m for m in model.features if isinstance(m, R.InvertedResidual)]
    assert [b.use_res_connect for b in blocks] == [
        c.stride == 1 and c.cin == c.cout for c in R.MOBILENET_V3_LARGE
    ]
    assert sum(b.use_res_connect for b in blocks) == 10


# --- ResNeXt and Wide ResNet ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "widths", "groups"),
    [(R.resnext50_32x4d, [128, 256, 512, 1024], 32), (R.wide_resnet50_2, [128, 256, 512, 1024], 1)],
)
def test_bottleneck_widths(builder: object, widths: list[int], groups: int) -> None:
    model = builder()  # type: ignore[operator]
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [s[0].conv2.out_channels for s in stages] == widths
    assert {s[0].conv2.groups for s in stages} == {groups}
    assert [s[0].conv3.out_channels for s in stages] == [256, 512, 1024, 2048]
    assert [len(s) for s in stages] == [3, 4, 6, 3]


# --- ConvNeXt ------------------------------------------------------------------------------------


def test_convnext_tiny_layer_scale_and_stochastic_depth() -> None:
    model = R.convnext_tiny()
    blocks = [m for m in model.modules() if isinstance(m, R.CNBlock)]
    assert len(blocks) == 18
    assert [b.layer_scale.shape[0] for b in blocks] == [96] * 3 + [192] * 3 + [384] * 9 + [768] * 3
    assert {tuple(b.layer_scale.shape[1:]) for b in blocks} == {(1, 1)}
    assert all(torch.equal(b.layer_scale, torch.full_like(b.layer_scale, 1e-6)) for b in blocks)
    # Stochastic depth rises linearly from 0 to 0.1 over the 18 blocks; identity in eval.
    assert [b.stochastic_depth.p for b in blocks] == pytest.approx(
        [0.1 * i / 17 for i in range(18)]
    )
    model.eval()
    x = torch.randn(1, 96, 8, 8)
    with torch.no_grad():
        assert torch.equal(blocks[-1].stochastic_depth(x), x)


# --- GoogLeNet with its auxiliary classifiers ----------------------------------------------------


def aux_head_params(cin: int, classes: int = 1000) -> int:
    """InceptionAux by arithmetic: conv 1x1 to 128 (no bias) + BN(128) + fc 2048->1024 + fc."""
    return cin * 128 + 2 * 128 + (2048 * 1024 + 1024) + (1024 * classes + classes)


def aux_head_macs(cin: int, classes: int = 1000) -> int:
    return 4 * 4 * 128 * cin + 2048 * 1024 + 1024 * classes


def test_googlenet_aux_params_follow_from_the_main_path() -> None:
    # The main path equals torchvision's published googlenet (test above); the heads add exactly
    # their layers' weights, tapping inception4a (512 channels) and inception4d (528).
    torch.manual_seed(0)
    model = R.googlenet(aux_logits=True)
    assert model.aux1 is not None and model.aux2 is not None
    assert R.n_params(model.aux1) == aux_head_params(512) == 3_188_968
    assert R.n_params(model.aux2) == aux_head_params(528) == 3_191_016
    assert R.n_params(model) == run("googlenet").params + aux_head_params(512) + aux_head_params(
        528
    )
    assert R.n_params(model) == 13_004_888


def test_googlenet_training_mode_returns_main_and_two_aux() -> None:
    torch.manual_seed(0)
    model = R.googlenet(aux_logits=True).train()
    with torch.no_grad(), R.count_macs(model) as counter:
        out = model(torch.randn(1, *IMAGENET))
    assert isinstance(out, R.GoogLeNetOutputs)
    assert len(out) == 3 and all(o is not None and o.shape == (1, 1000) for o in out)
    assert counter.macs == run("googlenet").macs + aux_head_macs(512) + aux_head_macs(528)
    # In eval mode the heads do not run: logits only, main-path MACs.
    model.eval()
    with torch.no_grad(), R.count_macs(model) as counter:
        out = model(torch.randn(1, *IMAGENET))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1000)
    assert counter.macs == run("googlenet").macs


def test_googlenet_branch3_uses_torchvision_kernel_3() -> None:
    model = R.googlenet(aux_logits=False)
    second = [m.branch3[1] for m in model.modules() if isinstance(m, R.Inception)]
    kernels = [c.conv.kernel_size for c in second if isinstance(c, R.BasicConv2d)]
    assert kernels == [(3, 3)] * 9


# --- U-Net ---------------------------------------------------------------------------------------


def unet_by_arithmetic(cin: int, classes: int, h: int, w: int) -> tuple[int, int]:
    """Params and MACs of the paper's U-Net with padded convs, written out level by level."""
    chans = [64, 128, 256, 512, 1024]
    params = macs = 0

    def conv(a: int, b: int, k: int, pixels: int) -> None:
        nonlocal params, macs
        params += a * b * k * k + b
        macs += pixels * a * b * k * k

    prev = cin
    for level, c in enumerate(chans):  # contracting path and bottleneck
        pixels = (h >> level) * (w >> level)
        conv(prev, c, 3, pixels)
        conv(c, c, 3, pixels)
        prev = c
    for level in (3, 2, 1, 0):  # expanding path
        c = chans[level]
        in_pixels = (h >> (level + 1)) * (w >> (level + 1))
        params += prev * c * 4 + c  # up-conv 2x2 stride 2
        macs += in_pixels * prev * c * 4
        pixels = (h >> level) * (w >> level)
        conv(2 * c, c, 3, pixels)  # after concatenating the skip
        conv(c, c, 3, pixels)
        prev = c
    conv(prev, classes, 1, h * w)
    return params, macs


def test_unet_params_and_macs_equal_the_arithmetic() -> None:
    r = run("unet")
    assert (r.params, r.macs) == unet_by_arithmetic(*R.UNET_INPUT[:1], 2, *R.UNET_INPUT[1:])
    assert r.out == (1, 2, *R.UNET_INPUT[1:])
    assert r.params == 31_030_658


def test_unet_keeps_any_multiple_of_16_and_has_no_norm() -> None:
    model = R.UNet(in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 80)).shape == (1, 2, 48, 80)
    assert not [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert all(m.bias is not None for m in convs)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in convs) == 4
    assert R.n_params(model) == unet_by_arithmetic(3, 2, 48, 80)[0]


# --- state_dict layouts (keys of torchvision's checkpoints) --------------------------------------

STATE_KEYS = {
    "mobilenet_v3_large": [
        "features.0.0.weight",
        "features.0.1.running_var",
        "features.1.block.0.0.weight",  # block 1 has no expansion: depthwise first
        "features.1.block.1.0.weight",
        "features.4.block.2.fc1.weight",  # expand, depthwise, SE, project
        "features.4.block.2.fc2.bias",
        "features.4.block.3.1.weight",
        "features.16.0.weight",
        "classifier.0.weight",
        "classifier.3.bias",
    ],
    "mobilenet_v3_small": ["features.1.block.1.fc1.weight", "features.12.0.weight"],
    "resnext50_32x4d": [
        "conv1.weight",
        "bn1.num_batches_tracked",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.running_mean",
        "layer4.2.conv3.weight",
        "fc.bias",
    ],
    "convnext_tiny": [
        "features.0.0.weight",
        "features.0.0.bias",
        "features.0.1.weight",
        "features.1.0.layer_scale",
        "features.1.0.block.0.weight",
        "features.1.0.block.2.weight",
        "features.1.0.block.3.weight",
        "features.1.0.block.5.weight",
        "features.2.0.weight",
        "features.2.1.weight",
        "features.7.2.layer_scale",
        "classifier.0.weight",
        "classifier.2.weight",
    ],
    "googlenet": [
        "conv1.conv.weight",
        "conv1.bn.running_mean",
        "inception3a.branch1.conv.weight",
        "inception3a.branch2.1.conv.weight",
        "inception3a.branch4.1.bn.bias",
        "inception5b.branch3.1.conv.weight",
        "fc.weight",
    ],
}


@pytest.mark.parametrize("name", sorted(STATE_KEYS))
def test_state_dict_keys_follow_torchvision(name: str) -> None:
    keys = run(name).state_keys
    assert set(STATE_KEYS[name]) <= set(keys)
    assert len(keys) == len(set(keys))


def test_convnext_and_mobilenet_key_counts() -> None:
    # ConvNeXt-T: stem 4 tensors; each block 9 (dw w,b, LN w,b, fc1 w,b, fc2 w,b, layer_scale);
    # three downsamplers 4 each; head 4.
    assert len(run("convnext_tiny").state_keys) == 4 + 18 * 9 + 3 * 4 + 4
    # Every BatchNorm adds 5 entries, every conv 1 (2 with bias), every Linear 2.
    torch.manual_seed(0)
    model = R.mobilenet_v3_large()
    expected = sum(
        5 if isinstance(m, nn.BatchNorm2d) else 1 + (m.bias is not None)
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d | nn.Conv2d | nn.Linear)
    )
    assert len(run("mobilenet_v3_large").state_keys) == expected
