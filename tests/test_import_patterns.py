"""`netspec import` of ONNX subgraphs that are one netspec layer (onnx_patterns): a layer norm
and GELU written out, a channel shuffle, channel slices, a layer scale, a resize, an embedding;
torch's channels-last regions; a concatenation torch.onnx flattened."""

from __future__ import annotations

from pathlib import Path

import pytest

from netspec import compile_spec
from netspec.cli import main
from netspec.recover.graph import INPUT, Op, group_concats, to_tree, walk

SKIP = {"dropout", "identity", "drop_path"}

TINY = """network tiny
input [4, 6, 6]

INPUT
  -> CONV(8, 3) -> LAYERNORM(1e-5) -> CONV(16, 1) -> GELU -> LAYERSCALE
  -> CHANNELSHUFFLE(4)
  -> concat(SLICE(0, 4), SLICE(4, 16) -> CONV(4, 1) -> RELU)
  -> UPSAMPLE(size=(9, 7), mode=bilinear)
  -> UPSAMPLE(2)
"""


def sequence(graph) -> list:
    return [(n.kind, n.shape) for n in graph.nodes if n.kind not in SKIP]


@pytest.mark.parametrize("opset", [17, 21])  # GELU written out below opset 20, one node at 20+
def test_patterns_round_trip_through_netspec_export(opset: int, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.ns"
    spec.write_text(TINY)
    onnx_path, out = tmp_path / "tiny.onnx", tmp_path / "back.ns"
    assert main(["export", str(spec), "-o", str(onnx_path), "--opset", str(opset)]) == 0
    assert main(["import", str(onnx_path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "LAYERNORM(1e-05)" in text and "CHANNELSHUFFLE(4)" in text and "SLICE(4, 16)" in text
    assert "UPSAMPLE(size=(9, 7), mode=bilinear)" in text
    original, imported = compile_spec(spec), compile_spec(out)
    assert sequence(imported) == sequence(original)
    assert imported.totals.params == original.totals.params
    assert imported.totals.macs == original.totals.macs


def test_an_embedding_imports_with_a_token_input(tmp_path: Path) -> None:
    onnx_path, out = tmp_path / "t.onnx", tmp_path / "t.ns"
    assert main(["export", "zoo:text_cnn", "-o", str(onnx_path)]) == 0
    assert main(["import", str(onnx_path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "input tokens(length=21, vocab=10000)" in text and "EMBEDDING(128)" in text
    assert sequence(compile_spec(out)) == sequence(compile_spec("zoo:text_cnn"))


def test_a_flattened_concatenation_is_regrouped_by_split_point() -> None:
    def conv(i: str, src: str) -> Op:
        args = (("channels", 4), ("kernel", 1), ("bias", False))
        return Op(i, "CONV", args, (src,), (f"{i}.w",), shape=(4, 8, 8), in_shape=(4, 8, 8))

    # cat(a, cat(b1(s), b2(s)), c) with s = conv(input), flattened to one concat of 4 values
    ops = [conv("a", INPUT), conv("s", INPUT), conv("b1", "s"), conv("b2", "s"), conv("c", INPUT)]
    ops.append(Op("cat", "concat", (), ("a", "b1", "b2", "c"), shape=(16, 8, 8)))
    tree = to_tree(group_concats(ops, "cat"), "cat")
    (join,) = tree
    assert [len(b) for b in join.branches] == [1, 2, 1]  # a | s -> concat(b1, b2) | c
    nested = join.branches[1][1]
    assert [[op.id for op in walk(b)] for b in nested.branches] == [["b1"], ["b2"]]
    assert nested.op.shape == (8, 8, 8)


class _TorchPatterns:
    """A module with torchvision's spellings: a permuted LayerNorm and Linear (ConvNeXt), a
    chunk and channel shuffle (ShuffleNetV2), a nested cat (Inception-v3), a resize to the
    input's size (segmentation heads)."""

    def __new__(cls):
        import torch
        from torch import nn
        from torch.nn import functional

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = nn.Conv2d(3, 8, 3, padding=1)
                self.norm = nn.LayerNorm(8, eps=1e-6)
                self.up = nn.Linear(8, 16)
                self.down = nn.Linear(16, 8)
                self.scale = nn.Parameter(torch.full((8, 1, 1), 0.5))
                self.branch = nn.Conv2d(4, 4, 1)
                self.a = nn.Conv2d(8, 4, 1)
                self.b = nn.Conv2d(8, 4, 1)
                self.b1 = nn.Conv2d(4, 2, 1)
                self.b2 = nn.Conv2d(4, 2, 1)

            def forward(self, x):
                size = x.shape[-2:]
                x = self.stem(x)
                y = self.norm(x.permute(0, 2, 3, 1))
                y = self.down(functional.gelu(self.up(y))).permute(0, 3, 1, 2)
                x = x + self.scale * y
                x1, x2 = x.chunk(2, dim=1)
                x = torch.cat((x1, torch.relu(self.branch(x2))), dim=1)
                b, c, h, w = x.shape
                x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
                t = self.b(x)
                x = torch.cat([self.a(x), torch.cat([self.b1(t), self.b2(t)], 1)], 1)
                x = functional.avg_pool2d(x, 2)
                return functional.interpolate(x, size=size, mode="bilinear", align_corners=False)

        return Net().eval()


@pytest.mark.slow
def test_torch_exported_patterns_import_exactly(tmp_path: Path) -> None:
    import warnings

    import torch

    path = tmp_path / "p.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TorchPatterns(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17
        )
    from netspec.deploy.importer.sources import import_any

    imported = import_any(str(path))
    assert imported.ok, imported.checks
    kinds = [n.kind for n in imported.graph.nodes]
    for kind in ("layernorm", "gelu", "layer_scale", "slice", "channel_shuffle", "upsample"):
        assert kind in kinds
    assert kinds.count("concat") == 3  # the chunk's, and the nested cat regrouped
    assert "UPSAMPLE(like=input, mode=bilinear)" in imported.written.text


def test_a_transpose_other_than_to_channels_last_is_named(tmp_path: Path, capsys) -> None:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["y"], ["z"], name="swap", perm=[0, 1, 3, 2]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], [z], [w]), opset_imports=[helper.make_opsetid("", 17)]
    )
    path, out = tmp_path / "t.onnx", tmp_path / "t.ns"
    path.write_bytes(m.SerializeToString())
    capsys.readouterr()
    assert main(["import", str(path), "-o", str(out)]) == 2
    assert "`swap` (Transpose, node 2 of 2)" in capsys.readouterr().err and not out.exists()
