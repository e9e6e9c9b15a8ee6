"""Where training runs: the device, bf16 mixed precision and channels-last on CUDA, CPU otherwise."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

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

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the layout the model expects."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA when `amp`, else nothing."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def pick_runtime(name: str, rank: int = 0, image_input: bool = True) -> Runtime:
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
        return Runtime(torch.device("cpu"))
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
    return Runtime(torch.device("cuda", ordinal), amp=True, channels_last=image_input)
