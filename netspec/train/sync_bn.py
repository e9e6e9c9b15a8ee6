"""Batch norm synchronised across data-parallel processes (`--sync-bn`).

On CUDA this is torch's own `nn.SyncBatchNorm`. torch's refuses CPU tensors, so on CPU every
batch norm becomes `CpuSync`: the same statistics over the whole global batch
(sums all-reduced over gloo), the same running averages, and the same gradient convention as
torch's (the input's gradient sums every rank's terms; DDP then averages the parameters').
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def synchronise_batch_norm(module: nn.Module, cuda: bool) -> None:
    """Synchronise every batch norm layer of `module` across the process group, in place.

    Each layer keeps its identity (the module's execution plan, optimizers and freezing
    hold references to it): its class becomes torch's `nn.SyncBatchNorm` on CUDA, else a
    subclass of its own class whose training forward uses the global batch's statistics.
    """
    for layer in module.modules():
        if not isinstance(layer, _BatchNorm) or isinstance(layer, CpuSync | nn.SyncBatchNorm):
            continue
        if cuda:
            layer.process_group = None  # type: ignore[assignment]
            layer.__class__ = nn.SyncBatchNorm
        else:
            layer.__class__ = _cpu_sync(type(layer))


_SYNCED: dict[str, type] = {}


def _cpu_sync(cls: type[_BatchNorm]) -> type:
    """`cls` with `CpuSync`'s forward (made once per class)."""
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in _SYNCED:
        _SYNCED[key] = type(f"CpuSync{cls.__name__}", (CpuSync, cls), {})
    return _SYNCED[key]


class CpuSync(_BatchNorm):
    """The training forward of a batch norm synchronised over gloo (mixed into the layer's
    own class, so its input checks stay). In eval mode, or alone, it is plain batch norm."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(input)
        assert self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        momentum = self.momentum if self.momentum is not None else 0.1
        return _SyncBN.apply(
            input, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum
        )


class _SyncBN(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, weight, bias, running_mean, running_var, eps, momentum):
        dims = [0, *range(2, x.dim())]
        local = torch.stack(
            [
                x.sum(dims, dtype=torch.float64),
                (x.double() * x.double()).sum(dims),
                torch.full((x.shape[1],), x.numel() / x.shape[1], dtype=torch.float64),
            ]
        )
        dist.all_reduce(local)
        total, squares, count = local
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        with torch.no_grad():
            n = count[0]
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            unbiased = var * n / max(float(n) - 1, 1.0)
            running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        shape = [1, -1] + [1] * (x.dim() - 2)
        invstd = (var + eps).rsqrt().to(x.dtype).view(shape)
        xhat = (x - mean.to(x.dtype).view(shape)) * invstd
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.count = float(count[0])
        out = xhat
        if weight is not None:
            out = out * weight.view(shape) + bias.view(shape)
        return out

    @staticmethod
    def backward(ctx: Any, grad):
        xhat, invstd, weight = ctx.saved_tensors
        dims = [0, *range(2, grad.dim())]
        shape = [1, -1] + [1] * (grad.dim() - 2)
        grad_weight = (grad * xhat).sum(dims) if weight is not None else None
        grad_bias = grad.sum(dims) if weight is not None else None
        dxhat = grad * weight.view(shape) if weight is not None else grad
        sums = torch.stack([dxhat.sum(dims), (dxhat * xhat).sum(dims)])
        dist.all_reduce(sums)
        mean_dxhat = (sums[0] / ctx.count).view(shape)
        mean_dxhat_xhat = (sums[1] / ctx.count).view(shape)
        grad_input = invstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)
        return grad_input, grad_weight, grad_bias, None, None, None, None
