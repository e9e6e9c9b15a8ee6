"""Map a source's weights onto a spec's layers by structure, not by name.

The spec's parameterised layers, in the IR's execution order, each with the tensors its layer
class declares (`Layer.weights()` and `Layer.running()`: torch suffixes and shapes), are
matched against the source's parameterised layers in the source's order (`SourceLayer`s). A
pair matches when its kinds agree (a convolution takes a convolution, a batch norm a batch norm
with its running statistics, ...) and every tensor's shape is equal. Names are never compared:
`layer1.bottleneck1.conv1` takes torchvision's `layer1.0.conv1` because both are the fifth
parameterised layer and both are a 64x64x1x1 convolution.

Alignment: each spec layer takes the first source layer not yet taken, among the next
`WINDOW` of them, that matches. The window absorbs local reorders: torchvision's ConvNeXt
block registers its `layer_scale` (a parameter of the block itself, so first in its state
dict) before the layers it scales, which run first. Nothing is skipped silently: every source
layer left untaken is reported, and refused unless `partial`.

Kinds: a per-position linear layer (`nn.Linear` on [N, H, W, C], ConvNeXt's) fits a 1x1
convolution (its [out, in] matrix becomes [out, in, 1, 1]); a convolution never fits a fully
connected layer (the spec's FC reads a flattened map, which a convolution's weights do not
describe), whatever the shapes.

Classifier: when the spec's classes differ from the source's (1000 -> 7), the spec's
classifiers (the layer producing the main output's `classes` scores, and each side head's)
take the source layer of the same kind whose tensors differ only in the first dimension, and
are left freshly initialised; the report names them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from netspec.errors import NetspecError
from netspec.ir.graph import Graph, Node
from netspec.layers import Shape
from netspec.layers.activation import PReLU
from netspec.layers.conv import Conv, ConvTranspose
from netspec.layers.linear import Dense, Embedding
from netspec.layers.norm import BatchNorm, GroupNorm, LayerNorm, LayerScale
from netspec.weights.sources import IGNORED, Source, SourceLayer

if TYPE_CHECKING:
    import torch
    from torch import nn

WINDOW = 16  # source layers looked ahead for each spec layer
SHOWN = 6  # mismatches named in an error

# spec kind -> the source categories that fit it
_FITS = {
    "conv": ("conv", "matrix"),
    "fc": ("matrix",),
    "embedding": ("matrix",),
    "batchnorm": ("batchnorm",),
    "norm": ("norm",),
    "scale": ("scale", "conv"),
    "prelu": ("vector",),
}


@dataclass
class Slot:
    """A spec layer with weights: its node id, its kind and its tensors' shapes."""

    id: str
    category: str
    shapes: dict[str, Shape]
    classifier: bool = False
    one_by_one: bool = False  # a 1x1 ungrouped convolution (a per-position linear fits)

    def describe(self) -> str:
        return ", ".join(f"{k} [{', '.join(map(str, v))}]" for k, v in self.shapes.items())


@dataclass
class Entry:
    """What one spec layer got: `status` is loaded, reinit (classifier, other classes) or new
    (nothing fit it; partial loads only)."""

    slot: Slot
    source: SourceLayer | None
    status: str
    note: str = ""


@dataclass
class Mapping:
    """The mapping of a source onto a spec: one entry per spec layer with weights, in order."""

    graph: Graph
    source: Source
    entries: list[Entry]
    unused: list[SourceLayer]  # source layers nothing took (extras included)
    extra: list[SourceLayer] = field(default_factory=list)  # unused, but expected (the twin's)

    @property
    def reinitialised(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "reinit"]

    @property
    def missing(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "new"]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The loaded tensors under the spec's state_dict keys, in torch's layout (float32)."""
        import torch

        out: dict[str, torch.Tensor] = {}
        for e in self.entries:
            if e.status != "loaded" or e.source is None:
                continue
            for suffix, tensor in _pairs(e.slot, e.source):
                shape = e.slot.shapes[suffix]
                out[f"{e.slot.id}.{suffix}"] = tensor.detach().reshape(shape).to(torch.float32)
            tracked = e.source.tensors.get("num_batches_tracked")
            if tracked is not None:
                out[f"{e.slot.id}.num_batches_tracked"] = tracked.detach().reshape(())
        return out

    def apply(self, model: nn.Module) -> None:
        """Copy the loaded tensors into a module built from the spec (`lower_torch.build`)."""
        import torch

        own = model.state_dict()
        with torch.no_grad():
            for key, tensor in self.tensors().items():
                own[key].copy_(tensor.to(own[key].dtype))

    def loaded_share(self) -> float:
        """The share of the spec's weights (by element count) loaded from the source."""
        sizes = [(e.status == "loaded", _numel(e.slot)) for e in self.entries]
        total = sum(n for _, n in sizes)
        return sum(n for ok, n in sizes if ok) / total if total else 0.0


def spec_slots(graph: Graph) -> list[Slot]:
    """The spec's layers with weights, in execution order (the IR's node order)."""
    classifiers = classifier_ids(graph)
    slots = []
    for node in graph.nodes:
        ins = tuple(graph.node(i).shape for i in node.inputs)
        shapes = node.layer.state(ins, node.shape)
        if not shapes:
            continue
        layer = node.layer
        one = isinstance(layer, Conv) and set(shapes["weight"][2:]) == {1} and layer.groups == 1
        slots.append(Slot(node.id, _category(node), shapes, node.id in classifiers, one))
    return slots


def classifier_ids(graph: Graph) -> set[str]:
    """The layers producing class scores: from the main output and each side head's, back
    through layers without weights (softmax, dropout, flatten, pooling) to the first with
    weights, when its output has the `classes` channels."""
    if graph.classes is None:
        return set()
    ends = [graph.output, *(h.output for h in graph.heads)]
    found = set()
    for end in ends:
        node: Node | None = graph.node(end)
        while node is not None:
            ins = tuple(graph.node(i).shape for i in node.inputs)
            if node.layer.state(ins, node.shape):
                if node.shape and node.shape[0] == graph.classes:
                    found.add(node.id)
                break
            node = graph.node(node.inputs[0]) if len(node.inputs) == 1 else None
    return found


def _category(node: Node) -> str:
    layer = node.layer
    if isinstance(layer, Conv | ConvTranspose):
        return "conv"
    if isinstance(layer, Dense):
        return "fc"
    if isinstance(layer, Embedding):
        return "embedding"
    if isinstance(layer, BatchNorm):
        return "batchnorm"
    if isinstance(layer, LayerNorm | GroupNorm):
        return "norm"
    if isinstance(layer, LayerScale):
        return "scale"
    if isinstance(layer, PReLU):
        return "prelu"
    return layer.kind


def _pairs(slot: Slot, layer: SourceLayer) -> list[tuple[str, torch.Tensor]]:
    """The source tensor for each of the slot's tensors, by role (None where one is missing)."""
    own = {k: v for k, v in layer.tensors.items() if k not in IGNORED}
    if slot.category == "scale" and len(own) == 1:
        return [(next(iter(slot.shapes)), next(iter(own.values())))]
    return [(k, own[k]) for k in slot.shapes if k in own]


def fits(slot: Slot, layer: SourceLayer, *, classifier: bool = False) -> bool:
    """Kinds agree and every tensor's shape is the spec's (with `classifier`: equal but for
    the first dimension, the classes)."""
    category = layer.category
    if category not in _FITS.get(slot.category, ()):
        return False
    if slot.category == "conv" and category == "matrix" and not slot.one_by_one:
        return False
    own = {k for k in layer.tensors if k not in IGNORED}
    pairs = _pairs(slot, layer)
    if len(pairs) != len(slot.shapes) or len(own) != len(slot.shapes):
        return False
    for suffix, tensor in pairs:
        want, got = slot.shapes[suffix], tuple(tensor.shape)
        if category == "matrix" and slot.category == "conv":
            got = (*got, *([1] * (len(want) - len(got))))
        if category == "conv" and slot.category == "scale":
            pass  # [C, 1, 1] either way
        if classifier:
            if len(got) != len(want) or got[1:] != want[1:]:
                return False
        elif got != want:
            return False
    return True


def map_weights(graph: Graph, source: Source, *, partial: bool = False) -> Mapping:
    """Match `source`'s layers to `graph`'s, by order, kind and shape (see the module).

    Raises:
        NetspecError: unless `partial`, when a spec layer finds no source layer that fits, or a
            source layer is left over; the first mismatches are named on both sides.
    """
    slots = spec_slots(graph)
    layers = source.layers
    taken = [False] * len(layers)
    extra = [i for i, layer in enumerate(layers) if _is_extra(layer, source.extra)]
    for i in extra:
        taken[i] = True  # never offered; reported as expected extras
    entries: list[Entry] = []
    lag = 0  # spec layers unmatched since the last match: the counterpart shown is that far on
    for slot in slots:
        window = [i for i, t in enumerate(taken) if not t][:WINDOW]
        pick = _pick(slot, layers, window, classifier=False)
        status = "loaded"
        if pick is None and slot.classifier:
            pick = _pick(slot, layers, window, classifier=True)
            status = "reinit"
        if pick is None:
            beside = layers[window[min(lag, len(window) - 1)]] if window else None
            entries.append(Entry(slot, beside, "new"))
            lag += 1
            continue
        taken[pick], lag = True, 0
        note = ""
        if status == "reinit":
            theirs = (
                layers[pick].tensors["weight"].shape[0] if "weight" in layers[pick].tensors else "?"
            )
            note = f"re-initialised: {graph.classes} classes here, {theirs} in the source"
        entries.append(Entry(slot, layers[pick], status, note))
    unused = [layers[i] for i, t in enumerate(taken) if not t]
    mapping = Mapping(graph, source, entries, unused, [layers[i] for i in extra])
    if not partial:
        _refuse_mismatches(mapping)
    return mapping


def _pick(slot: Slot, layers: list[SourceLayer], window: list[int], classifier: bool) -> int | None:
    """The source layer for `slot` among `window`: the next one when it fits; otherwise the
    one fitting candidate, or, when several fit (the same shapes further on: GoogLeNet's
    auxiliary classifiers stored before its main one), the one whose name ends like the spec
    layer's (`fc` for `fc`, not `aux1.fc2`), else the first."""
    fitting = [i for i in window if fits(slot, layers[i], classifier=classifier)]
    if not fitting:
        return None
    if fitting[0] == window[0] or len(fitting) == 1:
        return fitting[0]
    own = slot.id.rsplit(".", 1)[-1]
    named = [i for i in fitting if layers[i].name.rsplit(".", 1)[-1] == own]
    return named[0] if named else fitting[0]


def _is_extra(layer: SourceLayer, prefixes: tuple[str, ...]) -> bool:
    return any(layer.name.startswith(p) for p in prefixes)


def _refuse_mismatches(mapping: Mapping) -> None:
    graph, source = mapping.graph, mapping.source
    missing, unused = mapping.missing, mapping.unused
    if not missing and not unused:
        return
    where = str(source.file or source.origin)
    classifier = next((e for e in missing if e.slot.classifier), None)
    if classifier is not None and classifier.source is None and len(missing) == 1:
        raise NetspecError(
            f"{graph.name} has {graph.classes} classes but {where} has no classifier for "
            f"`{classifier.slot.id}` ({classifier.slot.describe()}): its layers end before one",
            hint="weights of a backbone alone: use --init-partial to load it and train a new "
            "classifier",
        )
    notes = [
        f"spec `{e.slot.id}` ({e.slot.category}: {e.slot.describe()})  <->  "
        + (
            f"source `{e.source.name}` ({e.source.category}: {e.source.describe()})"
            if e.source is not None
            else "nothing left in the source"
        )
        for e in missing[:SHOWN]
    ]
    notes += [
        f"unused in the source: `{layer.name}` ({layer.category}: {layer.describe()})"
        for layer in unused[: max(0, SHOWN - len(notes))]
    ]
    matched = len(mapping.entries) - len(missing)
    total = sum(1 for _ in mapping.source.layers) - len(mapping.extra)
    raise NetspecError(
        f"the weights in {where} do not fit {graph.name}: {matched} of its {len(mapping.entries)} "
        f"layers with weights matched, {len(missing)} did not, and {len(unused)} of the "
        f"source's {total} layers were left over",
        notes=notes,
        hint="are they another architecture's? layers match by order, kind and shape "
        "(`netspec weights SPEC SOURCE` shows the mapping); --init-partial loads what fits",
    )


def _numel(slot: Slot) -> int:
    total = 0
    for shape in slot.shapes.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
