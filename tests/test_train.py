"""`netspec train` and `netspec eval`: the loop, the run folder, resume, transfer, DDP, errors.

Everything trains a tiny network on seeded synthetic data, so the whole file runs in about a
minute on two cores. Subprocess tests go through `python -m netspec`, as a user would.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.cli import Done, run_cli
from safetensors import safe_open
from safetensors.torch import load_file

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.io import atomic_write
from netspec.ir.build import load_spec_text
from netspec.train import trainer
from netspec.train.checkpoint import (
    STATE,
    load_matching,
    load_weights,
    save_weights,
    write_text,
)
from netspec.train.data import load_data
from netspec.train.device import Runtime, pick_runtime
from netspec.train.launch import train
from netspec.train.report import CSV_COLUMNS, init_table
from netspec.train.settings import resolve_settings
from netspec.train.trainer import (
    Job,
    Penalty,
    RunResult,
    TrainingDiverged,
    frozen_layers,
)

TINY = """network tiny "a tiny CNN for tests"
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> BN -> RELU -> POOL -> FC(8, l2=0.5) -> RELU -> DROPOUT(0.2) -> FC(4) -> SOFTMAX
"""
# No batch norm or dropout: data-parallel steps then equal single-process ones exactly.
PLAIN = """network plain "a tiny CNN without batch statistics"
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> RELU -> POOL -> FC(8) -> RELU -> FC(4) -> SOFTMAX
"""


def _graph(text: str = TINY):
    return load_spec_text(text, "<tiny>").instantiate({})


def _job(tmp_path: Path, text: str = TINY, n: int = 128, **settings) -> Job:
    graph = _graph(text)
    s = resolve_settings({}, {"data": f"synthetic:{n}", "epochs": 2, "batch_size": 16, **settings})
    data = load_data(s.data, graph.input.shape, graph.classes, seed=s.seed, val_split=s.val_split)
    out = tmp_path / "run"
    out.mkdir(parents=True, exist_ok=True)
    return Job(graph, s, data, out, device="cpu", quiet=True, threads=1)  # threads sway float sums


def _cli(*args: str, cwd: Path) -> Done:
    return run_cli(*args, cwd=cwd)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.ns"
    path.write_text(TINY)
    return path


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


# --- the loop --------------------------------------------------------------------------------


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    result = train(_job(tmp_path, n=256, epochs=6, lr=0.02))
    losses = [r.train_loss for r in result.history]
    assert len(losses) == 6 and losses[-1] < 0.7 * losses[0]
    assert result.history[-1].val_acc > 0.5  # four classes: chance is 0.25
    assert result.stopped == "completed"


def test_an_interrupted_run_resumes_exactly(tmp_path: Path, monkeypatch) -> None:
    """Three epochs straight, and the same run interrupted in epoch 3 then resumed, end
    bit-identical: every epoch's randomness (order, augmentation, dropout) is reseeded."""
    straight = _job(tmp_path / "a", epochs=3, augment="shift=0.1,flip")
    train(straight)
    split = _job(tmp_path / "b", epochs=3, augment="shift=0.1,flip")
    real = trainer._Run.train_epoch

    def interrupted(self, epoch, progress):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(self, epoch, progress)

    monkeypatch.setattr(trainer._Run, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(split)
    monkeypatch.setattr(trainer._Run, "train_epoch", real)
    train(dataclasses.replace(split, resume=True))
    a, b = load_file(straight.out / "last.safetensors"), load_file(split.out / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader((split.out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]


def test_early_stopping(tmp_path: Path, monkeypatch) -> None:
    losses = iter([1.0, 0.9, 0.95, 0.92, 0.91, 0.5])  # best at epoch 2, then 3 epochs worse
    monkeypatch.setattr(trainer, "_validate", lambda *args: (next(losses), {"acc": 0.5}))
    result = train(_job(tmp_path, epochs=6, patience=3))
    assert result.stopped == "early stopping"
    assert [r.epoch for r in result.history] == [1, 2, 3, 4, 5] and result.best_epoch == 2
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["stopped"] == "early stopping" and saved["best_epoch"] == 2
    with safe_open(tmp_path / "run" / "best.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == "2"


def test_penalties_follow_layer_args_and_global_values() -> None:
    graph = _graph()
    model = netspec.build(graph, seed=0)
    conv, fc1, fc2 = (model.get_parameter(f"{n}.weight") for n in ("conv1", "fc1", "fc2"))
    # fc1 has its own l2=0.5; the global l2 reaches conv1 and fc2; biases and BN are exempt
    penalty = Penalty.build(graph, model, l1=0.0, l2=0.01)
    expected = 0.01 * conv.square().sum() + 0.5 * fc1.square().sum() + 0.01 * fc2.square().sum()
    assert torch.allclose(penalty(), expected)
    l1 = Penalty.build(graph, model, l1=0.1, l2=0.0)
    expected = (
        0.1 * (conv.abs().sum() + fc1.abs().sum() + fc2.abs().sum()) + 0.5 * fc1.square().sum()
    )
    assert torch.allclose(l1(), expected)
    fc1.requires_grad_(False)  # frozen weights are not penalized
    frozen = Penalty.build(graph, model, l1=0.0, l2=0.01)
    assert torch.allclose(frozen(), 0.01 * (conv.square().sum() + fc2.square().sum()))
    assert not Penalty.build(_graph(PLAIN), netspec.build(_graph(PLAIN)), 0.0, 0.0)


def test_penalties_change_the_training_loss(tmp_path: Path) -> None:
    plain = train(_job(tmp_path / "a", text=PLAIN, epochs=1))
    l2 = train(_job(tmp_path / "b", text=PLAIN, epochs=1, l2=0.05))
    l1 = train(_job(tmp_path / "c", text=PLAIN, epochs=1, l1=0.01))
    assert l2.history[0].train_loss > plain.history[0].train_loss + 0.01
    assert l1.history[0].train_loss > plain.history[0].train_loss + 0.01


def test_freeze_keeps_frozen_weights_and_statistics(tmp_path: Path) -> None:
    job = _job(tmp_path, freeze=("conv*", "bn1"))
    before = netspec.build(job.graph, seed=0).state_dict()
    train(job)
    after = load_file(job.out / "last.safetensors")
    for key in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.running_mean", "bn1.running_var"):
        assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["fc1.weight"], after["fc1.weight"])


def test_freeze_pattern_must_match_a_layer(tmp_path: Path) -> None:
    with pytest.raises(NetspecError, match="matches no layer") as info:
        train(_job(tmp_path, freeze=("cnv1",)))
    assert "`conv1`" in (info.value.hint or "")


def test_freeze_patterns_on_resnet18() -> None:
    graph = netspec.compile_spec(Path(__file__).resolve().parents[1] / "specs" / "resnet18.ns")
    layers = frozen_layers(graph, ("conv*", "layer1.*"))
    assert layers[0] == "conv1" and "layer1.basic2.bn2" in layers
    assert all(i == "conv1" or i.startswith("layer1.") for i in layers)
    with pytest.raises(NetspecError) as info:
        frozen_layers(graph, ("layer1",))
    assert "'layer1.*' freezes its layers" in (info.value.hint or "")


def test_init_loads_by_name_and_shape(tmp_path: Path) -> None:
    source = netspec.build(_graph(), seed=7)
    save_weights(tmp_path / "src.safetensors", source.state_dict())
    wider = TINY.replace("FC(8, l2=0.5)", "FC(16)").replace("-> FC(4)", "-> FC(4) as head")
    model = netspec.build(_graph(wider), seed=0)
    report = load_matching(model, load_weights(tmp_path / "src.safetensors"))
    assert "conv1.weight" in report.loaded and "bn1.running_var" in report.loaded
    assert torch.equal(model.state_dict()["conv1.weight"], source.state_dict()["conv1.weight"])
    assert ("fc1.weight", (8, 64), (16, 64)) in report.skipped
    assert {"head.weight", "head.bias"} <= set(report.new)
    assert {"fc2.weight", "fc2.bias"} <= set(report.unused)
    table = init_table(report, "src.safetensors")
    assert "skipped" in str(table.caption) and "2 new" in str(table.caption)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    job = _job(tmp_path, epochs=1)
    train(job)
    good = (job.out / "last.safetensors").read_bytes()
    calls = {"n": 0}
    real = trainer.objective

    def poisoned(logits, y):
        calls["n"] += 1
        loss = real(logits, y)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(trainer, "loss_function", lambda task: poisoned)  # the task's loss
    resumed = dataclasses.replace(
        job, settings=dataclasses.replace(job.settings, epochs=3), resume=True
    )
    with pytest.raises(TrainingDiverged) as info:
        train(resumed)
    assert "the loss became nan in epoch 2" in info.value.message
    assert "epoch 1" in info.value.notes[0]
    assert (job.out / "last.safetensors").read_bytes() == good
    assert len(list(csv.DictReader((job.out / "metrics.csv").open()))) == 1
    assert not list(job.out.glob(".*tmp*"))


def test_the_cuda_settings_run_on_cpu(tmp_path: Path, monkeypatch) -> None:
    """bf16 autocast and channels-last (what --device cuda turns on), exercised on the CPU."""
    runtime = Runtime(torch.device("cpu"), amp=True, channels_last=True)
    monkeypatch.setattr(trainer, "pick_runtime", lambda *args, **kwargs: runtime)
    result = train(_job(tmp_path, epochs=1))
    assert math.isfinite(result.history[0].train_loss) and math.isfinite(result.history[0].val_loss)
    weights = load_file(tmp_path / "run" / "last.safetensors")
    assert weights["conv1.weight"].dtype == torch.float32  # the weights stay fp32


def test_device_choice() -> None:
    assert pick_runtime("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_runtime("cpu") == Runtime(torch.device("cpu"))
    with pytest.raises(NetspecError, match="unknown device"):
        pick_runtime("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(NetspecError, match="no CUDA GPU"):
            pick_runtime("cuda")


# --- files -----------------------------------------------------------------------------------


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(NetspecError, match="disk full"):  # the OS error, said clearly
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
    write_text(target, "new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1


def test_run_folder_and_eval(tmp_path: Path, tiny_spec: Path) -> None:
    out = tmp_path / "run"
    done = _cli(
        "train",
        str(tiny_spec),
        "--data",
        "synthetic:96",
        "--epochs",
        "2",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # not a terminal: one line per epoch, printed once (no final table repeating them)
    assert done.stdout.count("epoch 2/2") == 1 and "train loss" not in done.stdout
    assert (out / "spec.ns").read_text() == TINY
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["epochs"] == 2 and settings["settings"]["data"] == "synthetic:96"
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert (
        tuple(rows[0])
        == CSV_COLUMNS
        == ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
    )
    assert [r[0] for r in rows[1:]] == ["1", "2"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keys = set(netspec.build(_graph()).state_dict())
    for name in ("last.safetensors", "best.safetensors"):
        with safe_open(out / name, "pt") as f:
            assert set(f.keys()) == keys
    with safe_open(out / "last.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == "2"
    assert torch.load(out / STATE, weights_only=True)["epoch"] == 2

    shown = _cli(
        "eval",
        str(tiny_spec),
        "--weights",
        str(out / "best.safetensors"),
        "--data",
        "synthetic:96",
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "accuracy:" in shown.stdout and "confusion matrix" in shown.stdout
    assert "per" not in shown.stderr
    # a run folder stands for its spec, data and best weights
    assert main(["eval", "--weights", str(out)]) == 0


def test_resume_after_kill_9(tmp_path: Path, tiny_spec: Path) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        str(tiny_spec),
        "--data",
        "synthetic:3000",
        "--epochs",
        "6",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "netspec", *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    while not (out / STATE).exists():  # the run ends by itself: no hang without a checkpoint
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_epoch = torch.load(out / STATE, weights_only=True)["epoch"]
    assert 1 <= done_epoch < 6, "the run finished before it was killed"

    resumed = _cli("train", "--resume", str(out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [
        line.split("/")[0] for line in resumed.stdout.splitlines() if line.startswith("epoch ")
    ]
    assert epochs[0] == f"epoch {done_epoch + 1}" and epochs[-1] == "epoch 6"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "result.json").read_text())["stopped"] == "completed"
    assert not list(out.glob(".*tmp*"))


def test_init_and_freeze_from_the_command_line(tmp_path: Path, tiny_spec: Path) -> None:
    source = netspec.build(_graph(), seed=7).state_dict()
    save_weights(tmp_path / "src.safetensors", source)
    wider = tmp_path / "wider.ns"
    wider.write_text(TINY.replace("FC(8, l2=0.5)", "FC(16)"))
    out = tmp_path / "run"
    done = _cli(
        "train", str(wider), "--data", "synthetic:64", "--epochs", "1", "--out", str(out),
        "--init", str(tmp_path / "src.safetensors"), "--init-partial", "--freeze", "conv*",
        "--freeze", "bn1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--init" in done.stdout and "layers with weights loaded" in done.stdout
    assert "left initialised: `fc1` (weight [16, 64]" in done.stdout
    assert "the source's `fc1` has weight [8, 64]" in done.stdout
    trained = load_file(out / "last.safetensors")
    assert torch.equal(trained["conv1.weight"], source["conv1.weight"])  # loaded, then frozen
    assert not torch.equal(trained["fc2.weight"], source["fc2.weight"])  # loaded, then trained


def test_diverging_run_exits_2_with_a_message(tmp_path: Path, tiny_spec: Path) -> None:
    out = tmp_path / "run"
    done = _cli(
        "train", str(tiny_spec), "--data", "synthetic:64", "--epochs", "2", "--out", str(out),
        "--optimizer", "sgd", "--lr", "1e30", "--no-nesterov",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: training diverged: the loss became nan in epoch 1" in done.stderr
    assert "no checkpoint was written" in done.stderr and "lower the learning rate" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "last.safetensors").exists()


# --- data parallel ---------------------------------------------------------------------------


def test_two_processes_end_identical_and_match_one(tmp_path: Path) -> None:
    ddp = dataclasses.replace(_job(tmp_path / "ddp", text=PLAIN, epochs=1), nproc=2)
    result = train(ddp)
    assert isinstance(result, RunResult) and result.ranks_max_diff == 0.0
    single = _job(tmp_path / "one", text=PLAIN, epochs=1)
    train(single)
    # each step's two half-batches together are the single process's batch
    a, b = load_file(ddp.out / "last.safetensors"), load_file(single.out / "last.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_an_error_in_the_processes_is_an_error_here(tmp_path: Path) -> None:
    job = dataclasses.replace(_job(tmp_path, text=PLAIN, freeze=("nomatch",)), nproc=2)
    with pytest.raises(NetspecError, match="matches no layer"):
        train(job)


def test_single_process_training_builds_no_process_group(tmp_path: Path, monkeypatch) -> None:
    import torch.distributed as dist

    def refuse(*args, **kwargs):
        raise AssertionError("a process group in a single-process run")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", refuse)
    train(_job(tmp_path, epochs=1))
    assert not dist.is_initialized()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "mnist"], "unknown data source `mnist`"),
        (["--data", "digits"], "the spec declares 4 classes but digits has 10"),
        (["--data", "synthetic", "--optimizer", "adma"], "did you mean `adam`"),
        (["--data", "synthetic", "--freeze", "cnv*"], "matches no layer"),
        (["--data", "synthetic", "--init", "missing.safetensors"], "weights file not found"),
        (["--data", "synthetic", "--device", "tpu"], "unknown device `tpu`"),
        (["--data", "synthetic", "--momentum", "0.9"], "`momentum` is an option of sgd"),
        ([], "no training data"),
    ],
)
def test_bad_input_is_an_error_not_a_traceback(
    tmp_path: Path, tiny_spec: Path, capsys, args, message
) -> None:
    code = main(["train", str(tiny_spec), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_resume_refusals(tmp_path: Path, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "--lr cannot change" in capsys.readouterr().err


def test_unknown_spec_setting_points_at_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "typo.ns"
    spec.write_text(TINY + "train { epoch = 3 }\n")
    done = _cli("train", str(spec), "--data", "synthetic", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "typo.ns:5:9: error: unknown training setting `epoch`" in done.stderr
    assert "did you mean `epochs`?" in done.stderr


def test_eval_refuses_weights_of_another_network(tmp_path: Path, tiny_spec: Path, capsys) -> None:
    save_weights(tmp_path / "other.safetensors", netspec.build(_graph(PLAIN)).state_dict())
    code = main(
        [
            "eval",
            str(tiny_spec),
            "--weights",
            str(tmp_path / "other.safetensors"),
            "--data",
            "synthetic",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "do not fit this network" in err and "missing: bn1.weight" in err


def test_a_job_without_curves_writes_its_results_but_no_plot(tmp_path: Path) -> None:
    job = dataclasses.replace(_job(tmp_path, n=64, epochs=1), curves=False)
    train(job)
    assert json.loads((job.out / "result.json").read_text())["stopped"] == "completed"
    assert not (job.out / "curves.png").exists()
    drawn = _job(tmp_path / "drawn", n=64, epochs=1)
    train(drawn)
    assert (drawn.out / "curves.png").exists()
    # a run that diverges (in epoch 2, with epoch 1 to plot) writes its result on the way
    # out: without the plot too
    diverging = _job(
        tmp_path / "diverging", n=64, epochs=3, optimizer="sgd", nesterov=False,
        schedule="step", step_size=1, gamma=1e32,
    )  # fmt: skip
    diverging = dataclasses.replace(diverging, curves=False)
    with pytest.raises(NetspecError, match="loss became .* in epoch 2"):
        train(diverging)
    assert json.loads((diverging.out / "result.json").read_text())["stopped"] == "diverged"
    assert not (diverging.out / "curves.png").exists()
