"""Syntax tree -> IR. A `Spec` is a template (free parameters allowed); `Spec.instantiate`
binds them and expands repetitions, blocks and branches into a `Graph`, computing every
node's shape, parameters, MACs and memory on the way.

The stages, in the order the data flows through them:

- `spec.py`: statements and scopes (header, constants, blocks, free parameters, main chain);
- `bindings.py`: bindings and expressions (`--set` values, the global names, call arguments);
- `walk.py` (`Builder`): the walk over the main chain: the input, elements, repetition
  (`[...]*N for i`), calls to layers and blocks, the heads, the graph; it makes one object
  per stage below and passes each what it reads;
- `header.py`: the input layer, the train section's settings and check;
- `meter.py`: the totals and the work metered against the cap;
- `resolve.py`: calls to layers resolved into validated layers (defaults, context);
- `expand.py`: expansion of blocks, branches, residuals and options, and the size limit;
- `shapes.py`: shape and count propagation, each node from its layer class;
- `outputs.py`: the output against the declared classes, the implicit classifier;
- `family.py`: what the members of a design-space family share in light builds;
- `naming.py`: scopes, counters and reserved names;
- `checks.py`: budgets and shape assertions.

This module holds the public entry points: `Spec` (with `instantiate`), `load_spec`,
`load_spec_text`, `compile_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from netspec.errors import NetspecError, SpecErrors
from netspec.frontend.parser import parse_file, parse_text
from netspec.ir.counter import UNCOUNTED, Counts, Recount
from netspec.ir.graph import Graph, Scalar
from netspec.ir.limits import MAX_WORK
from netspec.ir.resolve import CALL_CACHE
from netspec.ir.spec import Domain, ParsedSpec, paused_gc
from netspec.ir.walk import Builder

_CALL_CACHE = CALL_CACHE  # layers a build keeps by call (read at each build: tests set it)


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
            builder = Builder(
                self, dict(bindings or {}), light=light, counts=counts, call_cache=_CALL_CACHE
            )
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
                Builder(
                    self, dict(bindings or {}), light=True, counts=big, call_cache=_CALL_CACHE
                ).build()
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


__all__ = ["Spec", "Domain", "Builder", "load_spec", "load_spec_text", "compile_spec", "MAX_WORK"]
