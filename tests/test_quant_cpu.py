"""int8 weights in 7 bits on x86 CPUs without VNNI, where onnxruntime's u8 x s8 kernels add
pairs of products in 16-bit lanes and saturate with 8-bit weights (on an AVX2-only AMD EPYC,
mnist_cnn's int8 model lost 3.6 points before; tests/test_quant.py holds the accuracy)."""

from __future__ import annotations

import pytest

from netspec.deploy import quantize


@pytest.mark.parametrize(
    ("machine", "flags", "seven"),
    [
        ("x86_64", {"avx2", "fma"}, True),  # AVX2 only: vpmaddubsw saturates
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
        ("x86_64", {"avx2", "avx_vnni"}, False),
        ("AMD64", {"avx2", "amx_int8"}, False),
        ("aarch64", set(), False),  # ARM's dot products sum in 32 bits
    ],
)
def test_seven_bit_weights_follow_the_cpu(monkeypatch, machine, flags, seven) -> None:
    monkeypatch.setattr(quantize.platform, "machine", lambda: machine)
    monkeypatch.setattr(quantize, "_cpu_flags", lambda: frozenset(flags))
    assert quantize.seven_bit_weights() is seven


def test_this_machines_flags_are_read() -> None:
    flags = quantize._cpu_flags()
    assert isinstance(flags, frozenset) and (flags or quantize.platform.system() != "Linux")
