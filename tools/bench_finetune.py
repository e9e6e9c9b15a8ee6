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
    python tools/bench_finetune.py --features

--features: why the pretraining buys little here. A nearest-centroid classifier of 5-9 from 2
examples a class (seeds 1-3), on raw pixels and on LeNet-5's features after `s4` (the
convolutions) and `f6` (the last hidden layer), pretrained on 0-4 and random.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.finetune import ARMS, Arm, few_shot, pretrain  # noqa: E402


def _numbers(text: str, kind: type) -> list:
    return [kind(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", default="1,2,5,10", help="examples per class, a list")
    parser.add_argument("--epochs", default="3,8", help="budgets in epochs, a list")
    parser.add_argument("--lr", default="0.001,0.003,0.01", help="learning rates, a list")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--features", action="store_true", help="nearest-centroid features")
    args = parser.parse_args()
    if args.features:
        features()
        return
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


def features() -> None:
    import torch
    from helpers.finetune import SPEC, digits

    import netspec
    from netspec.train.checkpoint import load_weights, weights_file

    with tempfile.TemporaryDirectory() as tmp:
        pretrain(Path(tmp) / "pre")
        state = load_weights(weights_file(str(Path(tmp) / "pre")))
    ten = netspec.compile_spec(SPEC)
    nets = {"pretrained": netspec.build(ten, seed=0), "random": netspec.build(ten, seed=0)}
    nets["pretrained"].load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    five = netspec.compile_spec(SPEC, bindings={"classes": 5})
    scores: dict[str, list[float]] = {}
    for seed in (1, 2, 3):
        data = digits(five, range(5, 10), 2, seed=seed)
        views = {"pixels": (data.train.x.flatten(1), data.val.x.flatten(1))}
        for name, net in nets.items():
            net.eval()
            for layer in ("s4", "f6"):
                kept: list[torch.Tensor] = []
                hook = getattr(net, layer).register_forward_hook(
                    lambda _m, _i, out, kept=kept: kept.append(out.flatten(1))
                )
                with torch.no_grad():
                    net(data.train.x), net(data.val.x)
                hook.remove()
                views[f"{name} {layer}"] = (kept[0], kept[1])
        for view, (train, val) in views.items():
            centres = torch.stack([train[data.train.y == c].mean(0) for c in range(5)])
            hits = torch.cdist(val, centres).argmin(1) == data.val.y
            scores.setdefault(view, []).append(float(hits.float().mean()))
    print("nearest centroid of 5-9 from 2 examples a class (seeds 1-3), accuracy:")
    for view, accs in scores.items():
        print(f"  {view:15s} {statistics.mean(accs):.3f}")


if __name__ == "__main__":
    main()
