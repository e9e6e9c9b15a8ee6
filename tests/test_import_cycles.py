"""No import cycles in the netspec package.

Every module of the package is parsed with `ast` (nothing is imported); each `import` and
`from ... import` statement, at module level and inside functions or classes alike, is an edge
to the netspec module it names (relative imports resolved against the importing module, and
`from package import name` counted as an import of `package.name` when that is a module). A
cycle in that graph fails the test, printed module by module. Imports under
`if TYPE_CHECKING:` are edges too: a type-only cycle is still a design question.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "netspec"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The netspec modules that module `name` imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from a.b import c` imports module a.b.c when there is one, else a name of a.b.
            subs = [f"{stem}.{alias.name}" for alias in node.names]
            targets = [sub for sub in subs if sub in modules]
            if len(targets) < len(subs):
                targets.append(stem)
        else:
            continue
        for target in targets:
            if target in modules and target != name:
                found.add(target)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = module_names(PACKAGE)
    return {name: imported(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "netspec.ir.build" in graph and graph["netspec.ir.build"], "the walk found no imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


# Layers above the IR: the IR (netspec.ir, netspec.layers, netspec.frontend) imports none of
# them, not even inside a function; the server imports no command module.
ABOVE_IR = (
    "netspec.summary",
    "netspec.memory",
    "netspec.train",
    "netspec.commands",
    "netspec.serve",
    "netspec.backends",
    "netspec.deploy",
    "netspec.explore",
    "netspec.draw",
    "netspec.cli",
)
RULES = [
    (("netspec.ir", "netspec.layers", "netspec.frontend"), ABOVE_IR),
    (("netspec.serve",), ("netspec.commands", "netspec.cli")),
]


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("lower, upper", RULES, ids=["ir", "serve"])
def test_lower_layers_import_nothing_above_them(
    lower: tuple[str, ...], upper: tuple[str, ...]
) -> None:
    graph = import_graph()
    wrong = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if within(module, lower)
        for target in targets
        if within(target, upper)
    )
    assert wrong == []


def test_the_walk_sees_function_level_relative_and_type_only_imports(tmp_path: Path) -> None:
    """The checker itself: a cycle hidden in a function, a relative import or a TYPE_CHECKING
    block is found and printed in order."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n"
    )
    modules = module_names(pkg)
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.sub.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("import pkg.sub\n")
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert find_cycle(graph) is None
