"""Load a source onto a spec (`load_init`, what `--init` does) and describe the mapping."""

from __future__ import annotations

import os

from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.weights.mapper import Entry, Mapping, map_weights
from netspec.weights.sources import read_source

_ORDER = {
    "file": "in the file's order",
    "graph": "in the ONNX graph's order",
    "trace": "in the order a forward pass runs them",
    "names": "in the spec's order where named like its layers, else by name (safetensors "
    "keeps no order)",
}


def load_init(
    graph: Graph, text: str, *, partial: bool = False, minimum: float | None = None
) -> Mapping:
    """Read the weights `text` names and map them onto `graph` (see `netspec.weights.mapper`).

    Args:
        graph: the network.
        text: a path, `pretrained[:NAME]` or `torchvision:MODEL[.NAME]`.
        partial: load what fits, leave the rest initialised (`--init-partial`).
        minimum: with `partial`, refuse unless this share of the weights is loaded.

    Raises:
        NetspecError: for unreadable weights, mismatches (unless `partial`), or a partial
            load under `minimum` or loading nothing.
    """
    source = read_source(text, graph.name, [n.id for n in graph.nodes])
    mapping = map_weights(graph, source, partial=partial)
    share = mapping.loaded_share()
    loaded = sum(e.status == "loaded" for e in mapping.entries)
    if loaded == 0 or (minimum is not None and share < minimum):
        raise NetspecError(
            f"--init {text} loads {loaded} of {len(mapping.entries)} layers ({share:.1%} of "
            f"{graph.name}'s weights)"
            + (f", under --init-min {minimum:g}" if loaded else ": nothing to start from"),
            notes=left_lines(mapping)[:8],
            hint="layers match by order, kind and shape: `netspec weights SPEC SOURCE` shows "
            "the mapping",
        )
    return mapping


def headline(mapping: Mapping) -> str:
    """Where the weights come from: the file, the published name and the hash check."""
    source = mapping.source
    where = str(source.file or source.origin)
    text = f"weights for {mapping.graph.name} from {where}"
    if source.published is not None:
        p = source.published
        checked = "NOT checked (NETSPEC_HUB_HASH=skip)" if _unchecked() else "checked"
        text += (
            f" (torchvision {p.full_name}, ImageNet top-1 {p.top1:g}%; SHA-256 prefix "
            f"{p.hash_prefix} {checked})"
        )
    return text + f", source layers taken {_ORDER[source.order]}"


def summary_lines(mapping: Mapping) -> list[str]:
    """What `--init` prints: totals, the re-initialised classifiers, what was left."""
    entries = mapping.entries
    loaded = [e for e in entries if e.status == "loaded"]
    lines = [
        f"{len(loaded)} of {len(entries)} layers with weights loaded "
        f"({mapping.loaded_share():.1%} of the weights)"
    ]
    for e in mapping.reinitialised:
        assert e.source is not None
        lines.append(f"classifier `{e.slot.id}` (source `{e.source.name}`): {e.note}")
    lines += left_lines(mapping)
    if mapping.extra:
        names = sorted({_top(layer.name) for layer in mapping.extra})
        lines.append(
            f"not used, as expected: {len(mapping.extra)} layers of {', '.join(names)} "
            "(the published file's extras)"
        )
    if mapping.source.published is not None:
        lines.append(f"preprocessing: {mapping.source.published.preprocessing.describe()}")
    return lines


def left_lines(mapping: Mapping, limit: int = 12) -> list[str]:
    """The spec layers left initialised and the source layers left over, named."""
    lines = [
        f"left initialised: `{e.slot.id}` ({e.slot.describe()})"
        + (f"; the source's `{e.source.name}` has {e.source.describe()}" if e.source else "")
        for e in mapping.missing[:limit]
    ]
    if len(mapping.missing) > limit:
        lines.append(f"... and {len(mapping.missing) - limit} more left initialised")
    lines += [
        f"unused in the source: `{layer.name}` ({layer.describe()})"
        for layer in mapping.unused[:limit]
    ]
    if len(mapping.unused) > limit:
        lines.append(f"... and {len(mapping.unused) - limit} more unused in the source")
    return lines


def table_lines(mapping: Mapping) -> list[str]:
    """One row per spec layer with weights: the source layer it took, and the shapes."""
    rows = [("layer", "kind", "source", "shapes", "")]
    for e in mapping.entries:
        rows.append(
            (e.slot.id, e.slot.category, e.source.name if e.source and e.status != "new" else "-",
             _shapes(e), e.note or ("" if e.status == "loaded" else "left initialised"))
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for n, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        out.append((line + "  " + row[4]).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _shapes(e: Entry) -> str:
    return " ".join(
        f"{k}={'x'.join(map(str, v))}" for k, v in e.slot.shapes.items() if k != "bias"
    ) + (" +bias" if "bias" in e.slot.shapes and e.slot.category in ("conv", "fc") else "")


def _unchecked() -> bool:
    return os.environ.get("NETSPEC_HUB_HASH") == "skip"


def _top(name: str) -> str:
    return name.split(".", 1)[0]
