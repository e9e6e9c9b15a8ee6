"""`netspec show filters|maps|saliency`: pictures of what is inside a network (PNG files)."""

from __future__ import annotations

import click

from netspec.commands.options import parse_bindings, set_option

_TARGET = click.argument("target", metavar="RUN_OR_CKPT")
_SPEC = click.option(
    "--spec",
    default=None,
    metavar="SPEC",
    help="the spec a bare .safetensors file was trained from (a run folder has its own)",
)
_SEED = click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="when RUN_OR_CKPT is a spec: the seed of its initial weights",
)
_INPUT = click.option(
    "--input",
    "input_spec",
    required=True,
    metavar="IMAGE_OR_INDEX",
    help="an image file, or the index of a validation example of the run's data (--data)",
)
_DATA = click.option(
    "--data",
    default=None,
    metavar="SOURCE",
    help="the data an index refers to [default: the run's, else digits]",
)
_RESIZE = click.option(
    "--resize",
    is_flag=True,
    help="resize an image of another size (bilinear) and convert its colours",
)


def _out(default: str):
    return click.option(
        "-o", "--out", default=default, show_default=True, metavar="PNG", help="the picture"
    )


@click.group()
def show() -> None:
    """Pictures of what is inside a network: learned filters, feature maps, saliency.

    RUN_OR_CKPT is a training run's folder, a .safetensors file (with --spec), or a spec
    (file or zoo:NAME) at its initial weights.

    \b
    netspec show filters runs/mnist_cnn-20250101-120000 -o filters.png
    netspec show maps runs/mnist_cnn-20250101-120000 --input 3 -o maps.png
    netspec show saliency runs/mnist_cnn-20250101-120000 --input digit.png
    """


def _load(target: str, spec: str | None, sets: tuple[str, ...], seed: int):
    from netspec.show import load

    return load(target, spec, parse_bindings(sets), seed)


@show.command("filters")
@_TARGET
@_SPEC
@set_option
@_SEED
@click.option("--layer", default=None, metavar="NAME", help="a conv layer [default: the first]")
@_out("filters.png")
def filters_cmd(
    target: str,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    seed: int,
    layer: str | None,
    out: str,
) -> None:
    """The kernels of a conv layer as a grid of images, each normalised on its own: in colour
    for a layer reading 3 channels, else the mean over its input channels."""
    from netspec.show import filters, filters_figure, save

    loaded = _load(target, spec, sets + extra, seed)
    grid = filters(loaded, layer)
    save(filters_figure(grid), out)
    click.echo(f"wrote {out}: {grid.layer}, {len(grid.tiles)} kernels ({grid.note})")


@show.command("maps")
@_TARGET
@_INPUT
@_SPEC
@set_option
@_SEED
@_DATA
@_RESIZE
@click.option(
    "--layers",
    default=None,
    metavar="A,B,...",
    help="the layers to show [default: the output of each stage]",
)
@_out("maps.png")
def maps_cmd(
    target: str,
    input_spec: str,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    seed: int,
    data: str | None,
    resize: bool,
    layers: str | None,
    out: str,
) -> None:
    """The feature maps an input produces: the input first, then a grid per layer."""
    from netspec.show import feature_maps, maps_figure, read_input, save

    loaded = _load(target, spec, sets + extra, seed)
    x, caption, _ = read_input(loaded, input_spec, data, resize)
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    grids = feature_maps(loaded, x, names)
    save(maps_figure(grids, caption), out)
    shown = ", ".join(f"{g.layer} ({len(g.tiles)})" for g in grids[1:])
    click.echo(f"wrote {out}: {caption}; {shown}")


@show.command("saliency")
@_TARGET
@_INPUT
@_SPEC
@set_option
@_SEED
@_DATA
@_RESIZE
@click.option(
    "--layer",
    default=None,
    metavar="NAME",
    help="Grad-CAM's layer [default: the last stage output of at least 7x7]",
)
@_out("saliency.png")
def saliency_cmd(
    target: str,
    input_spec: str,
    spec: str | None,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    seed: int,
    data: str | None,
    resize: bool,
    layer: str | None,
    out: str,
) -> None:
    """Where the prediction looks: vanilla gradient saliency and Grad-CAM over the input,
    with the predicted class and its probability."""
    from netspec.show import read_input, saliency, saliency_figure, save

    loaded = _load(target, spec, sets + extra, seed)
    x, caption, label = read_input(loaded, input_spec, data, resize)
    s = saliency(loaded, x, layer)
    names = loaded.class_names
    if label is not None:
        caption += f" (label {names[label] if names and label < len(names) else label})"
    save(saliency_figure(s, caption), out)
    click.echo(f"wrote {out}: predicted {s.name} (p = {s.probability:.3f}); Grad-CAM at {s.layer}")
