"""Syntax tree -> IR. A `Spec` is a template (free parameters allowed); `Spec.instantiate`
binds them and expands repetitions, blocks and branches into a `Graph`, computing every
node's shape, parameters, MACs and memory on the way.

The stages, in the order the data flows through them:

- `spec.py`: statements and scopes (header, constants, blocks, free parameters, main chain);
- `bindings.py`: bindings and expressions (`--set` values, the global names, call arguments);
- this module (`Builder`): the walk over the main chain: the input, elements, repetition
  (`[...]*N for i`), calls to layers and blocks, light builds for design spaces;
- `expand.py`: expansion of blocks, branches, residuals and options, and the size limit;
- `naming.py`: scopes, counters and reserved names;
- `shapes.py`: shape and count propagation, each node from its layer class;
- `checks.py`: budgets and shape assertions.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from netspec.errors import NetspecError, Span, SpecErrors, did_you_mean
from netspec.frontend import ast
from netspec.frontend.parser import parse_file, parse_text
from netspec.ir.bindings import (
    DEFERRED,
    argument_error,
    call_args,
    coerce_binding,
    construct,
    global_env,
    setting_value,
)
from netspec.ir.checks import assertion_error, budget_checks
from netspec.ir.counter import UNCOUNTED, Counts, Recount, count_calls
from netspec.ir.estimate import SizeEstimate, names_of
from netspec.ir.expand import Expansion, OverCap
from netspec.ir.expr import Symbol, eval_int, free_names
from netspec.ir.graph import (
    DTYPE_BYTES,
    Graph,
    Head,
    InputSpec,
    Node,
    Scalar,
    make_totals,
)
from netspec.ir.limits import MAX_WORK
from netspec.ir.naming import RESERVED_NAMES, Scope, Value, switch_name
from netspec.ir.sections import train_check
from netspec.ir.shapes import referenced_names
from netspec.ir.spec import Domain, ParsedSpec, paused_gc
from netspec.layers import SPELLINGS, Layer, fmt_shape
from netspec.layers.conv import Conv
from netspec.layers.linear import Dense, Flatten
from netspec.layers.structure import Input

_MISSING = object()
_BUILDS = itertools.count(1)  # each build's serial number (see Builder.fresh)
_CALL_CACHE = 10_000  # layers a build keeps by call (a few per call of a normal spec)
_BATCH_NAMES = {"none", "n", "b", "batch", "batch_size", "bs"}  # `input [None, 3, 32, 32]`


class Spec(ParsedSpec):
    """A parsed spec (see `ParsedSpec`) that builds its instances."""

    def instantiate(
        self,
        bindings: Mapping[str, Scalar] | None = None,
        *,
        collect: bool = False,
        light: bool = False,
    ):
        """Bind the free parameters and build the graph.

        Returns the `Graph`; with `collect=True`, returns `(graph, errors)` so a caller can show
        the table even when a shape assertion or budget failed (graph is None on fatal errors).
        With `light=True` the graph has totals and budgets but no nodes: the same rules and
        checks, several times faster, for exploring design spaces.
        """
        counts: Counts | None = None
        for attempt in range(3):
            builder = Builder(self, dict(bindings or {}), light=light, counts=counts)
            try:
                with paused_gc():
                    graph = builder.build()
                break
            except Recount as r:  # a block's calls counted before differ from those made
                found = r.counts if r.counts is not None else self._counted(bindings)
                if attempt == 2 or isinstance(found, NetspecError):
                    e = found if isinstance(found, NetspecError) else self._count_error(r.changed)
                    if collect:
                        return None, [e]
                    raise SpecErrors([e]) from None
                counts = found
            except NetspecError as e:
                if collect:
                    return None, builder.errors + [e]
                raise SpecErrors(builder.errors + [e]) from None
        if collect:
            return graph, builder.errors
        if builder.errors:
            raise SpecErrors(builder.errors)
        return graph

    def _counted(self, bindings: Mapping[str, Scalar] | None) -> Counts | NetspecError:
        """The calls of each counted block, made by a light build whose totals are all
        UNCOUNTED (or the error that stopped that build)."""
        big = dict.fromkeys(self.count_spans, UNCOUNTED)
        try:
            with paused_gc():
                Builder(self, dict(bindings or {}), light=True, counts=big).build()
        except Recount as r:
            if r.counts is not None:
                return r.counts
        except NetspecError as e:
            return e
        return NetspecError(  # pragma: no cover - UNCOUNTED calls are far over the cap
            f"cannot count the calls of `{min(big)}`", self.count_spans.get(min(big))
        )

    def _count_error(self, name: str) -> NetspecError:
        """The calls of a counted block change with its own total: no total is right."""
        return NetspecError(
            f"the number of calls of `{name}` depends on `{name}.count` itself",
            self.count_spans.get(name),
            hint=f"`{name}.count` is the number of calls in the whole network: a call of "
            f"`{name}` made or not depending on it has no consistent total",
        )


def load_spec(path: str | Path) -> Spec:
    return Spec(parse_file(path))


def load_spec_text(text: str, path: str = "<spec>") -> Spec:
    return Spec(parse_text(text, path))


def compile_spec(path: str | Path, bindings: Mapping[str, Scalar] | None = None) -> Graph:
    """Parse, validate and build a spec file into its IR graph (raises SpecErrors)."""
    return load_spec(path).instantiate(bindings)


class Builder(Expansion):
    """Expands one instance of a spec into IR nodes."""

    def __init__(
        self,
        spec: ParsedSpec,
        bindings: dict[str, Scalar],
        light: bool = False,
        counts: Counts | None = None,
    ) -> None:
        self.spec = spec
        # The running counter: the totals `name.count` reads (None: counted from the text
        # first) and the calls made so far (netspec.ir.counter).
        self.counts = counts
        self.calls: dict[str, int] = {}
        self.bindings = {k: coerce_binding(v) for k, v in bindings.items()}
        self.light = light
        self.errors: list[NetspecError] = []
        self.nodes: list[Node] = []
        self.ids: dict[str, Node | None] = {}
        self.scopes: set[str] = set()
        # params, buffers, macs, ops, memory (the totals), then the work metered (see
        # netspec.ir.limits): nodes and other steps. `fresh` counts the distinct layers (nodes
        # whose layer and input shapes no earlier node had): the figures cache marks its
        # entries with the serial of the build that last used them.
        self.sums = [0, 0, 0, 0, 0, 0, 0]
        self.fresh = 0
        self.serial = next(_BUILDS)
        # Light mode: the figures cache entries each element being expanded used (a cached
        # element's are marked again when it is reused, so its distinct layers count as in a
        # full build).
        self._used: list[dict[int, list[int]]] = []
        self._open_repetitions = []
        self._depth = 0
        self._call_sizes = {}
        self.memo = spec.figure_cache
        self.layers = spec.layer_cache
        self.dumps: dict[Layer, dict[str, Any]] = {}
        # `defaults` by spelling: (class, presets) -> arguments. A default belongs to the
        # spelling written (MAXPOOL's never reach AVGPOOL); pure synonyms (FC, DENSE) share it.
        self.defaults: dict[tuple[type[Layer], tuple], dict[str, Any]] = {}
        self.context: dict[str, Any] = {}
        self.block_stack: list[str] = []
        self.classes: int | None = None
        # Side heads: the names they tap, and the output of each tapped layer or named group.
        self.tap_names = {h.at for h in spec.heads} | referenced_names(spec)
        self.taps: dict[str, Value] = {}
        self.tail = None
        self.flattened = None
        self.per_pixel = False
        # The names each call's arguments read, and the layer each call made (per input
        # channels and values of those names).
        self._call_names: dict[ast.Call, tuple[str, ...] | None] = {}
        self._call_layers: dict[tuple, Layer] = {}

    # ---- entry
    def build(self) -> Graph:
        """The whole instance, in the order of the spec's stages: the names (globals and block
        counts), the header (classes, dtype, defaults), the input, the main chain, the heads,
        then the graph with its budgets and train section checked."""
        spec = self.spec
        env = self._names()
        dtype = self._header(env)
        inp = self._input(env)
        self.input_shape = inp.shape
        out = self._main(inp, env)
        main_sums = list(self.sums)
        heads = [self._head(h, env) for h in spec.heads]
        for name in sorted(spec.count_spans):
            if self.calls.get(name, 0) != env[name + ".count"]:
                raise Recount({n: self.calls.get(n, 0) for n in spec.count_spans}, name)
        p, b, m, o, mem = self.sums[:5]
        totals = make_totals(p, b, m, o, mem, dtype)
        main_totals = None
        if heads:
            p, b, m, o, mem = main_sums[:5]
            main_totals = make_totals(p, b, m, o, mem, dtype)
        graph = construct(
            Graph,
            dict(
                name=spec.name,
                description=spec.description,
                source=spec.path,
                source_hash=spec.source_hash,
                input=InputSpec(shape=inp.shape, vocab=self.context.get("vocab")),
                classes=self.classes,
                per_pixel=self.per_pixel,
                dtype=dtype,
                bindings={k: v for k, v in self.bindings.items()},
                nodes=self.nodes,
                output=out.node,
                budgets=[],
                train={} if self.light else self._train(env),
                totals=totals,
                heads=heads,
                main_totals=main_totals,
            ),
        )
        graph.budgets = budget_checks(self.spec.budgets, graph, env, self.errors)
        if self.spec.train is not None and not self.light:
            graph.keep_train_spans({s.name: s.name_span for s in self.spec.train.settings})
            self._check_train(graph)
        return graph

    def _names(self) -> dict[str, Any]:
        """The global names: bound free parameters, constants, the blocks' call counts (read
        as `name.count`); the size estimate reads them."""
        spec = self.spec
        env = global_env(spec, self.bindings)
        self.globals = env
        if spec.count_spans:
            counts = self.counts if self.counts is not None else count_calls(spec, env)
            env.update({name + ".count": n for name, n in counts.items()})
        self.estimate = SizeEstimate(spec.blocks, env, spec.primary_names)
        return env

    def _header(self, env: dict[str, Any]) -> str:
        """The class count, the dtype (returned) and the layer defaults."""
        spec = self.spec
        self.classes = eval_int(spec.classes.value, env, "classes", 1) if spec.classes else None
        if isinstance(env.get("classes"), int) and "classes" in self.bindings:
            self.classes = env["classes"]  # `--set classes=N` replaces the declared count
        self.per_pixel = spec.classes is not None and spec.classes.per_pixel
        if env.get("classes") is DEFERRED:
            env["classes"] = self.classes
        dtype = spec.dtype.dtype.lower() if spec.dtype else "fp32"
        if dtype not in DTYPE_BYTES:
            raise NetspecError(
                f"unknown dtype `{dtype}`",
                spec.dtype.span if spec.dtype else None,
                hint=did_you_mean(dtype, DTYPE_BYTES) or "one of " + ", ".join(DTYPE_BYTES),
            )
        self._read_defaults(env)
        return dtype

    def _main(self, inp: Value, env: dict[str, Any]) -> Value:
        """The main chain from the input (a leading `INPUT` is the input itself), its size
        bounded before it is expanded, and its output checked against the classes."""
        chain = self.spec.chain
        assert chain is not None  # Spec refuses a spec without its main chain
        elements = chain.elements
        start = 0
        first = elements[0] if elements else None
        if (
            first is not None
            and isinstance(first.primary, ast.Call)
            and first.primary.name.upper() == "INPUT"
        ):
            if first.primary.args or first.repeat or first.optional or first.label:
                raise NetspecError(
                    "INPUT takes no arguments; declare the input with `input [C, H, W]`", first.span
                )
            start = 1
            if first.assertion:
                self._assert(first, inp, env)
        self.final_softmax = elements[-1] if elements and _is_softmax(elements[-1]) else None
        self._bound_main(elements[start:], env)
        scope = Scope("")
        out = inp
        for el in elements[start:]:
            out = self.element(el, out, env, scope)
        if self.classes is not None and self.spec.input is not None:
            self._check_output(out, elements[-1])
        return out

    def _head(self, head: ast.HeadDecl, env: dict[str, Any]) -> Head:
        """Build a side head: its chain from the tapped output, in a scope named after it."""
        tap = self.taps.get(head.at)
        if tap is None:
            raise NetspecError(
                f"head `{head.name}` taps `{head.at}`, which names no layer or group of the main chain",
                head.at_span,
                hint=did_you_mean(head.at, [k for k in self.ids if k] + list(self.taps))
                or "name the layer with `as`, e.g. `inception(...) as inception4a`",
            )
        if not self.light and (
            head.name in self.ids or head.name in self.scopes or head.name in self.taps
        ):
            raise NetspecError(
                f"head `{head.name}` has the name of a layer or group of the main chain",
                head.name_span,
                hint="node names must be unique; call the head e.g. `aux1`",
            )
        if head.name in RESERVED_NAMES:
            raise NetspecError(
                f"`{head.name}` is reserved (every PyTorch module has an attribute of that name)",
                head.name_span,
                hint="pick another head name",
            )
        out = self.chain(head.chain, tap, env, Scope(head.name + "."))
        if out.node == tap.node:
            raise NetspecError(f"head `{head.name}` has no layers", head.span)
        return Head(name=head.name, at=tap.node, output=out.node, span=head.span)

    def _check_output(self, out: Value, last: ast.Element) -> None:
        """The output must be the declared classes: `[classes]` scores per example."""
        classes = self.classes
        if self.per_pixel:
            err = self._dense_error(out, last.span)
            if err is not None:
                self.errors.append(err)
            return
        if out.shape == (classes,):
            return
        if len(out.shape) == 1:
            self.errors.append(
                NetspecError(
                    f"the network outputs [{fmt_shape(out.shape)}] but the spec declares {classes} classes",
                    last.span,
                    hint=f"end with FC({classes}) -> SOFTMAX, or declare `classes {out.shape[0]}`",
                )
            )
            return
        self.errors.append(
            NetspecError(
                f"the network outputs a map [{fmt_shape(out.shape)}], not the {classes} classes the spec declares",
                last.span,
                hint=f"for one label per example end with GAP -> FC({classes}) -> SOFTMAX",
            )
        )

    def _dense_error(self, out: Value, span: Span | None) -> NetspecError | None:
        """A per-pixel output must be a map whose channels are the classes."""
        classes = self.classes
        if len(out.shape) == 1:
            if self.flattened is not None:
                where, at, flat = self.flattened
                what = f"`{where}` flattens the map to [{fmt_shape(flat)}]"
            else:
                at, what = span, f"the output [{fmt_shape(out.shape)}] has no pixels"
            return NetspecError(
                f"the spec declares {classes} classes per pixel, but {what}",
                at,
                hint="a dense output keeps its map: end with a 1x1 conv to the classes, "
                f"e.g. CONV({classes}, 1) -> SOFTMAX (no FLATTEN, FC or global pool)",
            )
        if out.shape[0] != classes:
            _, node_id, at = self.tail or (None, None, span)
            return NetspecError(
                f"the per-pixel output has {out.shape[0]} maps [{fmt_shape(out.shape)}] but the "
                f"spec declares {classes} classes",
                at,
                hint=f"end with CONV({classes}, 1) -> SOFTMAX, or declare `classes {out.shape[0]} per pixel`",
            )
        return None

    def _read_defaults(self, env: dict[str, Any]) -> None:
        for call in self.spec.defaults:
            entry = SPELLINGS.get(call.name.upper())
            if entry is None:
                raise NetspecError(
                    f"unknown layer `{call.name}` in defaults",
                    call.name_span,
                    hint=did_you_mean(call.name.upper(), SPELLINGS),
                )
            cls, presets = entry
            args = call_args(cls, call, env)
            merged = self.defaults.setdefault(_spelling_key(cls, presets), {})
            merged.update(args)
            self._validate(cls, {**presets, **merged}, call, partial=True)

    def _input(self, env: dict[str, Any]) -> Value:
        decl = self.spec.input
        assert decl is not None  # Spec refuses a spec without its input
        if decl.shape is not None:
            first = decl.shape[0]
            if (
                isinstance(first, ast.Name)
                and first.id not in env
                and (len(decl.shape) == 4 or first.id.lower() in _BATCH_NAMES)
            ):
                rest = ", ".join(self.spec.text_of(e.span) for e in decl.shape[1:])
                raise NetspecError(
                    f"`{first.id}` looks like a batch dimension; the input is one example",
                    first.span,
                    hint=f"write the input without the batch: `input [{rest}]`",
                )
            dims = tuple(eval_int(e, env, "an input dimension", 1) for e in decl.shape)
            if len(dims) > 3:
                raise NetspecError(
                    f"input [{', '.join(map(str, dims))}] has {len(dims)} dims; netspec takes [C, H, W], [C, L] or [N]",
                    decl.span,
                )
            layer = self.layers.get((Input, dims))
            if layer is None:
                layer = self.layers[(Input, dims)] = Input(shape=dims)
        else:
            kw = {}
            for arg in decl.tokens or ():
                if arg.name not in ("length", "vocab"):
                    raise NetspecError(
                        f"tokens() takes length and vocab; received `{arg.name or 'a positional value'}`",
                        arg.span,
                        hint=did_you_mean(arg.name or "", ["length", "vocab"]),
                    )
                kw[arg.name] = eval_int(arg.value, env, f"tokens {arg.name}", 1)
            for need in ("length", "vocab"):
                if need not in kw:
                    raise NetspecError(
                        f"tokens() needs `{need}`",
                        decl.span,
                        hint="e.g. `input tokens(length=21, vocab=10000)`",
                    )
            layer = Input(shape=(kw["length"],), vocab=kw["vocab"])
            self.context["vocab"] = kw["vocab"]
        return self.add_node(layer, [], decl.span, Scope(""), label="input")

    # ---- the chain
    def chain(self, ch: ast.Chain, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        self._enter(ch.span)
        try:
            for el in ch.elements:
                cur = self.element(el, cur, env, scope)
            return cur
        finally:
            self._depth -= 1

    def element(self, el: ast.Element, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        if not self.light or self.tap_names:  # a cached element would hide the layers it taps
            return self._element(el, cur, env, scope)
        # Light mode: an element's effect (output shape, figures, soft errors) depends only on
        # its input shape and the values of the names it uses, so members of a family share it.
        names = self.spec.element_names.get(id(el))
        if names is None:
            names = tuple(sorted(self._names_used(el, set())))
            self.spec.element_names[id(el)] = names
        key = (id(el), cur.shape, self.classes, *(env.get(n, _MISSING) for n in names))
        counted = sorted(self.spec.counted)
        if counted:  # the counters go on from where they are: part of what an element does
            key += tuple(self.calls.get(b, 0) for b in counted)
        hit = self.spec.element_cache.get(key)
        if hit is not None:
            if isinstance(hit, NetspecError):
                raise hit
            shape, deltas, errors, used, calls = hit
            sums = self.sums
            for i, d in enumerate(deltas):
                sums[i] += d
            for b, d in zip(counted, calls, strict=True):
                self.calls[b] = self.calls.get(b, 0) + d
            serial = self.serial
            for mark in used:  # its distinct layers, as a full build would count them
                if mark[0] != serial:
                    mark[0] = serial
                    self.fresh += 1
            if self._used:
                self._used[-1].update((id(m), m) for m in used)
            if self.work > MAX_WORK:
                self._over_work(el.span)
            self.errors.extend(errors)
            return Value("", shape)
        before = list(self.sums)
        calls_before = [self.calls.get(b, 0) for b in counted]
        nerr = len(self.errors)
        self._used.append({})
        try:
            out = self._element(el, cur, env, scope)
        except NetspecError as e:
            if not isinstance(e, OverCap):  # that one depends on what came before
                self.spec.element_cache[key] = e
            raise
        finally:
            used = self._used.pop()
            if self._used:
                self._used[-1].update(used)
        deltas = tuple(a - b for a, b in zip(self.sums, before, strict=True))
        errors = tuple(self.errors[nerr:])
        calls = tuple(self.calls.get(b, 0) - n for b, n in zip(counted, calls_before, strict=True))
        self.spec.element_cache[key] = (out.shape, deltas, errors, tuple(used.values()), calls)
        return out

    def _names_used(self, node: Any, seen_blocks: set[str]) -> set[str]:
        """Every name an element may read: its own expressions and those of blocks it calls."""
        names = free_names(node)
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, ast.Element):
                stack.append(item.primary)
                if item.optional and item.condition is None:
                    names.add(switch_name(item) or "")
            elif isinstance(item, ast.Group):
                stack.extend(item.chain.elements)
            elif isinstance(item, ast.Branches):
                for ch in item.chains:
                    stack.extend(ch.elements)
            elif isinstance(item, ast.Call):
                block = self.spec.blocks.get(item.name)
                if block is not None and block.name not in seen_blocks:
                    seen_blocks.add(block.name)
                    inner = self._names_used(block.body, seen_blocks)
                    for p in block.params:
                        if p.default is not None:
                            inner |= free_names(p.default)
                    names |= inner - {p.name for p in block.params}
        return names

    def _element(self, el: ast.Element, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        if el.optional and not self._switch_on(el, env):
            return cur
        p = el.primary
        if isinstance(p, ast.Call) and p.name.upper() == "INPUT":
            raise NetspecError("INPUT can only start the main chain", p.name_span)
        if el.repeat is not None:
            count = eval_int(el.repeat, env, "a repetition count")
            self._check_size(el, count, env)
            inner = scope.child(el.label) if el.label else scope
            self._open_repetitions.append(el)
            # A loop whose body reads its index evaluates it afresh each time round: a step of
            # work each (see netspec.ir.limits).
            indexed = el.index_var is not None and el.index_var in names_of(
                self.spec.primary_names, p
            )
            try:
                for i in range(count):
                    body_env = {**env, el.index_var: i} if el.index_var else env
                    if indexed:
                        self._add_step(el.span)
                    cur = self.primary(p, cur, body_env, inner, None)
            finally:
                self._open_repetitions.pop()
        elif el.label and isinstance(p, ast.Group):
            cur = self.primary(p, cur, env, scope.child(el.label), None)
        else:
            cur = self.primary(p, cur, env, scope, el.label)
        if el.assertion:
            self._assert(el, cur, env)
        if el.label and self.tap_names:
            self.taps[scope.prefix + el.label] = cur
        return cur

    def primary(
        self, p: ast.Primary, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        try:
            if isinstance(p, ast.Call):
                return self.call(p, cur, env, scope, label)
            if isinstance(p, ast.Group):
                return self.chain(p.chain, cur, env, scope)
            return self.branches(p, cur, env, scope, label)
        except NetspecError as e:
            if e.indices is None and not self.light:  # light mode shares errors among members
                e.indices = {v: env[v] for v in self.spec.index_vars if v in env}
            raise

    def call(
        self, call: ast.Call, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        block = self.spec.blocks.get(call.name)
        if block is not None:
            return self.block(block, call, cur, env, scope, label)
        entry = SPELLINGS.get(call.name.upper())
        if entry is None:
            choices = list(SPELLINGS) + list(self.spec.blocks)
            hint = did_you_mean(call.name, choices)
            raise NetspecError(
                f"unknown layer `{call.name}`",
                call.name_span,
                hint=hint or "see `netspec layers` for the layer kinds",
            )
        cls, presets = entry
        # A call makes the same layer each time it runs on as many input channels with the
        # same values of the names its arguments read (`FC(64)`, `RELU`, `FC(n)` in a block):
        # a repetition resolves it once per distinct values, not once per layer.
        if call not in self._call_names:
            read = tuple(sorted(free_names(call.args)))
            # An index variable takes a new value each time round: such a call is kept by its
            # arguments' values instead.
            indexed = any(n in self.spec.index_vars for n in read)
            self._call_names[call] = None if indexed else read
        names = self._call_names[call]
        key: tuple = (call, cur.shape[0] if cls.from_input_channels else None)
        given = None
        if names is not None:
            key += tuple(_value_key(env.get(n, _MISSING)) for n in names)
        else:  # it reads a loop index: by its arguments' values (`FC(64 + 0 * i)`: one layer)
            given = call_args(cls, call, env)
            key += tuple(_value_key(v) for v in given.values())
        try:
            layer = self._call_layers.get(key)
            keep = True
        except TypeError:  # a value that does not hash: resolved each time
            layer, keep = None, False
        if layer is None:
            layer = self._resolve(cls, presets, call, cur, env, given)
            if keep and len(self._call_layers) < _CALL_CACHE:
                self._call_layers[key] = layer
        from_tokens = cur.node == "input" and "vocab" in self.context
        if from_tokens != cls.takes_tokens:
            raise NetspecError(
                f"{call.name.upper()} cannot take token ids; they go through EMBEDDING first"
                if from_tokens
                else "EMBEDDING takes the token input (`input tokens(length=..., vocab=...)`) directly",
                call.span,
                hint="INPUT -> EMBEDDING(128) -> CONV1D(...)" if from_tokens else None,
            )
        if cls.flattens_input and len(cur.shape) > 1:
            cur = self.add_node(Flatten(), [cur], call.span, scope, implicit=True)
        if cls.probabilities:
            self._check_not_probabilities(cur, call)
            if self.final_softmax is not None and self.final_softmax.primary is call:
                cur = self._classifier(cur, call, scope)
        if cls.refers:
            layer = self.refer(layer, call)
        return self.add_node(layer, [cur], call.span, scope, label=label)

    def _check_not_probabilities(self, cur: Value, call: ast.Call) -> None:
        """`SOFTMAX -> SOFTMAX`: probabilities normalised again are wrong, never meant."""
        last = self.nodes[-1] if self.nodes else None
        if last is not None and last.id == cur.node and last.layer.probabilities:
            raise NetspecError(
                f"{call.name.upper()} takes the output of `{last.id}`, which is already "
                "probabilities",
                call.span,
                hint="remove one of them: a softmax of probabilities flattens them toward uniform",
            )

    def _resolve(
        self,
        cls: type[Layer],
        presets: Mapping[str, Any],
        call: ast.Call,
        cur: Value,
        env: Mapping[str, Any],
        given: dict[str, Any] | None = None,
    ) -> Layer:
        """The layer a call makes: its arguments (`given`: evaluated already) over the
        spelling's defaults, validated."""
        args = {
            **presets,
            **self.defaults.get(_spelling_key(cls, presets), {}),
            **(given if given is not None else call_args(cls, call, env)),
        }
        for arg, key in cls.contextual.items():
            if arg not in args and key in self.context:
                args[arg] = self.context[key]
        for arg in cls.from_input_channels:
            if arg not in args:
                args[arg] = cur.shape[0]
        layer = self._validate(cls, args, call)
        if cls.takes_tokens and "vocab" in self.context:
            self._check_vocab(layer, call)
        return layer

    def _check_vocab(self, layer: Layer, call: ast.Call) -> None:
        """An embedding smaller than the input's vocabulary would index past its table."""
        vocab = getattr(layer, "vocab", None)
        if vocab is None or vocab >= self.context["vocab"]:
            return
        span = call.span
        for i, arg in enumerate(call.args):
            if arg.name == "vocab" or (arg.name is None and i == 1):
                span = arg.value.span
        raise NetspecError(
            f"{call.name.upper()} has a vocabulary of {vocab}, smaller than the input's {self.context['vocab']}",
            span,
            hint=f"token ids go up to {self.context['vocab'] - 1}: drop the vocabulary "
            "argument (it defaults to the input's) or raise it",
        )

    def _classifier(self, cur: Value, call: ast.Call, scope: Scope) -> Value:
        """The final SOFTMAX needs [classes] scores: add a flatten and an FC where missing,
        but never under a classifier the spec wrote itself (an FC, a 1x1 conv to `classes`
        maps): a mismatch there is an error showing both numbers."""
        classes = self.classes
        if self.per_pixel:  # a dense output: no flatten, no FC; the map must be the classes
            err = self._dense_error(cur, call.span)
            if err is not None:
                raise err
            return cur
        if classes is None or cur.shape == (classes,):
            return cur
        if self.tail is not None:
            layer, node_id, span = self.tail
            if isinstance(layer, Dense):
                raise NetspecError(
                    f"the classifier `{node_id}` outputs {layer.units} scores but the spec declares {classes} classes",
                    span,
                    hint=f"write FC({classes}) (or FC(classes)), or declare `classes {layer.units}`",
                )
            if (
                isinstance(layer, Conv)
                and len(cur.shape) > 1
                and cur.shape[0] == classes
                and set(_as_tuple(layer.kernel)) == {1}
            ):
                raise NetspecError(
                    f"the network ends in a 1x1 conv to {classes} maps [{fmt_shape(cur.shape)}]: "
                    "scores per pixel, not one label per example",
                    span,
                    hint=f"add GAP before SOFTMAX for one label per example; "
                    f"for a per-pixel output declare `classes {classes} per pixel`",
                )
        if len(cur.shape) > 1:
            cur = self.add_node(Flatten(), [cur], call.span, scope, implicit=True)
        if cur.shape != (classes,):
            cur = self.add_node(Dense(units=classes), [cur], call.span, scope, implicit=True)
        return cur

    def _validate(
        self, cls: type[Layer], args: dict[str, Any], call: ast.Call, partial: bool = False
    ) -> Layer:
        key = (cls, tuple(sorted(args.items(), key=lambda kv: kv[0])))
        layer = self.layers.get(key)
        if layer is not None:
            return layer
        clean = {k: (str(v) if isinstance(v, Symbol) else v) for k, v in args.items()}
        try:
            layer = cls.model_validate(clean)
        except ValidationError as e:
            err = e.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else ""
            if partial and err["type"] == "missing":
                return None  # type: ignore[return-value]
            raise argument_error(cls, call, name, args.get(name), err, self.globals) from None
        self.layers[key] = layer
        return layer

    def _assert(self, el: ast.Element, cur: Value, env: Mapping[str, Any]) -> None:
        err = assertion_error(el, cur, env, self.ids)
        if err is not None:
            self.errors.append(err)

    def _check_train(self, graph: Graph) -> None:
        """`check` validates the train section as `train` would (no torch needed)."""
        try:
            train_check()(graph.train, graph.train_spans)
        except NetspecError as e:
            if e.span is None and self.spec.train is not None:
                e.span = self.spec.train.span
            self.errors.append(e)

    def _train(self, env: Mapping[str, Any]) -> dict[str, Any]:
        if self.spec.train is None:
            return {}
        return {s.name: setting_value(s.value, env) for s in self.spec.train.settings}


def _value_key(value: Any) -> Any:
    """A name's value as a cache key: by type too (1, 1.0 and True are equal in Python, not as
    arguments), a float by its text (0.0 and -0.0 are equal too)."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    return (kind, repr(value) if kind is float else value)


def _as_tuple(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


def _spelling_key(cls: type[Layer], presets: Mapping[str, Any]) -> tuple[type[Layer], tuple]:
    return (cls, tuple(sorted(presets.items())))


def _is_softmax(el: ast.Element) -> bool:
    return (
        isinstance(el.primary, ast.Call)
        and (entry := SPELLINGS.get(el.primary.name.upper())) is not None
        and entry[0].probabilities
        and el.repeat is None
    )


__all__ = ["Spec", "Domain", "Builder", "load_spec", "load_spec_text", "compile_spec", "MAX_WORK"]
