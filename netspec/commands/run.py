"""`netspec run`: an ONNX model file on images or .npy arrays, the top classes of each; the work
is `netspec.deploy.predict`'s, this parses the flags and prints.

netspec run resnet18.onnx --input cat.jpg dog.png batch.npy
"""

from __future__ import annotations

import click
import numpy as np

from netspec.layers import fmt_shape


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="FILE",
    help="an image or .npy array (repeatable)",
)
@click.argument("more", nargs=-1, metavar="[FILE]...")
@click.option(
    "-k",
    "--top-k",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="classes shown per input",
)
@click.option("--labels", type=click.Path(dir_okay=False), help="class names, one per line")
@click.option("--provider", default="auto", show_default=True, help="auto, tensorrt, cuda or cpu")
def run(
    model: str,
    inputs: tuple[str, ...],
    more: tuple[str, ...],
    top_k: int,
    labels: str | None,
    provider: str,
) -> None:
    """Run MODEL on images or .npy arrays (one batch) and print the top classes of each.

    Images are converted to the model's channels (gray or RGB), resized to its height and width
    and scaled to [0, 1], as in training. A .npy file holds one example or a batch of them.
    """
    from netspec.deploy.predictions import predict

    result = predict(model, list(inputs) + list(more), provider=provider, labels=labels)
    click.echo(result.provider)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if result.per_pixel:
        _print_pixel_classes(result.outputs, result.names, result.labels)
    else:
        _print_predictions(result.outputs, result.names, result.kind, top_k, result.labels)


def _print_pixel_classes(out: np.ndarray, names: list[str], labels: list[str] | None) -> None:
    """A per-pixel model: each input's class map, as the share of pixels of each class."""
    for name, row in zip(names, out, strict=True):
        winners = np.argmax(row, axis=0)
        shares = np.bincount(winners.ravel(), minlength=row.shape[0]) / winners.size
        listing = ", ".join(
            f"{labels[c] if labels else c} {share:.1%}" for c, share in enumerate(shares)
        )
        click.echo(f"{name}: classes per pixel [{fmt_shape(winners.shape)}]: {listing}")


def _print_predictions(
    out: np.ndarray, names: list[str], kind: str | None, k: int, labels: list[str] | None
) -> None:
    if out.ndim != 2:
        for name, row in zip(names, out, strict=True):
            click.echo(
                f"{name}: output [{fmt_shape(row.shape)}], min {row.min():.4g}, max {row.max():.4g}"
            )
        return
    probs = out.astype(np.float64)
    looks_like_probs = bool(
        ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(1), 1, atol=1e-3)
    )
    if kind == "scores" or (kind is None and not looks_like_probs):
        probs = np.exp(probs - probs.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        click.echo("(the model outputs scores; probabilities shown are their softmax)")
    k = min(k, probs.shape[1])
    width = (
        max(len(str(probs.shape[1] - 1)), *(len(s) for s in labels))
        if labels
        else len(str(probs.shape[1] - 1))
    )
    for name, row in zip(names, probs, strict=True):
        click.echo(name)
        for rank, c in enumerate(np.argsort(-row, kind="stable")[:k], 1):
            label = labels[c] if labels else str(c)
            click.echo(f"  {rank}. {label:>{width}}  {row[c] * 100:6.2f}%")


__all__ = ["run"]
