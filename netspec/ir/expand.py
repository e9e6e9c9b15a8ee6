"""Expansion: blocks (parameterised, scoped), branches (`concat`, `add`), residuals with their
projection, optional elements (`X?`) and the node-count limit of a repetition, estimated before
it is expanded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.counter import Recount
from netspec.ir.estimate import SizeEstimate, TooDeep, TooDeepRecursion, recursion_error
from netspec.ir.expr import evaluate
from netspec.ir.family import size_names
from netspec.ir.meter import Meter
from netspec.ir.naming import Scope, Value, switch_name
from netspec.ir.resolve import MISSING
from netspec.ir.shapes import LongName, Propagation
from netspec.layers import fmt_shape
from netspec.layers.conv import Conv
from netspec.layers.norm import BatchNorm
from netspec.layers.structure import Add, Concat, Mul

if TYPE_CHECKING:
    from netspec.ir.spec import ParsedSpec

# A chain expanded from its input: the walk's own (netspec.ir.walk.Builder.chain).
ChainFn = Callable[[ast.Chain, Value, Mapping[str, Any], Scope], Value]


class Expansion:
    """The builder's stage that expands blocks, branches and residuals into chains of calls.

    Reads: the spec (its blocks and counted blocks), the global names, the size estimate, the
    build's `Meter` (it meters block calls and branches and refuses what would pass the cap),
    the `Propagation` stage (it adds the merge, shortcut and projection nodes) and, passed to
    each call, the walk's `chain` (a block body, a branch; passed, not kept, so that a build
    leaves no reference cycle for the collector). Owns and writes: the blocks being expanded
    (`block_stack`), the calls made so far of each block whose counter the spec reads
    (`calls`), and a block call's estimate by block, input shape and arguments."""

    __slots__ = (
        "spec",
        "globals",
        "estimate",
        "meter",
        "nodes",
        "block_stack",
        "calls",
        "_call_sizes",
    )

    def __init__(
        self,
        spec: ParsedSpec,
        globals_: dict[str, Any],
        estimate: SizeEstimate,
        meter: Meter,
        nodes: Propagation,
    ) -> None:
        self.spec = spec
        self.globals = globals_
        self.estimate = estimate
        self.meter = meter
        self.nodes = nodes
        self.block_stack: list[str] = []
        self.calls: dict[str, int] = {}
        self._call_sizes: dict[tuple, int] = {}

    def block(
        self,
        block: ast.BlockDef,
        call: ast.Call,
        cur: Value,
        env: Mapping[str, Any],
        scope: Scope,
        label: str | None,
        chain: ChainFn,
    ) -> Value:
        """Expand a block call: its arguments bound, its size checked against the cap, its body
        in a scope of its own. A block may call itself: a recursion that does not end within
        the nesting or name limits is refused at the recursive call."""
        body_env = self._call_env(block, call, cur, env)
        self._check_call(block, call, body_env, cur.shape)
        self.meter.add_step(call.span)
        inner = scope.child(label or scope.next_name(block.name))
        recursive = block.name in self.block_stack
        self.block_stack.append(block.name)
        try:
            return chain(block.body, cur, body_env, inner)
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
        self,
        br: ast.Branches,
        cur: Value,
        env: Mapping[str, Any],
        scope: Scope,
        label: str | None,
        chain: ChainFn,
    ) -> Value:
        if br.op == "residual":
            return self.residual(br, cur, env, scope, label, chain)
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
            self.meter.add_step(ch.span)
            outs.append(chain(ch, cur, env, scope.child(scope.next_name("branch"))))
        layer = {"concat": Concat, "add": Add, "mul": Mul}[br.op]()
        return self.nodes.add_node(layer, outs, br.span, scope, label=label)

    def residual(
        self,
        br: ast.Branches,
        cur: Value,
        env: Mapping[str, Any],
        scope: Scope,
        label: str | None,
        chain: ChainFn,
    ) -> Value:
        project, when = _residual_options(br, env)
        if len(br.chains) != 1:
            raise NetspecError(
                "residual(...) takes one chain (the residual branch); use add(a, b) for two",
                br.span,
            )
        main = chain(br.chains[0], cur, env, scope)
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
                notes=self.nodes.trace([cur]),
            )
        if project is True or (project == "auto" and main.shape != cur.shape):
            n = scope.counters.get("shortcut", 0) + 1
            scope.counters["shortcut"] = n
            shortcut = self._projection(
                cur, main, br, scope.child("shortcut" if n == 1 else f"shortcut{n}")
            )
        return self.nodes.add_node(Add(), [main, shortcut], br.span, scope, label=label)

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
        out = self.nodes.add_node(conv, [cur], br.span, scope)
        return self.nodes.add_node(BatchNorm(), [out], br.span, scope)

    def size_of(self, el: ast.Element, env: Mapping[str, Any], count: int | None = None) -> int:
        """An element's size estimate at the depth being expanded (`count`: its repetition's,
        evaluated already). A light build keeps it in the spec's cache by the values of the
        names the element reads, the depth and the count: a family's members share it."""
        depth = self.meter.depth
        if not self.nodes.light:
            return self.estimate.of_element(el, env, depth, count)
        key = size_key(self.spec, el, env, depth, count)
        size = self.spec.size_cache.get(key)
        if size is None:
            size = self.spec.size_cache[key] = self.estimate.of_element(el, env, depth, count)
        return size

    def check_size(self, el: ast.Element, count: int, env: Mapping[str, Any]) -> None:
        """A repetition about to expand: refused when it would take the network over the cap."""
        if count <= 0:
            return
        size = self.size_of(el, env, count)
        self.meter.refuse_over(size, el.repeat.span if el.repeat else el.span, "this repetition")

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
            size = self.estimate.of_chain(block.body, env, self.meter.depth)
            if key is not None and len(self._call_sizes) < 10_000:
                self._call_sizes[key] = size
        self.meter.refuse_over(size, call.span, f"this call of `{block.name}`")

    def bound_main(self, elements: list[ast.Element], env: Mapping[str, Any]) -> None:
        """The whole main chain's size, estimated before any of it is expanded."""
        built = 1  # the input
        refuse_over = self.meter.refuse_over
        for el in elements:
            size = self.size_of(el, env)
            what = "this repetition" if el.repeat is not None else "this element"
            refuse_over(size, el.repeat.span if el.repeat else el.span, what, built)
            built += size


def size_key(
    spec: ParsedSpec, el: ast.Element, env: Mapping[str, Any], depth: int, count: int | None
) -> tuple:
    """An element's size estimate's key in `spec.size_cache` (`size_key_of`), its values read
    from the global names."""
    values = tuple(env.get(n, MISSING) for n in estimate_names(spec, el))
    return size_key_of(el, depth, count, values)


def size_key_of(el: ast.Element, depth: int, count: int | None, values: tuple) -> tuple:
    """An element's size estimate's key: the element, the depth, the count given, the values
    of the names the estimate reads (`estimate_names`, in their order)."""
    return (id(el), depth, count, *values)


def estimate_names(spec: ParsedSpec, el: ast.Element) -> tuple[str, ...]:
    """The names an element's size estimate reads (`family.size_names`), kept per element."""
    names = spec.size_names.get(id(el))
    if names is None:
        names = spec.size_names[id(el)] = tuple(sorted(size_names(spec, el)))
    return names


def switch_on(el: ast.Element, env: Mapping[str, Any]) -> bool:
    """Whether an optional element (`X?`, `X? if (cond)`) is built."""
    if el.condition is not None:
        return _condition(evaluate(el.condition, env), el.condition, "the condition of `?`")
    name = switch_name(el) or ""
    value = env.get(name)
    if not isinstance(value, bool):
        raise NetspecError(f"switch `{name}` must be on or off; received {value!r}", el.span)
    return value


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
