"""`netspec weights SPEC SOURCE`: how a source's weights map onto a spec, layer by layer."""

from __future__ import annotations

from pathlib import Path

import click

from netspec.commands.options import SPEC, load_graph, set_option


@click.command()
@click.argument("spec", type=SPEC)
@click.argument("source")
@set_option
@click.option("--partial", is_flag=True, help="map what fits and list what is left (no refusal)")
@click.option(
    "--out",
    "-o",
    "out",
    metavar="FILE.safetensors",
    help="also write the mapped weights under the spec's names (the classifier, when "
    "re-initialised, seeded by --seed)",
)
@click.option("--seed", default=0, show_default=True, help="seed of the layers left initialised")
def weights(
    spec: str,
    source: str,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
    partial: bool,
    out: str | None,
    seed: int,
) -> None:
    """Map SOURCE's weights onto SPEC by structure and print the mapping: for each layer of
    SPEC with weights, the source layer it takes and the shapes; then what the source holds
    that nothing took.

    \b
    SOURCE: a state dict (.pth/.pt, read with weights_only), a .safetensors file, an .onnx
    model, a training run's folder, `pretrained[:NAME]` (a zoo spec's torchvision weights
    from torch's hub cache) or `torchvision:MODEL[.NAME]`.

    \b
    netspec weights zoo:resnet50 pretrained
    netspec weights zoo:resnet18 resnet18.pth --set classes=7
    netspec weights zoo:resnet18 r18.onnx -o r18.safetensors
    """
    from netspec.weights.report import headline, load_init, summary_lines, table_lines

    graph = load_graph(spec, sets, extra)
    mapping = load_init(graph, source, partial=partial)
    click.echo(headline(mapping))
    for line in table_lines(mapping):
        click.echo(line)
    for line in summary_lines(mapping):
        click.echo(line)
    if out is not None:
        from netspec.backends.lower_torch import build
        from netspec.io import check_output_folder
        from netspec.train.checkpoint import cpu_state, save_weights

        check_output_folder(Path(out))
        model = build(graph, seed=seed)
        mapping.apply(model)
        save_weights(Path(out), cpu_state(model))
        click.echo(f"wrote {out}")
