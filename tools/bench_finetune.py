"""Does fine-tuning pay? Issue 21's experiment, swept honestly.

LeNet-5 pretrained on digits 0-4 (once), then trained on 5-9 from a few examples per class
(tests/helpers/finetune.py: batch 4, Adam, no schedule), three ways on the same budget: from
scratch, fine-tuned (every layer from the pretrained weights, all training from the first
epoch) and two-stage (the classifier alone for the first epoch, then every layer). Every arm
gets every learning rate of the sweep and several seeds (a seed draws the examples, the
initialization and the order); the tables give the accuracy on the 5-9 examples not trained
on: mean ± standard deviation over the seeds, then each arm at its own best rate.

    python tools/bench_finetune.py [--per-class 1,2,5,10] [--epochs 3,8]
        [--lr 0.001,0.003,0.01] [--seeds 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.finetune import ARMS, Arm, few_shot, pretrain  # noqa: E402


def _numbers(text: str, kind: type) -> list:
    return [kind(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", default="1,2,5,10", help="examples per class, a list")
    parser.add_argument("--epochs", default="3,8", help="budgets in epochs, a list")
    parser.add_argument("--lr", default="0.001,0.003,0.01", help="learning rates, a list")
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    sizes, budgets = _numbers(args.per_class, int), _numbers(args.epochs, int)
    rates, seeds = _numbers(args.lr, float), range(1, args.seeds + 1)
    results: dict[tuple[int, int, str, float], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = pretrain(root / "pre")
        print(f"pretrained on 0-4 (LeNet-5, 10-way head): validation accuracy {base:.3f}")
        print(f"seeds {seeds.start}-{seeds.stop - 1}; accuracy on the 5-9 examples not trained on")
        print()
        print(f"| per class | epochs | lr | {' | '.join(ARMS)} |")
        print("|---|---|---|" + "---|" * len(ARMS))
        for n in sizes:
            for epochs in budgets:
                for lr in rates:
                    cells = []
                    for mode in ARMS:
                        arm = Arm(mode, n, lr, epochs)
                        accs = [
                            few_shot(arm, s, root / "pre", root / f"{n}-{epochs}-{lr}-{mode}-{s}")
                            for s in seeds
                        ]
                        results[(n, epochs, mode, lr)] = accs
                        cells.append(f"{statistics.mean(accs):.3f} ± {statistics.pstdev(accs):.3f}")
                    print(f"| {n} | {epochs} | {lr:g} | {' | '.join(cells)} |", flush=True)
    print()
    print("Each arm at its own best learning rate (mean ± sd, the rate):")
    print()
    print(f"| per class | epochs | {' | '.join(ARMS)} | best pretrained - scratch |")
    print("|---|---|" + "---|" * len(ARMS) + "---|")
    for n in sizes:
        for epochs in budgets:
            best = {}
            for mode in ARMS:
                lr = max(rates, key=lambda r: statistics.mean(results[(n, epochs, mode, r)]))
                accs = results[(n, epochs, mode, lr)]
                best[mode] = (statistics.mean(accs), statistics.pstdev(accs), lr)
            cells = [f"{m:.3f} ± {sd:.3f} ({lr:g})" for m, sd, lr in best.values()]
            gain = max(best["fine-tuned"][0], best["two-stage"][0]) - best["scratch"][0]
            print(f"| {n} | {epochs} | {' | '.join(cells)} | {gain:+.3f} |")


if __name__ == "__main__":
    main()
