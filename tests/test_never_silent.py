"""Never silently different (issue 10, the compiler's half; issue 11's expansion cap and
messages): each case exited 0 with another network than written, or misled, before its fix."""

from __future__ import annotations

import resource

import pytest
from helpers.cpu import cpu_limit

from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import load_spec_text

HEAD = "input [3, 32, 32]\nclasses 10\n"


def build(text: str, **bindings):
    return load_spec_text(text, "t.ns").instantiate(bindings)


def refused(text: str, **bindings) -> NetspecError:
    with pytest.raises(SpecErrors) as info:
        build(text, **bindings)
    err = info.value.errors[0]
    assert err.span is not None and err.span.line >= 1, "every refusal is located"
    return err


def where(err: NetspecError) -> str:
    assert err.span is not None
    return f"{err.span.line}:{err.span.col}"


# ---- 1. defaults belong to the spelling written


def test_pool_defaults_do_not_overwrite_each_other() -> None:
    g = build(
        HEAD + "defaults MAXPOOL(3, stride=2), AVGPOOL(3, stride=1, padding=1)\n"
        "INPUT -> MAXPOOL -> AVGPOOL -> POOL -> GAP -> FC(10) -> SOFTMAX"
    )
    assert g.node("pool1").shape == (3, 15, 15)  # MAXPOOL's own defaults: 3x3, stride 2
    assert g.node("pool2").shape == (3, 15, 15)  # AVGPOOL's: 3x3, stride 1, padding 1
    assert g.node("pool3").shape == (3, 7, 7)  # bare POOL keeps the built-in 2x2, stride 2


def test_ceil_default_of_maxpool_does_not_reach_avgpool() -> None:
    g = build(
        HEAD + "defaults MAXPOOL(3, stride=2, ceil=on)\n"
        "INPUT -> MAXPOOL -> AVGPOOL(2) -> GAP -> FC(10) -> SOFTMAX"
    )
    assert g.node("pool1").shape == (3, 16, 16)  # ceil((32 - 3) / 2) + 1
    assert g.node("pool2").args.get("ceil") in (None, False)
    assert g.node("pool2").shape == (3, 8, 8)


def test_synonyms_share_defaults_but_conv1d_does_not_reach_conv() -> None:
    g = build(HEAD + "defaults DENSE(64), CONV1D(7)\nINPUT -> CONV -> FC -> FC(10) -> SOFTMAX")
    assert g.node("conv1").shape[0] == 32  # CONV1D's default is not CONV's
    assert g.node("fc1").shape == (64,)  # DENSE and FC are one spelling


# ---- 2. the class check looks at every output


@pytest.mark.parametrize(
    "chain, shape, at",
    [("CONV(12)", "12x32x32", "3:10"), ("CONV(10) -> RELU", "10x32x32", "3:22")],
)
def test_a_map_output_is_not_classes(chain: str, shape: str, at: str) -> None:
    err = refused(HEAD + f"INPUT -> {chain}\n")
    assert f"[{shape}]" in err.message and "10 classes" in err.message
    assert where(err) == at  # the last element


def test_squeezenet_without_global_pool() -> None:
    err = refused(
        "input [3, 224, 224]\nclasses 1000\nINPUT -> CONV(96, 7, stride=2) -> POOL"
        " -> CONV(1000, 1)\n"
    )
    assert "[1000x56x56]" in err.message
    assert err.hint is not None and "GAP" in err.hint


# ---- 3. an explicit classifier is never stacked under an implicit one


def test_fc_classifier_of_another_size_is_an_error() -> None:
    err = refused(HEAD + "INPUT -> CONV(8) -> FC(12) -> SOFTMAX\n")
    assert "12" in err.message and "10" in err.message
    assert where(err) == "3:21"


def test_fc_classifier_behind_dropout_is_still_the_classifier() -> None:
    err = refused(HEAD + "INPUT -> CONV(8) -> FC(12) -> DROPOUT(0.5) -> SOFTMAX\n")
    assert "12" in err.message and "10" in err.message


def test_hidden_fc_with_an_activation_still_gets_the_classifier() -> None:
    g = build(HEAD + "INPUT -> CONV(8) -> FC(12) -> RELU -> SOFTMAX\n")
    assert g.node("fc2").implicit and g.node("fc2").shape == (10,)


def test_one_by_one_conv_classifier_is_not_flattened_into_an_fc() -> None:
    err = refused("input [3, 32, 32]\nclasses 2\nINPUT -> CONV(2, 1) -> SOFTMAX\n")
    assert "[2x32x32]" in err.message
    assert err.hint is not None and "GAP" in err.hint and "per pixel" in err.hint


def test_implicit_classifier_after_a_map_still_works() -> None:
    g = build(HEAD + "INPUT -> CONV(8) -> POOL -> SOFTMAX\n")
    assert [n.kind for n in g.nodes if n.implicit] == ["flatten", "fc"]


# ---- 5. check validates the train section


def test_check_refuses_an_unknown_train_key() -> None:
    err = refused(HEAD + "train { epochz = 1 }\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "epochz" in err.message and where(err) == "3:9"
    assert err.hint is not None and "epochs" in err.hint


def test_check_refuses_a_bad_train_value() -> None:
    err = refused(HEAD + "train { epochs = -1 }\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "epochs" in err.message


# ---- 9. messages that misled


def test_dropout_rate_over_one_gets_no_integer_division_hint() -> None:
    err = refused(HEAD + "INPUT -> DROPOUT(1.5) -> FC(10) -> SOFTMAX\n")
    assert "//" not in (err.hint or "") and "integer" not in err.message
    assert "[0, 1)" in err.message and "1.5" in err.message


def test_input_with_a_batch_dimension() -> None:
    err = refused("input [None, 3, 32, 32]\nclasses 10\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "batch" in err.message and "None = 2" not in (err.hint or "")
    assert err.hint is not None and "input [3, 32, 32]" in err.hint
    assert where(err) == "1:8"


def test_failed_budget_names_the_layers_holding_it() -> None:
    err = refused(
        HEAD + "budget params <= 100K\nINPUT -> CONV(8) -> FC(100) -> FC(10) -> SOFTMAX\n"
    )
    assert any("fc1" in n and "%" in n for n in err.notes), err.notes
    assert "fc1" in " ".join(err.notes).split("conv1")[0]  # the biggest first


def test_memory_limit_echoed_in_bytes() -> None:
    from netspec.summary import limit_text

    g = build(HEAD + "budget memory <= 4MB, params <= 5M\nINPUT -> FC(10) -> SOFTMAX\n")
    assert [limit_text(b.metric, b.limit) for b in g.budgets] == ["4MB", "5M"]
    g = build(HEAD + "budget memory <= 2GiB\nINPUT -> FC(10) -> SOFTMAX\n")
    assert limit_text("memory", g.budgets[0].limit) == "2GiB"


def test_negative_budget_limit_is_refused() -> None:
    err = refused(HEAD + "budget params <= -1\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "-1" in err.message and where(err) == "3:18"


def test_memory_budget_failure_shows_bytes() -> None:
    err = refused(HEAD + "budget memory <= 1KB\nINPUT -> CONV(8) -> FC(10) -> SOFTMAX\n")
    assert "<= 1KB" in err.message


# ---- 10. residual errors name the residual written


def test_residual_mismatch_names_the_residual() -> None:
    err = refused(HEAD + "INPUT -> CONV(8) -> residual(CONV(16)) -> FC(10) -> SOFTMAX\n")
    assert err.message.startswith("residual(...)") and "add1" not in err.message
    assert "[16x32x32]" in err.message and "[8x32x32]" in err.message
    err = refused(HEAD + "INPUT -> CONV(8) -> residual(CONV(16)) as res -> FC(10) -> SOFTMAX\n")
    assert "`res`" in err.message


# ---- 11. the cap is about work


def test_a_100000_layer_mlp_is_allowed() -> None:
    spec = load_spec_text(
        "input [16]\nclasses 10\nINPUT -> [FC(16) -> RELU]*100000 -> FC(10) -> SOFTMAX\n"
    )
    g = spec.instantiate({}, light=True)
    assert g.totals.params == 100_000 * (16 * 16 + 16) + 16 * 10 + 10


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "INPUT -> [CONV]*1000000000 -> FC(10) -> SOFTMAX\n",
        HEAD + "INPUT -> [[CONV]*100000]*100000 -> FC(10) -> SOFTMAX\n",
        HEAD + "N = 10**15\nINPUT -> [CONV -> RELU]*N -> FC(10) -> SOFTMAX\n",
    ],
    ids=["flat", "nested", "named"],
)
def test_huge_repetitions_are_refused_fast(text: str) -> None:
    with cpu_limit(0.5):
        err = refused(text)
    assert "limit" in err.message


def test_cap_message_counts_the_whole_network() -> None:
    err = refused(HEAD + "INPUT -> [CONV]*200000 -> [CONV]*60000 -> FC(10) -> SOFTMAX\n")
    assert "at least 60,000" not in err.message
    assert "60,000 nodes" in err.message and "260,001" in err.message


# ---- C. the expansion is bounded before the work


def _doubling_blocks(n: int) -> str:
    lines = ["block b0(c=4) = CONV(c)"]
    lines += [f"block b{i}(c=4) = b{i - 1}(c) -> b{i - 1}(c)" for i in range(1, n)]
    return HEAD + "\n".join(lines) + f"\nINPUT -> b{n - 1} -> FC(10) -> SOFTMAX\n"


def test_doubling_blocks_are_refused_before_the_work() -> None:
    with cpu_limit(1.0):
        err = refused(_doubling_blocks(25))
    # 2^24 layers and 2^25 - 1 block calls
    assert "limit" in err.message and f"{2**24 + 2**25 - 1:,}" in err.message
    assert where(err) == "28:10"  # the call of b24


def test_block_repetition_from_its_argument_is_refused_before_the_work() -> None:
    with cpu_limit(1.0):
        err = refused(
            HEAD + "block s(n) = [CONV -> RELU]*n\nblock t(n) = s(n) -> s(n)\n"
            "INPUT -> t(100000000) -> FC(10) -> SOFTMAX\n"
        )
    assert "limit" in err.message


def test_indexed_repetition_of_growing_blocks_is_refused_before_the_work() -> None:
    with cpu_limit(1.0):
        err = refused(
            HEAD
            + "block s(n) = [CONV -> RELU]*n\nINPUT -> [s(2**i)]*40 for i -> FC(10) -> SOFTMAX\n"
        )
    assert "limit" in err.message


def test_a_huge_free_parameter_range_is_not_materialised() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with cpu_limit(1.0):
        spec = load_spec_text(HEAD + "K in 2..1G\nINPUT -> CONV(8, K) -> FC(10) -> SOFTMAX\n")
        assert spec.free["K"].describe() == "2..1000000000"
        g = spec.instantiate({"K": 3})
        assert g.node("conv1").params == 8 * 3 * 9 + 8
        with pytest.raises(SpecErrors, match="outside its domain"):
            spec.instantiate({"K": 1})
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


def test_classes_used_before_it_is_known() -> None:
    err = refused("N = classes * 2\nclasses K\nK = 3\ninput [3, 8, 8]\nINPUT -> FC(N) -> SOFTMAX\n")
    assert "object at" not in err.message
    assert "classes" in err.message and where(err) == "1:5"


# ---- 12. duplicates are errors, never dropped


@pytest.mark.parametrize(
    "text, words, at",
    [
        (HEAD + "block a(c, c) = CONV(c)\nINPUT -> a(8, 9) -> FC(10) -> SOFTMAX\n", "`c`", "3:12"),
        (
            "input tokens(vocab=9, vocab=100, length=5)\nclasses 10\n"
            "INPUT -> EMBEDDING(8) -> FC(10) -> SOFTMAX\n",
            "`vocab`",
            "1:23",
        ),
        (
            HEAD + "train { epochs = 1, epochs = 3 }\nINPUT -> FC(10) -> SOFTMAX\n",
            "`epochs`",
            "3:21",
        ),
        (HEAD + "INPUT -> CONV(8, channels=9) -> FC(10) -> SOFTMAX\n", "`channels`", "3:18"),
        (HEAD + "INPUT -> CONV(8, stride=1, stride=2) -> FC(10) -> SOFTMAX\n", "`stride`", "3:28"),
    ],
    ids=["block_param", "tokens_kwarg", "train_setting", "layer_positional", "layer_kwarg"],
)
def test_duplicates_are_errors(text: str, words: str, at: str) -> None:
    err = refused(text)
    assert words in err.message and "twice" in err.message
    assert where(err) == at


def test_embedding_vocabulary_smaller_than_the_input() -> None:
    err = refused(
        "input tokens(vocab=100, length=5)\nclasses 10\nINPUT -> EMBEDDING(8, 5) -> FC(10) -> SOFTMAX\n"
    )
    assert "5" in err.message and "100" in err.message
    assert where(err) == "3:23"


def test_deeply_nested_indexed_loops_are_bounded_in_linear_time() -> None:
    names = [f"v{k}" for k in range(30)]
    body = "CONV(1 + " + " + ".join(names) + ")"
    for v in names:
        body = f"[{body}]*2 for {v}"
    with cpu_limit(1.0):
        err = refused(HEAD + f"INPUT -> {body} -> FC(10) -> SOFTMAX\n")
    assert f"{2**30 + 2**31 - 2:,} nodes and steps" in err.message  # 2^30 layers, 2^31 - 2 rounds


def test_an_undefined_channel_name_is_not_called_a_batch() -> None:
    err = refused("input [C, 32, 32]\nclasses 10\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "batch" not in err.message and "undefined name `C`" in err.message
    err = refused("input [B, 3, 32, 32]\nclasses 10\nINPUT -> FC(10) -> SOFTMAX\n")
    assert "batch" in err.message


def test_a_zero_budget_prints_no_nan_or_inf() -> None:
    from netspec.summary import summary

    graph, errors = load_spec_text(
        HEAD + "budget params <= 0, memory <= 0\nINPUT -> FC(10) -> SOFTMAX\n", "t.ns"
    ).instantiate({}, collect=True)
    assert graph is not None and len(errors) == 2
    text = summary(graph, "table")
    assert "budget params <= 0" in text and "budget memory <= 0" in text
    assert "nan" not in text.lower() and "inf" not in text.lower()


def test_explore_a_grid_of_a_huge_range_without_listing_it() -> None:
    from netspec.explore import explore, parse_grid

    spec = load_spec_text(HEAD + "K in 1..1G\nINPUT -> CONV(2, 1, stride=K) -> FC(10) -> SOFTMAX\n")
    with cpu_limit(2.0):
        grid = parse_grid(spec, ["K=1,3,7"])
        assert grid == {"K": (0, 2, 6)}
        result = explore(spec, grid, verify=False)
        assert sorted(m.bindings["K"] for m in result.members) == [1, 3, 7]
        with pytest.raises(NetspecError, match="outside its domain"):
            parse_grid(spec, ["K=0"])


def test_a_text_too_long_to_parse_quickly_is_refused_before_parsing() -> None:
    from netspec.frontend.parser import MAX_TOKENS

    chain = " -> ".join(["RELU"] * 30_000)  # 60,000 tokens, about 200 KB
    text = f"input [3, 8, 8]\nclasses 2\nINPUT -> {chain} -> FC(2) -> SOFTMAX\n"
    with cpu_limit(1.0), pytest.raises(NetspecError) as info:
        load_spec_text(text, "t.ns")
    err = info.value
    assert f"longer than {MAX_TOKENS:,} tokens" in err.message
    assert err.span is not None and err.span.line == 3
    # comments are free: a long comment is no reason to refuse
    load_spec_text("# " + "x " * 60_000 + "\n" + HEAD + "INPUT -> FC(10) -> SOFTMAX\n")
