"""Expansion: blocks (parameterised, scoped), branches (`concat`, `add`), residuals with their
projection, optional elements (`X?`) and the node-count limit of a repetition, estimated before
it is expanded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.expr import evaluate
from netspec.ir.naming import Scope, Value, switch_name
from netspec.layers import fmt_shape
from netspec.layers.conv import Conv
from netspec.layers.norm import BatchNorm
from netspec.layers.structure import Add, Concat, Mul

if TYPE_CHECKING:
    from netspec.ir.spec import ParsedSpec


from netspec.ir.counter import Recount
from netspec.ir.estimate import (
    SATURATED,
    SizeEstimate,
    TooDeep,
    TooDeepRecursion,
    enter,
    recursion_error,
)
from netspec.ir.limits import MAX_WORK, WORK_NEW
from netspec.ir.shapes import LongName, Propagation

_LIMITS_HINT = (
    "a network this large is almost certainly a typo in a count; netspec bounds its work "
    "before doing it (see `Limits` in the README)"
)


class OverCap(NetspecError):
    """The network passes a cap on the build's work: it depends on everything expanded before,
    so a design-space build never keeps it as the error of one element."""


class Expansion(Propagation):
    """The builder's stage that expands blocks, branches and residuals into chains of calls."""

    spec: ParsedSpec
    globals: dict[str, Any]
    block_stack: list[str]
    calls: dict[str, int]  # calls made so far of each block whose counter the spec reads
    estimate: SizeEstimate  # the size estimate, made once the globals are known
    _call_sizes: dict[tuple, int]  # a block call's estimate by block, input shape, arguments
    _open_repetitions: list[ast.Element]  # being expanded, outermost first
    _depth: int  # chains open in the build

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
        """Expand a block call: its arguments bound, its size checked against the cap, its body
        in a scope of its own. A block may call itself: a recursion that does not end within
        the nesting or name limits is refused at the recursive call."""
        body_env = self._call_env(block, call, cur, env)
        self._check_call(block, call, body_env, cur.shape)
        self._add_step(call.span)
        inner = scope.child(label or scope.next_name(block.name))
        recursive = block.name in self.block_stack
        self.block_stack.append(block.name)
        try:
            return self.chain(block.body, cur, body_env, inner)
        except (TooDeep, LongName) as e:
            if recursive and not isinstance(e, TooDeepRecursion):
                raise recursion_error(block, call, isinstance(e, LongName)) from None
            raise
        finally:
            self.block_stack.pop()

    def _call_env(
        self, block: ast.BlockDef, call: ast.Call, cur: Value, env: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The names a block call's body sees: the globals, its input's shape (`in.c`), its
        counter, and its arguments (positional, named, defaults), each mistake named."""
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
        self._count_call(block.name, body_env)
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
        return body_env

    def _count_call(self, name: str, body_env: dict[str, Any]) -> None:
        """The running counter: this call's position among the calls of its block over the
        whole network (`name.index`, from 0), where the spec reads it."""
        if name in self.spec.counted:
            n = self.calls.get(name, 0)
            total = self.globals.get(name + ".count")
            if isinstance(total, int) and n >= total:
                # More calls than the total counted from the text (a repetition count that
                # reads a shape): the values read so far are wrong; count again by building.
                raise Recount(None, name)
            self.calls[name] = n + 1
            body_env[name + ".index"] = n

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
        outs = []
        for ch in br.chains:
            self._add_step(ch.span)
            outs.append(self.chain(ch, cur, env, scope.child(scope.next_name("branch"))))
        layer = {"concat": Concat, "add": Add, "mul": Mul}[br.op]()
        return self.add_node(layer, outs, br.span, scope, label=label)

    def residual(
        self, br: ast.Branches, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        project, when = _residual_options(br, env)
        if len(br.chains) != 1:
            raise NetspecError(
                "residual(...) takes one chain (the residual branch); use add(a, b) for two",
                br.span,
            )
        main = self.chain(br.chains[0], cur, env, scope)
        if not when:  # the skip exists only when the condition holds: here, the body alone
            return main
        shortcut = cur
        if project is False and main.shape != cur.shape:
            named = f" `{label}`" if label else ""
            raise NetspecError(
                f"residual(...){named}: its chain outputs [{fmt_shape(main.shape)}] but the skip "
                f"carries its input [{fmt_shape(cur.shape)}]; they must be equal to add",
                br.span,
                hint="residual(..., project=auto) adds a 1x1 conv + BN shortcut when the shapes differ",
                notes=self._trace([cur]),
            )
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
        """A repetition about to expand: refused when it would take the network over the cap."""
        if count <= 0:
            return
        size = self.estimate.of_element(el, env, self._depth, count)
        self._refuse_over(size, el.repeat.span if el.repeat else el.span, "this repetition")

    def _check_call(
        self,
        block: ast.BlockDef,
        call: ast.Call,
        env: Mapping[str, Any],
        shape: tuple[int, ...],
    ) -> None:
        """A block call about to expand: refused when it would take the network over the cap.
        A block's size depends only on its arguments and input shape: estimated once each."""
        key: tuple | None = (id(block), shape, *(env.get(p.name) for p in block.params))
        try:
            size = self._call_sizes.get(key)  # type: ignore[arg-type]
        except TypeError:  # an argument value that does not hash
            key, size = None, None
        if size is None:
            size = self.estimate.of_chain(block.body, env, self._depth)
            if key is not None and len(self._call_sizes) < 10_000:
                self._call_sizes[key] = size
        self._refuse_over(size, call.span, f"this call of `{block.name}`")

    def _bound_main(self, elements: list[ast.Element], env: Mapping[str, Any]) -> None:
        """The whole main chain's size, estimated before any of it is expanded."""
        built = 1  # the input
        for el in elements:
            size = self.estimate.of_element(el, env, self._depth)
            what = "this repetition" if el.repeat is not None else "this element"
            self._refuse_over(size, el.repeat.span if el.repeat else el.span, what, built)
            built += size

    @property
    def work(self) -> int:
        """The units of work done so far (see MAX_WORK)."""
        return self.sums[5] + self.sums[6] + WORK_NEW * self.fresh

    def _refuse_over(self, size: int, span: Any, what: str, built: int | None = None) -> None:
        if built is None:
            built = self.work
        if built + size > MAX_WORK:
            raise OverCap(
                f"{what} expands to {_at_least(size)} "
                f"{'node or step' if size == 1 else 'nodes and steps'}: the network would "
                f"take {_at_least(built + size)} units of work, over netspec's limit of "
                f"{MAX_WORK:,}",
                span,
                hint=_LIMITS_HINT,
            )

    def _add_step(self, span: Any) -> None:
        """A step of work that is not a node: a block call, a branch, a time round a loop that
        reads its index."""
        self.sums[6] += 1
        if self.work > MAX_WORK:
            self._over_work(span)

    def _over_work(self, span: Any) -> NoReturn:
        """The work metered so far passed the cap: refused at the outermost repetition being
        expanded (the count to look at), else where the work was."""
        sums = self.sums
        rep = self._open_repetitions[0] if self._open_repetitions else None
        raise OverCap(
            f"{'this repetition takes' if rep is not None else 'here'} the network "
            f"{'' if rep is not None else 'goes '}over netspec's limit of {MAX_WORK:,} units of "
            f"work: {sums[5]:,} nodes, {sums[6]:,} other steps (block calls, branches, times "
            f"round a loop reading its index) and {self.fresh:,} distinct layers (1 unit each; "
            f"a distinct layer {WORK_NEW} more)",
            rep.repeat.span if rep is not None and rep.repeat is not None else span,
            hint=_LIMITS_HINT,
        )

    def _enter(self, span: Any) -> None:
        """One more chain nested in the ones being expanded."""
        self._depth = enter(self._depth, span)


def _residual_options(br: ast.Branches, env: Mapping[str, Any]) -> tuple[bool | str, bool]:
    """residual(...)'s `project=` (auto, on or off; off when not given) and `when=` (true
    when not given), each given at most once."""
    project: bool | str = False
    when = True
    given: dict[str, ast.Arg] = {}
    for kw in br.kwargs:
        if kw.name in given:
            raise NetspecError(
                f"argument `{kw.name}` of residual(...) is given twice",
                kw.span,
                notes=[f"first given at {given[kw.name].span}"],
                hint="keep one of them",
            )
        if kw.name is not None:
            given[kw.name] = kw
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
    return project, when


def _condition(value: Any, e: ast.Expr, what: str, hint: str | None = None) -> bool:
    """A condition is true or false: a number (`when=(3)`) is refused, never taken as true."""
    if not isinstance(value, bool):
        if isinstance(value, int | float):
            hint = "a number is not a condition: compare it, e.g. (n != 0)"
        raise NetspecError(f"{what} must be true or false; received {value!r}", e.span, hint=hint)
    return value


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


def _at_least(n: int) -> str:
    return f"over {SATURATED:,}" if n >= SATURATED else f"{n:,}"
