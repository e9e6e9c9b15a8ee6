"""Benchmark: how well each zero-cost proxy of `netspec explore --score` ranks members by the
accuracy they reach after a fixed short training, on two small families on digits.

    python tools/bench_proxies.py [--epochs 4] [--seeds 1]

For each family: every member is scored by each proxy at initialisation (one batch of 64
digits, seed 0), then trained the same fixed way (Adam, lr 3e-3, batch 32, --epochs epochs on
the 80% training split, seed 0) and its validation accuracy measured. Printed: Kendall tau and
Spearman rho (scipy) of each proxy against that accuracy, the members a proxy gave NaN (ranked
last, as `explore --score` ranks them), and the proxy's total time. The families are in this file.
"""

from __future__ import annotations

import argparse
import os
import time

FAMILIES = {
    "convs (30)": """\
network digits_a "convs on digits"
input [1, 8, 8]
classes 10
N in 1..3
width in {2, 4, 8, 16, 32}
INPUT -> [CONV(width) -> RELU]*N -> POOL? -> FC(10) -> SOFTMAX
""",
    "stages+bn+fc (36)": """\
network digits_b "stages with batch norm and hidden layers"
input [1, 8, 8]
classes 10
M in 1..2
width in {4, 8, 16}
K in 0..2
INPUT -> [CONV(width * 2**i) -> BATCHNORM? -> RELU -> POOL]*M for i -> [FC(32) -> RELU]*K -> FC(10) -> SOFTMAX
""",
}


def train_accuracy(spec, member, split, epochs: int, seed: int) -> float:
    """Validation accuracy after a fixed short training (the same for every member)."""
    import torch
    import torch.nn.functional as F

    from netspec.backends.lower_torch import build

    graph, _ = spec.instantiate(member.bindings, collect=True)
    torch.manual_seed(seed)
    model = build(graph, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = split.train.x, split.train.y
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(32):
            opt.zero_grad()
            F.cross_entropy(model.logits(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model.logits(split.val.x).argmax(1)
    return float((pred == split.val.y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=1, help="training seeds averaged per member")
    args = ap.parse_args()
    import math

    import torch
    from scipy.stats import kendalltau, spearmanr

    from netspec import explore as ex
    from netspec.explore_score import PROXIES, score_members
    from netspec.ir.build import load_spec_text
    from netspec.train.data import load_data

    torch.set_num_threads(1)
    print(f"fixed training: Adam lr 3e-3, batch 32, {args.epochs} epochs, {args.seeds} seed(s)")
    rows = []
    for name, text in FAMILIES.items():
        spec = load_spec_text(text, f"<{name}>")
        exp = ex.explore(spec)
        members = exp.valid
        split = load_data("digits", (1, 8, 8), 10, seed=0)
        t0 = time.process_time()
        acc = {
            m.number: sum(train_accuracy(spec, m, split, args.epochs, s) for s in range(args.seeds))
            / args.seeds
            for m in members
        }
        train_cpu = time.process_time() - t0
        accs = sorted(acc.values())
        print(
            f"{name}: {len(members)} members, accuracy {accs[0]:.3f}..{accs[-1]:.3f} "
            f"(median {accs[len(accs) // 2]:.3f}), training {train_cpu:.1f} s CPU"
        )
        for proxy in PROXIES:
            t0 = time.process_time()
            s = score_members(spec, members, proxy)
            cpu = time.process_time() - t0
            # as `explore --score` does: a NaN member ranks last (below every finite score)
            low = min((x for x in s.values.values() if not math.isnan(x)), default=0.0) - 1.0
            a = [acc[n] for n in acc]
            v = [low if math.isnan(s.values[n]) else s.values[n] for n in acc]
            tau = kendalltau(v, a).statistic
            rho = spearmanr(v, a).statistic
            rows.append((name, proxy, tau, rho, len(s.nan), cpu / len(members) * 1e3))
    print()
    print("| family | proxy | Kendall tau | Spearman rho | NaN members | CPU ms/member |")
    print("|---|---|---:|---:|---:|---:|")
    for name, proxy, tau, rho, nan, ms in rows:
        print(f"| {name} | {proxy} | {tau:.2f} | {rho:.2f} | {nan} | {ms:.1f} |")
    means: dict[str, list[float]] = {}
    for _, proxy, tau, _, _, _ in rows:
        means.setdefault(proxy, []).append(tau)
    best = max(means, key=lambda p: sum(means[p]) / len(means[p]))
    print()
    print(
        "mean Kendall tau: "
        + ", ".join(f"{p} {sum(t) / len(t):.2f}" for p, t in means.items())
        + f"; best: {best}"
    )
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.2f}")


if __name__ == "__main__":
    main()
