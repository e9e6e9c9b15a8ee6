"""Shape and count propagation: each layer node's output shape, parameters, buffers, MACs,
ops and memory from its layer class (memoized per layer and input shapes, shared by a family's
members), its dotted name checked, and the node added to the graph (or, in a light build, only
its figures to the sums)."""

from __future__ import annotations

from typing import Any

from netspec.errors import NetspecError, Span, did_you_mean
from netspec.frontend import ast
from netspec.ir.expr import walk
from netspec.ir.graph import Node
from netspec.ir.limits import MAX_NAME, MAX_WORK, WORK_NEW
from netspec.ir.meter import Meter
from netspec.ir.naming import RESERVED_NAMES, Scope, Value
from netspec.layers import KINDS, Layer, ShapeError, fmt_shape, numel
from netspec.layers.base import Shape


class Propagation:
    """The builder's stage that turns a validated layer and its inputs into a node.

    Reads: the build's `Meter` (it sums the node's figures and meters the work), whether the
    build is light, the spec's caches of figures (`memo`) and of serialized arguments
    (`dumps`), the names whose outputs the build keeps (`tap_names`). Owns and writes: the
    nodes made, their ids, the scopes met, the kept outputs (`taps`), the last node that is not
    the identity at inference (`tail`, the classifier check reads it), the first node that
    flattened a map (`flattened`, a per-pixel output's error names it), and in a light build
    the figures cache entries each element being expanded used (`used`, see
    netspec.ir.family)."""

    __slots__ = (
        "meter",
        "sums",
        "serial",
        "light",
        "memo",
        "dumps",
        "tap_names",
        "nodes",
        "ids",
        "scopes",
        "taps",
        "tail",
        "last",
        "flattened",
        "used",
        "input_shape",
    )

    def __init__(
        self,
        meter: Meter,
        light: bool,
        memo: dict[tuple, tuple],
        dumps: dict[Layer, dict[str, Any]],
        tap_names: set[str],
    ) -> None:
        self.meter = meter
        self.sums = meter.sums  # the same list: the hot path reads it without a hop
        self.serial = meter.serial
        self.light = light
        self.memo = memo
        self.dumps = dumps
        self.tap_names = tap_names
        self.nodes: list[Node] = []
        self.ids: dict[str, Node | None] = {}
        self.scopes: set[str] = set()
        self.taps: dict[str, Value] = {}
        self.tail: tuple[Layer, str, Span | None] | None = None
        self.last: tuple[Layer, str] | None = None  # the last node made: a softmax reads it
        self.flattened: tuple[str, Span | None, Shape] | None = None
        self.used: list[dict[int, list[int]]] = []
        self.input_shape: tuple[int, ...] = ()

    def add_node(
        self,
        layer: Layer,
        inputs: list[Value],
        span: Span | None,
        scope: Scope,
        label: str | None = None,
        implicit: bool = False,
    ) -> Value:
        """Add a node of `layer` on `inputs`: its figures (memoized per layer and input
        shapes), the work metered, its dotted name checked, the totals summed; in a full build
        the node itself. The hot path of every build: the checks are inline, the errors built
        by helpers. Over 60 lines on purpose: a call per node costs a few percent of a
        220,000-node build."""
        one = len(inputs) == 1  # most layers: no generator for one input
        shapes = (inputs[0].shape,) if one else tuple(v.shape for v in inputs)
        key = (layer, shapes)
        result = self.memo.get(key)
        if result is None:
            result = self.memo[key] = self._figures(layer, shapes, inputs, span, scope, label)
        out, params, buffers, macs, ops, memory, args, private, flattens, used = result
        sums = self.sums
        sums[5] += 1
        meter = self.meter
        if used[0] != self.serial:
            used[0] = self.serial
            meter.fresh += 1
        if self.used:
            self.used[-1][id(used)] = used
        if sums[5] + sums[6] + WORK_NEW * meter.fresh > MAX_WORK:
            meter.over_work(span)
        name = label or scope.next_name(layer.short)
        node_id = scope.prefix + name
        if len(node_id) > MAX_NAME:
            raise _long_name(node_id, span)
        if node_id in self.tap_names:
            self.taps[node_id] = Value(node_id, out)
        if not layer.transparent:
            self.tail = (layer, node_id, span)
        self.last = (layer, node_id)
        if flattens and self.flattened is None:
            self.flattened = (node_id, span, out)
        if not self.light:
            if label is not None and label in RESERVED_NAMES:
                raise _reserved(label, span)
            if not scope.checked:
                self._check_scope(scope, span)
            if node_id in self.scopes:
                raise _layer_and_group(node_id, span)
        if node_id in self.ids:
            raise _used_twice(node_id, self.ids[node_id], span)
        sums[0] += params  # the totals, summed as the nodes are made
        sums[1] += buffers
        sums[2] += macs
        sums[3] += ops
        sums[4] += memory
        if self.light:
            return Value(node_id, out)
        if args is None:  # figures a light build made: the arguments serialized now
            args = self._args(layer)
        node = Node.of(
            private,
            {
                "id": node_id,
                "kind": layer.kind,
                "args": args,
                "inputs": [inputs[0].node] if one else [v.node for v in inputs],
                "span": span,
                "implicit": implicit,
                "shape": out,
                "params": params,
                "buffers": buffers,
                "macs": macs,
                "ops": ops,
                "memory": memory,
            },
        )
        self.nodes.append(node)
        self.ids[node_id] = node
        return Value(node_id, out)

    def refer(self, layer: Layer, call: ast.Call) -> Layer:
        """A layer whose `refers` argument names another node (`UPSAMPLE(like=stem)`), resolved
        with that node's output shape. The name is a layer's or named group's dotted name, as a
        head's `at` names it, or `input`; it must be built already (`referenced_names` put it
        among the names whose outputs the build keeps)."""
        arg = type(layer).refers
        name = getattr(layer, arg) if arg else None
        if name is None:
            return layer
        span = next((a.value.span for a in call.args if a.name == arg), call.span)
        target = self.taps.get(name)
        if target is None:
            known = [k for k in self.ids if k] + list(self.taps)
            raise NetspecError(
                f"{call.name.upper()} {arg}={name}: `{name}` names no layer or group built "
                "before this one",
                span,
                hint=did_you_mean(name, known)
                or "name a layer or group with `as`, give its dotted name in quotes "
                '(`"layer1.conv2"`), or `input`',
            )
        try:
            return layer.resolve(target.shape)
        except ShapeError as e:
            raise NetspecError(e.message, span, hint=e.hint) from None

    def _figures(
        self,
        layer: Layer,
        shapes: tuple[Shape, ...],
        inputs: list[Value],
        span: Span | None,
        scope: Scope,
        label: str | None,
    ) -> tuple:
        """A layer's figures on input shapes it has not met in this spec: (output shape,
        params, buffers, MACs, ops, memory, serialized args, the node's private part, whether
        it flattens a map, [serial of the build that last used it]); the arguments are
        None when a light build met the layer first. A shape rule's refusal
        becomes an error at the node's name, with the spatial sizes so far."""
        try:
            out = layer.output_shape(shapes)
            figures = (
                out,
                layer.params(shapes, out),
                layer.buffers(shapes, out),
                layer.macs(shapes, out),
                layer.ops(shapes, out),
            )
        except ShapeError as e:
            node_id = None
            if not self.light:
                base = layer.short
                node_id = f"{scope.prefix}{label or base + str(scope.counters.get(base, 0) + 1)}"
            err = NetspecError(
                f"at `{node_id}`: {e.message}" if node_id else e.message,
                span,
                hint=_channels_last_hint(self.input_shape, e.hint),
                notes=self.trace(inputs),
            )
            err.node = node_id
            raise err from None
        # A light build makes no node: the serialized arguments wait for a full one.
        args = None if self.light else self._args(layer)
        # The node's private part, shared by its nodes (see `Node.of`), and whether it
        # flattens a map.
        flattens = len(out) == 1 and any(len(s) > 1 for s in shapes)
        # ... and the serial number of the build that last used it (see Meter.fresh).
        return figures + (
            0 if layer.inplace else numel(out),
            args,
            {"_layer": layer},
            flattens,
            [0],
        )

    def _args(self, layer: Layer) -> dict[str, Any]:
        """A layer's arguments serialized for its nodes (once per layer in a spec)."""
        args = self.dumps.get(layer)
        if args is None:
            args = self.dumps[layer] = layer.model_dump(mode="json")
        return args

    def _check_scope(self, scope: Scope, span: Span | None) -> None:
        """A node id is a module path in PyTorch and a name in ONNX: no name may be both a
        layer and a scope (checked once per scope, on its first layer)."""
        # The prefixes not met before, innermost first: a prefix met before had its own
        # prefixes checked then (a deep recursion opens many scopes, each checked in one walk).
        fresh: list[str] = []
        prefix = scope.prefix[:-1]
        while prefix and prefix not in self.scopes:
            fresh.append(prefix)
            prefix = prefix[: max(prefix.rfind("."), 0)]
        for prefix in reversed(fresh):
            if prefix in self.ids:
                raise _layer_and_group(prefix, span)
            self.scopes.add(prefix)
        scope.checked = True

    def trace(self, inputs: list[Value]) -> list[str]:
        """How the spatial size got here: `32x32 (input) -> 14x14 (pool1) -> ...`."""
        if not inputs or len(inputs[0].shape) < 2:
            return []
        steps: list[str] = []
        last = None
        for node in self.nodes:
            if len(node.shape) >= 2 and node.shape[1:] != last:
                steps.append(f"{fmt_shape(node.shape[1:])} ({node.id})")
                last = node.shape[1:]
        if len(steps) > 12:
            steps = steps[:4] + ["..."] + steps[-7:]
        return ["spatial size so far: " + " -> ".join(steps)] if steps else []


def referenced_names(spec: Any) -> set[str]:
    """The node names a spec's layers refer to (`like=stem`, `like="layer1.conv2"`), so that
    the build keeps those nodes' outputs as it keeps a head's tap. Read once per parsed spec
    (`spec`, a ParsedSpec: its `module`), kept on it."""
    names: set[str] | None = getattr(spec, "_referenced", None)
    if names is None:
        args = {cls.refers for cls in KINDS.values() if cls.refers}
        names = set()
        for node in walk(spec.module.statements):
            if isinstance(node, ast.Arg) and node.name in args:
                if isinstance(node.value, ast.Name):
                    names.add(node.value.id)
                elif isinstance(node.value, ast.Str):
                    names.add(node.value.value)
        spec._referenced = names
    return names


class LongName(NetspecError):
    """A layer's dotted name past MAX_NAME characters (scopes nested too deep)."""


def _long_name(node_id: str, span: Span | None) -> NetspecError:
    return LongName(
        f"the layer's dotted name is {len(node_id):,} characters long, over netspec's "
        f"limit of {MAX_NAME}: {node_id[:60]}...",
        span,
        hint="use shorter names (`as`, block names) or nest fewer blocks",
    )


def _reserved(label: str, span: Span | None) -> NetspecError:
    return NetspecError(
        f"`{label}` is reserved (every PyTorch module has an attribute of that name)",
        span,
        hint="pick another name with `as`",
    )


def _layer_and_group(name: str, span: Span | None) -> NetspecError:
    return NetspecError(
        f"`{name}` names both a layer and a group", span, hint="rename one of them with `as`"
    )


def _used_twice(node_id: str, other: Node | None, span: Span | None) -> NetspecError:
    where = [f"first used at {other.span}"] if other is not None and other.span else []
    return NetspecError(
        f"the name `{node_id}` is used twice",
        span,
        notes=where,
        hint="give it another name with `as`",
    )


def _channels_last_hint(shape: tuple[int, ...], hint: str | None) -> str | None:
    """Add a word when the spec's input looks channels-last (`[32, 32, 3]`): the likely cause of
    a shape rule failing further on. netspec's shapes are channels-first, like PyTorch's."""
    if len(shape) == 3 and shape[2] in (1, 3, 4) and shape[0] > 4 and shape[1] > 4:
        h, w, c = shape
        note = (
            f"the input [{h}, {w}, {c}] looks channels-last (height, width, channels); netspec "
            f"takes channels first: `input [{c}, {h}, {w}]`"
        )
        return f"{hint}; {note}" if hint else note
    return hint
