"""Training settings: the spec's train section, the flags over it, and every refusal."""

from __future__ import annotations

import pytest

from netspec.errors import NetspecError
from netspec.ir.build import load_spec_text
from netspec.train.settings import KEYS, TrainSettings, describe_keys, parse_call, resolve_settings


def _graph(train: str):
    text = f"input [1, 8, 8]\nclasses 3\n{train}\nINPUT -> CONV(4) -> FC(3) -> SOFTMAX\n"
    return load_spec_text(text, "<settings-test>").instantiate({})


def test_defaults() -> None:
    s = resolve_settings()
    assert (s.optimizer, s.lr, s.schedule, s.epochs, s.batch_size) == (
        "adam",
        0.003,
        "cosine",
        30,
        32,
    )
    assert s.freeze == () and s.augment == "none" and s.patience == 0


def test_spec_section_with_calls() -> None:
    graph = _graph(
        "train { epochs = 5, optimizer = sgd(0.05, momentum=0.8, nesterov=on), "
        'schedule = step(step_size=2, gamma=0.5), freeze = ["conv*"], augment = "flip", l2 = 1e-4 }'
    )
    s = resolve_settings(graph.train)
    assert (s.epochs, s.optimizer, s.lr, s.momentum, s.nesterov) == (5, "sgd", 0.05, 0.8, True)
    assert (s.schedule, s.step_size, s.gamma) == ("step", 2, 0.5)
    assert s.freeze == ("conv*",) and s.augment == "flip" and s.l2 == 1e-4


def test_flags_override_the_spec() -> None:
    s = resolve_settings({"epochs": 5, "lr": 0.01}, {"epochs": 7})
    assert (s.epochs, s.lr) == (7, 0.01)


def test_another_optimizer_drops_the_specs_options() -> None:
    spec = {"optimizer": {"name": "sgd", "args": [], "kwargs": {"lr": 0.5, "momentum": 0.5}}}
    s = resolve_settings(spec, {"optimizer": "adamw"})
    # the spec's sgd lr and momentum do not leak into adamw: its own defaults apply
    assert (s.optimizer, s.lr, s.weight_decay) == ("adamw", 0.003, 0.01)
    assert resolve_settings(spec, {"optimizer": "sgd(lr=0.1)"}).lr == 0.1


def test_flag_call_form() -> None:
    assert parse_call("sgd(lr=0.1, momentum=0.9, nesterov=on)") == {
        "name": "sgd",
        "args": [],
        "kwargs": {"lr": 0.1, "momentum": 0.9, "nesterov": True},
    }
    assert parse_call("cosine") == "cosine"
    s = resolve_settings(
        {}, {"schedule": "cosine(min_lr=1e-5)", "optimizer": "adam(betas=(0.8, 0.9))"}
    )
    assert s.min_lr == 1e-5 and s.betas == (0.8, 0.9)


def test_json_round_trip() -> None:
    s = resolve_settings({"freeze": ["a", "b*"], "betas": [0.8, 0.9]})
    assert TrainSettings.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    ("spec", "flags", "message", "hint"),
    [
        ({"epoch": 3}, {}, "unknown training setting `epoch`", "`epochs`"),
        ({}, {"optimizer": "adma"}, "unknown optimizer `adma`", "`adam`"),
        ({}, {"schedule": "cosin"}, "unknown schedule `cosin`", "`cosine`"),
        ({}, {"epochs": 0}, "expected a positive integer for `epochs`. Received: epochs=0", None),
        ({}, {"lr": -1.0}, "expected a number in (0, inf) for `lr`. Received: lr=-1.0", None),
        ({}, {"val_split": 1.0}, "`val_split`", None),
        ({}, {"momentum": 0.9, "optimizer": "adam"}, "`momentum` is an option of sgd", None),
        ({}, {"gamma": 0.5}, "`gamma` is an option of the step schedule, not of cosine", None),
        (
            {},
            {"optimizer": "sgd(lr=0.1, moment=0.9)"},
            "sgd() takes no argument `moment`",
            "`momentum`",
        ),
        ({}, {"optimizer": "sgd(0.1, 0.9, on, 0, 1)"}, "takes at most 4 positional", None),
        ({}, {"augment": "flip,shfit=0.1"}, "unknown augmentation `shfit`", "`shift`"),
        (
            {"lr": 0.1, "optimizer": {"name": "sgd", "args": [0.2], "kwargs": {}}},
            {},
            "`lr` is given twice",
            None,
        ),
        ({}, {"optimizer": "sgd("}, "cannot read 'sgd('", None),
        (
            {},
            {"nesterov": True, "optimizer": "sgd", "momentum": 0.0},
            "nesterov=on needs a momentum",
            None,
        ),
    ],
)
def test_refusals(spec, flags, message, hint) -> None:
    with pytest.raises(NetspecError) as info:
        resolve_settings(spec, flags)
    assert message in info.value.message
    if hint:
        assert hint in (info.value.hint or "")


def test_a_bad_flag_is_named() -> None:
    with pytest.raises(NetspecError, match="--batch-size"):
        resolve_settings({}, {"batch_size": -2})


def test_a_bad_key_points_at_its_line_in_the_spec() -> None:
    text = "input [1, 8, 8]\nclasses 3\n# epoch = 1 in a comment\ntrain {\n  lr = 0.1,\n  epoch = 3\n}\nINPUT -> FC(3) -> SOFTMAX\n"
    graph, errors = load_spec_text(text, "spans.ns").instantiate({}, collect=True)
    assert [e.render() for e in errors] == [errors[0].render()]  # check refuses it too
    assert errors[0].render().startswith("spans.ns:6:3: error: unknown training setting")
    with pytest.raises(NetspecError) as info:
        resolve_settings(graph.train, spans=graph.train_spans)
    span = info.value.span
    assert span is not None and (span.line, span.col) == (6, 3)
    rendered = info.value.render()
    assert rendered.startswith("spans.ns:6:3: error: unknown training setting `epoch`")
    assert "did you mean `epochs`?" in rendered


def test_every_key_is_documented() -> None:
    listing = describe_keys()
    assert all(f"{key} (default" in listing for key in KEYS)
    assert set(KEYS) <= set(TrainSettings.__dataclass_fields__)
