"""Lowerings of the IR: `lower_torch` here (an nn.Module), and the ONNX graph in the
`netspec.deploy` package (`lowering`, with the per-family `lower_*` modules).

Each backend keeps one `LoweringTable`: layer kind -> the one function that lowers it, added
with `@LOWERINGS.register("kind")`. Both check a graph's kinds with `require` before lowering
anything, so a kind without a lowering fails the same way in both: `MissingLowering`, naming
the backend and the kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from netspec.errors import NetspecError

F = TypeVar("F", bound=Callable[..., object])


class LoweringError(NetspecError):
    """The graph cannot be lowered (a kind without a lowering, a clashing name in a graph built
    outside the IR). A NetspecError, so the CLI reports it without a traceback."""


class MissingLowering(LoweringError):
    """A layer kind has no lowering in a backend."""


class LoweringTable(dict[str, F], Generic[F]):
    """kind -> lowering function for one backend (`name`: "torch", "onnx"; `where`: its file)."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__()
        self.name = name
        self.where = where  # the module(s) a new lowering goes in, for the hint

    def register(self, *kinds: str) -> Callable[[F], F]:
        """Decorator: `fn` lowers these kinds; a kind registered twice is a programming error."""

        def add(fn: F) -> F:
            for kind in kinds:
                if kind in self:
                    raise ValueError(f"{self.name} lowering for `{kind}` is defined twice")
                self[kind] = fn
            return fn

        return add

    def missing(self, kinds: Iterable[str]) -> list[str]:
        return sorted(set(kinds) - self.keys())

    def require(self, kinds: Iterable[str]) -> None:
        """Raise `MissingLowering` unless every kind in `kinds` has a lowering here."""
        missing = self.missing(kinds)
        if missing:
            raise MissingLowering(
                f"no {self.name} lowering for layer kind(s): {', '.join(missing)}",
                hint=f"add one with @LOWERINGS.register(...) in {self.where}",
            )


__all__ = ["LoweringError", "LoweringTable", "MissingLowering"]
