"""`netspec bench`: latency and throughput, side by side, of a spec in torch eager and in
ONNX Runtime, or of ONNX model files; the measuring is `netspec.deploy.bench`'s, this parses
the flags and prints the table.

netspec bench specs/resnet18.ns
netspec bench m.onnx m8.onnx m16.onnx
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from netspec.commands.options import SPEC, load_graph, set_option
from netspec.errors import NetspecError
from netspec.io import fmt_bytes
from netspec.terminal import console, fit

if TYPE_CHECKING:
    from netspec.deploy.bench import Bench


@click.command()
@click.argument("spec", type=SPEC)
@click.option(
    "-b",
    "--batch",
    "batches",
    multiple=True,
    type=click.IntRange(min=1),
    help="batch sizes [1, 8, 64]",
)
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="timing budget per cell",
)
@click.option(
    "--threads", type=click.IntRange(min=1), help="intra-op threads for both [the usable cores]"
)
@click.option(
    "--provider",
    default="auto",
    show_default=True,
    help="onnxruntime's provider: auto, tensorrt, cuda, cpu",
)
@click.option("--fold-bn", is_flag=True, help="fold batch norms in the ONNX graph")
@click.option("--wide", is_flag=True, help="print every column, whatever the terminal's width")
@set_option
def bench(
    spec: str,
    batches: tuple[int, ...],
    seconds: float,
    threads: int | None,
    provider: str,
    fold_bn: bool,
    wide: bool,
    sets: tuple[str, ...],
    extra: tuple[str, ...],
) -> None:
    """Latency (median, p90) and throughput of SPEC in torch eager and in ONNX Runtime, side by side.

    \b
    Given .onnx files instead (netspec bench fp32.onnx int8.onnx fp16.onnx), times the model
    files side by side in onnxruntime, with ratios against the first.

    The table fits the terminal (the p90 columns go first); --wide prints every column.
    """
    from netspec.deploy.bench import bench_models, bench_spec

    if is_model_file(spec):
        models = [spec, *extra]
        not_models = [m for m in extra if not is_model_file(m)] + list(sets)
        if not_models:
            raise NetspecError(
                f"bench times either one spec or .onnx model files; received {not_models[0]}",
                hint="give only .onnx files after the first one",
            )
        if fold_bn:
            raise NetspecError("--fold-bn is for a spec; a model file is benchmarked as written")
        timed = bench_models(models, batches, seconds, threads, provider)
        _print_models(timed, models, seconds, wide)
        return
    graph = load_graph(spec, sets, extra)
    _print_spec(
        bench_spec(graph, batches, seconds, threads, provider, fold_bn), graph.name, seconds, wide
    )


def is_model_file(name: str) -> bool:
    """A command argument naming an ONNX model file rather than a spec."""
    return Path(name).suffix.lower() == ".onnx"


def _print_spec(bench: Bench, name: str, seconds: float, wide: bool = False) -> None:
    con = console(wide)
    con.print(bench.provider)
    if bench.busy:
        con.print(bench.busy)
    table = Table(title=f"{name}: torch eager (cpu) vs onnxruntime ({bench.provider_name})")
    columns = ("torch median", "torch p90", "torch /s", "ort median", "ort p90", "ort /s")
    for col in ("batch", *columns, "speed-up"):
        table.add_column(col, justify="right")
    for batch, timings in bench.rows:
        if isinstance(timings, str):
            table.add_row(str(batch), "skipped", *[""] * 6)
            continue
        t_torch, t_ort = timings["torch"], timings["ort"]
        table.add_row(
            str(batch),
            _ms(t_torch.median),
            _ms(t_torch.p90),
            f"{t_torch.throughput(batch):,.0f}",
            _ms(t_ort.median),
            _ms(t_ort.p90),
            f"{t_ort.throughput(batch):,.0f}",
            f"{t_torch.median / t_ort.median:.2f}x",
        )
    table.caption = (
        f"threads: {bench.threads} (torch intra-op {bench.torch_threads}, onnxruntime intra-op "
        f"{bench.threads}); 2 warm-up runs each, then torch and ort take turns, >= 5 runs each "
        f"or {seconds:g} s each; speed-up = torch median / ort median; "
        f"max |ort - torch| / max |torch| = {bench.max_error:.1e} at batch 1; "
        f"the ONNX graph has {bench.onnx_nodes} nodes"
    )
    _print_fitted(con, table, ("torch p90", "ort p90"), bench)


def _print_fitted(con: Console, table: Table, drop: tuple[str, ...], bench: Bench) -> None:
    """The table fitted to the console, then the batch sizes skipped and why (kept out of
    the table, where a long reason would stretch a column of figures)."""
    note = fit(table, con, drop=drop).note()
    con.print(table)
    for batch, why in bench.rows:
        if isinstance(why, str):
            con.print(f"batch {batch} skipped: {why}", highlight=False)
    if note:
        con.print(note, highlight=False)


def _print_models(bench: Bench, models: list[str], seconds: float, wide: bool = False) -> None:
    con = console(wide)
    con.print(bench.provider, highlight=False)
    if bench.busy:
        con.print(bench.busy, highlight=False)
    labels = list(bench.kinds)
    base = labels[0]
    table = Table(title=f"{len(models)} model{'s' * (len(models) != 1)}: latency and throughput")
    for col in ("batch", "model", "type", "size", "median", "p90", "/s", "ratio"):
        table.add_column(col, justify="right")
    for batch, timings in bench.rows:
        if isinstance(timings, str):
            table.add_row(str(batch), "skipped", *[""] * 6)
            continue
        for i, (label, t) in enumerate(timings.items()):
            table.add_row(
                str(batch) if i == 0 else "",
                label,
                bench.kinds[label],
                fmt_bytes(bench.sizes[label]),
                _ms(t.median),
                _ms(t.p90),
                f"{t.throughput(batch):,.0f}",
                f"{timings[base].median / t.median:.2f}x",
            )
        table.add_section()
    table.caption = (
        f"onnxruntime on {bench.provider_name}, intra-op threads: {bench.threads}; "
        f"2 warm-up runs each, then the models take turns, >= 5 runs each or {seconds:g} s each; "
        f"ratio = {base} median / this median (above 1x: faster than {base})"
    )
    _print_fitted(con, table, ("p90", "size"), bench)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


__all__ = ["bench", "is_model_file"]
