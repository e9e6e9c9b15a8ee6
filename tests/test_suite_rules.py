"""Rules the test suite keeps (issue 20): no test file imports another (shared helpers live in
tests/helpers/), and no test asserts on wall-clock time (a loaded machine fails it; speed checks
count CPU time with helpers.cpu, speed goals are benchmarks in tools/)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FILES = sorted(TESTS.rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_test_file_imports_another() -> None:
    wrong = [
        f"{path.relative_to(TESTS)} imports {name}"
        for path in FILES
        for name in sorted(_imported(path))
        if name.split(".")[-1].startswith("test_") or name.split(".")[0] in ("tests", "conftest")
    ]
    assert not wrong, "move shared code into tests/helpers/:\n" + "\n".join(wrong)


WALL_CLOCK = re.compile(r"\b(time\.time(_ns)?|perf_counter|monotonic|timeit)\b|\bdatetime\.now\(")


def test_no_test_reads_the_wall_clock() -> None:
    wrong = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in FILES
        if path.name != Path(__file__).name and path != TESTS / "helpers" / "wait.py"  # hang guard
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if WALL_CLOCK.search(line)
    ]
    assert not wrong, "use helpers.cpu.cpu_limit (CPU time) instead:\n" + "\n".join(wrong)
