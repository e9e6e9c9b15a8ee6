"""Training and run folders under damage and misuse (issues 10 and 11): an --init that loads
nothing, results kept after every epoch, epochs printed once, class names carried from the run
to the ONNX model to `netspec run`, damaged run folders, batch norm on batches of one, output
folders that cannot be made. Tiny specs, synthetic data, one or two epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import Done, run_cli
from PIL import Image

from netspec.cli import main

TINY = """network tiny
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> BN -> RELU -> POOL -> FC(4) -> SOFTMAX
"""
OTHER = """network other
input [1, 8, 8]
classes 4
INPUT -> FLATTEN -> FC(16) as hidden -> RELU -> FC(4) as head -> SOFTMAX
"""
WIDER = TINY.replace("CONV(4)", "CONV(6)")


@pytest.fixture(autouse=True)
def _fresh_exit_code(monkeypatch) -> None:
    monkeypatch.setattr("netspec.cli._exit_code", 0)


def _cli(*args: str, cwd: Path) -> Done:
    return run_cli(*args, cwd=cwd)


def _refused(done: Done, *needles: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def _spec(tmp_path: Path, text: str = TINY, name: str = "tiny.ns") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished 1-epoch run of TINY, shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("run")
    spec = _spec(folder)
    out = folder / "run"
    done = _cli(
        "train", str(spec), "--data", "synthetic:64", "--epochs", "1", "--out", str(out), cwd=folder
    )
    assert done.returncode == 0, done.stderr
    return out


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


# --- 10.4: --init ------------------------------------------------------------------------------


def test_init_that_loads_nothing_is_an_error(run_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path, OTHER, "other.ns")
    done = _cli(
        "train", str(spec), "--data", "synthetic:64", "--epochs", "1", "--init", str(run_dir),
        "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    _refused(
        done, "do not fit other: 0 of its 2 layers", "spec `hidden` (fc: weight [16, 64]",
        "unused in the source: `conv1` (conv: weight [4, 1, 3, 3]", "--init-partial",
    )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_partial_init_names_loaded_new_and_skipped_with_shapes(
    run_dir: Path, tmp_path: Path
) -> None:
    deeper = TINY.replace("-> FC(4)", "-> FC(8) -> RELU -> FC(4)")
    spec = _spec(tmp_path, deeper, "deeper.ns")
    args = ["train", str(spec), "--data", "synthetic:64", "--epochs", "1", "--init", str(run_dir)]
    done = _cli(*args, "--out", str(tmp_path / "a"), cwd=tmp_path)
    _refused(
        done, "do not fit tiny: 2 of its 4 layers", "spec `fc1` (fc: weight [8, 64], bias [8])"
        "  <->  source `fc1` (matrix: weight [4, 64], bias [4])",
    )  # fmt: skip
    done = _cli(*args, "--init-partial", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # conv1 and bn1 loaded; fc1 left, and why: both sides named with their shapes
    assert "2 of 4 layers with weights loaded" in done.stdout
    assert "left initialised: `fc1` (weight [8, 64], bias [8])" in done.stdout
    assert "the source's `fc1` has weight [4, 64], bias [4]" in done.stdout
    done = _cli(*args, "--init-min", "0.9", "--out", str(tmp_path / "b"), cwd=tmp_path)
    _refused(done, "under --init-min 0.9", "left initialised: `fc1` (weight [8, 64]")
    assert not (tmp_path / "b").exists()


# --- 10.6: results after every epoch; epochs printed once ----------------------------------------


def test_curves_and_result_are_written_after_every_epoch(tmp_path: Path) -> None:
    from netspec.ir.build import load_spec_text
    from netspec.train import trainer
    from netspec.train.data import load_data
    from netspec.train.settings import resolve_settings

    graph = load_spec_text(TINY, "<tiny>").instantiate({})
    s = resolve_settings({}, {"data": "synthetic:64", "epochs": 2, "batch_size": 16})
    data = load_data(s.data, graph.input.shape, graph.classes)
    out = tmp_path / "run"
    out.mkdir()
    seen = []
    original = trainer._Run.epoch

    def epoch(self, number, progress):
        record = original(self, number, progress)
        if number == 1:  # a kill now must leave the curves and the result of epoch 1
            seen.append(json.loads((out / trainer.RESULT).read_text()))
            seen.append((out / trainer.CURVES).stat().st_size)
        return record

    trainer._Run.epoch = epoch
    try:
        trainer.train_here(trainer.Job(graph, s, data, out, device="cpu", quiet=True, threads=1))
    finally:
        trainer._Run.epoch = original
    assert seen[0]["epochs_run"] == 1 and seen[0]["stopped"] == "running" and seen[1] > 0
    assert json.loads((out / trainer.RESULT).read_text())["stopped"] == "completed"


def test_non_terminal_output_prints_each_epoch_once(run_dir: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    done = _cli(
        "train", str(spec), "--data", "synthetic:64", "--epochs", "2", "--out", str(tmp_path / "r"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("epoch 1/2") == 1 and done.stdout.count("epoch 2/2") == 1
    assert "train loss" not in done.stdout  # no final table repeating the lines


# --- 10.7 / 10.8: channels-last said; class names kept through export and run ----------------


def test_class_names_go_from_the_image_folder_to_onnx_to_run(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for name, value in (("cat", 40), ("dog", 200)):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(value + rng.integers(-20, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / name / f"{i}.png")
    spec = _spec(
        tmp_path, "network pets\ninput [3, 8, 8]\nclasses 2\nINPUT -> CONV(2) -> GAP -> SOFTMAX\n"
    )
    out = tmp_path / "run"
    args = ["train", str(spec), "--data", f"folder:{tmp_path / 'photos'}", "--epochs", "1"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "settings.json").read_text())["data"]["classes"] == ["cat", "dog"]
    model = tmp_path / "pets.onnx"
    assert main(["export", str(spec), "-o", str(model), "--weights", str(out)]) == 0
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert json.loads(meta["netspec.classes"]) == ["cat", "dog"]
    capsys.readouterr()
    assert main(["run", str(model), "-i", str(tmp_path / "photos" / "dog" / "0.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    ranked = [line.split()[1] for line in lines if line.strip()[:2] in ("1.", "2.")]
    assert sorted(ranked) == ["cat", "dog"]


def test_train_says_it_converted_channels_last_data(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path, "network rgb\ninput [3, 8, 8]\nclasses 2\nINPUT -> CONV(2) -> GAP -> SOFTMAX\n"
    )
    data = tmp_path / "d.npz"
    np.savez(
        data,
        x=np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32),
        y=np.arange(16) % 2,
    )
    done = _cli(
        "train", str(spec), "--data", f"npz:{data}", "--epochs", "1", "--out", str(tmp_path / "r"),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "channels-last" in done.stdout and "converted to channels-first [3, 8, 8]" in done.stdout


# --- 11.3: damaged run folders ------------------------------------------------------------------


def _edit_settings(folder: Path, **changes) -> None:
    path = folder / "settings.json"
    saved = json.loads(path.read_text())
    for key, value in changes.items():
        saved[key] = value if not isinstance(value, dict) else {**saved[key], **value}
    path.write_text(json.dumps(saved))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "settings.json").write_text("{not json"), "is damaged: it is not JSON"),
        (lambda d: (d / "settings.json").write_text("{}"), "has no `bindings`, `settings`"),
        (lambda d: (d / "settings.json").write_text("[1, 2]"), "holds a list"),
        (lambda d: _edit_settings(d, threads="x"), "`threads` is 'x'"),
        (lambda d: _edit_settings(d, settings={"epochs": "many"}), "do not read back"),
        (lambda d: _edit_settings(d, bindings=[1]), "`bindings` is not an object"),
        (lambda d: (d / "spec.ns").write_bytes(b"network x\n\xff\xfe\n"), "not UTF-8"),
        (lambda d: (d / "last.state.pt").write_bytes(b"PK\x03\x04 not a zip"), "cannot read the training state"),
        (lambda d: torch.save([1, 2, 3], d / "last.state.pt"), "holds a list"),
        (lambda d: torch.save({"epoch": 1}, d / "last.state.pt"), "is not the training state of this run"),
    ],
)  # fmt: skip
def test_damaged_run_folders_resume_with_a_clear_error(
    run_dir: Path, tmp_path: Path, damage, needle
) -> None:
    copy = _copy_run(run_dir, tmp_path)
    damage(copy)
    _refused(_cli("train", "--resume", str(copy), "--epochs", "3", cwd=tmp_path), needle)


def test_a_foreign_pickle_as_training_state_is_refused(run_dir: Path, tmp_path: Path) -> None:
    import pickle

    copy = _copy_run(run_dir, tmp_path)
    with (copy / "last.state.pt").open("wb") as f:
        pickle.dump(Path("x"), f)  # not a tensor: weights_only refuses it, uncaught before
    _refused(
        _cli("train", "--resume", str(copy), "--epochs", "3", cwd=tmp_path),
        "cannot read the training state",
    )


@pytest.mark.parametrize("edited", [WIDER, TINY + "# a comment\n"])
def test_an_edited_spec_copy_is_refused_on_resume(
    run_dir: Path, tmp_path: Path, edited: str
) -> None:
    copy = _copy_run(run_dir, tmp_path)
    (copy / "spec.ns").write_text(edited)
    _refused(_cli("train", "--resume", str(copy), "--epochs", "3", cwd=tmp_path), "was edited")
    settings = json.loads((copy / "settings.json").read_text())
    del settings["source_hash"]  # a run folder from before the hash: the weights still must fit
    (copy / "settings.json").write_text(json.dumps(settings))
    done = _cli("train", "--resume", str(copy), "--epochs", "3", cwd=tmp_path)
    if edited == WIDER:
        _refused(done, "not the training state")
    else:
        assert done.returncode == 0, done.stderr


def test_eval_on_a_damaged_run_folder_is_a_clear_error(run_dir: Path, tmp_path: Path) -> None:
    copy = _copy_run(run_dir, tmp_path)
    (copy / "settings.json").write_text("{not json")
    _refused(_cli("eval", "--weights", str(copy), cwd=tmp_path), "is damaged")


# --- 11.3: batch norm on a batch of one; output folders that cannot be made ----------------------


def test_batch_norm_on_batches_of_one_is_refused_up_front(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    base = ["train", str(spec), "--data", "synthetic:32", "--epochs", "1"]
    _refused(
        _cli(*base, "--batch-size", "1", "--out", str(tmp_path / "a"), cwd=tmp_path), "batch norm"
    )
    _refused(
        _cli(
            *base, "--batch-size", "2", "--nproc", "2", "--out", str(tmp_path / "b"), cwd=tmp_path
        ),
        "1 example(s) each",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    plain = _spec(tmp_path, TINY.replace("-> BN ", ""), "plain.ns")
    done = _cli("train", str(plain), "--data", "synthetic:32", "--epochs", "1", "--batch-size", "1",
                "--out", str(tmp_path / "c"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr  # without batch norm a batch of one is fine


def test_train_out_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    done = _cli("train", str(spec), "--data", "synthetic:32", "--epochs", "1", "--out", str(blocker / "run"),
                cwd=tmp_path)  # fmt: skip
    _refused(done, "cannot create the run folder")


def test_train_on_an_empty_data_set_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    _refused(
        _cli("train", str(spec), "--data", f"npz:{data}", "--epochs", "1", cwd=tmp_path),
        "no training examples",
    )


def test_slow_curves_are_drawn_less_often_but_always_at_the_end(
    tmp_path: Path, monkeypatch
) -> None:
    import time

    from netspec.ir.build import load_spec_text
    from netspec.train import trainer
    from netspec.train.data import load_data
    from netspec.train.settings import resolve_settings

    drawn: list[int] = []

    def slow_plot(path, history, title):
        time.sleep(0.3)  # far longer than a tiny epoch
        drawn.append(history[-1].epoch)

    monkeypatch.setattr(trainer, "plot_curves", slow_plot)
    graph = load_spec_text(TINY, "<tiny>").instantiate({})
    s = resolve_settings({}, {"data": "synthetic:32", "epochs": 4, "batch_size": 16})
    data = load_data(s.data, graph.input.shape, graph.classes)
    out = tmp_path / "run"
    out.mkdir()
    trainer.train_here(trainer.Job(graph, s, data, out, device="cpu", quiet=True, threads=1))
    assert drawn[0] == 1 and drawn[-1] == 4 and len(drawn) < 4  # first, last, not every one
    assert json.loads((out / trainer.RESULT).read_text())["epochs_run"] == 4
