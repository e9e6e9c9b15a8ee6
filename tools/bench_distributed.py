"""One training job four ways: one process, `--nproc 2`, `torchrun` with 2 processes, and
2 simulated nodes (two torchrun launchers on localhost, 1 process each); then the batch-norm
choices (`--nproc 2` with and without `--sync-bn`) against one process. Prints the best
validation accuracy and the wall time of each, side by side, from one run.

    python tools/bench_distributed.py [--epochs 4] [--spec zoo:mnist_cnn]

Times include process start-up (torch's import in each worker), so on a small job they
measure the launchers as much as the training."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# mnist_cnn with batch norm after each conv (bias off, as the conv's bias is then redundant)
BN_SPEC = """network mnist_bn "mnist_cnn with batch norm"
input [1, 28, 28]
classes 10
INPUT -> [CONV(8, bias=off) -> BN -> RELU -> POOL]*2 -> FC(32) -> RELU -> FC(10) -> SOFTMAX
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmds: list[list[str]], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in cmds
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmds[0])}\n{err.decode()[-2000:]}")
    return time.perf_counter() - start


def best_acc(run: Path) -> float:
    return json.loads((run / "result.json").read_text())["best_val_acc"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="zoo:mnist_cnn")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bn.ns").write_text(BN_SPEC)
        common = ["--data", "digits", "--epochs", str(args.epochs), "--threads", "1"]
        common += ["--batch-size", str(args.batch_size)]

        def train(spec: str, out: str, *extra: str) -> list[str]:
            return [py, "-m", "netspec", "train", spec, *common, "--out", out, *extra]

        def torchrun(*launcher: str) -> list[str]:
            return [py, "-m", "torch.distributed.run", *launcher, "-m", "netspec"]

        port = str(free_port())
        nodes = [
            [
                *torchrun(
                    "--nnodes",
                    "2",
                    "--node_rank",
                    str(r),
                    "--nproc_per_node",
                    "1",
                    "--master_addr",
                    "127.0.0.1",
                    "--master_port",
                    port,
                ),
                *train(args.spec, "nodes")[3:],
            ]  # fmt: skip
            for r in (0, 1)
        ]
        rows = [
            ("1 process", launch([train(args.spec, "one")], work), "one"),
            ("--nproc 2", launch([train(args.spec, "nproc", "--nproc", "2")], work), "nproc"),
            (
                "torchrun, 2 processes",
                launch(
                    [
                        [
                            *torchrun("--standalone", "--nproc_per_node", "2"),
                            *train(args.spec, "torchrun")[3:],
                        ]
                    ],  # fmt: skip
                    work,
                ),
                "torchrun",
            ),
            ("2 simulated nodes", launch(nodes, work), "nodes"),
        ]
        print(f"{args.spec} on digits, {args.epochs} epochs, global batch {args.batch_size}")
        print(f"{'how':<26}{'best val acc':>14}{'wall s':>9}")
        for name, seconds, run in rows:
            print(f"{name:<26}{best_acc(work / run):>14.2%}{seconds:>9.1f}")
        bn = [
            ("1 process", launch([train("bn.ns", "bn1")], work), "bn1"),
            ("--nproc 2, per-process BN", launch([train("bn.ns", "bn2", "--nproc", "2")], work),
             "bn2"),
            ("--nproc 2 --sync-bn",
             launch([train("bn.ns", "bn2s", "--nproc", "2", "--sync-bn")], work), "bn2s"),
        ]  # fmt: skip
        print(f"\nbatch norm spec (mnist_cnn with BN), global batch {args.batch_size}")
        print(f"{'how':<26}{'best val acc':>14}{'wall s':>9}")
        for name, seconds, run in bn:
            print(f"{name:<26}{best_acc(work / run):>14.2%}{seconds:>9.1f}")
        try:
            load = os.getloadavg()[0]
            print(f"\n(load average {load:.1f} on {os.cpu_count()} cores while measuring)")
        except OSError:
            pass


if __name__ == "__main__":
    main()
