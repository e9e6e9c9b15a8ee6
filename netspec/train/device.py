"""Where training runs: the device, bf16 mixed precision and channels-last on CUDA, CPU otherwise.

Precision (``--precision``): ``auto`` is bf16 autocast on CUDA and fp32 on CPU; ``bf16`` asks
for bf16 autocast on CPU too, granted where the CPU has bf16 instructions (``avx512_bf16`` or
``amx_bf16`` among its flags; elsewhere torch would emulate bf16, slower than fp32), else fp32
with a notice; ``fp32`` turns autocast off everywhere.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from netspec.errors import NetspecError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Runtime:
    """A device and how batches meet it.

    Attributes:
        device: where the model and each batch live.
        amp: run forward passes under bf16 autocast (CUDA only; the loss stays fp32).
        channels_last: keep 4-D activations in NHWC layout, which CUDA convolutions prefer.
    """

    device: torch.device
    amp: bool = False
    channels_last: bool = False
    notice: str | None = None  # said to the user: a precision asked for and not granted

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the layout the model expects."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when `amp`, else nothing."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


@functools.cache
def cpu_bf16() -> str | None:
    """The CPU's bf16 instruction flag (``amx_bf16`` or ``avx512_bf16``), or None."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = set(text.split())
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)


def pick_runtime(
    name: str, rank: int = 0, image_input: bool = True, precision: str = "auto"
) -> Runtime:
    """Resolve ``--device`` (auto, cpu, cuda, cuda:N) for the process of the given rank.

    `auto` takes CUDA when it is available. On CUDA a data-parallel process of rank r uses
    device r (counted from the given index); forward passes run under bf16 autocast, and
    image models use channels-last.

    Raises:
        NetspecError: for an unknown device, or CUDA asked for where there is none.
    """
    kind, _, index = name.strip().lower().partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise NetspecError(f"unknown device `{name}`", hint="use auto, cpu, cuda or cuda:N")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        if precision != "bf16":
            return Runtime(torch.device("cpu"))
        if cpu_bf16() is None:
            return Runtime(
                torch.device("cpu"),
                notice="--precision bf16: this CPU has no bf16 instructions (avx512_bf16 or "
                "amx_bf16), where bf16 would be emulated and slower: training in fp32",
            )
        return Runtime(torch.device("cpu"), amp=True)
    if not torch.cuda.is_available():
        raise NetspecError(
            "--device cuda, but this machine has no CUDA GPU (or torch was built without CUDA)"
        )
    ordinal = int(index or 0) + rank
    if ordinal >= torch.cuda.device_count():
        raise NetspecError(
            f"cuda:{ordinal} is needed but this machine has {torch.cuda.device_count()} GPU(s)"
        )
    torch.cuda.set_device(ordinal)
    return Runtime(
        torch.device("cuda", ordinal), amp=precision != "fp32", channels_last=image_input
    )
