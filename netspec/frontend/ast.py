"""The syntax tree of a spec file: plain dataclasses, each with the span it came from.

These are the parser's output and the IR builder's input. They hold no meaning yet (names are
unresolved, arguments unvalidated); `netspec.ir.build` gives them one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.errors import Span

# ---- expressions ------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Expr:
    span: Span


@dataclass(eq=False, slots=True)
class Num(Expr):
    value: int | float
    text: str


@dataclass(eq=False, slots=True)
class Str(Expr):
    value: str


@dataclass(eq=False, slots=True)
class Name(Expr):
    id: str


@dataclass(eq=False, slots=True)
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(eq=False, slots=True)
class Neg(Expr):
    operand: Expr


@dataclass(eq=False, slots=True)
class Not(Expr):
    operand: Expr


@dataclass(eq=False, slots=True)
class BoolOp(Expr):
    op: str  # "and" | "or"
    left: Expr
    right: Expr


@dataclass(eq=False, slots=True)
class Compare(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(eq=False, slots=True)
class IfExp(Expr):
    """`a if cond else b`."""

    then: Expr
    cond: Expr
    other: Expr


@dataclass(eq=False, slots=True)
class TupleExpr(Expr):
    items: list[Expr]


# ---- chains -----------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Arg:
    """A call argument: positional when `name` is None."""

    name: str | None
    value: Expr
    span: Span


@dataclass(eq=False, slots=True)
class Call:
    """A layer or block used by name: `CONV`, `CONV(64, stride=2)`, `basic(128, 2)`."""

    name: str
    args: list[Arg]
    span: Span
    name_span: Span


@dataclass(eq=False, slots=True)
class Group:
    """`[ chain ]`."""

    chain: Chain
    span: Span


@dataclass(eq=False, slots=True)
class Branches:
    """`concat(a, b, ...)`, `add(a, b, ...)` or `residual(main, project=auto)`."""

    op: str  # "concat" | "add" | "mul" | "residual"
    chains: list[Chain]
    kwargs: list[Arg]
    span: Span


Primary = Call | Group | Branches


@dataclass(eq=False, slots=True)
class Element:
    """One link of a chain with its postfixes: `[...]*N for i`, `X?`, `: [c, h, w]`, `as name`."""

    primary: Primary
    span: Span
    repeat: Expr | None = None
    index_var: str | None = None
    optional: bool = False
    condition: Expr | None = None  # `X?(cond)`; None with optional=True means a named switch
    assertion: list[Expr] | None = None
    assertion_span: Span | None = None
    label: str | None = None


@dataclass(eq=False, slots=True)
class Chain:
    elements: list[Element]
    span: Span


# ---- statements -------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Statement:
    span: Span


@dataclass(eq=False, slots=True)
class NetworkDecl(Statement):
    name: str
    description: str | None


@dataclass(eq=False, slots=True)
class InputDecl(Statement):
    shape: list[Expr] | None  # a tensor input [C, H, W] / [C, L]
    tokens: list[Arg] | None  # a token input: tokens(length=..., vocab=...)


@dataclass(eq=False, slots=True)
class ClassesDecl(Statement):
    value: Expr
    per_pixel: bool = False  # `classes 2 per pixel`: the output is a map [classes, H, W]


@dataclass(eq=False, slots=True)
class BudgetItem:
    metric: str
    op: str
    limit: Expr
    span: Span
    metric_span: Span


@dataclass(eq=False, slots=True)
class BudgetDecl(Statement):
    items: list[BudgetItem]


@dataclass(eq=False, slots=True)
class DtypeDecl(Statement):
    dtype: str


@dataclass(eq=False, slots=True)
class DefaultsDecl(Statement):
    calls: list[Call]


@dataclass(eq=False, slots=True)
class ConstDef(Statement):
    name: str
    value: Expr


@dataclass(eq=False, slots=True)
class FreeParam(Statement):
    """`N in 1..3` (a range, inclusive) or `w in {16, 32}` (a set)."""

    name: str
    low: Expr | None = None
    high: Expr | None = None
    choices: list[Expr] | None = None


@dataclass(eq=False, slots=True)
class BlockParam:
    name: str
    default: Expr | None
    span: Span


@dataclass(eq=False, slots=True)
class BlockDef(Statement):
    name: str
    params: list[BlockParam]
    body: Chain


@dataclass(eq=False, slots=True)
class ValueCall:
    """A call-shaped value in the train section: `sgd(lr=0.01, momentum=0.9)`."""

    name: str
    args: list[Arg]
    span: Span


@dataclass(eq=False, slots=True)
class ValueList:
    items: list[Expr | ValueCall | ValueList]
    span: Span


Value = Expr | ValueCall | ValueList


@dataclass(eq=False, slots=True)
class Setting:
    name: str
    value: Value
    span: Span  # the whole `key = value`
    name_span: Span  # the key alone


@dataclass(eq=False, slots=True)
class TrainDecl(Statement):
    settings: list[Setting]


@dataclass(eq=False, slots=True)
class HeadDecl(Statement):
    """`head aux1 at inception4a: chain`: a side output branching off the main chain."""

    name: str
    name_span: Span
    at: str  # a layer or a named group/block of the main chain (dotted)
    at_span: Span
    chain: Chain


@dataclass(eq=False, slots=True)
class ChainStmt(Statement):
    chain: Chain


@dataclass(eq=False, slots=True)
class Module:
    """A whole spec file."""

    path: str
    text: str
    statements: list[Statement] = field(default_factory=list)
