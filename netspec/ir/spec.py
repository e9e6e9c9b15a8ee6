"""Statements and scopes: a parsed spec read into its header, constants, blocks, free
parameters (with their domains) and main chain. The builder (`netspec.ir.build`, the next
stage) reads a `ParsedSpec`; its `Spec` adds `instantiate`."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, Span, SpecErrors, did_you_mean
from netspec.frontend import ast
from netspec.ir.expr import Symbol, eval_int, evaluate, walk
from netspec.ir.graph import BUDGET_METRICS, Scalar
from netspec.ir.naming import switch_name
from netspec.layers import KINDS, SPELLINGS, Layer


@dataclass(frozen=True, slots=True)
class Domain:
    """The values a free parameter may take: `N in 1..3` or `w in {16, 32}` or a switch."""

    name: str
    values: Sequence[Scalar]  # a `range` for `lo..hi`: never materialised (`K in 2..1G`)
    span: Span | None
    switch: bool = False  # an `X?` choice point

    def __contains__(self, value: object) -> bool:
        if isinstance(self.values, range):  # `2.5 in range(...)` would walk the whole range
            return isinstance(value, int) and not isinstance(value, bool) and value in self.values
        return value in self.values

    def describe(self) -> str:
        if self.switch:
            return "on|off"
        if isinstance(self.values, range):
            return f"{self.values.start}..{self.values.stop - 1}"
        vals = self.values
        ints = [v for v in vals if isinstance(v, int) and not isinstance(v, bool)]
        if len(ints) == len(vals) > 2 and ints == list(range(ints[0], ints[-1] + 1)):
            return f"{vals[0]}..{vals[-1]}"
        return "{" + ", ".join(str(v) for v in vals) + "}"


class ParsedSpec:
    """A parsed spec: its header, constants, blocks, free parameters and the main chain."""

    def __init__(self, module: ast.Module) -> None:
        self.module = module
        self.path = module.path
        self.text = module.text
        self.name = (
            Path(module.path).stem if module.path and not module.path.startswith("<") else "network"
        )
        self.description: str | None = None
        self.input: ast.InputDecl | None = None
        self.classes: ast.ClassesDecl | None = None
        self.budgets: list[ast.BudgetItem] = []
        self.dtype: ast.DtypeDecl | None = None
        self.defaults: list[ast.Call] = []
        self.consts: list[ast.ConstDef] = []
        self.free_decls: dict[str, ast.FreeParam] = {}
        self.blocks: dict[str, ast.BlockDef] = {}
        self.train: ast.TrainDecl | None = None
        self.heads: list[ast.HeadDecl] = []
        self.chain: ast.Chain | None = None
        errors: list[NetspecError] = []
        self._collect(errors)
        self.free: dict[str, Domain] = {}
        # Validated layers and their computed figures, shared by every instance of the spec:
        # exploring a family re-uses them across members.
        self.layer_cache: dict[tuple, Layer] = {}
        self.figure_cache: dict[tuple, tuple] = {}
        self.element_cache: dict[tuple, Any] = {}  # light mode: an element's whole effect
        self.element_names: dict[int, tuple[str, ...]] = {}
        self.size_cache: dict[tuple, int] = {}  # light mode: an element's size estimate
        self.size_names: dict[int, tuple[str, ...]] = {}  # the names each estimate reads
        self.reads_last: dict[int, bool] = {}  # elements whose effect reads the last node
        self.primary_names: dict[int, set[str]] = {}  # the size estimate's, per primary
        self.source_hash = (
            hashlib.sha256(self.text.encode()).hexdigest()[:16] if self.text else None
        )
        # The running counter (`cnblock.index`, `cnblock.count`): the blocks whose counter the
        # spec reads, and where it first reads each total.
        self.counted: set[str] = set()
        self.count_spans: dict[str, Span] = {}
        if not errors:
            self._counters(errors)
        if not errors:
            self._domains(errors)
        if errors:
            raise SpecErrors(errors)
        # Loop index names (`for i`), sorted: a full build's errors carry their values.
        self.index_vars = tuple(sorted({el.index_var for el in self.elements() if el.index_var}))

    # ---- reading the statements
    def _collect(self, errors: list[NetspecError]) -> None:
        """Read each statement into its place; what is declared twice, missing or unknown
        goes to `errors`."""
        _repeated_names(self.module.statements, errors)
        seen: dict[str, ast.Statement] = {}
        names: dict[str, Span] = {}
        blocks: dict[str, Span] = {}
        clashes: list[tuple[str, Span, Span]] = []  # a block and a constant of one name
        for stmt in self.module.statements:
            key = _ONCE.get(type(stmt))
            if isinstance(stmt, ast.HeadDecl):
                key = ("head " + stmt.name, f"head `{stmt.name}`")
            if key is not None and not _once(seen, key, stmt, errors):
                continue
            if isinstance(stmt, ast.BlockDef) and stmt.name.upper() in SPELLINGS:
                errors.append(
                    NetspecError(
                        f"block `{stmt.name}` has the name of a built-in layer",
                        stmt.span,
                        hint="rename the block",
                    )
                )
            if isinstance(stmt, ast.ConstDef | ast.FreeParam | ast.BlockDef):
                # A block and a constant (or free parameter) of one name clash unless the name
                # is the switch of an optional call of the block (`se?` with `se = on`):
                # decided once every statement is read.
                mine, other = (blocks, names) if isinstance(stmt, ast.BlockDef) else (names, blocks)
                if stmt.name in other and stmt.name not in mine:
                    clashes.append((stmt.name, stmt.span, other[stmt.name]))
                _define(mine, stmt.name, stmt.span, errors)
            self._read(stmt, errors)
        if clashes:
            switches = {name for name, _ in self._switches([])}
            for name, span, first in clashes:
                if name not in switches:
                    errors.append(
                        NetspecError(
                            f"`{name}` is defined twice", span, notes=[f"first defined at {first}"]
                        )
                    )
        end = Span(file=self.path, line=1, col=1, end_line=1, end_col=2)
        if self.input is None and not errors:
            errors.append(
                NetspecError(
                    "the spec declares no input",
                    end,
                    hint="add e.g. `input [3, 32, 32]` (channels, height, width)",
                )
            )
        if self.chain is None and not errors:
            errors.append(
                NetspecError(
                    "the spec has no chain of layers",
                    end,
                    hint="add e.g. `INPUT -> CONV(16) -> RELU -> FC(10) -> SOFTMAX`",
                )
            )
        errors.extend(_budget_errors(self.budgets))

    def _read(self, stmt: ast.Statement, errors: list[NetspecError]) -> None:
        """One statement into its place (one declared twice was refused before)."""
        if isinstance(stmt, ast.NetworkDecl):
            self.name, self.description = stmt.name, stmt.description
        elif isinstance(stmt, ast.InputDecl):
            self.input = stmt
        elif isinstance(stmt, ast.ClassesDecl):
            self.classes = stmt
        elif isinstance(stmt, ast.BudgetDecl):
            self.budgets.extend(stmt.items)
        elif isinstance(stmt, ast.DtypeDecl):
            self.dtype = stmt
        elif isinstance(stmt, ast.DefaultsDecl):
            self.defaults.extend(stmt.calls)
        elif isinstance(stmt, ast.ConstDef):
            self.consts.append(stmt)
        elif isinstance(stmt, ast.FreeParam):
            self.free_decls[stmt.name] = stmt
        elif isinstance(stmt, ast.BlockDef):
            self.blocks[stmt.name] = stmt
        elif isinstance(stmt, ast.HeadDecl):
            self.heads.append(stmt)
        elif isinstance(stmt, ast.TrainDecl):
            self.train = stmt
        elif isinstance(stmt, ast.ChainStmt):
            if self.chain is not None:
                errors.append(
                    NetspecError(
                        "a second chain starts here; a spec has one main chain",
                        stmt.chain.elements[0].span,
                        hint="join it to the chain before with `->`",
                    )
                )
            else:
                self.chain = stmt.chain

    def _domains(self, errors: list[NetspecError]) -> None:
        env: dict[str, Any] = {}
        for name, decl in self.free_decls.items():
            try:
                values: Sequence[Scalar]
                if decl.choices is not None:
                    values = tuple(evaluate(c, env, symbols=True) for c in decl.choices)
                    values = tuple(str(v) if isinstance(v, Symbol) else v for v in values)
                else:
                    assert decl.low is not None and decl.high is not None  # the grammar's range
                    lo = eval_int(decl.low, env, f"the low end of {name}'s range")
                    hi = eval_int(decl.high, env, f"the high end of {name}'s range")
                    if hi < lo:
                        raise NetspecError(
                            f"the range {lo}..{hi} of `{name}` is empty",
                            decl.span,
                            hint=f"write {hi}..{lo}",
                        )
                    values = range(lo, hi + 1)
                self.free[name] = Domain(name, values, decl.span)
            except NetspecError as e:
                errors.append(e)
        const_names = {c.name for c in self.consts}
        for name, span in self._switches(errors):
            if name not in self.free and name not in const_names:
                self.free[name] = Domain(name, (True, False), span, switch=True)

    def _counters(self, errors: list[NetspecError]) -> None:
        """`B.index` and `B.count` name a block of the spec and one of its two counters (a
        dotted name given to an argument that names a node, `UPSAMPLE(like=layer1.conv2)`, is
        that node's)."""
        refers = {cls.refers for cls in KINDS.values() if cls.refers}
        nodes = {
            id(n.value)
            for n in walk(self.module.statements)
            if isinstance(n, ast.Arg) and n.name in refers
        }
        for node in walk(self.module.statements):
            if not isinstance(node, ast.Name) or "." not in node.id or node.id.startswith("in."):
                continue
            if id(node) in nodes:
                continue
            block, attr = node.id.split(".", 1)
            if block not in self.blocks:
                errors.append(
                    NetspecError(
                        f"`{node.id}`: `{block}` is not a block of this spec",
                        node.span,
                        hint=did_you_mean(block, self.blocks)
                        or "`name.index` and `name.count` count the calls of a block `name`",
                    )
                )
            elif attr not in ("index", "count"):
                errors.append(
                    NetspecError(
                        f"a block has no `.{attr}`",
                        node.span,
                        hint=did_you_mean(attr, ["index", "count"])
                        or f"`{block}.index` (this call's position, from 0) and `{block}.count` "
                        "(the calls in the whole network)",
                    )
                )
            else:
                self.counted.add(block)
                if attr == "count":
                    self.count_spans.setdefault(block, node.span)

    def elements(self) -> Iterator[ast.Element]:
        """Every chain element of the spec, in the main chain and in blocks, at any depth."""
        chains = (
            [self.chain] + [b.body for b in self.blocks.values()] + [h.chain for h in self.heads]
        )
        while chains:
            chain = chains.pop()
            if chain is None:
                continue
            for el in chain.elements:
                if isinstance(el.primary, ast.Group):
                    chains.append(el.primary.chain)
                elif isinstance(el.primary, ast.Branches):
                    chains.extend(el.primary.chains)
                yield el

    def _switches(self, errors: list[NetspecError]) -> list[tuple[str, Span]]:
        """Every `X?` without a condition names a switch: its label, or X's name in lower case."""
        out: list[tuple[str, Span]] = []
        for el in self.elements():
            if el.optional and el.condition is None:
                name = switch_name(el)
                if name is None:
                    errors.append(
                        NetspecError(
                            "an optional group needs a switch name or a condition",
                            el.span,
                            hint="write `[...]? as name` or `[...]?(condition)`",
                        )
                    )
                else:
                    out.append((name, el.span))
        return out

    def text_of(self, span: Span | None) -> str:
        """The source text under a one-line span (empty when unknown)."""
        if span is None or not self.text or span.line != span.end_line:
            return ""
        lines = self.text.splitlines()
        return (
            lines[span.line - 1][span.col - 1 : span.end_col - 1] if span.line <= len(lines) else ""
        )

    # ---- instances
    @property
    def is_family(self) -> bool:
        return bool(self.free)


# Statements a spec declares at most once: (key, what the message calls it).
_ONCE: dict[type, tuple[str, str]] = {
    ast.NetworkDecl: ("network", "the network name"),
    ast.InputDecl: ("input", "the input"),
    ast.ClassesDecl: ("classes", "the number of classes"),
    ast.DtypeDecl: ("dtype", "the dtype"),
    ast.TrainDecl: ("train", "the train section"),
}


def _once(
    seen: dict[str, ast.Statement],
    key: tuple[str, str],
    stmt: ast.Statement,
    errors: list[NetspecError],
) -> bool:
    """False (and an error) when a statement declared at most once comes again."""
    name, what = key
    if name in seen:
        errors.append(
            NetspecError(
                f"{what} is declared twice",
                stmt.span,
                notes=[f"first declared at {seen[name].span}"],
            )
        )
        return False
    seen[name] = stmt
    return True


def _define(names: dict[str, Span], name: str, span: Span, errors: list[NetspecError]) -> None:
    """A constant, free parameter or block name: defined twice is an error."""
    if name in names:
        errors.append(
            NetspecError(
                f"`{name}` is defined twice", span, notes=[f"first defined at {names[name]}"]
            )
        )
    names[name] = span


def _unique(items: list[tuple[str | None, Span]], what: str, errors: list[NetspecError]) -> None:
    """A name given twice in one list (block parameters, keyword arguments, settings) is an
    error: the later one must never silently win."""
    first: dict[str, Span] = {}
    for name, span in items:
        if name is None:
            continue
        if name in first:
            errors.append(
                NetspecError(
                    f"{what} `{name}` is given twice",
                    span,
                    notes=[f"first given at {first[name]}"],
                    hint="keep one of them",
                )
            )
        else:
            first[name] = span


def _repeated_names(statements: Sequence[ast.Statement], errors: list[NetspecError]) -> None:
    """Names given twice inside one statement: tokens() arguments, block parameters, training
    settings and their call arguments."""
    for stmt in statements:
        if isinstance(stmt, ast.InputDecl) and stmt.tokens:
            _unique([(a.name, a.span) for a in stmt.tokens], "tokens() argument", errors)
        elif isinstance(stmt, ast.BlockDef):
            what = f"block `{stmt.name}`'s parameter"
            _unique([(p.name, p.span) for p in stmt.params], what, errors)
        elif isinstance(stmt, ast.TrainDecl):
            _unique([(t.name, t.name_span) for t in stmt.settings], "training setting", errors)
            for t in stmt.settings:
                if isinstance(t.value, ast.ValueCall):
                    what = f"argument of {t.value.name}()"
                    _unique([(a.name, a.span) for a in t.value.args], what, errors)


def _budget_errors(budgets: list[ast.BudgetItem]) -> list[NetspecError]:
    """Budgets name a known metric and are upper bounds."""
    errors = []
    for item in budgets:
        if item.metric not in BUDGET_METRICS:
            errors.append(
                NetspecError(
                    f"unknown budget `{item.metric}`",
                    item.metric_span,
                    hint=did_you_mean(item.metric, BUDGET_METRICS)
                    or "budgets: " + ", ".join(BUDGET_METRICS),
                )
            )
        elif item.op not in ("<=", "<"):
            errors.append(
                NetspecError(f"a budget is an upper bound: write `{item.metric} <= ...`", item.span)
            )
    return errors


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cycle collector off while a graph is built: the build allocates a few objects
    per node and leaves no garbage cycles (none on the bundled specs), and with the collector
    on, each of its passes walks the nodes built so far (1.4 s of a 3 s build of 200,000
    nodes). Its previous state comes back afterwards; a cycle made meanwhile is collected
    then."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
