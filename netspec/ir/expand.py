"""Expansion: blocks (parameterised, scoped), branches (`concat`, `add`), residuals with their
projection, optional elements (`X?`) and the node-count limit of a repetition, estimated before
it is expanded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.expr import eval_int, evaluate
from netspec.ir.naming import Scope, Value
from netspec.ir.spec import switch_name
from netspec.layers import fmt_shape
from netspec.layers.conv import Conv
from netspec.layers.norm import BatchNorm
from netspec.layers.structure import Add, Concat, Mul

if TYPE_CHECKING:
    from netspec.ir.spec import Spec

from netspec.ir.shapes import Propagation

MAX_NODES = 100_000  # a spec expanding past this is refused before it is expanded


class Expansion(Propagation):
    """The builder's stage that expands blocks, branches and residuals into chains of calls."""

    spec: Spec
    globals: dict[str, Any]
    block_stack: list[str]

    if TYPE_CHECKING:  # the builder's own (netspec.ir.build.Builder)

        def chain(
            self, ch: ast.Chain, cur: Value, env: Mapping[str, Any], scope: Scope
        ) -> Value: ...

    def block(
        self,
        block: ast.BlockDef,
        call: ast.Call,
        cur: Value,
        env: Mapping[str, Any],
        scope: Scope,
        label: str | None,
    ) -> Value:
        if block.name in self.block_stack:
            cycle = " -> ".join(
                self.block_stack[self.block_stack.index(block.name) :] + [block.name]
            )
            raise NetspecError(
                f"block `{block.name}` calls itself ({cycle})",
                call.span,
                hint="a block cannot contain itself; use a repetition [...]*N instead",
            )
        params = [p.name for p in block.params]
        bound: dict[str, Any] = {}
        positional = [a for a in call.args if a.name is None]
        if len(positional) > len(params):
            raise NetspecError(
                f"block `{block.name}` takes {len(params)} argument(s) ({', '.join(params)}); received {len(positional)}",
                positional[len(params)].span,
            )
        for p, a in zip(params, positional, strict=False):
            bound[p] = evaluate(a.value, env, symbols=True)
        for a in call.args:
            if a.name is None:
                continue
            if a.name not in params:
                raise NetspecError(
                    f"block `{block.name}` has no argument `{a.name}`",
                    a.span,
                    hint=did_you_mean(a.name, params) or f"its arguments: {', '.join(params)}",
                )
            if a.name in bound:
                raise NetspecError(f"argument `{a.name}` given twice", a.span)
            bound[a.name] = evaluate(a.value, env, symbols=True)
        body_env = dict(self.globals)
        body_env.update(input_names(cur.shape))
        for param in block.params:
            if param.name in bound:
                body_env[param.name] = bound[param.name]
            elif param.default is not None:
                body_env[param.name] = evaluate(param.default, body_env, symbols=True)
            else:
                raise NetspecError(
                    f"block `{block.name}` needs argument `{param.name}`",
                    call.span,
                    hint=f"call it as {block.name}({', '.join(params)})",
                )
        inner = scope.child(label or scope.next_name(block.name))
        self.block_stack.append(block.name)
        try:
            return self.chain(block.body, cur, body_env, inner)
        finally:
            self.block_stack.pop()

    def branches(
        self, br: ast.Branches, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        if br.op == "residual":
            return self.residual(br, cur, env, scope, label)
        for kw in br.kwargs:
            raise NetspecError(f"{br.op}(...) takes no argument `{kw.name}`", kw.span)
        if len(br.chains) < 2:
            raise NetspecError(
                f"{br.op}(...) needs at least two branches",
                br.span,
                hint="separate branches with `,`",
            )
        # Branch scopes number on within the scope: a second concat gets branch3, branch4...
        outs = [
            self.chain(ch, cur, env, scope.child(scope.next_name("branch"))) for ch in br.chains
        ]
        layer = {"concat": Concat, "add": Add, "mul": Mul}[br.op]()
        return self.add_node(layer, outs, br.span, scope, label=label)

    def residual(
        self, br: ast.Branches, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        project: bool | str = False
        when = True
        for kw in br.kwargs:
            if kw.name == "when":
                when = _condition(
                    evaluate(kw.value, env),
                    kw.value,
                    "the condition of when=",
                    hint="the skip exists when it holds, e.g. when=(s == 1 and in.c == c)",
                )
                continue
            if kw.name != "project":
                raise NetspecError(
                    f"residual(...) has no argument `{kw.name}`",
                    kw.span,
                    hint=did_you_mean(kw.name or "", ["project", "when"])
                    or "its arguments: project=auto|on|off, when=(condition)",
                )
            value = evaluate(kw.value, env, symbols=True)
            if value not in (True, False, "auto"):
                raise NetspecError(
                    f"project must be auto, on or off; received {value!r}", kw.value.span
                )
            project = value
        if len(br.chains) != 1:
            raise NetspecError(
                "residual(...) takes one chain (the residual branch); use add(a, b) for two",
                br.span,
            )
        main = self.chain(br.chains[0], cur, env, scope)
        if not when:  # the skip exists only when the condition holds: here, the body alone
            return main
        shortcut = cur
        if project is True or (project == "auto" and main.shape != cur.shape):
            n = scope.counters.get("shortcut", 0) + 1
            scope.counters["shortcut"] = n
            shortcut = self._projection(
                cur, main, br, scope.child("shortcut" if n == 1 else f"shortcut{n}")
            )
        return self.add_node(Add(), [main, shortcut], br.span, scope, label=label)

    def _projection(self, cur: Value, main: Value, br: ast.Branches, scope: Scope) -> Value:
        """1x1 conv (no bias) + BN from cur's shape to main's, as torchvision's downsample: the
        stride per dim is the smallest whose output size, (n - 1) // s + 1, equals the body's."""
        if len(cur.shape) != len(main.shape) or len(cur.shape) < 2:
            raise NetspecError(
                f"cannot project [{fmt_shape(cur.shape)}] onto [{fmt_shape(main.shape)}]", br.span
            )
        strides = []
        for a, b in zip(cur.shape[1:], main.shape[1:], strict=True):
            s = projection_stride(a, b)
            if s is None:
                raise NetspecError(
                    f"cannot project [{fmt_shape(cur.shape)}] onto [{fmt_shape(main.shape)}]: "
                    f"no stride takes a 1x1 conv from size {a} to {b}",
                    br.span,
                    hint="a strided 1x1 conv gives (n - 1) // stride + 1; the body must not "
                    "grow the map or shrink it unevenly",
                )
            strides.append(s)
        stride = strides[0] if len(set(strides)) == 1 else tuple(strides)
        conv = Conv(channels=main.shape[0], kernel=1, stride=stride, padding=0, bias=False)
        out = self.add_node(conv, [cur], br.span, scope)
        return self.add_node(BatchNorm(), [out], br.span, scope)

    # ---- helpers
    def _switch_on(self, el: ast.Element, env: Mapping[str, Any]) -> bool:
        if el.condition is not None:
            return _condition(evaluate(el.condition, env), el.condition, "the condition of `?`")
        name = switch_name(el) or ""
        value = env.get(name)
        if not isinstance(value, bool):
            raise NetspecError(f"switch `{name}` must be on or off; received {value!r}", el.span)
        return value

    def _check_size(self, el: ast.Element, count: int, env: Mapping[str, Any]) -> None:
        if count == 0:
            return
        size = count * max(self._estimate_primary(el.primary, env, 0), 1)
        if max(len(self.ids), self.sums[5]) + size > MAX_NODES:
            raise NetspecError(
                f"this repetition would expand to at least {size:,} layers, over netspec's limit of {MAX_NODES:,}",
                el.repeat.span if el.repeat else el.span,
                hint="a network this deep is almost certainly a typo in the repetition count",
            )

    def _estimate_primary(self, p: ast.Primary, env: Mapping[str, Any], depth: int) -> int:
        """Layers a primary expands to, without expanding it (for the size limit)."""
        if depth > 50:
            return 1
        if isinstance(p, ast.Call):
            block = self.spec.blocks.get(p.name)
            if block is None or p.name in self.block_stack:
                return 1
            return self._estimate_chain(block.body, {**self.globals}, depth + 1)
        if isinstance(p, ast.Group):
            return self._estimate_chain(p.chain, env, depth + 1)
        return 3 + sum(self._estimate_chain(c, env, depth + 1) for c in p.chains)

    def _estimate_chain(self, ch: ast.Chain, env: Mapping[str, Any], depth: int) -> int:
        total = 0
        for el in ch.elements:
            n = 1
            if el.repeat is not None:
                try:
                    n = eval_int(
                        el.repeat, {**env, **({el.index_var: 0} if el.index_var else {})}, "count"
                    )
                except NetspecError:
                    n = 1
            total += n * self._estimate_primary(el.primary, env, depth)
            if total > MAX_NODES:
                return total
        return total


def _condition(value: Any, e: ast.Expr, what: str, hint: str | None = None) -> bool:
    if not isinstance(value, bool | int):
        raise NetspecError(f"{what} must be true or false; received {value!r}", e.span, hint=hint)
    return bool(value)


def projection_stride(size: int, target: int) -> int | None:
    """The smallest stride s with (size - 1) // s + 1 == target (a 1x1 conv, no padding), or
    None when no stride gives that size (75 -> 38: s = 2; 8 -> 3: s = 3; 8 -> 9: none)."""
    if target < 1 or target > size:
        return None
    if target == 1:
        return size  # any s >= size; the smallest is size (1 when size is 1)
    # (size - 1) // s == target - 1  <=>  (size - 1) / target < s <= (size - 1) / (target - 1)
    s = (size - 1) // target + 1
    return s if (size - 1) // s == target - 1 else None


def input_names(shape: tuple[int, ...]) -> dict[str, Any]:
    """The names a block body reads its input's shape by: `in.c` (channels, or a vector's
    length), `in.h` and `in.w` (a map), `in.l` (a 1-D signal), `in.shape` (the tuple)."""
    names: dict[str, Any] = {"in.shape": shape, "in.c": shape[0]}
    if len(shape) == 3:
        names["in.h"], names["in.w"] = shape[1], shape[2]
    elif len(shape) == 2:
        names["in.l"] = shape[1]
    return names
