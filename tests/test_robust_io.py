"""Hostile and damaged input on the I/O side (issues 8.4, 10, 11): one writer, one resolver, one
image reader; spec files that are devices, pipes or huge; data files that lie about what they
are; `netspec run` on inputs it must refuse; outputs whose folder is missing. Every refusal is
a clear message and exit 2, never a traceback or a hang."""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.cli import Done, run_cli
from helpers.cpu import HANG_S, cpu_limit
from onnx import TensorProto, helper

from netspec import io
from netspec.cli import main
from netspec.errors import NetspecError

ROOT = Path(__file__).resolve().parents[1]
FAMILY = str(ROOT / "specs" / "cs231n_family.ns")
TINY = "network tiny\ninput [1, 8, 8]\nclasses 4\nINPUT -> CONV(4) -> RELU -> POOL -> FC(4) -> SOFTMAX\n"


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


def _cli(*args: str, cwd: Path | None = None) -> Done:
    return run_cli(*args, cwd=cwd)


def _process(*args: str, timeout: float = HANG_S) -> subprocess.CompletedProcess:
    """A real `netspec` process: for inputs that could block or hang the caller."""
    return subprocess.run(
        [sys.executable, "-m", "netspec", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _refused(done: subprocess.CompletedProcess | Done, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height RGB pixels; the pixel data is tiny."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# --- 8.4: one I/O layer ------------------------------------------------------------------------


def test_augment_takes_every_boolean_word_the_readme_promises() -> None:
    from netspec.train.augment import parse_augment

    for word, value in (("on", True), ("off", False), ("yes", True), ("0", False)):
        assert parse_augment(f"flip={word}").flip is value
    with pytest.raises(NetspecError, match="flip=maybe"):
        parse_augment("flip=maybe")


def test_one_checkpoint_resolver_for_train_and_export(tmp_path: Path) -> None:
    from netspec.deploy import weights as deploy_weights
    from netspec.train import checkpoint

    (tmp_path / "last.safetensors").write_bytes(b"x")
    assert checkpoint.weights_file(tmp_path) == deploy_weights.checkpoint_file(tmp_path)
    (tmp_path / "best.safetensors").write_bytes(b"x")
    assert checkpoint.weights_file(tmp_path) == deploy_weights.checkpoint_file(tmp_path)
    assert checkpoint.weights_file(tmp_path).name == "best.safetensors"
    messages = set()
    for resolve in (checkpoint.weights_file, deploy_weights.checkpoint_file):
        with pytest.raises(NetspecError) as err:
            resolve(tmp_path / "missing.safetensors")
        messages.add(err.value.message)
    assert len(messages) == 1  # the same words from train, eval and export


def test_no_module_keeps_its_own_atomic_writer() -> None:
    from netspec import explore
    from netspec.train import checkpoint

    assert not hasattr(checkpoint, "atomic_write") or checkpoint.atomic_write is io.atomic_write
    assert not hasattr(explore, "atomic_write") or explore.atomic_write is io.atomic_write
    assert not hasattr(explore, "human_bytes")


def test_explore_outputs_get_a_normal_mode_and_binary_sizes(tmp_path: Path, capsys) -> None:
    old = os.umask(0o022)
    try:
        csv_path, member = tmp_path / "all.csv", tmp_path / "member.ns"
        main(["explore", FAMILY, "--grid", "N=1", "--grid", "M=1", "--csv", str(csv_path)])
        assert main(["explore", FAMILY, "--pick", "1", "-o", str(member)]) == 0
    finally:
        os.umask(old)
    for path in (csv_path, member):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    err = capsys.readouterr().err
    # binary units, like the summary (rich may wrap the line anywhere: a long tmp path under xdist)
    assert re.search(r"\d\s+(KiB|MiB)\s+activations", err), err


def test_budget_limits_echo_the_unit_the_spec_wrote(capsys) -> None:
    main(["check", FAMILY, "N=1", "M=1", "K=0", "width=16", "pool=on"])
    out = capsys.readouterr().out
    assert "memory <= 4MB" in out and "memory <= 4M " not in out
    from netspec.summary import limit_text

    assert limit_text("memory", 2 * 2**20) == "2MiB" and limit_text("params", 4e6) == "4M"


def test_explore_refuses_a_missing_output_folder_before_the_work(tmp_path: Path) -> None:
    for flag in ("--csv", "--plot"):
        _refused(_cli("explore", FAMILY, flag, str(tmp_path / "nope" / "x")), "does not exist")
    _refused(
        _cli("explore", FAMILY, "--pick", "1", "-o", str(tmp_path / "nope" / "m.ns")),
        "does not exist",
    )


# --- 11.2: input files are size-capped regular files --------------------------------------------


def test_check_refuses_dev_zero_fast() -> None:
    with cpu_limit(15, children=True):
        done = _process("check", "/dev/zero")
    _refused(done, "not a regular file")


def test_check_refuses_a_named_pipe_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.ns"
    os.mkfifo(fifo)
    _refused(_process("check", str(fifo)), "not a regular file")


def test_check_refuses_a_10mb_spec_fast_with_a_location(tmp_path: Path) -> None:
    big = tmp_path / "big.ns"
    big.write_text("input [3, 8, 8]\n" + "# padding\n" * 1_100_000)
    with cpu_limit(15, children=True):
        done = _process("check", str(big))
    _refused(done, f"{big}:1:1", "over netspec's limit of 1.0 MiB")


def test_read_input_caps_and_accepts(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_bytes(b"x" * 100)
    assert io.read_input(f, limit=100) == b"x" * 100
    with pytest.raises(NetspecError, match="over netspec's limit"):
        io.read_input(f, limit=99)
    with pytest.raises(NetspecError, match="is a directory"):
        io.read_input(tmp_path)


# --- 11.3 / 11.4: data files that lie ------------------------------------------------------------


def _load(source: str, shape=(1, 8, 8), classes: int = 4):
    from netspec.train.data import load_data

    return load_data(source, shape, classes)


def test_npy_renamed_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(NetspecError, match="single array"):
        _load(f"npz:{path}")


def test_zero_dimensional_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.float32(3), y=np.int64(1))
    with pytest.raises(NetspecError, match="0-d"):
        _load(f"npz:{path}")


def test_an_empty_data_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(NetspecError, match="no training examples"):
        _load(f"npz:{path}")


def test_a_corrupt_gz_idx_file_is_refused(tmp_path: Path) -> None:
    from netspec.train.data import read_idx

    good = tmp_path / "good.gz"
    import gzip

    good.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abc"))
    assert read_idx(good).tolist() == [97, 98, 99]
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    data = b"\x00\x00\x08\x01" + struct.pack(">I", 4096) + bytes(range(256)) * 16
    blob = bytearray(gzip.compress(data))
    blob[10:30] = bytes(range(20))  # damage the deflate stream (zlib.error), not the header
    bad.write_bytes(bytes(blob))
    with pytest.raises(NetspecError, match="cannot read"):
        read_idx(bad)


def test_synthetic_sizes_past_memory_are_refused_up_front() -> None:
    with cpu_limit(2), pytest.raises(NetspecError, match="synthetic:99999999999"):
        _load("synthetic:99999999999")


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (9000, 9000)])
def test_decompression_bomb_images_are_refused_from_their_header(
    tmp_path: Path, width: int, height: int
) -> None:
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
    _png_header(tmp_path / "photos" / "a" / "bomb.png", width, height)
    _png_header(tmp_path / "photos" / "b" / "small.png", 4, 4)
    with pytest.raises(NetspecError, match="pixels"):
        _load(f"folder:{tmp_path / 'photos'}", shape=(3, 8, 8), classes=2)
    with pytest.raises(NetspecError, match="pixels"):
        io.read_image(tmp_path / "photos" / "a" / "bomb.png", 3, 8, 8)


def test_channels_last_training_data_is_converted_and_said(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((20, 8, 8, 3), dtype=np.float32), y=np.arange(20) % 4)
    split = _load(f"npz:{path}", shape=(3, 8, 8))
    assert split.train.x.shape[1:] == (3, 8, 8)
    assert any("channels-last" in n and "[8, 8, 3]" in n for n in split.notes)
    np.savez(path, x=rng.random((20, 3, 8, 8), dtype=np.float32), y=np.arange(20) % 4)
    assert _load(f"npz:{path}", shape=(3, 8, 8)).notes == ()


# --- netspec run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    spec = folder / "tiny.ns"
    spec.write_text(TINY)
    path = folder / "tiny.onnx"
    assert main(["export", str(spec), "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def token_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokens")
    spec = folder / "text.ns"
    spec.write_text(
        "network text\ninput tokens(length=6, vocab=20)\nclasses 3\n"
        "INPUT -> EMBEDDING(4) -> FLATTEN -> FC(3) -> SOFTMAX\n"
    )
    path = folder / "text.onnx"
    assert main(["export", str(spec), "-o", str(path)]) == 0
    return path


def test_run_refuses_negative_token_ids(token_model: Path, tmp_path: Path, capsys) -> None:
    x = tmp_path / "ids.npy"
    np.save(x, np.array([[1, 2, -5, 3, 4, 0]], np.int64))
    assert main(["run", str(token_model), "-i", str(x)]) == 2
    assert "token ids in [-5, 4]" in capsys.readouterr().err


def test_run_refuses_complex_and_nan_input(tiny_model: Path, tmp_path: Path, capsys) -> None:
    x = tmp_path / "c.npy"
    np.save(x, np.ones((1, 8, 8), np.complex64) * (1 + 2j))
    assert main(["run", str(tiny_model), "-i", str(x)]) == 2
    assert "complex" in capsys.readouterr().err
    x = tmp_path / "n.npy"
    a = np.zeros((1, 8, 8), np.float32)
    a[0, 3, 3] = np.nan
    np.save(x, a)
    assert main(["run", str(tiny_model), "-i", str(x)]) == 2
    err = capsys.readouterr()
    assert "NaN" in err.err and "nan%" not in err.out


def test_run_refuses_empty_zip_and_0d_npy(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    _refused(_cli("run", str(tiny_model), "-i", str(empty)), "empty")
    zipped = tmp_path / "zip.npy"
    with zipped.open("wb") as f:
        np.savez(f, x=np.zeros((1, 8, 8)))
    _refused(_cli("run", str(tiny_model), "-i", str(zipped)), ".npz archive")
    none = tmp_path / "none.npy"
    np.save(none, np.zeros((0, 1, 8, 8), np.float32))
    _refused(_cli("run", str(tiny_model), "-i", str(none)), "no examples")
    scalar = tmp_path / "scalar.npy"
    np.save(scalar, np.float32(1))
    _refused(_cli("run", str(tiny_model), "-i", str(scalar)), "shape []")


def test_run_refuses_a_non_utf8_labels_file(tiny_model: Path, tmp_path: Path) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 8, 8), np.float32))
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"cat\ndog\n\xff\xfe\nbird\n")
    _refused(_cli("run", str(tiny_model), "-i", str(x), "--labels", str(labels)), "not UTF-8")


def test_run_takes_channels_last_arrays_like_train_and_says_so(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "rgb.ns"
    spec.write_text("input [3, 8, 8]\nclasses 2\nINPUT -> CONV(2) -> GAP -> SOFTMAX\n")
    model = tmp_path / "rgb.onnx"
    assert main(["export", str(spec), "-o", str(model)]) == 0
    capsys.readouterr()
    x = tmp_path / "nhwc.npy"
    np.save(x, np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32))
    assert main(["run", str(model), "-i", str(x)]) == 0
    captured = capsys.readouterr()
    assert "channels-last" in captured.err and "converted" in captured.err
    assert "nhwc.npy[1]" in captured.out


def _model_with_inputs(path: Path, n: int) -> None:
    if n == 0:
        node = helper.make_node(
            "Constant", [], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1, 2], [1, 2])
        )
        inputs = []
    else:
        node = helper.make_node("Add", ["a", "b"], ["y"])
        inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1, 2]) for k in "ab"]
    graph = helper.make_graph(
        [node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))


@pytest.mark.parametrize("inputs", [0, 2])
def test_run_refuses_models_without_exactly_one_input(tmp_path: Path, inputs: int) -> None:
    model = tmp_path / "m.onnx"
    _model_with_inputs(model, inputs)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 2), np.float32))
    _refused(_cli("run", str(model), "-i", str(x)), f"has {inputs} input(s)")


# --- outputs ---------------------------------------------------------------------------------------


def test_export_refuses_a_missing_folder_before_lowering(tmp_path: Path) -> None:
    spec = tmp_path / "t.ns"
    spec.write_text(TINY)
    _refused(_cli("export", str(spec), "-o", str(tmp_path / "nope" / "m.onnx")), "does not exist")


def test_export_cleans_stale_temporaries_of_killed_exports(tmp_path: Path) -> None:
    spec = tmp_path / "t.ns"
    spec.write_text(TINY)
    stale = tmp_path / f".m.onnx.x1{io.TEMP_SUFFIX}"
    stale.write_bytes(b"x" * 1000)
    old = stale.stat().st_mtime - 2 * io.STALE_AFTER_S
    os.utime(stale, (old, old))
    assert main(["export", str(spec), "-o", str(tmp_path / "m.onnx")]) == 0
    assert not stale.exists()


def test_export_refuses_nan_weights_as_the_users_not_a_bug(tmp_path: Path, capsys) -> None:
    from safetensors.numpy import save_file

    spec = tmp_path / "t.ns"
    spec.write_text(TINY)
    from netspec.deploy.weights import initial_weights
    from netspec.ir.build import load_spec

    weights = initial_weights(load_spec(spec).instantiate({}), 0)
    weights["conv1.weight"][0, 0, 0, 0] = np.nan
    save_file(weights, str(tmp_path / "w.safetensors"))
    assert (
        main(
            [
                "export",
                str(spec),
                "-o",
                str(tmp_path / "m.onnx"),
                "--weights",
                str(tmp_path / "w.safetensors"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "NaN" in err and "conv1.weight" in err and "bug in netspec" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_turns_os_errors_into_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    from netspec.commands import check

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.ns"))

    monkeypatch.setattr(check, "load_spec", denied, raising=False)
    monkeypatch.setattr("netspec.ir.build.load_spec", denied)
    assert main(["check", str(tmp_path / "x.ns")]) == 2
    assert "Permission denied" in capsys.readouterr().err


def test_set_given_twice_with_different_values_is_an_error(capsys) -> None:
    assert (
        main(["check", FAMILY, "--set", "N=1", "--set", "N=3", "M=1", "K=0", "width=16", "pool=on"])
        == 2
    )
    assert "`N` is bound twice" in capsys.readouterr().err


def test_optimizer_call_with_unpacked_options_is_refused() -> None:
    from netspec.train.settings import resolve_settings

    with pytest.raises(NetspecError, match=r"\*\*"):
        resolve_settings({}, {"optimizer": "sgd(**{'lr': 5})"})
    assert json.loads(json.dumps(resolve_settings({}, {"optimizer": "sgd(lr=5)"}).lr)) == 5


def test_export_fp16_refuses_weights_past_float16s_range(tmp_path: Path, capsys) -> None:
    from safetensors.numpy import save_file

    from netspec.deploy.weights import initial_weights
    from netspec.ir.build import load_spec

    spec = tmp_path / "t.ns"
    spec.write_text(TINY)
    weights = initial_weights(load_spec(spec).instantiate({}), 0)
    weights["fc1.weight"][0, 0] = 1e6  # fine in float32, infinite in float16
    save_file(weights, str(tmp_path / "w.safetensors"))
    args = ["export", str(spec), "--weights", str(tmp_path / "w.safetensors")]
    assert main([*args, "-o", str(tmp_path / "a.onnx")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.onnx"), "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "float16's range" in err and "fc1.weight (1 of" in err and "bug in netspec" not in err


def test_cli_turns_memory_errors_into_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    def huge(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("netspec.ir.build.load_spec", huge)
    assert main(["check", str(tmp_path / "x.ns")]) == 2
    assert "out of memory" in capsys.readouterr().err
