"""Every option of the deploy-side commands (export, run, eval, bench) acts or is refused.

Each command's options are read from click, and each must have a case here, so a new option
fails the walk until it is shown to act. A case either expects a refusal (exit 2, the message
naming the problem) or runs the command with and without the option and expects another
outcome: the files written (export), or the printed report and what reached onnxruntime
(the batch sizes it ran). bench's timings are replaced by a fixed clock so that its report
is deterministic; what it measured with is then what differs.

The int8 options act in an int8 export (slow: it quantizes): `--calib-size` must be the
number of calibration examples the report says were used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
import pytest

from netspec.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
MNIST = str(ROOT / "specs" / "mnist_cnn.ns")
TINY = """network tiny "every option of the deploy commands, walked"
input [1, 8, 8]
classes 3
W in {4, 8}
head aux at c1:
  GLOBALAVGPOOL -> FC(classes) as fc
INPUT
  -> CONV(W, 3, padding=1) as c1 -> BATCHNORM -> RELU
  -> FLATTEN -> FC(classes) -> SOFTMAX
"""


@dataclass(frozen=True)
class Refused:
    """The option (in `args`) is refused: exit 2, `message` in the error."""

    args: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Acts:
    """The option (in `args`) changes the outcome; `without` leaves base arguments out."""

    args: tuple[str, ...]
    without: tuple[str, ...] = ()
    columns: int | None = None  # run both at this terminal width (COLUMNS): --wide's cases


@dataclass
class Files:
    """The fixtures' paths, by name, for the `{name}` placeholders in the cases' arguments."""

    paths: dict[str, str] = field(default_factory=dict)

    def fill(self, args: tuple[str, ...]) -> list[str]:
        return [a.format(**self.paths) for a in args]


# command -> (base arguments, option name -> cases); one base per mode of a command
BASES = {
    "export": ("export", "{tiny}", "W=4", "-o", "{out}/m.onnx"),
    "run": ("run", "{model}", "-i", "{x1}"),
    "eval": ("eval", "{model}", "--data", "synthetic:240"),
    "eval ckpt": ("eval", "{tiny}", "W=4", "--weights", "{ckpt}", "--data", "synthetic:240"),
    "bench": ("bench", "{tiny}", "W=4", "--seconds", "0.1", "-b", "1", "--threads", "1"),
    "bench model": ("bench", "{model}", "--seconds", "0.1", "-b", "1", "--threads", "1"),
}
INT8_ONLY = "is for an int8 export; without --int8 it would do nothing"
CASES: dict[str, dict[str, list[tuple[str, Refused | Acts]]]] = {
    "export": {
        "output": [("export", Acts(("-o", "{out}/other.onnx"), ("-o", "{out}/m.onnx")))],
        "weights": [("export", Acts(("--weights", "{ckpt}")))],
        "seed": [
            ("export", Acts(("--seed", "1"))),
            ("export", Refused(("--seed", "1", "--weights", "{ckpt}"), "give one")),
        ],
        "fold_bn": [("export", Acts(("--fold-bn",)))],
        "fp16": [("export", Acts(("--fp16",)))],
        "opset": [("export", Acts(("--opset", "17")))],
        "logits": [("export", Acts(("--logits",)))],
        "outputs": [("export", Acts(("--outputs", "all")))],
        "int8": [("export", Refused(("--int8",), "--int8 needs --calibrate SOURCE"))],
        "calibrate": [("export", Refused(("--calibrate", "digits"), "--calibrate is for --int8"))],
        "calib_size": [("export", Refused(("--calib-size", "5"), "--calib-size " + INT8_ONLY))],
        "calib_method": [
            ("export", Refused(("--calib-method", "entropy"), "--calib-method " + INT8_ONLY))
        ],
        "val_split": [("export", Refused(("--val-split", "0.3"), "--val-split " + INT8_ONLY))],
        "external_data": [("export", Acts(("--external-data",)))],
        "sets": [("export", Acts(("--set", "W=8"), ("W=4",)))],
    },
    "run": {
        "inputs": [("run", Acts(("-i", "{x2}"), ("-i", "{x1}")))],
        "top_k": [("run", Acts(("-k", "1")))],
        "labels": [("run", Acts(("--labels", "{labels}")))],
        "provider": [("run", Acts(("--provider", "cuda")))],  # refused where there is no GPU
    },
    "eval": {
        "sets": [("eval", Refused(("--set", "W=8"), "holds its weights and sizes"))],
        "weights": [("eval", Refused(("--weights", "{ckpt}"), "holds its weights and sizes"))],
        "data": [("eval", Acts(("--data", "synthetic:300"), ("--data", "synthetic:240")))],
        "val_data": [("eval", Acts(("--val-data", "synthetic:100")))],
        "val_split": [
            ("eval", Acts(("--val-split", "0.5"))),
            ("eval ckpt", Acts(("--val-split", "0.5"))),
        ],
        "seed": [("eval", Acts(("--seed", "3"))), ("eval ckpt", Acts(("--seed", "3")))],
        "split": [("eval", Acts(("--split", "train"))), ("eval ckpt", Acts(("--split", "train")))],
        "test_data": [  # without it, --split test on synthetic data has no test set: refused
            ("eval", Acts(("--split", "test", "--test-data", "synthetic:50"))),
            ("eval ckpt", Acts(("--split", "test", "--test-data", "synthetic:50"))),
            (
                "eval",
                Refused(("--test-data", "synthetic:50"), "--test-data goes with --split test"),
            ),
        ],
        "batch_size": [("eval", Acts(("--batch-size", "7")))],
        "device": [
            ("eval", Refused(("--device", "cpu"), "--device is for a checkpoint")),
            ("eval ckpt", Acts(("--device", "cuda"))),  # refused where there is no GPU
        ],
        "provider": [
            ("eval", Acts(("--provider", "cuda"))),  # refused where there is no GPU
            ("eval ckpt", Refused(("--provider", "cpu"), "--provider is for a .onnx MODEL")),
        ],
        "wide": [
            ("eval", Acts(("--wide",), columns=30)),
            ("eval ckpt", Acts(("--wide",), columns=30)),
        ],
    },
    "bench": {
        "batches": [("bench", Acts(("-b", "2"))), ("bench model", Acts(("-b", "2")))],
        "seconds": [("bench", Acts(("--seconds", "0.2"), ("--seconds", "0.1")))],
        "threads": [("bench model", Acts(("--threads", "2"), ("--threads", "1")))],
        "provider": [("bench", Acts(("--provider", "cuda")))],  # refused where there is no GPU
        "fold_bn": [
            ("bench", Acts(("--fold-bn",))),
            ("bench model", Refused(("--fold-bn",), "--fold-bn is for a spec")),
        ],
        "sets": [
            ("bench", Acts(("--set", "W=8"), ("W=4",))),
            ("bench model", Refused(("--set", "W=8"), "either one spec or .onnx model files")),
        ],
        "wide": [("bench", Acts(("--wide",), columns=60))],
    },
}


def _options(command: str) -> set[str]:
    module, attr = COMMANDS[command]
    import importlib

    cmd = getattr(importlib.import_module(module), attr)
    return {p.name for p in cmd.params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("command", sorted(CASES))
def test_every_option_has_a_case(command: str) -> None:
    assert set(CASES[command]) == _options(command)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    from safetensors.numpy import save_file

    from netspec import deploy
    from netspec.ir.build import load_spec

    folder = tmp_path_factory.mktemp("walk")
    tiny = folder / "tiny.ns"
    tiny.write_text(TINY, encoding="utf-8")
    graph = load_spec(tiny).instantiate({"W": "4"})
    save_file(dict(deploy.initial_weights(graph, 7)), str(folder / "ckpt.safetensors"))
    deploy.export(graph, folder / "model.onnx", seed=0)
    rng = np.random.default_rng(0)
    np.save(folder / "x1.npy", rng.random((2, 1, 8, 8), dtype=np.float32))
    np.save(folder / "x2.npy", rng.random((3, 1, 8, 8), dtype=np.float32))
    (folder / "labels.txt").write_text("cat\ndog\nbird\n", encoding="utf-8")
    (folder / "out").mkdir()
    names = ("tiny", "ckpt", "model", "x1", "x2", "labels")
    paths = {n: str(p) for n in names for p in folder.glob(f"{n}.*")}
    return Files(paths | {"out": str(folder / "out")})


@pytest.fixture
def fixed_clock(monkeypatch) -> list[int]:
    """bench's timings made deterministic: each function runs once, and takes 1 ms."""
    from netspec.deploy import bench, runtime
    from netspec.timing import Timing

    def measure(fns, seconds):
        for fn in fns.values():
            fn()
        return {name: Timing(1e-3 * seconds, 2e-3, 5) for name in fns}

    monkeypatch.setattr(bench, "measure_side_by_side", measure)
    monkeypatch.setattr(bench, "busy_note", lambda threads: None)
    batches: list[int] = []  # what reached onnxruntime
    run = runtime.Session.run

    def spy(self, x):
        batches.append(len(x))
        return run(self, x)

    monkeypatch.setattr(runtime.Session, "run", spy)
    return batches


def _outcome(args: list[str], files: Files, capsys, batches: list[int]) -> tuple:
    """Exit code, what was printed, the files written and the batch sizes onnxruntime ran."""
    out = Path(files.paths["out"])
    for p in out.iterdir():
        p.unlink()
    batches.clear()
    capsys.readouterr()
    code = main(args)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    text = re.sub(r" in \d+\.\d+ s", " in # s", text).replace(str(out), "OUT")  # export's time
    written = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}
    return code, text, written, sorted(set(batches))


CASE_LIST = [
    (command, option, base, case)
    for command, options in CASES.items()
    for option, cases in options.items()
    for base, case in cases
]


@pytest.mark.parametrize(
    ("command", "option", "base", "case"),
    CASE_LIST,
    ids=[f"{c}-{o}-{b.replace(' ', '_')}-{type(k).__name__}" for c, o, b, k in CASE_LIST],
)
def test_option_acts_or_is_refused(
    command: str,
    option: str,
    base: str,
    case: Refused | Acts,
    files: Files,
    capsys,
    fixed_clock,
    monkeypatch,
) -> None:
    base_args = files.fill(BASES[base])
    if isinstance(case, Acts) and case.columns is not None:
        monkeypatch.setenv("COLUMNS", str(case.columns))
    if isinstance(case, Refused):
        code, text, written, _ = _outcome(base_args + files.fill(case.args), files, capsys, [])
        assert code == 2 and case.message in text, text
        assert "Traceback" not in text and not written
        return
    without = _outcome(base_args, files, capsys, fixed_clock)
    varied = _remove(base_args, files.fill(case.without)) + files.fill(case.args)
    with_it = _outcome(varied, files, capsys, fixed_clock)
    assert "Traceback" not in with_it[1]
    assert with_it != without, f"{option} changed nothing: {with_it[1]}"


def _remove(args: list[str], run: list[str]) -> list[str]:
    """`args` without the run of tokens `run` (which must be there)."""
    if not run:
        return list(args)
    i = next(i for i in range(len(args)) if args[i : i + len(run)] == run)
    return args[:i] + args[i + len(run) :]


@pytest.mark.slow  # two int8 exports of mnist_cnn: calibration and quantization, ~10 s each
def test_int8_options_act_and_the_report_counts_the_examples_used(tmp_path: Path, capsys) -> None:
    """--calib-size is honoured: the report says how many examples calibration really saw
    (ignoring the option would show 256, the default); method and split act too."""
    from netspec import deploy
    from netspec.ir.build import load_spec

    capsys.readouterr()
    args = ["export", MNIST, "-o", str(tmp_path / "a.onnx"), "--int8", "--calibrate", "digits"]
    assert main([*args, "--calib-size", "64"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"calib +64 examples of digits .*, minmax", text), text
    val = re.search(r"validation \((\d+) examples\)", text)
    assert val, text
    graph = load_spec(MNIST).instantiate({})
    calibration = deploy.Calibration("digits", size=96, method="percentile", val_split=0.5)
    report = deploy.export(graph, tmp_path / "b.onnx", int8=calibration)
    assert report.int8 is not None
    assert report.int8.quantized.calibration == 96
    assert report.int8.quantized.method == "percentile"
    assert report.int8.val_examples != int(val[1])
