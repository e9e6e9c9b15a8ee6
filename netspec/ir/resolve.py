"""Layer calls resolved into validated layers: the spec's `defaults` by spelling, arguments
filled from the context (an embedding's vocabulary) and the input's channels, each layer
validated once per spec (`ParsedSpec.layer_cache`) and a call's layer kept by the values of
the names its arguments read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from netspec.errors import NetspecError, did_you_mean
from netspec.frontend import ast
from netspec.ir.bindings import argument_error, call_args
from netspec.ir.expr import Symbol, free_names
from netspec.ir.naming import Value
from netspec.layers import SPELLINGS, Layer

MISSING = object()  # a name with no value (a cache key part)
CALL_CACHE = 10_000  # layers a build keeps by call (a few per call of a normal spec)


class Resolver:
    """One build's stage that turns a layer call into a layer.

    Reads: the spec's layer cache and index variables, the global names (an argument's error
    names them). Owns and writes: the `defaults` by spelling ((class, presets) -> arguments: a
    default belongs to the spelling written, MAXPOOL's never reach AVGPOOL, pure synonyms
    such as FC and DENSE share it), the `context` (the input's vocabulary), the names each
    call's arguments read and the layer each call made (per input channels and values of
    those names)."""

    __slots__ = (
        "layers",
        "call_cache",
        "index_vars",
        "globals",
        "defaults",
        "context",
        "_call_names",
        "_call_layers",
    )

    def __init__(
        self, layers: dict[tuple, Layer], index_vars: Any, call_cache: int = CALL_CACHE
    ) -> None:
        self.layers = layers
        self.call_cache = call_cache  # at most this many layers kept by call
        self.index_vars = index_vars
        self.globals: Mapping[str, Any] = {}
        self.defaults: dict[tuple[type[Layer], tuple], dict[str, Any]] = {}
        self.context: dict[str, Any] = {}
        self._call_names: dict[ast.Call, tuple[str, ...] | None] = {}
        self._call_layers: dict[tuple, Layer] = {}

    def read_defaults(self, defaults: list[ast.Call], env: Mapping[str, Any]) -> None:
        """The spec's `defaults` statement: each call's arguments merged under its spelling."""
        for call in defaults:
            entry = SPELLINGS.get(call.name.upper())
            if entry is None:
                raise NetspecError(
                    f"unknown layer `{call.name}` in defaults",
                    call.name_span,
                    hint=did_you_mean(call.name.upper(), SPELLINGS),
                )
            cls, presets = entry
            args = call_args(cls, call, env)
            merged = self.defaults.setdefault(spelling_key(cls, presets), {})
            merged.update(args)
            self.validate(cls, {**presets, **merged}, call, partial=True)

    def layer_of(
        self,
        cls: type[Layer],
        presets: Mapping[str, Any],
        call: ast.Call,
        cur: Value,
        env: Mapping[str, Any],
    ) -> Layer:
        """The layer a call makes on `cur`. A call makes the same layer each time it runs on as
        many input channels with the same values of the names its arguments read (`FC(64)`,
        `RELU`, `FC(n)` in a block): a repetition resolves it once per distinct values, not
        once per layer."""
        if call not in self._call_names:
            read = tuple(sorted(free_names(call.args)))
            # An index variable takes a new value each time round: such a call is kept by its
            # arguments' values instead.
            indexed = any(n in self.index_vars for n in read)
            self._call_names[call] = None if indexed else read
        names = self._call_names[call]
        key: tuple = (call, cur.shape[0] if cls.from_input_channels else None)
        given = None
        if names is not None:
            key += tuple(value_key(env.get(n, MISSING)) for n in names)
        else:  # it reads a loop index: by its arguments' values (`FC(64 + 0 * i)`: one layer)
            given = call_args(cls, call, env)
            key += tuple(value_key(v) for v in given.values())
        try:
            layer = self._call_layers.get(key)
            keep = True
        except TypeError:  # a value that does not hash: resolved each time
            layer, keep = None, False
        if layer is None:
            layer = self.resolve(cls, presets, call, cur, env, given)
            if keep and len(self._call_layers) < self.call_cache:
                self._call_layers[key] = layer
        return layer

    def resolve(
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
            **self.defaults.get(spelling_key(cls, presets), {}),
            **(given if given is not None else call_args(cls, call, env)),
        }
        for arg, key in cls.contextual.items():
            if arg not in args and key in self.context:
                args[arg] = self.context[key]
        for arg in cls.from_input_channels:
            if arg not in args:
                args[arg] = cur.shape[0]
        layer = self.validate(cls, args, call)
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

    def validate(
        self, cls: type[Layer], args: dict[str, Any], call: ast.Call, partial: bool = False
    ) -> Layer:
        """The layer of `cls` with `args`, validated once per spec; with `partial`, None where
        arguments are missing (a default, completed by the call)."""
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


def value_key(value: Any) -> Any:
    """A name's value as a cache key: by type too (1, 1.0 and True are equal in Python, not as
    arguments), a float by its text (0.0 and -0.0 are equal too)."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    return (kind, repr(value) if kind is float else value)


def spelling_key(cls: type[Layer], presets: Mapping[str, Any]) -> tuple[type[Layer], tuple]:
    return (cls, tuple(sorted(presets.items())))
