"""Zero-cost proxies: guess which members of a family will train best, from one batch at
initialisation, without training any of them.

    scores = score_members(spec, exp.valid, "synflow", data="digits")
    scores.ranked()          # members, the most promising first (a NaN score last)

Each proxy gives a higher value to a member predicted to reach a higher accuracy:

- `params`: the parameter count (from the IR; no torch). A strong baseline.
- `synflow`: sum |theta * dR/dtheta| with every weight made positive and an all-ones input, in
  float64 (Tanaka et al. 2020); data-free, batch norm in eval mode.
- `naswot`: log-determinant of the kernel of ReLU on/off codes over the batch (Mellor et al.
  2021): members whose ReLUs tell the examples apart score higher.
- `gradnorm`: sum of the gradient norms of the cross-entropy loss on the batch.
- `snip`: sum |theta * dL/dtheta| of the cross-entropy loss on the batch (Lee et al. 2019).
- `vote`: the mean of a member's ranks under synflow, naswot and snip (Abdelfattah et al. 2021).

A member whose proxy is not a finite number (no ReLU for naswot, an overflow) gets NaN: it is
recorded in `Scores.nan`, ranked last, and said by the caller. torch is imported here only, so
`netspec explore` without `--score` never loads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netspec.errors import NetspecError
from netspec.explore import Member
from netspec.ir.build import Spec

if TYPE_CHECKING:
    import torch

PROXIES = ("synflow", "naswot", "gradnorm", "snip", "params", "vote")
VOTERS = ("synflow", "naswot", "snip")
DEFAULT = "naswot"  # measured best on digits (docs/explore.md, tools/bench_proxies.py)


@dataclass(slots=True)
class Scores:
    """One proxy's score per member (by member number), and what computing them cost."""

    proxy: str
    members: list[Member]
    values: dict[int, float]
    seconds: dict[str, float] = field(default_factory=dict)  # proxy -> CPU-and-wall seconds
    nan: list[int] = field(default_factory=list)  # member numbers without a finite score

    def ranked(self) -> list[Member]:
        """The members, the highest score first; a NaN score last; ties by member number."""

        def key(m: Member) -> tuple[int, float, int]:
            v = self.values[m.number]
            return (1, 0.0, m.number) if math.isnan(v) else (0, -v, m.number)

        return sorted(self.members, key=key)


def score_front(scores: Scores) -> list[Member]:
    """Members no other beats on both a higher score and fewer MACs (NaN scores never)."""
    pts = sorted(
        (m for m in scores.members if not math.isnan(scores.values[m.number])),
        key=lambda m: (m.macs, -scores.values[m.number], m.number),
    )
    front, best = [], -math.inf
    for m in pts:  # by MACs: a member is on the front when it scores above every cheaper one
        v = scores.values[m.number]
        if v > best:
            front.append(m)
            best = v
    return front


def check_proxy(name: str) -> None:
    if name not in PROXIES:
        from netspec.errors import did_you_mean

        raise NetspecError(
            f"unknown proxy {name!r}",
            hint=did_you_mean(name, PROXIES) or f"one of {', '.join(PROXIES)}",
        )


def score_members(
    spec: Spec,
    members: Sequence[Member],
    proxy: str = DEFAULT,
    data: str = "digits",
    batch: int = 64,
    seed: int = 0,
) -> Scores:
    """Score each valid member with `proxy` on one batch of `data` (a `--data` source)."""
    check_proxy(proxy)
    members = [m for m in members if m.valid]
    if len(members) < 2:
        raise NetspecError(
            f"there is {len(members)} valid member to score: a proxy ranks members against each other",
            hint="widen the family (or its --grid) to at least two valid members",
        )
    if proxy == "params":
        start = time.perf_counter()
        values = {m.number: float(m.params) for m in members}
        return _finish(proxy, members, values, {"params": time.perf_counter() - start})
    names = VOTERS if proxy == "vote" else (proxy,)
    batch_xy = _Batches(spec, data, batch, seed)
    per: dict[str, dict[int, float]] = {n: {} for n in names}
    seconds = dict.fromkeys(names, 0.0)
    for m in members:
        model, x, y = _model(spec, m, batch_xy, seed)
        for name in names:
            start = time.perf_counter()
            per[name][m.number] = _safe(PROXY_FUNCS[name], model, x, y)
            seconds[name] += time.perf_counter() - start
    values = _vote(per, members) if proxy == "vote" else per[proxy]
    return _finish(proxy, members, values, seconds)


def _finish(
    proxy: str, members: list[Member], values: dict[int, float], seconds: dict[str, float]
) -> Scores:
    nan = [m.number for m in members if math.isnan(values[m.number])]
    return Scores(proxy, members, values, seconds, nan)


def _vote(per: dict[str, dict[int, float]], members: list[Member]) -> dict[int, float]:
    """Mean rank (0 = worst) of each member under each voter; NaN scores give no vote."""
    votes: dict[int, list[float]] = {m.number: [] for m in members}
    for scores in per.values():
        finite = sorted((v, n) for n, v in scores.items() if not math.isnan(v))
        for rank, (_, n) in enumerate(finite):
            votes[n].append(rank / max(1, len(finite) - 1))
    return {n: (sum(v) / len(v) if v else math.nan) for n, v in votes.items()}


class _Batches:
    """One batch of the data per input shape (every member of a family usually shares one)."""

    def __init__(self, spec: Spec, data: str, batch: int, seed: int) -> None:
        self.data, self.batch, self.seed = data, batch, seed
        self.cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, graph: Any) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(graph.input.shape), graph.classes, graph.input.vocab)
        if key not in self.cache:
            self.cache[key] = self._load(graph)
        return self.cache[key]

    def _load(self, graph: Any) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from netspec.train.data import load_data

        classes = graph.classes if graph.classes is not None else graph.output_shape[0]
        split = load_data(
            self.data, graph.input.shape, classes, seed=self.seed, vocab=graph.input.vocab
        )
        n = len(split.train)
        if n < self.batch:
            raise NetspecError(
                f"the data set {self.data!r} has {n} training example(s), too few for one batch of {self.batch}",
                hint=f"give more data, or a smaller batch (--score-batch {max(1, n)})",
            )
        g = torch.Generator().manual_seed(self.seed)
        pick = torch.randperm(n, generator=g)[: self.batch]
        return split.train.x[pick], split.train.y[pick]


def _model(spec: Spec, m: Member, batches: _Batches, seed: int) -> tuple[Any, Any, Any]:
    from netspec.backends.lower_torch import build

    graph, errors = spec.instantiate(m.bindings, collect=True)
    if graph is None:
        raise NetspecError(f"member #{m.number} ({m.label()}) does not build: {errors[-1].message}")
    x, y = batches.get(graph)
    return build(graph, seed=seed), x, y


def _safe(func: Callable[[Any, Any, Any], float], model: Any, x: Any, y: Any) -> float:
    """The proxy's value, NaN when it is not a finite number."""
    value = float(func(model, x, y))
    return value if math.isfinite(value) else math.nan


def _loss_grads(model: Any, x: Any, y: Any) -> list[tuple[Any, Any]]:
    import torch.nn.functional as F

    model.train()
    model.zero_grad()
    F.cross_entropy(model.logits(x), y).backward()
    return [(p, p.grad) for p in model.parameters() if p.grad is not None]


def gradnorm(model: Any, x: Any, y: Any) -> float:
    return sum(float(g.norm()) for _, g in _loss_grads(model, x, y))


def snip(model: Any, x: Any, y: Any) -> float:
    return sum(float((p * g).abs().sum().detach()) for p, g in _loss_grads(model, x, y))


def synflow(model: Any, x: Any, y: Any) -> float:
    import copy

    import torch

    model = copy.deepcopy(model).double().eval()  # the weights are made positive: a copy
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.abs_()
    model.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64)
    model.logits(ones).sum().backward()
    return sum(
        float((p * p.grad).abs().sum().detach()) for p in model.parameters() if p.grad is not None
    )


RELUS = ("ReLU", "ReLU6", "LeakyReLU")


def naswot(model: Any, x: Any, y: Any) -> float:
    import torch

    codes: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).double())

    handles = [
        mod.register_forward_hook(hook) for mod in model.modules() if type(mod).__name__ in RELUS
    ]
    try:
        model.train()
        with torch.no_grad():
            model.logits(x)
    finally:
        for h in handles:
            h.remove()
    if not codes:
        return math.nan  # no ReLU: nothing to read
    c = torch.cat(codes, dim=1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else math.nan


PROXY_FUNCS: dict[str, Callable[[Any, Any, Any], float]] = {
    "synflow": synflow,
    "naswot": naswot,
    "gradnorm": gradnorm,
    "snip": snip,
}
