"""The walk over one instance of a spec: the names, the header, the input, the main chain
(elements, repetitions `[...]*N for i`, calls to layers and blocks), the side heads, then the
graph with its budgets and train section checked.

The `Builder` makes one object per stage, each owning its state, and passes them what they
read: the `Meter` (totals and work, netspec.ir.meter), the `Resolver` (calls to layers,
netspec.ir.resolve), the `Propagation` (nodes, netspec.ir.shapes) and, once the global names
are known, the `Expansion` (blocks, branches, residuals, netspec.ir.expand); functions of
those do the rest (netspec.ir.header: the input and train section; netspec.ir.outputs: the
classes; netspec.ir.family: a light build's element cache). The walk itself keeps only what
it decides: the bindings, the class count, the final softmax, the soft errors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir import family, header, outputs
from netspec.ir.bindings import DEFERRED, coerce_binding, construct, global_env
from netspec.ir.checks import assertion_error, budget_checks
from netspec.ir.counter import Counts, Recount, count_calls
from netspec.ir.estimate import SizeEstimate, names_of
from netspec.ir.expand import Expansion, switch_on
from netspec.ir.expr import eval_int
from netspec.ir.graph import DTYPE_BYTES, Graph, Head, InputSpec, Scalar, make_totals
from netspec.ir.meter import BUILDS, Meter
from netspec.ir.naming import RESERVED_NAMES, Scope, Value
from netspec.ir.resolve import CALL_CACHE, MISSING, Resolver
from netspec.ir.shapes import Propagation, referenced_names
from netspec.ir.spec import ParsedSpec
from netspec.layers import SPELLINGS
from netspec.layers.linear import Flatten


class Builder:
    """Expands one instance of a spec into IR nodes (one object per build)."""

    def __init__(
        self,
        spec: ParsedSpec,
        bindings: dict[str, Scalar],
        light: bool = False,
        counts: Counts | None = None,
        call_cache: int = CALL_CACHE,
    ) -> None:
        self.spec = spec
        # The totals `name.count` reads (None: counted from the text first; see
        # netspec.ir.counter).
        self.counts = counts
        self.bindings = {k: coerce_binding(v) for k, v in bindings.items()}
        self.light = light
        self.errors: list[NetspecError] = []
        self.classes: int | None = None
        self.per_pixel = False
        self.final_softmax: ast.Element | None = None
        self.meter = Meter()
        self.resolver = Resolver(spec.layer_cache, spec.index_vars, call_cache)
        # Side heads and references: the names they tap, whose outputs the nodes stage keeps.
        tap_names = {h.at for h in spec.heads} | referenced_names(spec)
        self.nodes = Propagation(self.meter, light, spec.figure_cache, {}, tap_names)
        self.expansion: Expansion | None = None  # made once the global names are known
        self.calls: dict[str, int] = {}
        self.counted = sorted(spec.counted)  # the blocks whose calls the spec counts

    # The meter's figures, as tests and tools read them off a builder.
    @property
    def sums(self) -> list[int]:
        return self.meter.sums

    @property
    def fresh(self) -> int:
        return self.meter.fresh

    @property
    def work(self) -> int:
        return self.meter.work

    def check_output(self, out: Value, last: ast.Element) -> None:
        """The output against the classes: a soft error where it is not them."""
        err = outputs.output_error(self.nodes, out, last, self.classes, self.per_pixel)
        if err is not None:
            self.errors.append(err)

    # ---- entry
    def build(self) -> Graph:
        """The whole instance, in the order of the spec's stages: the names (globals and block
        counts), the header (classes, dtype, defaults), the input, the main chain, the heads,
        then the graph with its budgets and train section checked."""
        spec = self.spec
        env = self.names()
        dtype = self.header(env)
        inp = self.input(env)
        out = self._main(inp, env)
        main_sums = list(self.meter.sums)
        heads = [self._head(h, env) for h in spec.heads]
        calls = self.calls
        for name in sorted(spec.count_spans):
            if calls.get(name, 0) != env[name + ".count"]:
                raise Recount({n: calls.get(n, 0) for n in spec.count_spans}, name)
        p, b, m, o, mem = self.meter.sums[:5]
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
                input=InputSpec(shape=inp.shape, vocab=self.resolver.context.get("vocab")),
                classes=self.classes,
                per_pixel=self.per_pixel,
                dtype=dtype,
                bindings={k: v for k, v in self.bindings.items()},
                nodes=self.nodes.nodes,
                output=out.node,
                budgets=[],
                train={} if self.light else header.train_settings(spec, env),
                totals=totals,
                heads=heads,
                main_totals=main_totals,
            ),
        )
        graph.budgets = budget_checks(spec.budgets, graph, env, self.errors)
        if spec.train is not None and not self.light:
            graph.keep_train_spans({s.name: s.name_span for s in spec.train.settings})
            err = header.train_error(spec, graph)
            if err is not None:
                self.errors.append(err)
        return graph

    @property
    def _expansion(self) -> Expansion:
        assert self.expansion is not None  # made by `_names`, first thing in `build`
        return self.expansion

    def names(self, env: dict[str, Any] | None = None) -> dict[str, Any]:
        """The global names: bound free parameters, constants, the blocks' call counts (read
        as `name.count`); the size estimate reads them, the expansion stage starts from them.
        `env`: the global names of the bindings, computed already (`global_env`)."""
        spec = self.spec
        if env is None:
            env = global_env(spec, self.bindings)
        self.resolver.globals = env
        if spec.count_spans:
            counts = self.counts if self.counts is not None else count_calls(spec, env)
            env.update({name + ".count": n for name, n in counts.items()})
        estimate = SizeEstimate(spec.blocks, env, spec.primary_names)
        self.expansion = Expansion(spec, env, estimate, self.meter, self.nodes)
        # The calls of each counted block, which the expansion counts: the walk checks them
        # against the totals and a light build's element cache replays them.
        self.calls = self.expansion.calls
        return env

    def header(self, env: dict[str, Any]) -> str:
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
        self.resolver.read_defaults(spec.defaults, env)
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
        self.final_softmax = elements[-1] if elements and is_softmax(elements[-1]) else None
        self._expansion.bound_main(elements[start:], env)
        scope = Scope("")
        out = inp
        for el in elements[start:]:
            out = self.element(el, out, env, scope)
        if self.classes is not None and self.spec.input is not None:
            self.check_output(out, elements[-1])
        return out

    def _head(self, head: ast.HeadDecl, env: dict[str, Any]) -> Head:
        """Build a side head: its chain from the tapped output, in a scope named after it."""
        nodes = self.nodes
        tap = nodes.taps.get(head.at)
        if tap is None:
            raise NetspecError(
                f"head `{head.name}` taps `{head.at}`, which names no layer or group of the main chain",
                head.at_span,
                hint=did_you_mean(head.at, [k for k in nodes.ids if k] + list(nodes.taps))
                or "name the layer with `as`, e.g. `inception(...) as inception4a`",
            )
        if not self.light and (
            head.name in nodes.ids or head.name in nodes.scopes or head.name in nodes.taps
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

    def input(self, env: dict[str, Any]) -> Value:
        """The input node: a shape `[C, H, W]` (never with a batch dimension) or token ids."""
        decl = self.spec.input
        assert decl is not None  # Spec refuses a spec without its input
        layer = header.input_layer(self.spec, decl, env, self.resolver.layers)
        if layer.vocab is not None:  # token ids: the embedding's vocabulary by default
            self.resolver.context["vocab"] = layer.vocab
        out = self.nodes.add_node(layer, [], decl.span, Scope(""), label="input")
        self.nodes.input_shape = out.shape
        return out

    def carry_on(self, sums: tuple[int, ...], marks: Iterable[list[int]]) -> None:
        """Go on from where a build of this member had got to, the elements before replayed
        from the family's cache (netspec.explore_fast): its sums and the distinct layers met
        so far (the figures cache entries, which the cap on work counts), no soft errors."""
        meter = self.meter
        meter.serial = self.nodes.serial = next(BUILDS)  # earlier marks count again
        meter.sums[:] = sums
        meter.fresh = 0
        for mark in marks:
            mark[0] = meter.serial
            meter.fresh += 1
        del self.errors[:]

    # ---- the chain
    def chain(self, ch: ast.Chain, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        meter = self.meter
        meter.enter(ch.span)
        try:
            for el in ch.elements:
                cur = self.element(el, cur, env, scope)
            return cur
        finally:
            meter.leave()

    def element(self, el: ast.Element, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        """An element; in a light build that shares (`_sharing`), replayed from the family's
        cache when a member met it with the same values (netspec.ir.family). Inside a chain,
        only a repetition is kept on its own: the time round it belongs to is kept whole
        (`_repeat`), and an entry per layer would cost more than it saves."""
        if not self._sharing() or (el.repeat is None and self.meter.depth):
            return self._element(el, cur, env, scope)
        return self._shared(el, cur, env, el.span, lambda: self._element(el, cur, env, scope))

    def _sharing(self) -> bool:
        """Whether this build shares elements with a family's other members: a light build,
        without taps (a cached element would hide the layers it taps) or token ids (EMBEDDING
        reads the input node itself)."""
        return self.light and not self.nodes.tap_names and "vocab" not in self.resolver.context

    def _shared(
        self,
        node: ast.Element | ast.Primary,
        cur: Value,
        env: Mapping[str, Any],
        span: Any,
        expand: Callable[[], Value],
    ) -> Value:
        """An element or a time round a repetition (`node`), replayed from the family's cache
        or expanded and kept there. What comes out is nameless (`Value("", shape)`), whether
        built now or replayed, so that what a member reports never depends on which member
        came first."""
        spec, nodes = self.spec, self.nodes
        key = family.cache_key(
            spec,
            node,
            cur.shape,
            self.classes,
            tuple(env.get(n, MISSING) for n in family.element_names(spec, node)),
            tuple(self.calls.get(b, 0) for b in self.counted),
            nodes.tail,
            nodes.last,
            node is self.final_softmax,
        )
        hit = spec.element_cache.get(key)
        if hit is None:
            return Value("", family.record(self, expand, key).shape)
        return family.replay(self, hit, span)

    def _element(self, el: ast.Element, cur: Value, env: Mapping[str, Any], scope: Scope) -> Value:
        if el.optional and not switch_on(el, env):
            return cur
        p = el.primary
        if isinstance(p, ast.Call) and p.name.upper() == "INPUT":
            raise NetspecError("INPUT can only start the main chain", p.name_span)
        if el.repeat is not None:
            cur = self._repeat(el, p, cur, env, scope)
        elif el.label and isinstance(p, ast.Group):
            cur = self.primary(p, cur, env, scope.child(el.label), None)
        else:
            cur = self.primary(p, cur, env, scope, el.label)
        if el.assertion:
            self._assert(el, cur, env)
        if el.label and self.nodes.tap_names:
            self.nodes.taps[scope.prefix + el.label] = cur
        return cur

    def _repeat(
        self, el: ast.Element, p: ast.Primary, cur: Value, env: Mapping[str, Any], scope: Scope
    ) -> Value:
        """`[...]*N for i`: its size checked against the cap, then its body N times."""
        assert el.repeat is not None
        count = eval_int(el.repeat, env, "a repetition count")
        self._expansion.check_size(el, count, env)
        inner = scope.child(el.label) if el.label else scope
        meter = self.meter
        meter.open_repetitions.append(el)
        # A loop whose body reads its index evaluates it afresh each time round: a step of
        # work each (see netspec.ir.limits).
        indexed = el.index_var is not None and el.index_var in names_of(self.spec.primary_names, p)
        # A light build shares each time round between members as it shares elements: a
        # body's effect depends on its input shape and the values it reads (its index among
        # them), so the member with M stages replays the M - 1 that a smaller one built.
        shared = self._sharing()
        try:
            for i in range(count):
                body_env = {**env, el.index_var: i} if el.index_var else env
                if indexed:
                    meter.add_step(el.span)
                if shared:
                    cur = self._shared(
                        p,
                        cur,
                        body_env,
                        p.span,
                        partial(self.primary, p, cur, body_env, inner, None),
                    )
                else:
                    cur = self.primary(p, cur, body_env, inner, None)
        finally:
            meter.open_repetitions.pop()
        return cur

    def primary(
        self, p: ast.Primary, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        try:
            if isinstance(p, ast.Call):
                return self.call(p, cur, env, scope, label)
            if isinstance(p, ast.Group):
                return self.chain(p.chain, cur, env, scope)
            return self._expansion.branches(p, cur, env, scope, label, self.chain)
        except NetspecError as e:
            if e.indices is None and not self.light:  # light mode shares errors among members
                e.indices = {v: env[v] for v in self.spec.index_vars if v in env}
            raise

    def call(
        self, call: ast.Call, cur: Value, env: Mapping[str, Any], scope: Scope, label: str | None
    ) -> Value:
        """A call of a block (expanded) or a layer (resolved, then its node added, with an
        implicit flatten or classifier where its class asks for one)."""
        block = self.spec.blocks.get(call.name)
        if block is not None:
            return self._expansion.block(block, call, cur, env, scope, label, self.chain)
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
        layer = self.resolver.layer_of(cls, presets, call, cur, env)
        nodes = self.nodes
        from_tokens = cur.node == "input" and "vocab" in self.resolver.context
        if from_tokens != cls.takes_tokens:
            raise NetspecError(
                f"{call.name.upper()} cannot take token ids; they go through EMBEDDING first"
                if from_tokens
                else "EMBEDDING takes the token input (`input tokens(length=..., vocab=...)`) directly",
                call.span,
                hint="INPUT -> EMBEDDING(128) -> CONV1D(...)" if from_tokens else None,
            )
        if cls.flattens_input and len(cur.shape) > 1:
            cur = nodes.add_node(Flatten(), [cur], call.span, scope, implicit=True)
        if cls.probabilities:
            outputs.check_not_probabilities(nodes, cur, call)
            if self.final_softmax is not None and self.final_softmax.primary is call:
                cur = outputs.classifier(nodes, cur, call, scope, self.classes, self.per_pixel)
        if cls.refers:
            layer = nodes.refer(layer, call)
        return nodes.add_node(layer, [cur], call.span, scope, label=label)

    def _assert(self, el: ast.Element, cur: Value, env: Mapping[str, Any]) -> None:
        err = assertion_error(el, cur, env, self.nodes.ids)
        if err is not None:
            self.errors.append(err)


def is_softmax(el: ast.Element) -> bool:
    return (
        isinstance(el.primary, ast.Call)
        and (entry := SPELLINGS.get(el.primary.name.upper())) is not None
        and entry[0].probabilities
        and el.repeat is None
    )
