"""Which layers `freeze` holds (the train setting and `--freeze`): fnmatch patterns on layer
ids. Kept free of torch: `netspec check` reads it for its trainable and frozen figures, and the
trainer for the layers whose gradients it stops."""

from __future__ import annotations

import fnmatch

from netspec.errors import NetspecError, did_you_mean
from netspec.ir.graph import Graph


def frozen_layers(graph: Graph, patterns: tuple[str, ...]) -> list[str]:
    """The ids of the layers that match any pattern (fnmatch on node ids, ``layer1.*``).

    Raises:
        NetspecError: for a pattern that matches no layer.
    """
    ids = [n.id for n in graph.nodes]
    matched: list[str] = []
    for pattern in patterns:
        hits = [i for i in ids if fnmatch.fnmatchcase(i, pattern)]
        if not hits:
            scope = any(i.startswith(f"{pattern}.") for i in ids)
            raise NetspecError(
                f"--freeze {pattern!r} matches no layer of {graph.name}",
                hint=(
                    f"`{pattern}` is a scope: '{pattern}.*' freezes its layers" if scope else None
                )
                or did_you_mean(pattern, ids)
                or "patterns match layer ids (see `netspec check`), e.g. 'conv*' or 'layer1.*'",
            )
        matched += [i for i in hits if i not in matched]
    return matched


__all__ = ["frozen_layers"]
