"""The ONNX package owns everything ONNX, and its library export works past 2 GiB.

- No module outside `netspec/deploy/` imports `onnx` or `onnxruntime`, at any level (a
  function-level import counts too); the test names each offender and the line.
- `netspec.deploy.export` writes weights past what one protobuf file holds (2 GiB) to a side
  file by itself, as the CLI does, and the model passes onnx's checker and onnxruntime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "netspec"
ONNX_MODULES = ("onnx", "onnxruntime")


def _onnx_imports(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: imports X` for each import of onnx or onnxruntime (or their submodules)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in ONNX_MODULES:
                found.append(f"{path.relative_to(root)}:{node.lineno}: imports {name}")
    return found


def test_only_the_deploy_package_imports_onnx() -> None:
    offenders = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        if PACKAGE / "deploy" not in path.parents
        for hit in _onnx_imports(path)
    ]
    assert offenders == [], "ONNX code outside netspec/deploy/:\n" + "\n".join(offenders)


def test_the_walk_finds_imports_at_any_level(tmp_path: Path) -> None:
    """The walker itself: top-level, function-level and `from` imports are all seen."""
    module = tmp_path / "m.py"
    module.write_text(
        "import onnx\n"
        "def f():\n"
        "    from onnxruntime.quantization import quantize_static\n"
        "    import onnx_tool, numpy\n",
        encoding="utf-8",
    )
    hits = [h.split(": ", 1)[1] for h in _onnx_imports(module, tmp_path)]
    assert hits == ["imports onnx", "imports onnxruntime.quantization"]


# --- past 2 GiB -----------------------------------------------------------------------------------

# One FC layer of 23170 x 23170 (+ bias) float32: 2,147,488,280 bytes, 4.5 KiB past protobuf's
# 2 GiB limit for one file: the smallest model that needs the side file.
WIDTH = 23170
BIG_SPEC = f"""network big "one FC layer just past 2 GiB of weights"
input [{WIDTH}]
INPUT -> FC({WIDTH}) as fc
"""


@pytest.mark.slow  # writes and checks 2 GiB (~4 GiB of memory at its peak, with onnxruntime)
def test_library_export_past_2_gib_writes_a_side_file(tmp_path: Path) -> None:
    import onnx

    from netspec import deploy
    from netspec.deploy import files
    from netspec.ir.build import load_spec_text

    graph = load_spec_text(BIG_SPEC, "big.ns").instantiate({})
    weights = {
        "fc.weight": np.full((WIDTH, WIDTH), 1e-4, np.float32),
        "fc.bias": np.zeros(WIDTH, np.float32),
    }
    assert sum(a.nbytes for a in weights.values()) > files.MAX_PROTO_BYTES
    path = tmp_path / "big.onnx"
    report = deploy.export(graph, path, weights)  # no external_data: the size decides
    del weights
    side = files.side_file(path)
    assert report.side == side and side.is_file()
    assert side.stat().st_size == (WIDTH * WIDTH + WIDTH) * 4
    assert path.stat().st_size < 1 << 20, "the graph file holds no weights"
    assert [c.name for c in report.checks if c.ok] == [
        "onnx.checker (full)",
        "shape inference vs IR",
        "onnxruntime (CPU)",
    ]
    onnx.checker.check_model(str(path))  # the published pair, read from its final place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
