"""Evaluating the integer/boolean expressions of a spec (`2*c`, `c // 4`, `i < 2 and pool`)."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from typing import Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast

BOOL_WORDS = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}

_ARITH = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_CMP = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class Symbol(str):
    """A bare word that names no constant (`same`, `max`): a symbolic argument value."""

    __slots__ = ("span",)


def evaluate(e: ast.Expr, env: Mapping[str, Any], symbols: bool = False) -> Any:
    """Evaluate an expression. With `symbols`, unknown bare names become `Symbol` strings
    (argument values such as `padding=same`); otherwise they are errors."""
    if isinstance(e, ast.Num):
        return e.value
    if isinstance(e, ast.Name):
        if e.id in env:
            return env[e.id]
        if e.id.startswith("in.") or (
            "." in e.id and (not symbols or e.id.endswith((".index", ".count")))
        ):  # `in.c`, `cnblock.index`: never a symbolic word (`like=layer1.conv2` is)
            raise undefined(e, env)
        low = e.id.lower()
        if low in BOOL_WORDS:
            return BOOL_WORDS[low]
        if symbols:
            sym = Symbol(e.id)
            return sym
        raise undefined(e, env)
    if isinstance(e, ast.BinOp):
        left = _number(evaluate(e.left, env), e.left)
        right = _number(evaluate(e.right, env), e.right)
        if e.op in ("/", "//", "%") and right == 0:
            raise NetspecError("division by zero", e.right.span)
        if e.op == "**" and abs(right) > 64:
            raise NetspecError(f"exponent {right} is too large", e.right.span)
        if e.op == "**" and left == 0 and right < 0:
            raise NetspecError("0 raised to a negative power", e.span)
        try:
            result = _ARITH[e.op](left, right)
        except OverflowError:
            result = math.inf
        if e.op == "//" and isinstance(result, float) and math.isfinite(result):
            result = int(
                result
            )  # integer division gives an integer, floats in or not (16 * 0.75 // 1)
        return _bounded(result, e)
    if isinstance(e, ast.Neg):
        return -_number(evaluate(e.operand, env), e.operand)
    if isinstance(e, ast.Not):
        return not _truth(evaluate(e.operand, env), e.operand)
    if isinstance(e, ast.BoolOp):
        left = _truth(evaluate(e.left, env), e.left)
        if e.op == "and":
            return left and _truth(evaluate(e.right, env), e.right)
        return left or _truth(evaluate(e.right, env), e.right)
    if isinstance(e, ast.Compare):
        left, right = evaluate(e.left, env), evaluate(e.right, env)
        if e.op not in ("==", "!="):
            left, right = _number(left, e.left), _number(right, e.right)
        return _CMP[e.op](left, right)
    if isinstance(e, ast.IfExp):
        chosen = e.then if _truth(evaluate(e.cond, env), e.cond) else e.other
        return evaluate(chosen, env, symbols)
    if isinstance(e, ast.TupleExpr):
        return tuple(evaluate(i, env, symbols) for i in e.items)
    if isinstance(e, ast.Str):
        return e.value
    raise TypeError(f"not an expression: {e!r}")


# The largest magnitude a spec may compute; past it, sizes mean nothing and big-integer
# arithmetic (`((10**64)**64)**64`) would take minutes. The parser caps literals the same way.
MAX_NUMBER = 10**18


def _bounded(value: Any, e: ast.Expr) -> Any:
    if isinstance(value, complex):
        raise NetspecError("the result is not a real number", e.span)
    if isinstance(value, float) and math.isnan(value):
        raise NetspecError("the result is not a number", e.span)
    if isinstance(value, int | float) and not abs(value) <= MAX_NUMBER:
        raise NetspecError(
            "the result is too large",
            e.span,
            hint=f"numbers in a spec are at most {MAX_NUMBER:.0e}",
        )
    return value


def undefined(e: ast.Name, env: Mapping[str, Any]) -> NetspecError:
    if e.id.startswith("in.") and "in.shape" in env:
        shape = env["in.shape"]
        names = sorted(k for k in env if k.startswith("in."))
        return NetspecError(
            f"`{e.id}` is not defined for this block's input [{'x'.join(map(str, shape))}]",
            e.span,
            hint=did_you_mean(e.id, names) or "defined here: " + ", ".join(names),
        )
    if e.id.startswith("in."):
        return NetspecError(
            f"`{e.id}` is used outside a block",
            e.span,
            hint="`in.c`, `in.h`, `in.w` name the shape of a block's input, inside its body "
            "(`block dw(k=3) = CONV(in.c, k, groups=in.c)`)",
        )
    if "." in e.id:  # `cnblock.index` outside a call of cnblock (ParsedSpec checked the rest)
        block, attr = e.id.split(".", 1)
        return NetspecError(
            f"`{e.id}` is read outside a call of `{block}`",
            e.span,
            hint=f"`{block}.index` is the position of a call of `{block}`: read it in "
            f"`{block}`'s body or its parameters' defaults"
            if attr == "index"
            else f"`{block}.count` is known in the chains, not in constants",
        )
    return NetspecError(
        f"undefined name `{e.id}`",
        e.span,
        hint=did_you_mean(e.id, [k for k in env if not k.startswith("_")])
        or "define it first, e.g. `" + e.id + " = 2`",
    )


def _number(value: Any, e: ast.Expr) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NetspecError(f"expected a number, received {_received(value)}", e.span)
    return value


def _received(value: Any) -> str:
    if isinstance(value, tuple):
        return f"the tuple {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return repr(value)


def _truth(value: Any, e: ast.Expr) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    raise NetspecError(f"expected a condition (true/false), received {value!r}", e.span)


def eval_int(e: ast.Expr, env: Mapping[str, Any], what: str, minimum: int = 0) -> int:
    """Evaluate to an int >= minimum, or fail saying what the value was for."""
    value = evaluate(e, env)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NetspecError(
            f"{what} must be an integer; received {value!r}",
            e.span,
            hint="use // for integer division",
        )
    if value < minimum:
        raise NetspecError(f"{what} must be at least {minimum}; received {value}", e.span)
    return value


def free_names(e: Any) -> set[str]:
    """Names an expression (or any AST node) refers to, for memoizing on the relevant bindings."""
    return {node.id for node in walk(e) if isinstance(node, ast.Name)}


def walk(e: Any) -> Iterator[Any]:
    """Every AST node under `e` (itself included), without recursion: user input nests deep."""
    stack = [e]
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(node)
        elif hasattr(node, "__slots__") and not isinstance(node, str):
            yield node
            for slot in _slots(type(node)):
                value = getattr(node, slot, None)
                if value is not None and not isinstance(value, str | int | float | bool):
                    stack.append(value)


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        names.extend(getattr(klass, "__slots__", ()))
    return [n for n in names if n != "span"]
