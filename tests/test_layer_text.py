"""Every layer as printed is spec text that builds the same layer (issue 25, "Text that is
always true"): the zoo's layers, the fuzzer's accepted specs and every registered kind's
checklist examples, through `Layer.text`, which the table, the diagram and the errors print."""

from __future__ import annotations

import random

import pytest
from helpers.fuzz_specs import ZOO, generated_spec
from helpers.layer_text import layer_cases, round_trip

from netspec.draw import build
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text
from netspec.ir.graph import Graph
from netspec.layers import KINDS
from netspec.summary import summary

SHAPES = {"image": "[3, 8, 8]", "signal": "[4, 12]", "vector": "[12]", "tokens": None}


def _graph(text: str) -> Graph | None:
    try:
        spec = load_spec_text(text)
    except (NetspecError, SpecErrors):
        return None
    if isinstance(spec, Graph):
        return spec
    graph, _ = spec.instantiate({n: d.values[0] for n, d in spec.free.items()}, collect=True)
    return graph


def _failures(graph: Graph) -> list[str]:
    return [
        f"{node.id}: {problem}"
        for (layer, shape), node in layer_cases(graph).items()
        if (problem := round_trip(layer, shape, node)) is not None
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_layer_prints_as_text_that_builds_it(name: str) -> None:
    graph = _graph(ZOO[name])
    assert graph is not None
    assert _failures(graph) == []


def test_the_forms_the_issue_names_build_back() -> None:
    """The nine printed forms that did not parse (`adaptive_avg_pool(1)`, `slice(0:8)`, ...)."""
    text = (
        "network t\ninput [8, 8, 8]\n"
        "ADAPTIVEAVGPOOL(1) -> CHANNELSHUFFLE(4) -> CONVTRANSPOSE(16) -> DROPPATH(0)"
        " -> LAYERSCALE(1e-6) -> LEAKYRELU(0.2) -> SLICE(0, 8) -> concat(GAP, GMP)\n"
    )
    graph = _graph(text)
    assert graph is not None
    printed = {n.layer.text() for n in graph.nodes}
    assert {"ADAPTIVEAVGPOOL(1)", "CHANNELSHUFFLE(4)", "SLICE(0, 8)", "GAP", "GMP"} <= printed
    # a float main argument shows when it is not its default (LAYERSCALE's init is 1e-6)
    assert {"CONVTRANSPOSE(16)", "DROPPATH(0)", "LAYERSCALE", "LEAKYRELU(0.2)"} <= printed
    assert _failures(graph) == []


def test_arguments_from_the_inputs_channels_are_said_unless_they_are_the_inputs() -> None:
    """DWCONV's channels default to the input's, not to CONV's 32: 32 on 64 must be said."""
    graph = _graph("network t\ninput [64, 8, 8]\nDWCONV(3, channels=32, groups=32) -> DWCONV(5)\n")
    assert graph is not None
    first, second = graph.nodes[1:]
    assert first.layer.text((64,)) == "DWCONV(3, channels=32, groups=32)"
    assert second.layer.text((32,)) == "DWCONV(5)"
    assert _failures(graph) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kinds_examples_print_as_text_that_builds_them(kind: str) -> None:
    """Walks the registry: a new kind (or a new argument) is covered by its examples."""
    cls = KINDS[kind]
    examples = cls.examples or (("image", next(iter(cls.spellings), "")),)
    for source, chain in examples:
        if not chain:
            continue  # the input (no spelling of its own) is exercised by every spec
        head = (
            "input tokens(length=6, vocab=10)" if source == "tokens" else f"input {SHAPES[source]}"
        )
        graph = _graph(f"network t\n{head}\n{chain}\n")
        assert graph is not None, chain
        assert _failures(graph) == [], chain


def test_the_fuzzers_accepted_specs_print_as_text_that_builds_them() -> None:
    built = 0
    for seed in range(120):
        graph = _graph(generated_spec(random.Random(seed)))
        if graph is None or len(graph.nodes) > 200:
            continue
        built += 1
        assert _failures(graph) == [], seed
    assert built >= 10  # the fuzzer's specs do build, often enough to mean something


def test_the_table_and_the_diagram_print_the_text() -> None:
    graph = _graph("network t\ninput [8, 8, 8]\nCONV(16, 3, stride=2) -> SLICE(0, 8) -> GAP\n")
    assert graph is not None
    table = summary(graph)
    assert "CONV(16, stride=2)" in table and "SLICE(0, 8)" in table and "GAP" in table
    labels = {box.detail for box in build(graph).boxes}
    assert {"CONV(16, stride=2)", "SLICE(0, 8)", "GAP"} <= labels


# ---- `netspec layers`: read from the registry, as the parser is ---------------------------------


def _layers_listing(*args: str) -> str:
    from click.testing import CliRunner

    from netspec.cli import cli

    result = CliRunner().invoke(cli, ["layers", *args], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_netspec_layers_gives_dwconvs_arguments_in_the_order_the_parser_takes_them() -> None:
    from netspec.layers.reference import arguments

    wide = _layers_listing("--wide")
    row = next(line for line in wide.splitlines() if line.startswith("│ dwconv "))
    assert "kernel=3, stride=1, padding=same; channels=in.c" in row
    assert [a.name for a in arguments(KINDS["dwconv"]) if a.positional] == list(
        KINDS["dwconv"].positional
    )
    # the parser agrees: DWCONV(3, 2) is a 3x3 kernel at stride 2 on the input's channels
    graph = _graph("network t\ninput [8, 8, 8]\nDWCONV(3, 2)\n")
    assert graph is not None
    assert (
        graph.nodes[1].shape == (8, 4, 4)
        and graph.nodes[1].layer.text((8,)) == "DWCONV(3, stride=2)"
    )


def test_netspec_layers_lists_every_kind_and_the_combinators_within_80_columns() -> None:
    from netspec.layers.reference import COMBINATORS

    text = _layers_listing()
    assert max(len(line) for line in text.splitlines()) <= 80
    for kind, cls in KINDS.items():
        assert not cls.spellings or f"│ {kind} " in text, kind
    for c in COMBINATORS:
        assert f"│ {c.name} " in text, c.name
    wide = _layers_listing("--wide")
    assert "Depthwise convolution" in wide and max(len(x) for x in wide.splitlines()) > 80
