"""The .onnx half of `netspec eval`: a model file (fp32, fp16 or int8) evaluated on data with
the same report as a checkpoint; the work is `netspec.deploy.evaluate_model`'s.

netspec eval m8.onnx --data digits
"""

from __future__ import annotations

from netspec import terminal
from netspec.deploy.evaluate import evaluate_model
from netspec.train.report import eval_tables


def eval_onnx(
    model: str,
    data: str | None,
    val_data: str | None,
    val_split: float | None,
    seed: int | None,
    split: str,
    batch_size: int,
    provider: str = "cpu",
    test_data: str | None = None,
    wide: bool = False,
) -> None:
    """`netspec eval MODEL.onnx --data SOURCE`: the same report as for a checkpoint."""
    report = evaluate_model(
        model,
        data,
        val_data=val_data,
        val_split=val_split,
        seed=seed,
        split=split,
        batch_size=batch_size,
        provider=provider,
        test_data=test_data,
    )
    result = report.result
    console = terminal.console(wide)
    console.print(report.provider, highlight=False)
    for table in eval_tables(result, report.title, console):
        console.print(table)
    console.print(
        f"accuracy: {result.accuracy:.2%} ({int(result.confusion.diagonal().sum())}/{result.count})",
        highlight=False,
        soft_wrap=True,
    )


__all__ = ["eval_onnx"]
