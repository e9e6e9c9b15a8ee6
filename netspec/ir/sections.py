"""The checks the build runs on a spec section that a layer above the IR owns.

A spec's `train { ... }` section is checked as `netspec train` reads it, so `check` refuses a
bad setting without torch. Its keys and values belong to `netspec.train.settings`, above the
IR, which registers its check here when imported; netspec's package imports it first thing,
so every build runs the check (a build without it would accept any setting silently)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from netspec.errors import Span

# (the section's evaluated settings, where each key stands) -> None, or a NetspecError raised.
TrainCheck = Callable[[Mapping[str, Any], Mapping[str, Span]], object]
_TRAIN_CHECK: list[TrainCheck] = []


def register_train_check(check: TrainCheck) -> None:
    """Set the train section's check (netspec.train.settings calls this when imported)."""
    _TRAIN_CHECK[:] = [check]


def train_check() -> TrainCheck:
    """The registered train-section check; refused loudly when none is registered."""
    if not _TRAIN_CHECK:
        raise RuntimeError("no train-section check registered: import netspec.train.settings")
    return _TRAIN_CHECK[0]
