"""Two-stage fine-tuning: the backbone frozen for some epochs, then unfrozen (all of it, or
from a named layer on) and trained with a lower learning rate than the classifier.

The backbone is every layer with weights but the classifiers (`netspec.weights.mapper.
classifier_ids`: the layers producing the class scores of the main output and the side
heads). Settings (`netspec train --help`): `freeze_epochs` (epochs 1..N train the classifier
alone; frozen batch norms keep their running statistics), `unfreeze_from` (from epoch N + 1,
the backbone layers before this one stay frozen), `backbone_lr` (the backbone's learning rate
as a fraction of `lr`: a second parameter group, which the schedule scales like the first).
Each epoch's stage follows from its number alone, so a resumed run is in the same stage.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from netspec.errors import NetspecError, did_you_mean
from netspec.ir.graph import Graph
from netspec.train.settings import TrainSettings
from netspec.weights.mapper import classifier_ids


class Stages:
    """Which backbone layers train in which epoch, and the optimizer's parameter groups."""

    def __init__(self, graph: Graph, model: nn.Module, s: TrainSettings, fixed: list[str]) -> None:
        """`fixed`: the layers `freeze` holds frozen for the whole run."""
        self.s = s
        self.active = bool(s.freeze_epochs or s.unfreeze_from or s.backbone_lr != 1.0)
        heads = classifier_ids(graph)
        if self.active and not heads:
            raise NetspecError(
                f"fine-tuning settings (freeze_epochs, unfreeze_from, backbone_lr) need a "
                f"classifier, and {graph.name} has none producing its `classes` scores",
                hint="declare `classes N` and end with FC(classes) -> SOFTMAX",
            )
        owners = [n.id for n in graph.nodes if _has_weights(model, n.id)]
        self.head = [i for i in owners if i in heads and i not in fixed]
        self.backbone = [i for i in owners if i not in heads and i not in fixed]
        start = _position(graph, s.unfreeze_from) if s.unfreeze_from else 0
        order = {n.id: k for k, n in enumerate(graph.nodes)}
        self.stay = {i for i in self.backbone if order[i] < start}  # frozen after stage one
        self.model = model

    def groups(self) -> list[dict[str, Any]]:
        """Parameter groups: the classifier at lr, the backbone at lr x backbone_lr."""
        params = lambda ids: [p for i in ids for p in self.model.get_submodule(i).parameters()]  # noqa: E731
        groups: list[dict[str, Any]] = [{"params": params(self.head)}]
        if self.backbone:
            groups.append({"params": params(self.backbone), "lr": self.s.lr * self.s.backbone_lr})
        return [g for g in groups if g["params"]]

    def frozen(self, epoch: int) -> list[str]:
        """The backbone layers frozen in `epoch` (1-based)."""
        if epoch <= self.s.freeze_epochs:
            return list(self.backbone)
        return [i for i in self.backbone if i in self.stay]

    def enter(self, epoch: int) -> list[nn.Module]:
        """Set `requires_grad` for `epoch`'s stage; the batch norms to keep in eval mode."""
        frozen = set(self.frozen(epoch))
        norms: list[nn.Module] = []
        for layer in self.backbone:
            module = self.model.get_submodule(layer)
            for p in module.parameters():
                p.requires_grad_(layer not in frozen)
            if layer in frozen and isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.append(module)
        return norms


def _has_weights(model: nn.Module, node: str) -> bool:
    try:
        return any(True for _ in model.get_submodule(node).parameters(recurse=False))
    except AttributeError:
        return False


def _position(graph: Graph, layer: str) -> int:
    """The node index where `layer` (a node id or a scope such as `layer4`) begins."""
    for k, node in enumerate(graph.nodes):
        if node.id == layer or node.id.startswith(layer + "."):
            return k
    raise NetspecError(
        f"unfreeze_from `{layer}` names no layer or scope of {graph.name}",
        hint=did_you_mean(layer, [n.id for n in graph.nodes]) or "see `netspec check` for ids",
    )
