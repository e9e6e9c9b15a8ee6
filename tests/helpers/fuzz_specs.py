"""Fuzzing the compiler: spec texts from a small grammar and mutations of the zoo, and the
judge every one of them must pass (issue "Hostile input").

The judge: compiling any text ends in located errors (`NetspecError`/`SpecErrors`, each with
file:line:col) or in a graph; a graph renders (table, JSON) and, when small enough to build
here, its torch module has the IR's parameter count and output shape; nothing else is raised
and nothing takes over `TIME_LIMIT` seconds. Generators take a `random.Random`, so
tests/test_fuzz.py drives them from hypothesis and tools/fuzz.py from a seed, for minutes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph
from netspec.layers import SPELLINGS

ROOT = Path(__file__).resolve().parents[2]
ZOO = {p.stem: p.read_text() for p in sorted((ROOT / "specs").glob("*.ns"))}
TIME_LIMIT = 2.0  # CPU seconds per spec, compile and checks (torch build excluded)
TORCH_PARAMS = 2_000_000  # build in torch only up to this many params ...
TORCH_MACS = 50_000_000  # ... and multiply-adds


# ---- generation from the grammar ------------------------------------------------------------

TAME = [False]  # generating a plausible spec (most are valid) rather than a wild one
WORDS = ["same", "valid", "on", "off", "avg", "max", "auto", "nearest", "bilinear"]


def _int(r: random.Random) -> str:
    return r.choice(["1", "2", "3", "4", "8", "16", "0", "-1", str(r.randint(1, 64)), "2**3"])


def _expr(r: random.Random, names: list[str], depth: int = 0) -> str:
    if TAME[0]:
        return r.choice(["1", "2", "3", "4"] + [n for n in names if n in ("n", "c", "i")])
    roll = r.random()
    if depth > 2 or roll < 0.45:
        return _int(r)
    if roll < 0.6 and names:
        return r.choice(names)
    if roll < 0.7:
        return r.choice(WORDS)
    if roll < 0.8:
        return f"({_expr(r, names, depth + 1)}, {_expr(r, names, depth + 1)})"
    if roll < 0.85:
        return r.choice(["0.5", "1.5", "1e-3", "0.25", "2K", "1M"])
    op = r.choice(["+", "-", "*", "//", "%", "**"])
    return f"{_expr(r, names, depth + 1)} {op} {_expr(r, names, depth + 1)}"


def _tame_call(r: random.Random, names: list[str]) -> str:
    """A call that reads like a real spec: known positional arguments, small sizes."""
    spelling = r.choice(list(SPELLINGS))
    cls = SPELLINGS[spelling][0]
    positional = [f for f in cls.positional if f in cls.model_fields]
    args = []
    for field in positional[: r.choice([0, 1, 1, 2])]:
        if field in ("p", "slope", "alpha", "negative_slope"):
            args.append(r.choice(["0.1", "0.5"]))
        elif field in ("channels", "units", "dim", "size"):
            args.append(r.choice(["2", "4", "8", "n"] if "n" in names else ["2", "4", "8"]))
        else:
            args.append(r.choice(["1", "2", "3"]))
    if "stride" in cls.model_fields and r.random() < 0.2:
        args.append(f"stride={r.choice(['1', '2'])}")
    return f"{spelling}({', '.join(args)})" if args else spelling


def _call(r: random.Random, names: list[str], blocks: list[tuple[str, int]]) -> str:
    if TAME[0] and not (blocks and r.random() < 0.2):
        return _tame_call(r, names)
    if blocks and r.random() < 0.2:
        name, arity = r.choice(blocks)
        args = [_expr(r, names) for _ in range(r.randint(0, arity))]
        return f"{name}({', '.join(args)})" if args or r.random() < 0.5 else name
    spelling = r.choice(list(SPELLINGS))
    cls = SPELLINGS[spelling][0]
    fields = [f for f in cls.model_fields if f != "dims"]
    args = [_expr(r, names) for _ in range(r.choice([0, 0, 1, 1, 2, 3]))]
    for _ in range(r.choice([0, 0, 0, 1, 2])):
        key = r.choice(fields + ["stride", "padding", "bogus"]) if fields else "bogus"
        args.append(f"{key}={_expr(r, names)}")
    if not args and r.random() < 0.6:
        return spelling
    return f"{spelling}({', '.join(args)})"


def _element(r: random.Random, names: list[str], blocks: list[tuple[str, int]], depth: int) -> str:
    roll = r.random()
    if depth < 3 and roll < 0.12:
        index = r.random() < 0.4
        inner = _chain(r, names + (["i"] if index else []), blocks, depth + 1)
        count = r.choice(["0", "1", "2", "3", "n", "(1 + 1)"])
        text = f"[{inner}]*{count}" + (" for i" if index else "")
    elif depth < 3 and roll < 0.22:
        op = r.choice(["concat", "add", "residual"])
        branches = [_chain(r, names, blocks, depth + 1) for _ in range(r.randint(1, 3))]
        if op == "residual" and r.random() < 0.5:
            branches.append(f"project={r.choice(['auto', 'on', 'off'])}")
        text = f"{op}({', '.join(branches)})"
    else:
        text = _call(r, names, blocks)
    if r.random() < 0.08 and not TAME[0]:
        text += "?" if r.random() < 0.5 else f"?({r.choice(['i < 2', 'n > 1', 'on'])})"
    if r.random() < 0.08 and not TAME[0]:
        dims = ", ".join(_int(r) for _ in range(r.randint(1, 3)))
        text += f" : [{dims}]"
    if r.random() < 0.06 and not TAME[0]:
        text += f" as {r.choice(['a', 'b', 'stem', 'head', 'conv1', 'eval'])}"
    return text


def _chain(r: random.Random, names: list[str], blocks: list[tuple[str, int]], depth: int) -> str:
    return " -> ".join(_element(r, names, blocks, depth) for _ in range(r.randint(1, 4)))


def generated_spec(r: random.Random) -> str:
    """A spec from the grammar: header, names, blocks and a chain, plausible and not."""
    TAME[0] = r.random() < 0.5
    try:
        return _generated(r)
    finally:
        TAME[0] = False


def _generated(r: random.Random) -> str:
    tame = TAME[0]
    lines = []
    c, h = r.choice([1, 2, 3, 4]), r.choice([1, 2, 5, 8, 16, 28, 32])
    inputs = [
        f"input [{c}, {h}, {h}]",
        f"input [{c}, {h * 2}]",
        f"input [{h * 4}]",
        f"input tokens(length={h}, vocab={r.randint(1, 50)})",
        f"input [{_expr(r, ['n'])}, {h}, {h}]",
    ]
    if tame:
        h = max(h, 8)
        inputs = [f"input [{c}, {h}, {h}]"] * 3 + [f"input [{c}, {h * 2}]", f"input [{h * 4}]"]
    lines.append(r.choice(inputs))
    if r.random() < 0.85:
        lines.append(
            f"classes {r.choice(['2', '10', '3 * 2'] if tame else ['2', '10', '1', 'n', '0', '3 * 2'])}"
        )
    names = []
    if r.random() < 0.6:
        lines.append(f"n = {_expr(r, [])}")
        names.append("n")
    if tame:
        blocks_: list[tuple[str, int]] = []
        for b in range(r.choice([0, 1])):
            lines.append(f"block blk{b}(c) = {_chain(r, names + ['c'], blocks_, 1)}")
            blocks_.append((f"blk{b}", 1))
        lines.append("INPUT -> " + _chain(r, names, blocks_, 0) + " -> SOFTMAX")
        return "\n".join(lines) + "\n"
    if r.random() < 0.2:
        lines.append(r.choice(["k in 1..3", "w in {4, 8}", "k in 2..1G"]))
        names.append("k" if lines[-1].startswith("k") else "w")
    if r.random() < 0.15:
        lines.append(f"defaults {_call(r, names, [])}")
    if r.random() < 0.15:
        metric = r.choice(["params", "macs", "memory", "flops", "bogus"])
        lines.append(f"budget {metric} <= {r.choice(['1K', '1M', '4MB', '0', '-1', 'n'])}")
    blocks: list[tuple[str, int]] = []
    for b in range(r.choice([0, 0, 1, 2])):
        params = ["c", "s=1"][: r.randint(0, 2)]
        body = _chain(r, names + [p.split("=")[0] for p in params], blocks, 1)
        lines.append(f"block blk{b}({', '.join(params)}) = {body}")
        blocks.append((f"blk{b}", len(params)))
    if r.random() < 0.1:
        lines.append(r.choice(["train { epochs = 2 }", "train { epochz = 2 }", "dtype fp16"]))
    chain = "INPUT -> " + _chain(r, names, blocks, 0)
    if r.random() < 0.6:
        chain += " -> SOFTMAX"
    lines.append(chain)
    r.shuffle(lines) if r.random() < 0.05 else None
    return "\n".join(lines) + "\n"


# ---- mutation of the zoo ----------------------------------------------------------------------

SNIPPETS = [
    "[",
    "]",
    "(",
    ")",
    "->",
    "*",
    "?",
    ":",
    ",",
    "=",
    "as x",
    "for i",
    "**",
    "//",
    "1e9",
    "0",
    "-1",
    "999999999",
    '"',
    "#",
    "\n",
    "CONV",
    "FC(",
    "residual(",
    "concat(",
    "IDENTITY",
    "in",
    "classes",
    "block b(c) = CONV(c)\n",
    "N = 10**12\n",
    "\\",
    "\x00",
    "é",
    "2GiB",
    "1ki",
]


def mutated_spec(r: random.Random) -> str:
    """A zoo spec with a few random edits: numbers changed, text cut, copied or inserted."""
    text = ZOO[r.choice(sorted(ZOO))]
    for _ in range(r.randint(1, 4)):
        n = len(text)
        pos = r.randrange(n + 1)
        roll = r.random()
        if roll < 0.3:  # change a number
            digits = [i for i, ch in enumerate(text) if ch.isdigit()]
            if digits:
                at = r.choice(digits)
                end = at
                while end < n and text[end].isdigit():
                    end += 1
                text = text[:at] + r.choice(["0", "1", "7", "-3", "1000000", "2**40"]) + text[end:]
        elif roll < 0.5:  # delete a span
            text = text[:pos] + text[pos + r.randint(1, 20) :]
        elif roll < 0.65:  # duplicate a line
            lines = text.splitlines(keepends=True)
            if lines:
                i = r.randrange(len(lines))
                lines.insert(i, lines[r.randrange(len(lines))])
                text = "".join(lines)
        elif roll < 0.8:  # swap a layer name
            words = [w for w in SPELLINGS if w in text]
            if words:
                text = text.replace(r.choice(words), r.choice(list(SPELLINGS)), 1)
        else:  # insert a snippet
            text = text[:pos] + r.choice(SNIPPETS) + text[pos:]
    return text


# ---- the judge --------------------------------------------------------------------------------


@dataclass
class Verdict:
    outcome: str  # "refused", "graph", "built" (checked against torch)
    seconds: float


class FuzzFailure(AssertionError):
    """A spec that broke the promise: another exception, an unlocated error, a mismatch."""

    def __init__(self, kind: str, text: str, detail: str) -> None:
        super().__init__(f"[{kind}] {detail}\n--- spec ---\n{text}")
        self.kind = kind
        self.text = text
        self.detail = detail


def judge(text: str, *, torch_check: bool = True, time_limit: float = TIME_LIMIT) -> Verdict:
    """Compile `text` and hold the result to the promise (raises FuzzFailure)."""
    # CPU time, not wall time: on a shared machine a process waits for a core now and then,
    # and that wait is not the compiler's.
    start = time.process_time()
    graph: Graph | None = None
    try:
        spec = load_spec_text(text, "fuzz.ns")
        bindings = {n: d.values[0] for n, d in spec.free.items()}
        graph = spec.instantiate(bindings)
        _render(graph)
    except SpecErrors as e:
        _located(text, e.errors)
    except NetspecError as e:
        _located(text, [e])
    except Exception as e:  # noqa: BLE001 (the point: nothing else may escape)
        raise FuzzFailure(type(e).__name__, text, repr(e)[:500]) from e
    seconds = time.process_time() - start
    if seconds > time_limit:
        raise FuzzFailure("slow", text, f"took {seconds:.2f} s of CPU, over {time_limit} s")
    if graph is None:
        return Verdict("refused", seconds)
    t = graph.totals
    if not torch_check or t.params > TORCH_PARAMS or t.macs > TORCH_MACS:
        return Verdict("graph", seconds)
    _against_torch(text, graph)
    return Verdict("built", seconds)


def _render(graph: Graph) -> None:
    from netspec.summary import summary

    summary(graph, "table")
    graph.model_dump_json()


def _located(text: str, errors: list[NetspecError]) -> None:
    for err in errors:
        if err.span is None or err.span.line < 1 or err.span.col < 1:
            raise FuzzFailure("unlocated", text, err.message)
        try:
            err.render()
        except Exception as e:  # noqa: BLE001
            raise FuzzFailure("render", text, f"{err.message}: {e!r}") from e


def _against_torch(text: str, graph: Graph) -> None:
    import torch

    from netspec.backends.lower_torch import build

    try:
        model = build(graph)
    except Exception as e:  # noqa: BLE001
        raise FuzzFailure("torch-build", text, repr(e)[:500]) from e
    params = sum(p.numel() for p in model.parameters())
    if params != graph.totals.params:
        raise FuzzFailure("params", text, f"IR {graph.totals.params}, torch {params}")
    shape = graph.input.shape
    if graph.input.is_tokens:
        assert graph.input.vocab is not None
        x = torch.randint(0, graph.input.vocab, (1, *shape))
    else:
        x = torch.randn(1, *shape)
    model.eval()
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:  # noqa: BLE001
        raise FuzzFailure("torch-forward", text, repr(e)[:500]) from e
    if tuple(y.shape) != (1, *graph.output_shape):
        raise FuzzFailure(
            "output-shape", text, f"IR {graph.output_shape}, torch {tuple(y.shape)[1:]}"
        )
