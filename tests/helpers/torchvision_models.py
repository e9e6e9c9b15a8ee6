"""torchvision's own model builders, for the specs that mirror them (specs/fcn_resnet50.ns).

torchvision 0.28 is installed here without its dependencies, and its package import fails on
this torch: `torchvision._meta_registrations` registers fake kernels for its C++ operators
(`torchvision::nms`), which this build does not have. The models need none of those
operators, so when the plain import fails the module is stubbed out before importing again.
Where even that fails, `models()` skips (and fails under NETSPEC_CI=1, as every skip here does).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from helpers.skips import skip_unless_ci

_STUB = "torchvision._meta_registrations"


def models() -> Any:
    """`torchvision.models`, importing it around the operator registrations if need be."""
    try:
        return importlib.import_module("torchvision.models")
    except Exception:  # noqa: BLE001 - any failure of the plain import: retry without the ops
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    sys.modules[_STUB] = types.ModuleType(_STUB)
    try:
        return importlib.import_module("torchvision.models")
    except Exception as e:  # noqa: BLE001
        skip_unless_ci(f"torchvision does not import here: {e}")
