"""Checks of a training job that need the network, not only the settings: the trainer runs
them before its first step, and `netspec train` runs the same ones earlier (before any data is
read), so the library and the command line refuse the same jobs with the same words."""

from __future__ import annotations

from netspec.errors import NetspecError
from netspec.ir.graph import Graph
from netspec.layers.norm import BatchNorm
from netspec.train.augment import check_dense_augment, parse_augment
from netspec.train.settings import TrainSettings


def validate(
    graph: Graph, settings: TrainSettings, *, nproc: int = 1, examples: int | None = None
) -> None:
    """Refuse settings that cannot train `graph` in `nproc` processes: a batch that does not
    divide among them, batch norm on batches of one example, an augmentation a per-pixel output's labels cannot follow, a side head whose output is not
    the main output's shape. `examples` is the training set's size once it is read.

    Raises:
        NetspecError: naming the setting, the layer or the head at fault.
    """
    check_batch(graph, settings.batch_size, nproc, examples)
    check_augment(graph, settings.augment)
    check_heads(graph)


def check_batch(graph: Graph, batch_size: int, nproc: int, examples: int | None = None) -> None:
    """A batch that does not divide among the processes, fewer examples than processes, and
    batch norm on a batch of one example (per process)."""
    if nproc > 1 and batch_size % nproc:
        raise NetspecError(
            f"--batch-size {batch_size} does not divide among {nproc} processes",
            hint=f"use a multiple of {nproc}, e.g. --batch-size {batch_size // nproc * nproc or nproc}",
        )
    if examples is not None and examples < nproc:
        raise NetspecError(
            f"the training set has {examples} example(s) for {nproc} processes: some would "
            "train on nothing",
            hint=f"use at most {max(examples, 1)} process(es), or more data",
        )
    if not any(isinstance(n.layer, BatchNorm) for n in graph.nodes):
        return
    per_rank = batch_size // nproc
    if per_rank < 2 or (examples is not None and examples // nproc < 2):
        what = (
            f"--batch-size {batch_size} over {nproc} process(es) gives {per_rank} example(s) each"
            if per_rank < 2
            else f"the training set has {examples} example(s) for {nproc} process(es)"
        )
        raise NetspecError(
            f"{graph.name} has batch norm, which needs at least 2 examples per batch: {what}",
            hint=f"use --batch-size {2 * nproc} or more" if per_rank < 2 else "use more data",
        )


def check_augment(graph: Graph, augment: str) -> None:
    """An augmentation a dense output's labels cannot follow."""
    if graph.per_pixel:
        check_dense_augment(parse_augment(augment), graph.input.shape, graph.output_shape)


def check_heads(graph: Graph) -> None:
    """A side head's loss reads the main output's labels, so it must output the main shape
    (per-pixel labels need a per-pixel head, one label per example a per-example head)."""
    main = tuple(graph.output_shape)
    for head in graph.heads:
        shape = tuple(graph.node(head.output).shape)
        if shape != main:
            what = "a class per pixel" if graph.per_pixel else "one class per example"
            raise NetspecError(
                f"side head `{head.name}` outputs [{', '.join(map(str, shape))}] but the main "
                f"output is {what} [{', '.join(map(str, main))}]; training gives every head "
                "the same labels",
                head.span,
                hint=f"end the head in the main output's shape [{', '.join(map(str, main))}]",
            )
