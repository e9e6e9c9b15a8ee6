"""Hand-written PyTorch references for the modern CNN families (torchvision does not install here).

Each network follows torchvision's implementation: the same layer order and the same module
structure and attribute names, so that its parameter count is exact and its state_dict keys are
the ones torchvision's checkpoints use (mobilenetv3.py, resnet.py, convnext.py, googlenet.py).
The U-Net follows Ronneberger et al. 2015 with padded convolutions (see `UNet`).

`count_macs` counts multiply-adds the way torchvision's model table counts its "GFLOPS":
convolutions, transposed convolutions and linear layers only; batch/layer norms, activations,
pools, residual adds and the squeeze-excitation scaling are free, and biases are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --- counting ----------------------------------------------------------------------------------


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_macs(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    assert isinstance(m, nn.Conv1d | nn.Conv2d)
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _conv_transpose_macs(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    # Every input pixel is scattered through the whole kernel into every output channel.
    assert isinstance(m, nn.ConvTranspose2d)
    x = inputs[0]
    spatial = x.numel() // x.shape[1]  # batch x input pixels
    return spatial * m.in_channels * (m.out_channels // m.groups) * math.prod(m.kernel_size)


def _linear_macs(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    # A Linear applied per position (ConvNeXt's [N, H, W, C] blocks) costs in*out per position.
    assert isinstance(m, nn.Linear)
    return out.numel() * m.in_features


_RULES: dict[type[nn.Module], Callable[[nn.Module, tuple[Tensor, ...], Tensor], int]] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.ConvTranspose2d: _conv_transpose_macs,
    nn.Linear: _linear_macs,
}


class MacCounter:
    """Multiply-adds per sample, summed over the forward passes run while counting."""

    def __init__(self) -> None:
        self.macs = 0
        self.by_module: dict[str, int] = {}

    def add(self, name: str, macs: int) -> None:
        self.macs += macs
        self.by_module[name] = self.by_module.get(name, 0) + macs


@contextmanager
def count_macs(model: nn.Module) -> Iterator[MacCounter]:
    """Count the multiply-adds of the forward passes run inside the block, per sample.

    Example: `with count_macs(m) as c: m(x)` then `c.macs`. A module type outside the four
    counted ones costs nothing; batch size is divided out (the input's first dimension).
    """
    counter = MacCounter()
    handles = []
    for name, module in model.named_modules():
        rule = _RULES.get(type(module))
        if rule is None:
            continue

        def hook(
            m: nn.Module,
            inputs: tuple[Tensor, ...],
            out: Tensor,
            name: str = name,
            rule: Callable[[nn.Module, tuple[Tensor, ...], Tensor], int] = rule,
        ) -> None:
            batch = inputs[0].shape[0]
            total = rule(m, inputs, out)
            assert total % batch == 0
            counter.add(name, total // batch)

        handles.append(module.register_forward_hook(hook))
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


# --- shared pieces (torchvision.ops.misc, torchvision.models._utils) ---------------------------


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round to a multiple of `divisor`, never more than 10% down (from the TF MobileNet code)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """conv -> norm -> activation as keys `0`, `1`, `2`; the conv has a bias only without norm."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[[], nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
    ) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """x * scale(fc2(act(fc1(avgpool(x))))); fc1 and fc2 are 1x1 convs with bias."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
        scale_activation: Callable[[], nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability p ("row" mode), training only."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = x.new_empty([x.shape[0]] + [1] * (x.ndim - 1)).bernoulli_(keep)
        return x * noise.div_(keep)


# --- MobileNetV3 (torchvision/models/mobilenetv3.py) ------------------------------------------


@dataclass(frozen=True)
class Bneck:
    """One row of the paper's Tables 1 and 2 (torchvision's InvertedResidualConfig)."""

    cin: int
    kernel: int
    expanded: int
    cout: int
    use_se: bool
    activation: str  # "RE" (ReLU) or "HS" (hardswish)
    stride: int


MOBILENET_V3_LARGE: tuple[Bneck, ...] = (
    Bneck(16, 3, 16, 16, False, "RE", 1),
    Bneck(16, 3, 64, 24, False, "RE", 2),
    Bneck(24, 3, 72, 24, False, "RE", 1),
    Bneck(24, 5, 72, 40, True, "RE", 2),
    Bneck(40, 5, 120, 40, True, "RE", 1),
    Bneck(40, 5, 120, 40, True, "RE", 1),
    Bneck(40, 3, 240, 80, False, "HS", 2),
    Bneck(80, 3, 200, 80, False, "HS", 1),
    Bneck(80, 3, 184, 80, False, "HS", 1),
    Bneck(80, 3, 184, 80, False, "HS", 1),
    Bneck(80, 3, 480, 112, True, "HS", 1),
    Bneck(112, 3, 672, 112, True, "HS", 1),
    Bneck(112, 5, 672, 160, True, "HS", 2),
    Bneck(160, 5, 960, 160, True, "HS", 1),
    Bneck(160, 5, 960, 160, True, "HS", 1),
)
MOBILENET_V3_SMALL: tuple[Bneck, ...] = (
    Bneck(16, 3, 16, 16, True, "RE", 2),
    Bneck(16, 3, 72, 24, False, "RE", 2),
    Bneck(24, 3, 88, 24, False, "RE", 1),
    Bneck(24, 5, 96, 40, True, "HS", 2),
    Bneck(40, 5, 240, 40, True, "HS", 1),
    Bneck(40, 5, 240, 40, True, "HS", 1),
    Bneck(40, 5, 120, 48, True, "HS", 1),
    Bneck(48, 5, 144, 48, True, "HS", 1),
    Bneck(48, 5, 288, 96, True, "HS", 2),
    Bneck(96, 5, 576, 96, True, "HS", 1),
    Bneck(96, 5, 576, 96, True, "HS", 1),
)

_MNV3_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def se_squeeze(expanded: int) -> int:
    return _make_divisible(expanded // 4, 8)


class InvertedResidual(nn.Module):
    """[expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 (no activation), all in `block`."""

    def __init__(self, cnf: Bneck) -> None:
        super().__init__()
        act: Callable[[], nn.Module] = nn.Hardswish if cnf.activation == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if cnf.expanded != cnf.cin:
            layers.append(
                Conv2dNormActivation(
                    cnf.cin, cnf.expanded, 1, norm_layer=_MNV3_BN, activation_layer=act
                )
            )
        layers.append(
            Conv2dNormActivation(
                cnf.expanded,
                cnf.expanded,
                cnf.kernel,
                cnf.stride,
                groups=cnf.expanded,
                norm_layer=_MNV3_BN,
                activation_layer=act,
            )
        )
        if cnf.use_se:
            layers.append(
                SqueezeExcitation(
                    cnf.expanded, se_squeeze(cnf.expanded), scale_activation=nn.Hardsigmoid
                )
            )
        layers.append(
            Conv2dNormActivation(
                cnf.expanded, cnf.cout, 1, norm_layer=_MNV3_BN, activation_layer=None
            )
        )
        self.block = nn.Sequential(*layers)
        self.use_res_connect = cnf.stride == 1 and cnf.cin == cnf.cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3(nn.Module):
    def __init__(
        self,
        setting: Sequence[Bneck],
        last_channel: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3, setting[0].cin, 3, 2, norm_layer=_MNV3_BN, activation_layer=nn.Hardswish
            )
        ]
        layers += [InvertedResidual(cnf) for cnf in setting]
        last_in = setting[-1].cout
        last_out = 6 * last_in
        layers.append(
            Conv2dNormActivation(
                last_in, last_out, 1, norm_layer=_MNV3_BN, activation_layer=nn.Hardswish
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_out, last_channel),
            nn.Hardswish(),
            nn.Dropout(p=dropout),
            nn.Linear(last_channel, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(MOBILENET_V3_LARGE, 1280, num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(MOBILENET_V3_SMALL, 1024, num_classes)


# --- ResNet bottleneck family (torchvision/models/resnet.py) ----------------------------------


class Bottleneck(nn.Module):
    """1x1 (width) -> 3x3 grouped (width, stride here: "ResNet v1.5") -> 1x1 (4 * planes)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        layers: Sequence[int],
        groups: int = 1,
        width_per_group: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [
            Bottleneck(self.inplanes, planes, stride, downsample, self.groups, self.base_width)
        ]
        self.inplanes = out
        layers += [
            Bottleneck(out, planes, groups=self.groups, base_width=self.base_width)
            for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    """The plain ResNet-50, here only to check the counter on a figure test_zoo already holds."""
    return ResNet([3, 4, 6, 3], num_classes=num_classes)


def resnext50_32x4d(num_classes: int = 1000) -> ResNet:
    return ResNet([3, 4, 6, 3], groups=32, width_per_group=4, num_classes=num_classes)


def wide_resnet50_2(num_classes: int = 1000) -> ResNet:
    return ResNet([3, 4, 6, 3], width_per_group=64 * 2, num_classes=num_classes)


# --- ConvNeXt (torchvision/models/convnext.py) -------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an [N, C, H, W] map (normalized_shape = (C,))."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """dw 7x7 -> [N,H,W,C] -> LayerNorm -> Linear 4C -> GELU -> Linear C -> [N,C,H,W] -> scale."""

    def __init__(self, dim: int, layer_scale: float, stochastic_depth_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXt(nn.Module):
    def __init__(
        self,
        stages: Sequence[tuple[int, int | None, int]],  # (channels, next stage's or None, blocks)
        stochastic_depth_prob: float = 0.0,
        layer_scale: float = 1e-6,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        norm = partial(LayerNorm2d, eps=1e-6)
        layers: list[nn.Module] = [
            Conv2dNormActivation(
                3, stages[0][0], 4, 4, 0, norm_layer=norm, activation_layer=None, bias=True
            )
        ]
        total = sum(n for _, _, n in stages)
        block_id = 0
        for dim, out, n in stages:
            stage = []
            for _ in range(n):
                sd_prob = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(CNBlock(dim, layer_scale, sd_prob))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if out is not None:
                layers.append(nn.Sequential(norm(dim), nn.Conv2d(dim, out, 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = stages[-1][1] or stages[-1][0]
        self.classifier = nn.Sequential(norm(last), nn.Flatten(1), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)))


CONVNEXT_TINY = ((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3))


def convnext_tiny(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt(CONVNEXT_TINY, stochastic_depth_prob=0.1, num_classes=num_classes)


# --- GoogLeNet (torchvision/models/googlenet.py) -----------------------------------------------


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four branches concatenated: 1x1 | 1x1->3x3 | 1x1->3x3 (torchvision's "5x5") | pool->1x1."""

    def __init__(
        self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool: int
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1)
        )
        # torchvision's known deviation from the paper: kernel 3, not 5 (kept for its weights).
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([b(x) for b in branches], 1)


class InceptionAux(nn.Module):
    """avgpool to 4x4 -> BasicConv2d 1x1 128 -> flatten 2048 -> fc 1024 -> ReLU -> drop -> fc."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(cin, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1)), inplace=True))
        return self.fc2(x)


class GoogLeNetOutputs(NamedTuple):
    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class GoogLeNet(nn.Module):
    """The aux heads tap inception4a (aux1, 512 ch) and inception4d (aux2, 528 ch), train only."""

    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout_aux)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> GoogLeNetOutputs | Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(aux_logits: bool = True, num_classes: int = 1000) -> GoogLeNet:
    return GoogLeNet(num_classes, aux_logits)


# --- U-Net (Ronneberger, Fischer, Brox 2015) ---------------------------------------------------


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convs (padding 1, bias, no norm) each followed by ReLU: keys 0 and 2."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """The paper's layout with padded 3x3 convs: no crops, output [classes, H, W] for H, W % 16 == 0.

    Contracting path: double conv 64, 128, 256, 512, 1024, a 2x2 max pool between levels.
    Expanding path: 2x2 up-convolution (ConvTranspose2d k=2 s=2) halving the channels,
    concatenation [skip, upsampled], double conv; a final 1x1 conv to the classes.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 64) -> None:
        super().__init__()
        c = [base * 2**i for i in range(5)]  # 64, 128, 256, 512, 1024
        self.enc1 = double_conv(in_channels, c[0])
        self.enc2 = double_conv(c[0], c[1])
        self.enc3 = double_conv(c[1], c[2])
        self.enc4 = double_conv(c[2], c[3])
        self.bottleneck = double_conv(c[3], c[4])
        self.pool = nn.MaxPool2d(2, 2)
        self.up4 = nn.ConvTranspose2d(c[4], c[3], 2, 2)
        self.dec4 = double_conv(c[4], c[3])
        self.up3 = nn.ConvTranspose2d(c[3], c[2], 2, 2)
        self.dec3 = double_conv(c[3], c[2])
        self.up2 = nn.ConvTranspose2d(c[2], c[1], 2, 2)
        self.dec2 = double_conv(c[2], c[1])
        self.up1 = nn.ConvTranspose2d(c[1], c[0], 2, 2)
        self.dec1 = double_conv(c[1], c[0])
        self.head = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        s4 = self.enc4(self.pool(s3))
        x = self.bottleneck(self.pool(s4))
        x = self.dec4(torch.cat([s4, self.up4(x)], 1))
        x = self.dec3(torch.cat([s3, self.up3(x)], 1))
        x = self.dec2(torch.cat([s2, self.up2(x)], 1))
        x = self.dec1(torch.cat([s1, self.up1(x)], 1))
        return self.head(x)


def unet(in_channels: int = 1, num_classes: int = 2) -> UNet:
    return UNet(in_channels, num_classes)


UNET_INPUT = (1, 256, 256)  # the paper's single-channel input; 572 is not a multiple of 16
