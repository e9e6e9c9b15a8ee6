"""Bindings and expressions: `--set` values coerced, the global names an instance sees, train
setting values made plain JSON, and how argument types read in error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.expr import BOOL_WORDS, Symbol, evaluate, free_names
from netspec.ir.graph import Scalar
from netspec.layers import Layer

if TYPE_CHECKING:
    from netspec.ir.spec import ParsedSpec


class _Deferred:
    def __repr__(self) -> str:
        return "`classes` (not known yet)"


DEFERRED = _Deferred()  # `classes` before the class count is evaluated


def coerce_binding(raw: Scalar) -> Scalar:
    if isinstance(raw, str):
        low = raw.lower()
        if low in BOOL_WORDS:
            return BOOL_WORDS[low]
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)
            except ValueError:
                return raw
    return raw


def global_env(spec: ParsedSpec, bindings: dict[str, Scalar]) -> dict[str, Any]:
    """The names every element sees: bound free parameters, `classes`, then the constants."""
    env: dict[str, Any] = {}
    known = set(spec.free) | {c.name for c in spec.consts}
    if spec.classes is not None and "classes" not in known and "classes" in bindings:
        # `--set classes=7`: the declared class count replaced (fine-tuning to new classes)
        value = bindings["classes"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NetspecError(
                f"--set classes: expected a positive integer. Received: classes={value}",
                spec.classes.span,
            )
        env["classes"] = value
        known = known | {"classes"}
    for name in bindings:
        if name not in known:
            raise NetspecError(
                f"--set {name}: the spec has no parameter `{name}`",
                hint=did_you_mean(name, known)
                or (
                    "its parameters: " + ", ".join(sorted(known))
                    if known
                    else "the spec has no free parameters"
                ),
            )
    for name, domain in spec.free.items():
        if name in bindings:
            value = bindings[name]
            if value not in domain:
                raise NetspecError(
                    f"{name}={show_value(value)} is outside its domain {domain.describe()}",
                    domain.span,
                    hint=f"pick one of {domain.describe()}",
                )
            env[name] = value
    if spec.classes is not None and "classes" not in known | set(env):
        # `FC(classes)`: the declared class count is a name too (it may use constants).
        env["classes"] = DEFERRED
    for c in spec.consts:
        if c.name in bindings:
            env[c.name] = bindings[c.name]
            continue
        if env.get("classes") is DEFERRED and "classes" in free_names(c.value):
            _classes_now(spec, env, c)
        env[c.name] = evaluate(c.value, env, symbols=True)
    unbound = [d for n, d in spec.free.items() if n not in env]
    if unbound:
        names = " ".join(f"{d.name}={d.values[0] if not d.switch else 'on'}" for d in unbound)
        raise NetspecError(
            "free parameters are not bound: "
            + ", ".join(f"`{d.name}` ({d.describe()})" for d in unbound),
            unbound[0].span,
            hint=f"bind them: netspec check {spec.path} --set {names}  (or explore the family: netspec explore {spec.path})",
        )
    return env


def _classes_now(spec: ParsedSpec, env: dict[str, Any], const: ast.ConstDef) -> None:
    """`classes` used by a constant: evaluate the class count now, or say what it waits for."""
    assert spec.classes is not None
    waiting = sorted(
        n for n in free_names(spec.classes.value) if n not in env or env[n] is DEFERRED
    )
    if waiting:
        raise NetspecError(
            f"`{const.name}` uses `classes` before its value is known",
            const.value.span,
            hint=f"the class count needs {', '.join(f'`{n}`' for n in waiting)}, defined later; "
            "define it first",
        )
    value = evaluate(spec.classes.value, env)
    env["classes"] = value if isinstance(value, int) and not isinstance(value, bool) else DEFERRED


_LAYER_FIELDS: dict[type, dict[str, Any]] = {}


def layer_fields(cls: type[Layer]) -> dict[str, Any]:
    fields = _LAYER_FIELDS.get(cls)
    if fields is None:
        fields = _LAYER_FIELDS[cls] = dict(cls.model_fields)
    return fields


def construct(cls: Any, values: dict[str, Any]) -> Any:
    """`cls.model_construct` without its per-call overhead, for IR models whose every field
    the builder computed and checked itself: this runs once per layer of a 4,000-layer
    network, and a few times per member of a design space."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def setting_value(v: ast.Value, env: Mapping[str, Any]) -> Any:
    if isinstance(v, ast.ValueCall):
        out: dict[str, Any] = {"name": v.name, "args": [], "kwargs": {}}
        for a in v.args:
            val = plain(evaluate(a.value, env, symbols=True))
            if a.name is None:
                out["args"].append(val)
            else:
                out["kwargs"][a.name] = val
        return out
    if isinstance(v, ast.ValueList):
        return [setting_value(i, env) for i in v.items]
    return plain(evaluate(v, env, symbols=True))


def plain(v: Any) -> Any:
    if isinstance(v, Symbol):
        return str(v)
    if isinstance(v, tuple):
        return [plain(x) for x in v]
    return v


def is_symbolic_field(cls: type[Layer], name: str) -> bool:
    ann = str(cls.model_fields[name].annotation) if name in cls.model_fields else ""
    return "Literal" in ann


def expectation(cls: type[Layer], name: str) -> str:
    field = cls.model_fields.get(name)
    if field is None:
        return "a valid value"
    ann = str(field.annotation) + " " + " ".join(str(m) for m in field.metadata)
    parts = []
    if "Literal" in ann:
        choices = re.findall(r"Literal\[([^\]]*)\]", ann)
        words = ", ".join(c.strip() for ch in choices for c in ch.split(","))
        parts.append(f"one of {words.replace(chr(39), '')}")
    if "int" in ann and "float" not in ann:  # a number field takes integers too: say "a number"
        if "Gt(gt=0)" in ann or "gt=0" in ann:
            parts.append("a positive integer")
        elif "ge=0" in ann:
            parts.append("a non-negative integer")
        else:
            parts.append("an integer")
        if "tuple" in ann:
            parts.append("a tuple such as (3, 5)")
    if "float" in ann:
        if "lt=1" in ann:
            parts.append("a number in [0, 1)")
        elif "gt=0" in ann:
            parts.append("a positive number")
        elif "ge=0" in ann:
            parts.append("a non-negative number")
        else:
            parts.append("a number")
    if "bool" in ann:
        parts.append("on/off (true/false)")
    if field.annotation in (str, str | None):  # UPSAMPLE's like=
        parts.append("a node's name (`input`, a name given with `as`, a dotted name in quotes)")
    return " or ".join(dict.fromkeys(parts)) or "a valid value"


def show_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and abs(value) >= 10_000:
        for div, suf in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "K")):
            if value % div == 0:
                return f"{value // div}{suf}"
        return f"{value:,}"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10_000:
        return show_value(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def call_args(cls: type[Layer], call: ast.Call, env: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments by name (positional ones named by the class), evaluated."""
    args: dict[str, Any] = {}
    fields = layer_fields(cls)
    spelled = call.name.upper()
    npos = 0
    for arg in call.args:
        value = evaluate(arg.value, env, symbols=True)
        if isinstance(value, Symbol):
            value.span = arg.value.span  # type: ignore[attr-defined]
        if arg.name is None:
            if npos >= len(cls.positional):
                listing = ", ".join(cls.positional) or "none"
                raise NetspecError(
                    f"{spelled} takes {len(cls.positional)} positional argument(s) ({listing}); received more",
                    arg.span,
                    hint=f"name the others, e.g. {spelled}(..., stride=2)"
                    if cls.positional
                    else f"{spelled} takes no arguments",
                )
            name = cls.positional[npos]
            npos += 1
        else:
            name = arg.name
            if name not in fields or name == "dims":
                raise NetspecError(
                    f"{spelled} has no argument `{name}`",
                    arg.span,
                    hint=did_you_mean(name, [f for f in fields if f != "dims"])
                    or f"its arguments: {', '.join(f for f in fields if f != 'dims')}",
                )
        if name in args:
            raise NetspecError(f"argument `{name}` of {spelled} is given twice", arg.span)
        args[name] = value
    return args


def argument_error(
    cls: type[Layer], call: ast.Call, name: str, value: Any, err: Any, known: Iterable[str]
) -> NetspecError:
    """A pydantic error on argument `name` as the user reads it: where, expected, received;
    an undefined name (among `known`) as such."""
    spelled = call.name.upper()
    span = call.span
    for arg in call.args:
        if arg.name == name or (
            arg.name is None
            and name in cls.positional
            and call.args.index(arg) == cls.positional.index(name)
        ):
            span = arg.value.span
    if err["type"] == "missing":
        return NetspecError(
            f"{spelled} needs argument `{name}`", call.span, hint=f"e.g. {spelled}({name}=...)"
        )
    if isinstance(value, Symbol):
        known = [k for k in known if not k.startswith("_")]
        hint = did_you_mean(str(value), known)
        if hint or not is_symbolic_field(cls, name):
            return NetspecError(
                f"undefined name `{value}`", getattr(value, "span", span), hint=hint
            )
    expected = expectation(cls, name)
    hint = (
        "use // for integer division"
        if isinstance(value, float) and "integer" in expected
        else None
    )
    return NetspecError(
        f"argument `{name}` of {spelled}: expected {expected}; received {show_value(value)}",
        span,
        hint=hint,
    )
