"""Training on several processes and machines (issue 28): torchrun on one node and on two
simulated nodes equal one process; a killed or stalled worker ends the job with exit 3, a
message naming the rank and a resumable run; an elastic restart resumes to the same weights;
ranks given different jobs are refused; what can be checked before starting is.

Every launch here is real (torchrun, or torch's elastic agent behind `--nproc`), on
loopback, with short runs on tiny data. Faults are injected with `NETSPEC_FAULT` at the
start of an epoch rather than raced with `kill`."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from netspec.ir.build import load_spec_text
from netspec.train.settings import resolve_settings
from netspec.train.trainer import make_optimizer, make_scheduler, stretch_schedule

ROOT = Path(__file__).resolve().parents[1]
# No batch norm or dropout: data-parallel steps then equal single-process ones (to rounding).
PLAIN = """network plain "a tiny CNN without batch statistics"
input [1, 8, 8]
classes 4
INPUT -> CONV(4) -> RELU -> POOL -> FC(8) -> RELU -> FC(4) -> SOFTMAX
"""
BN = """network bn "a tiny CNN with batch norm"
input [1, 8, 8]
classes 4
INPUT -> CONV(4, bias=off) -> BN -> RELU -> POOL -> FC(4) -> SOFTMAX
"""
ARGS = ["--data", "synthetic:96", "--epochs", "3", "--batch-size", "8", "--threads", "1"]

slow = pytest.mark.slow


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "NETSPEC_FAULT"}
    out.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **extra)
    return out


def netspec(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "netspec", *args],
        cwd=cwd,
        env=env(**extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


def finish(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def run_torchrun(launch: list[str], train: list[str], cwd: Path, **extra: str):
    p = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "netspec", *train],
        cwd=cwd,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "last.safetensors")


def close(a: dict, b: dict, atol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def result(run: Path) -> dict:
    return json.loads((run / "result.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    (folder / "plain.ns").write_text(PLAIN)
    (folder / "bn.ns").write_text(BN)
    return folder


@pytest.fixture(scope="module")
def single(work: Path) -> Path:
    done = netspec("train", "plain.ns", *ARGS, "--out", "single", cwd=work)
    assert done.returncode == 0, done.stderr
    return work / "single"


@pytest.fixture(scope="module")
def two_on_one_node(work: Path) -> tuple[Path, str, str]:
    p = run_torchrun(
        ["--standalone", "--nproc_per_node", "2"],
        ["train", "plain.ns", *ARGS, "--out", "torchrun2"],
        work,
    )
    code, out, err = finish(p)
    assert code == 0, err
    return work / "torchrun2", out, err


@slow
def test_torchrun_two_processes_train_one_job_equal_to_one_process(work, single, two_on_one_node):
    run, out, err = two_on_one_node
    assert close(weights(run), weights(single))
    assert result(run)["ranks_max_diff"] == 0.0  # measured, and no longer lost on the way
    assert out.count("epoch 3/3") == 1  # rank 0 alone prints
    assert out.count("training plain") == 1 and "2 processes" in out
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("torchrun")) == [
        "torchrun2"
    ]  # one run folder
    assert not (work / "runs").exists()


def node(rank: int, port: str, train: list[str], cwd: Path) -> subprocess.Popen:
    """One simulated node: a torchrun launcher of 1 process, static rendezvous on loopback."""
    launcher = ["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", port]
    return run_torchrun(launcher, train, cwd)


@slow
def test_two_simulated_nodes_train_one_job_equal_to_one_process(work, single):
    port = str(free_port())
    nodes = [node(r, port, ["train", "plain.ns", *ARGS, "--out", "nodes2"], work) for r in (0, 1)]
    codes = [finish(p)[0] for p in nodes]
    assert codes == [0, 0]
    assert close(weights(work / "nodes2"), weights(single))


@slow
def test_ranks_given_different_jobs_are_refused_with_one_message(work):
    port = str(free_port())
    nodes = [
        node(r, port, ["train", "plain.ns", *ARGS, "--lr", lr, "--out", "mismatch"], work)
        for r, lr in ((0, "0.01"), (1, "0.02"))
    ]
    (c0, _, e0), (c1, _, e1) = (finish(p) for p in nodes)
    # each worker exits 2; torchrun itself then exits 1 with its own failure table
    assert c0 != 0 and c1 != 0
    assert "exitcode  : 2" in e0 and "exitcode  : 2" in e1
    assert "error: rank(s) 1 were given another spec, settings or data than rank 0" in e0
    assert "given another spec" not in e1  # one message: rank 0's
    assert not (work / "mismatch").exists()


@slow
def test_a_killed_worker_stops_the_job_resumably(work, two_on_one_node):
    done = netspec(
        "train", "plain.ns", *ARGS, "--nproc", "2", "--out", "killed", cwd=work,
        NETSPEC_FAULT="rank=1,epoch=2,action=kill",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "error: rank 1 was killed by SIGKILL; the job stopped" in done.stderr
    assert "resume it: netspec train --resume killed" in done.stderr
    assert "Traceback" not in done.stderr
    assert result(work / "killed")["stopped"] == "worker lost: rank 1 was killed by SIGKILL"
    assert result(work / "killed")["epochs_run"] == 1
    again = netspec("train", "--resume", "killed", "--nproc", "2", cwd=work)
    assert again.returncode == 0, again.stderr
    assert result(work / "killed")["stopped"] == "completed"
    # the resumed run ends where the uninterrupted one (torchrun: the same path) did
    assert close(weights(work / "killed"), weights(two_on_one_node[0]), atol=0)


@slow
def test_a_stalled_worker_stops_the_job_after_the_timeout(work):
    done = netspec(
        "train", "plain.ns", *ARGS, "--nproc", "2", "--out", "stalled", "--timeout", "20",
        cwd=work, NETSPEC_FAULT="rank=1,epoch=2,action=hang",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "rank 1 stalled: no answer from it within 20 s" in done.stderr
    assert result(work / "stalled")["stopped"].startswith("worker lost: rank 1 stalled")


@slow
def test_an_elastic_restart_resumes_to_the_weights_of_an_uninterrupted_run(work, two_on_one_node):
    p = run_torchrun(
        ["--standalone", "--nproc_per_node", "2", "--max-restarts", "1"],
        ["train", "plain.ns", *ARGS, "--out", "restarted"],
        work,
        NETSPEC_FAULT="rank=1,epoch=2,action=kill,restart=0",
    )
    code, out, err = finish(p)
    assert code == 0, err
    assert "restart 1 of 1: resuming restarted from its last checkpoint" in out
    assert result(work / "restarted")["stopped"] == "completed"
    assert result(work / "restarted")["epochs_run"] == 3
    assert close(weights(work / "restarted"), weights(two_on_one_node[0]), atol=0)


@slow
def test_sync_bn_normalises_over_the_global_batch(work):
    runs = {}
    for name, extra in (("bn1", []), ("bn2sync", ["--nproc", "2", "--sync-bn"]),
                        ("bn2", ["--nproc", "2"])):  # fmt: skip
        done = netspec("train", "bn.ns", *ARGS, "--epochs", "1", *extra, "--out", name, cwd=work)
        assert done.returncode == 0, done.stderr
        runs[name] = weights(work / name)
    # synchronised: the two half-batches normalise together, as the one process's batch
    assert close(runs["bn2sync"], runs["bn1"], atol=1e-4)
    # per process: statistics of each half, a different run
    assert not close(runs["bn2"], runs["bn1"], atol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "9", "--nproc", "2"], "--batch-size 9 does not divide among 2 processes"),
        (["--limit", "1", "--nproc", "2"], "the training set has 1 example(s) for 2 processes"),
    ],
)
def test_what_can_be_checked_before_starting_workers_is(work, args, message):
    done = netspec(
        "train", "plain.ns", "--data", "synthetic:96", "--epochs", "1", *args, "--out", "pre",
        cwd=work,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert not (work / "pre").exists()  # refused before any folder or process


def cosine(epochs: int):
    graph = load_spec_text(PLAIN, "p.ns").instantiate({})
    s = resolve_settings(graph.train, {"epochs": epochs, "schedule": "cosine", "lr": 0.1})
    opt = make_optimizer(s, [torch.nn.Parameter(torch.zeros(1))])
    return opt, make_scheduler(s, opt)


def test_a_resumed_run_given_more_epochs_follows_the_longer_cosine_schedule():
    short_opt, short = cosine(3)
    for _ in range(3):
        short_opt.step()
        short.step()
    stretch_schedule(short, short_opt, 6)
    long_opt, long = cosine(6)
    for _ in range(3):
        long_opt.step()
        long.step()
    rates = []
    for _ in range(3):  # epochs 4, 5, 6
        rates.append((short_opt.param_groups[0]["lr"], long_opt.param_groups[0]["lr"]))
        short_opt.step()
        short.step()
        long_opt.step()
        long.step()
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in rates)
    assert rates[0][0] == pytest.approx(0.05)  # half-way down, not 0.0 as before
    assert rates[0][0] > rates[1][0] > rates[2][0] > 0


@slow
def test_resume_with_more_epochs_keeps_lowering_the_rate(work):
    done = netspec("train", "plain.ns", *ARGS, "--schedule", "cosine", "--out", "ext", cwd=work)
    assert done.returncode == 0, done.stderr
    more = netspec("train", "--resume", "ext", "--epochs", "6", cwd=work)
    assert more.returncode == 0, more.stderr
    lines = (work / "ext" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    lr = [float(row.split(",")[header.index("lr")]) for row in lines[1:]]
    assert len(lr) == 6 and lr[3] > 0 and lr[3] > lr[4] > lr[5]
