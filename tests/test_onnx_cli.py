"""`netspec export`, `netspec run`, `netspec bench`, and the runtime's quiet provider choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from netspec import timing
from netspec.cli import main
from netspec.deploy import runtime
from netspec.errors import NetspecError

ROOT = Path(__file__).resolve().parents[1]
MNIST = str(ROOT / "specs" / "mnist_cnn.ns")
ORT_NOISE = ("EP Error", "[E:onnxruntime", "[W:onnxruntime", "Failed to load library")


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mnist.onnx"
    assert main(["export", MNIST, "-o", str(path)]) == 0
    return path


# --- export ------------------------------------------------------------------------------------


def test_export_prints_what_it_wrote(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    spec = tmp_path / "small.ns"
    spec.write_text(
        "input [3, 16, 16]\nclasses 4\nINPUT -> [CONV(8, bias=off) -> BN -> RELU]*2 -> GAP -> FC(4) -> SOFTMAX\n"
    )
    assert main(["export", str(spec), "-o", str(out), "--fold-bn", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (" in text and "KiB)" in text
    assert "opset    21 (IR version 10), float32" in text
    assert "weights  seed 3" in text
    assert "params   844 in initializers (2 batch norms folded into their convolutions)" in text
    assert text.count(" ok  ") == 3 and "shape inference vs IR: all" in text
    model = onnx.load(str(out))
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)


def test_export_options_and_bindings(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    spec = str(ROOT / "specs" / "cs231n_family.ns")
    assert (
        main(
            [
                "export",
                spec,
                "-o",
                str(out),
                "--fp16",
                "--opset",
                "18",
                "--logits",
                "N=1",
                "M=1",
                "K=1",
                "--set",
                "width=16 pool=on",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "opset    18 (IR version 8), float16 compute, float32 input/output" in text
    assert "float32 scores" in text
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert '"N": 1' in meta["netspec.bindings"] and meta["netspec.output"] == "scores"


def test_export_with_a_checkpoint(tmp_path: Path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    from netspec import build

    module = build(MNIST, seed=5)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01)
    (tmp_path / "run").mkdir()
    ckpt = tmp_path / "run" / "best.safetensors"
    save_file(module.state_dict(), str(ckpt))
    out = tmp_path / "m.onnx"
    assert (
        main(["export", MNIST, "-o", str(out), "--weights", str(tmp_path / "run")]) == 0
    )  # a run's folder
    assert f"weights  {ckpt}" in capsys.readouterr().out
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(x)).numpy()
    got = runtime.open_session(out, "cpu").run(x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["netspec.weights"].startswith("checkpoint sha256:")
    assert main(["export", MNIST, "-o", str(out), "--weights", str(ckpt), "--seed", "1"]) == 2
    assert "give one" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--opset", "99"], "--opset must be in 13..26; received 99"),
        (["--weights", "missing.safetensors"], "no checkpoint at missing.safetensors"),
        (["--set", "N=2"], "the spec has no parameter `N`"),
    ],
)
def test_export_user_errors(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", MNIST, "-o", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_refuses_failing_specs_and_inexpressible_layers(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(ROOT / "specs" / "alexnet_table.ns"), "-o", str(out)]) == 2
    assert "shape assertion failed" in capsys.readouterr().err
    spec = tmp_path / "adaptive.ns"
    spec.write_text("input [4, 7, 7]\nclasses 3\nINPUT -> ADAPTIVEAVGPOOL(3) -> FC(3) -> SOFTMAX\n")
    assert main(["export", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "adaptive.ns:3:10: error: ADAPTIVEAVGPOOL `apool1` pools 7x7 to 3x3" in err
    assert main(["export", MNIST, "-o", str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [spec]


# --- run ---------------------------------------------------------------------------------------


def test_run_on_arrays_and_images(tmp_path: Path, mnist_model: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "batch.npy", rng.random((3, 1, 28, 28), dtype=np.float32))
    np.save(
        tmp_path / "one.npy", (rng.random((28, 28)) * 255).astype(np.uint8)
    )  # gray, no channel axis
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit{i}" for i in range(10)))
    files = [str(tmp_path / f) for f in ("batch.npy", "one.npy", "photo.png")]
    assert (
        main(
            [
                "run",
                str(mnist_model),
                "--input",
                files[0],
                *files[1:],
                "-k",
                "2",
                "--labels",
                str(labels),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("onnxruntime ") and "runs on " in lines[0]
    names = [line for line in lines[1:] if not line.startswith("  ")]
    assert [Path(n).name for n in names] == [
        "batch.npy[0]",
        "batch.npy[1]",
        "batch.npy[2]",
        "one.npy",
        "photo.png",
    ]
    ranked = [line for line in lines if line.startswith("  ")]
    assert len(ranked) == 10 and all(" digit" in line and line.endswith("%") for line in ranked)


def test_run_shows_softmax_of_scores(tmp_path: Path, capsys) -> None:
    model = tmp_path / "logits.onnx"
    assert main(["export", MNIST, "-o", str(model), "--logits"]) == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 28, 28), np.float32))
    capsys.readouterr()
    assert (
        main(["run", str(model), str(tmp_path / "x.npy"), "-k", "10"]) == 0
    )  # --input is optional
    out = capsys.readouterr().out
    assert "probabilities shown are their softmax" in out
    shares = [
        float(line.split()[-1].rstrip("%")) for line in out.splitlines() if line.startswith("  ")
    ]
    assert len(shares) == 10 and abs(sum(shares) - 100) < 0.1


def test_run_on_token_ids(tmp_path: Path, capsys) -> None:
    model = tmp_path / "text.onnx"
    assert main(["export", str(ROOT / "specs" / "text_cnn.ns"), "-o", str(model)]) == 0
    np.save(tmp_path / "ids.npy", np.arange(42).reshape(2, 21) * 100)
    capsys.readouterr()
    assert main(["run", str(model), "-i", str(tmp_path / "ids.npy")]) == 0
    assert "ids.npy[1]" in capsys.readouterr().out


def test_run_errors(tmp_path: Path, mnist_model: Path, capsys) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 28, 29), np.float32))
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "corrupt.onnx").write_bytes(mnist_model.read_bytes()[:500])
    (tmp_path / "fake.png").write_bytes(b"not an image")
    cases = [
        (
            [str(mnist_model), "-i", str(tmp_path / "bad.npy")],
            "holds an array of shape [3x28x29]; the model takes [1x28x28]",
        ),
        ([str(mnist_model), "-i", str(tmp_path / "none.npy")], "no input file"),
        ([str(mnist_model), "-i", str(tmp_path / "notes.txt")], "expected an image"),
        ([str(mnist_model), "-i", str(tmp_path / "fake.png")], "cannot read the image"),
        ([str(mnist_model)], "no inputs"),
        ([str(tmp_path / "corrupt.onnx"), "-i", str(tmp_path / "bad.npy")], "cannot load"),
        ([str(tmp_path / "missing.onnx"), "-i", str(tmp_path / "bad.npy")], "no model at"),
        (
            [str(mnist_model), "-i", str(tmp_path / "bad.npy"), "--provider", "gpu"],
            "unknown provider `gpu`",
        ),
    ]
    for args, message in cases:
        assert main(["run", *args]) == 2, args
        captured = capsys.readouterr()
        assert message in captured.err, (args, captured.err)
        assert "Traceback" not in captured.err


def test_run_is_quiet_about_missing_gpu_libraries(tmp_path: Path, mnist_model: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 28, 28), np.float32))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "netspec",
            "run",
            str(mnist_model),
            "-i",
            str(tmp_path / "x.npy"),
            "-k",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert not any(noise in done.stdout + done.stderr for noise in ORT_NOISE), (
        done.stdout + done.stderr
    )
    assert done.stderr == ""
    assert sum("runs on" in line for line in done.stdout.splitlines()) == 1


# --- providers ---------------------------------------------------------------------------------


def test_providers_are_probed_and_chosen() -> None:
    probes = runtime.probe_providers()
    assert list(probes) == ["tensorrt", "cuda", "cpu"] and probes["cpu"].usable
    best = runtime.choose_provider("auto")
    assert probes[best].usable and all(
        not probes[p].usable for p in list(probes)[: list(probes).index(best)]
    )
    for name, probe in probes.items():
        if not probe.usable:
            with pytest.raises(NetspecError, match=f"the {name} provider does not work here"):
                runtime.choose_provider(name)
    with pytest.raises(NetspecError, match="unknown provider `cudaa`") as info:
        runtime.choose_provider("cudaa")
    assert info.value.hint == "did you mean `cuda`?"


def test_probing_gpu_providers_without_their_libraries_is_quiet(monkeypatch, capfd) -> None:
    """Past the driver check (forced here), a provider whose libraries fail to load makes
    onnxruntime print pages of errors; the probe keeps them all off stdout and stderr."""
    if runtime.probe_providers()["cuda"].usable:
        pytest.skip("CUDA works here")
    monkeypatch.setattr(runtime, "_nvidia_driver", lambda: True)
    runtime.probe_providers.cache_clear()
    try:
        probes = runtime.probe_providers()
    finally:
        runtime.probe_providers.cache_clear()
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not probes["cuda"].usable and not probes["tensorrt"].usable and probes["cpu"].usable
    assert probes["cuda"].reason


def test_measure_reports_median_and_p90() -> None:
    result = timing.measure(lambda: None, seconds=0.01, min_runs=5, warmup=1)
    assert result.runs >= 5 and 0 <= result.median <= result.p90


# --- bench -------------------------------------------------------------------------------------


def test_bench_prints_a_table(capsys) -> None:
    assert main(["bench", MNIST, "-b", "1", "-b", "4", "--seconds", "0.1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mnist_cnn: torch eager (cpu) vs onnxruntime" in out
    assert "threads: 1" in out and "speed-up" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) >= 2 and all("x │" in row for row in rows[:2])
