"""The registry's checklist: every registered layer kind, by name, passes the same checks.

For each kind in `netspec.layers.KINDS` (nothing here lists the kinds by hand):

- a property test (hypothesis, small sizes): on drawn input sizes, every node's output shape,
  parameter and buffer counts and state_dict names/shapes in the IR equal those of the torch
  module lowered for it;
- an ONNX Runtime parity case: the ONNX lowering at the default and the newest opset runs and
  matches the torch module's output;
- a row in `netspec layers` (kinds with a spelling) and a row in docs/layers.md (generated from
  the registry by tools/gen_docs.py, kept fresh by tests/test_docs.py);
- its training-memory facts (`backward_keeps` in its own class body, and `backward_memory` on
  its examples), which netspec.memory adds up and never guesses for a kind.

The cases are the layer class's `examples` (or its first spelling, bare, on an image), so a new
kind is checked as soon as it is defined; one that cannot pass fails here, by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.parity import FP32_TOL, check_parity, randomized, rel_error, session, torch_out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec import deploy as L
from netspec.backends import MissingLowering
from netspec.backends.lower_torch import LOWERINGS as TORCH_LOWERINGS
from netspec.backends.lower_torch import build
from netspec.cli import cli
from netspec.deploy.runtime import example_input
from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph
from netspec.layers import KINDS, Layer

ROOT = Path(__file__).resolve().parents[1]
KIND_NAMES = sorted(KINDS)
# The fixed input of each rank for the parity cases; the property test draws its own.
PARITY_INPUTS = {
    "image": "[3, 8, 8]",
    "signal": "[3, 12]",
    "vector": "[10]",
    "tokens": "tokens(length=7, vocab=20)",
}


def examples(cls: type[Layer]) -> tuple[tuple[str, str], ...]:
    if cls.examples:
        return cls.examples
    assert cls.spellings, f"layer kind `{cls.kind}` has neither spellings nor checklist examples"
    return (("image", next(iter(cls.spellings))),)


def compile_case(kind: str, decl: str, chain: str) -> Graph:
    graph = load_spec_text(f"input {decl}\nINPUT -> {chain}", f"{kind}.ns").instantiate()
    assert kind in {n.kind for n in graph.nodes}, f"the example `{chain}` has no `{kind}` node"
    return graph


def test_every_kind_has_a_lowering_in_each_backend() -> None:
    assert TORCH_LOWERINGS.missing(KINDS) == [], "kinds without a torch lowering"
    assert L.LOWERINGS.missing(KINDS) == [], "kinds without an onnx lowering"


@pytest.mark.parametrize("table", [TORCH_LOWERINGS, L.LOWERINGS], ids=["torch", "onnx"])
def test_a_missing_lowering_fails_the_same_way_in_both_backends(
    table: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = compile_case("tanh", "[4]", "FC(3) -> TANH")
    monkeypatch.delitem(table, "tanh")
    message = f"no {table.name} lowering for layer kind(s): tanh"  # type: ignore[attr-defined]
    with pytest.raises(MissingLowering) as info:
        if table is TORCH_LOWERINGS:
            build(graph)
        else:
            L.lower(graph, {k: v.numpy() for k, v in build(graph).state_dict().items()})
    assert info.value.message == message


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_kind_states_its_training_memory(kind: str) -> None:
    cls = KINDS[kind]
    assert "backward_keeps" in cls.__dict__, (
        f"layer kind `{kind}` ({cls.__qualname__}) does not state what its backward pass keeps: "
        "set `backward_keeps` in its class body (see Layer.backward_memory)"
    )
    assert cls.backward_keeps in ("input", "output", "nothing"), kind
    for rank, chain in examples(cls):
        graph = compile_case(kind, PARITY_INPUTS[rank], chain)
        for node in graph.nodes:
            if node.kind == kind:
                memory = node.layer.backward_memory(node.shape, 2)
                assert memory.keeps in ("input", "output", "nothing"), kind
                assert min(memory.stored, memory.extra, memory.fixed) >= 0, kind


# ---- shape and counts against torch, on drawn sizes ---------------------------------------------


@st.composite
def input_decl(draw: st.DrawFn, rank: str) -> str:
    small = st.integers(1, 6)
    if rank == "image":
        return f"[{draw(small)}, {draw(st.integers(3, 12))}, {draw(st.integers(3, 12))}]"
    if rank == "signal":
        return f"[{draw(small)}, {draw(st.integers(3, 16))}]"
    if rank == "vector":
        return f"[{draw(st.integers(1, 20))}]"
    return f"tokens(length={draw(st.integers(1, 10))}, vocab={draw(st.integers(2, 30))})"


def torch_facts(graph: Graph) -> None:
    """Run the torch lowering on a batch; hold every node's IR figures against its module."""
    module = build(graph, seed=0).eval()
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.get_submodule(n.id).register_forward_hook(
            lambda _m, _i, out, nid=n.id: seen.__setitem__(nid, tuple(out.shape))
        )
        for n in graph.nodes
    ]
    x = torch.from_numpy(example_input(graph.input.shape, graph.input.vocab, batch=2))
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    shapes = {n.id: n.shape for n in graph.nodes}
    for node in graph.nodes:
        sub = module.get_submodule(node.id)
        assert seen[node.id] == (2, *node.shape), node.id
        assert sum(p.numel() for p in sub.parameters()) == node.params, node.id
        state = {
            k: tuple(v.shape)
            for k, v in sub.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        ins = tuple(shapes[i] for i in node.inputs)
        assert state == node.layer.state(ins, node.shape), node.id
        assert sum(int(np.prod(s)) for k, s in state.items() if k.startswith("running")) == (
            node.buffers
        ), node.id
    # Training mode: forward and backward run (in-place reuse must not break autograd).
    module.train()
    out = module(x)
    if out.is_floating_point() and out.requires_grad:
        out.sum().backward()


@pytest.mark.parametrize("kind", KIND_NAMES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_shape_and_counts_match_torch(kind: str, data: st.DataObject) -> None:
    for rank, chain in examples(KINDS[kind]):
        decl = data.draw(input_decl(rank), label=rank)
        try:
            graph = compile_case(kind, decl, chain)
        except NetspecError:
            continue  # a size the IR refuses (a kernel past the input); the parity case compiles
        torch_facts(graph)


# ---- ONNX Runtime parity ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_onnx_runtime_parity(kind: str) -> None:
    for rank, chain in examples(KINDS[kind]):
        graph = compile_case(kind, PARITY_INPUTS[rank], chain)
        module, weights = randomized(graph)
        check_parity(graph, module, weights, batches=(2,))
        lowered = L.lower(graph, weights, L.LowerOptions(opset=L.MAX_OPSET))
        assert all(c.ok for c in L.verify(lowered, graph, run=False)), chain
        x = example_input(graph.input.shape, graph.input.vocab, 2)
        got = session(lowered.to_bytes()).run(x)
        assert rel_error(got, torch_out(module, x)) <= FP32_TOL, (kind, chain)


# ---- documentation --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layers_listing() -> str:
    result = CliRunner().invoke(cli, ["layers"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_netspec_layers_lists_it(kind: str, layers_listing: str) -> None:
    cls = KINDS[kind]
    if not cls.spellings:  # a statement or a combinator (input, concat(...), add(...))
        assert kind in ("input", "concat", "add", "mul"), (
            f"`{kind}` has no spelling: specs cannot use it"
        )
        return
    row = re.search(rf"^\W*{re.escape(kind)}\s+│\s*(.*?)│", layers_listing, re.M)
    assert row, f"`netspec layers` has no row for `{kind}`"
    for spelling in cls.spellings:
        assert spelling in row.group(1), f"`netspec layers` misses {spelling} for `{kind}`"


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_the_layers_page_has_a_row(kind: str) -> None:
    page = (ROOT / "docs" / "layers.md").read_text()  # generated by tools/gen_docs.py
    assert f"| `{kind}` |" in page, f"docs/layers.md has no row for `{kind}`"


# ---- the registry itself ------------------------------------------------------------------------


def test_defining_a_class_registers_its_kind_and_spellings() -> None:
    from netspec.layers import LAYERS, SPELLINGS
    from netspec.layers.activation import SiLU

    assert KINDS["silu"] is SiLU and SiLU in LAYERS
    assert SPELLINGS["SWISH"] == (SiLU, {}) and SPELLINGS["SILU"] == (SiLU, {})
    assert SiLU.short == "silu" and KINDS["batchnorm"].short == "bn"


def test_a_kind_or_spelling_defined_twice_fails_at_definition() -> None:
    from netspec.layers.base import RegistryError

    before = dict(KINDS)
    with pytest.raises(RegistryError, match="layer kind `relu` is defined twice"):

        class AnotherReLU(Layer):
            kind = "relu"

    with pytest.raises(RegistryError, match="spelling `SWISH` is claimed by SiLU"):

        class Swish(Layer):
            kind = "swish"
            spellings = {"SWISH": {}}

    assert before == KINDS
