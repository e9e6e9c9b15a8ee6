"""Training settings: the keys of a spec's ``train { ... }`` section and of `netspec train`'s flags.

Settings come in three layers, each overriding the one before: the built-in defaults, the
spec's train section, then the command line. Every key is listed in `KEYS`; an unknown key is
refused with a "did you mean". Two keys take a call-shaped value whose arguments are keys too:

    train {
      epochs = 30, batch_size = 32,
      optimizer = sgd(lr=0.05, momentum=0.9, nesterov=on),   # or: optimizer = adam, lr = 1e-3
      schedule = step(step_size=10, gamma=0.1),              # or: cosine, cosine(min_lr=1e-5), none
      patience = 5, l2 = 1e-4, augment = "shift=0.1,flip",
      freeze = ["conv*", "layer1.*"],
    }

On the command line the same call form works: ``--optimizer "sgd(lr=0.05, momentum=0.9)"``.
When the command line picks another optimizer (or schedule) than the spec, the spec's options
for the old one (its lr, momentum, ...) are dropped, so they never leak into the new one.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netspec.errors import NetspecError, Span, did_you_mean
from netspec.io import parse_bool
from netspec.ir.sections import register_train_check

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")
# What the network learns (netspec.train.tasks): the loss and the metrics follow from it.
TASKS = ("auto", "classify", "multilabel", "regression", "dense")
LOSSES = ("auto", "cross_entropy", "bce", "mse", "mae", "smooth_l1")
PRECISIONS = ("auto", "fp32", "bf16")
# Positional arguments of the call forms, in order: `sgd(0.1)` is `sgd(lr=0.1)`.
_CALL_ARGS: dict[str, dict[str, tuple[str, ...]]] = {
    "optimizer": {
        "sgd": ("lr", "momentum", "nesterov", "weight_decay"),
        "adam": ("lr", "betas", "weight_decay"),
        "adamw": ("lr", "betas", "weight_decay"),
    },
    "schedule": {"none": (), "step": ("step_size", "gamma"), "cosine": ("min_lr",)},
    "task": {name: ("loss",) for name in TASKS},
}
# Each optimizer's own keys (lr and weight_decay belong to all), and their defaults.
_ONLY_FOR = {"momentum": ("sgd",), "nesterov": ("sgd",), "betas": ("adam", "adamw")}
_SCHEDULE_KEYS = {"step_size": "step", "gamma": "step", "min_lr": "cosine"}
_DEFAULT_LR = {"sgd": 0.01, "adam": 0.003, "adamw": 0.003}
_DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}


@dataclass(frozen=True)
class TrainSettings:
    """Everything a training run needs besides the network, fully resolved.

    Attributes mirror the keys of `KEYS`; `optimizer_options` and `schedule_options` give the
    keyword arguments for the chosen optimizer and schedule.
    """

    data: str | None = None
    val_data: str | None = None
    val_split: float = 0.2
    limit: int | None = None
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 0.003
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    patience: int = 0
    l1: float = 0.0
    l2: float = 0.0
    augment: str = "none"
    freeze: tuple[str, ...] = field(default=())
    seed: int = 0
    aux_weight: float = 0.3
    freeze_epochs: int = 0
    unfreeze_from: str | None = None
    backbone_lr: float = 1.0
    task: str = "auto"
    loss: str = "auto"
    test_data: str | None = None
    precision: str = "auto"

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON values (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Read back what `to_json` wrote (a run folder's settings.json)."""
        known = {f.name for f in dataclasses.fields(cls)}
        plain: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known
        }
        return cls(**plain)


# --- value checks ----------------------------------------------------------------------------

Check = Callable[[str, Any], Any]


def _int(low: int) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            what = "a positive integer" if low == 1 else f"an integer >= {low}"
            raise _bad(key, value, what)
        return value

    return check


def _float(low: float, high: float | None = None, *, open_low: bool = False) -> Check:
    def check(key: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            ok = (value > low if open_low else value >= low) and (high is None or value < high)
        if not ok:
            lo = f"({low:g}" if open_low else f"[{low:g}"
            raise _bad(key, value, f"a number in {lo}, {'inf' if high is None else f'{high:g}'})")
        return float(value)

    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, value, "on or off")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(key, value, 'a text, e.g. "digits"')
    return value.strip()


def _choice(options: tuple[str, ...]) -> Check:
    def check(key: str, value: Any) -> str:
        name = value.lower() if isinstance(value, str) else value
        if name not in options:
            shown = value if isinstance(value, str) else repr(value)
            known = f"known: {', '.join(options)}"
            close = did_you_mean(str(value), options)
            raise NetspecError(
                f"unknown {key} `{shown}`", hint=f"{close} ({known})" if close else known
            )
        return name

    return check


def _betas(key: str, value: Any) -> tuple[float, float]:
    fraction = _float(0.0, 1.0)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _bad(key, value, "two numbers in [0, 1), e.g. [0.9, 0.999]")
    return (fraction(key, value[0]), fraction(key, value[1]))


def _augment(key: str, value: Any) -> str:
    from netspec.train.augment import parse_augment

    text = _text(key, value)
    parse_augment(text)  # refuses a bad value now, before any data is read
    return text


def _patterns(key: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(_text(key, item) for item in items)


def _optional(check: Check) -> Check:
    def optional(key: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return check(key, value)

    return optional


def _bad(key: str, value: Any, expected: str) -> NetspecError:
    shown = f'"{value}"' if isinstance(value, str) else value
    return NetspecError(f"expected {expected} for `{key}`. Received: {key}={shown}")


@dataclass(frozen=True)
class Key:
    """One setting: its check and a line of help (its default is `TrainSettings`')."""

    check: Check
    help: str


KEYS: dict[str, Key] = {
    "data": Key(
        _optional(_text), "training data: digits, synthetic[:N], npz:PATH, idx:PATH, folder:PATH"
    ),
    "val_data": Key(_optional(_text), "validation data (a source like data) instead of a split"),
    "val_split": Key(_float(0.0, 1.0), "fraction of each class held out for validation"),
    "limit": Key(_optional(_int(1)), "use at most this many training examples"),
    "epochs": Key(_int(1), "passes over the training data"),
    "batch_size": Key(_int(1), "examples per step (the global batch with --nproc)"),
    "optimizer": Key(
        _choice(OPTIMIZERS), "sgd, adam or adamw, or a call: sgd(lr=0.05, momentum=0.9)"
    ),
    "lr": Key(_float(0.0, open_low=True), "learning rate (default: sgd 0.01, adam/adamw 0.003)"),
    "momentum": Key(_float(0.0, 1.0), "SGD momentum"),
    "nesterov": Key(_bool, "SGD with Nesterov momentum"),
    "weight_decay": Key(
        _float(0.0), "the optimizer's weight decay (decoupled for adamw; default 0.01 there)"
    ),
    "betas": Key(_betas, "Adam's moment decay rates [b1, b2]"),
    "schedule": Key(
        _choice(SCHEDULES),
        "learning-rate schedule per epoch: none, step(step_size, gamma), cosine(min_lr)",
    ),
    "step_size": Key(_int(1), "step schedule: epochs between decays"),
    "gamma": Key(_float(0.0, open_low=True), "step schedule: decay factor"),
    "min_lr": Key(_float(0.0), "cosine schedule: the final learning rate"),
    "patience": Key(_int(0), "early stopping: epochs without a lower validation loss (0: off)"),
    "l1": Key(_float(0.0), "L1 penalty on every conv/fc/embedding weight (a layer's own l1= wins)"),
    "l2": Key(_float(0.0), "L2 penalty on every conv/fc/embedding weight (a layer's own l2= wins)"),
    "augment": Key(
        _augment,
        'training-batch augmentation, e.g. "shift=0.1,flip,rotate=10,zoom=0.1,contrast=0.2"',
    ),
    "freeze": Key(
        _patterns,
        'layer-id patterns (fnmatch) whose weights stay fixed, e.g. ["conv*", "layer1.*"]',
    ),
    "seed": Key(_int(0), "seed for initialization, data split and order, augmentation, dropout"),
    "aux_weight": Key(
        _float(0.0), "the weight of each side head's loss (`head NAME at ...`), added to the main's"
    ),
    "freeze_epochs": Key(
        _int(0), "fine-tuning: epochs trained with the backbone (all but the classifier) frozen"
    ),
    "unfreeze_from": Key(
        _optional(_text),
        "fine-tuning: after freeze_epochs, unfreeze from this layer (or scope) on; none: all",
    ),
    "backbone_lr": Key(
        _float(0.0, open_low=True),
        "fine-tuning: the backbone's learning rate as a fraction of lr (e.g. 0.1)",
    ),
    "task": Key(
        _choice(TASKS),
        "what is learned: classify, multilabel, regression, dense, or a call: "
        "regression(loss=mae); auto: classify (SOFTMAX or `classes`) or dense (per pixel)",
    ),
    "loss": Key(
        _choice(LOSSES),
        "the loss (auto: the task's): cross_entropy, bce, or mse, mae, smooth_l1 for regression",
    ),
    "test_data": Key(
        _optional(_text), "a test set (a source like data), evaluated once with the best weights"
    ),
    "precision": Key(
        _choice(PRECISIONS),
        "bf16: autocast where the device supports it (CPU: avx512_bf16/amx_bf16), fp32; "
        "auto: bf16 on CUDA, fp32 on CPU",
    ),
}
_GROUP_OF = {
    **{k: "optimizer" for k in ("lr", "momentum", "nesterov", "weight_decay", "betas")},
    **{k: "schedule" for k in _SCHEDULE_KEYS},
}


# --- resolving -------------------------------------------------------------------------------


def resolve_settings(
    spec_train: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
    *,
    spans: Mapping[str, Span] | None = None,
) -> TrainSettings:
    """Merge the defaults, a spec's train section and command-line flags into settings.

    Args:
        spec_train: the spec's evaluated train section (`Graph.train`): scalars, lists, and
            calls as ``{"name": ..., "args": [...], "kwargs": {...}}``.
        flags: command-line values by key; ``optimizer`` and ``schedule`` may be call texts.
        spans: where each key of `spec_train` stands in the spec (`Graph.train_spans`), to
            point errors at the offending key.

    Returns:
        The resolved settings.

    Raises:
        NetspecError: for an unknown key, a bad value, or an option the chosen optimizer or
            schedule does not take.
    """
    merged: dict[str, Any] = {}
    explicit: dict[str, str] = {}  # key -> where it was set, for messages
    for origin, values in (("spec", spec_train or {}), ("flag", flags or {})):
        layer = _expand(values, origin, spans or {})
        for group in ("optimizer", "schedule"):
            if group in layer and layer[group] != merged.get(group):
                for key in [k for k in merged if _GROUP_OF.get(k) == group]:
                    merged.pop(key)
                    explicit.pop(key, None)
        merged.update(layer)
        explicit.update({k: origin for k in layer})
    _check_combinations(merged, explicit, spans or {})
    optimizer = merged.get("optimizer", TrainSettings.optimizer)
    merged.setdefault("lr", _DEFAULT_LR[optimizer])
    merged.setdefault("weight_decay", _DEFAULT_WEIGHT_DECAY[optimizer])
    return TrainSettings(**merged)


def _check_train_section(values: Mapping[str, Any], spans: Mapping[str, Span]) -> None:
    """The build's check of a spec's train section: resolved as `netspec train` would."""
    resolve_settings(values, spans=spans)


register_train_check(_check_train_section)


def _expand(values: Mapping[str, Any], origin: str, spans: Mapping[str, Span]) -> dict[str, Any]:
    """Check each key and value of one layer; spread call values into their keys."""
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if origin == "flag" and raw is None:
            continue
        try:
            items = _items(key, raw, origin)
            for name, value in items:
                if name in out:
                    raise NetspecError(f"`{name}` is given twice")
                out[name] = KEYS[name].check(name, value)
        except NetspecError as err:
            raise _located(err, key, origin, spans) from None
    return out


def _items(key: str, raw: Any, origin: str) -> list[tuple[str, Any]]:
    if key not in KEYS:
        where = "the spec's train section" if origin == "spec" else "the command line"
        raise NetspecError(
            f"unknown training setting `{key}` in {where}",
            hint=did_you_mean(key, KEYS) or "see the keys listed by `netspec train --help`",
            notes=["known keys: " + ", ".join(KEYS)],
        )
    if key not in _CALL_ARGS:
        return [(key, raw)]
    call = parse_call(raw) if isinstance(raw, str) else raw
    if not isinstance(call, dict):
        return [(key, call)]
    name = KEYS[key].check(key, call["name"])
    positional = _CALL_ARGS[key][name]
    args, kwargs = call.get("args", []), call.get("kwargs", {})
    if len(args) > len(positional):
        raise NetspecError(
            f"{name}() takes at most {len(positional)} positional arguments ({', '.join(positional) or 'none'}); "
            f"received {len(args)}"
        )
    items: list[tuple[str, Any]] = [(key, name), *zip(positional, args, strict=False)]
    for arg, value in kwargs.items():
        if arg not in positional:
            raise NetspecError(
                f"{name}() takes no argument `{arg}`",
                hint=did_you_mean(arg, positional)
                or f"it takes: {', '.join(positional) or 'nothing'}",
            )
        items.append((arg, value))
    return items


def parse_call(text: str) -> Any:
    """Read a flag like ``sgd(lr=0.1, momentum=0.9, nesterov=on)`` or a bare name ``cosine``.

    Returns:
        The bare name as a string, or ``{"name", "args", "kwargs"}`` as in `Graph.train`.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise NetspecError(
            f"cannot read {text!r}", hint='write NAME or NAME(key=value, ...), e.g. "sgd(lr=0.1)"'
        ) from None
    if isinstance(tree, ast.Name):
        return tree.id
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name):
        raise NetspecError(
            f"cannot read {text!r}", hint='write NAME or NAME(key=value, ...), e.g. "sgd(lr=0.1)"'
        )
    unpacked = [k for k in tree.keywords if k.arg is None]
    if unpacked:
        raise NetspecError(
            f"cannot read `**{ast.unparse(unpacked[0].value)}` in {text!r}",
            hint='write each option as key=value, e.g. "sgd(lr=0.1)"',
        )
    return {
        "name": tree.func.id,
        "args": [_literal(a, text) for a in tree.args],
        "kwargs": {k.arg: _literal(k.value, text) for k in tree.keywords if k.arg is not None},
    }


def _literal(node: ast.expr, text: str) -> Any:
    if isinstance(node, ast.Name):
        flag = parse_bool(node.id)
        return node.id if flag is None else flag
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise NetspecError(f"cannot read the value `{ast.unparse(node)}` in {text!r}") from None
    return list(value) if isinstance(value, tuple) else value


def _check_combinations(
    merged: dict[str, Any], explicit: dict[str, str], spans: Mapping[str, Span]
) -> None:
    optimizer = merged.get("optimizer", TrainSettings.optimizer)
    schedule = merged.get("schedule", TrainSettings.schedule)
    for key, origin in explicit.items():
        owners = _ONLY_FOR.get(key)
        if owners and optimizer not in owners:
            err = NetspecError(
                f"`{key}` is an option of {' and '.join(owners)}, not of the optimizer {optimizer}",
                hint=f"drop `{key}`, or use optimizer={owners[0]}",
            )
            raise _located(err, key, origin, spans)
        if key in _SCHEDULE_KEYS and _SCHEDULE_KEYS[key] != schedule:
            err = NetspecError(
                f"`{key}` is an option of the {_SCHEDULE_KEYS[key]} schedule, not of {schedule}",
                hint=f"drop `{key}`, or use schedule={_SCHEDULE_KEYS[key]}",
            )
            raise _located(err, key, origin, spans)
    if merged.get("nesterov") and merged.get("momentum", TrainSettings.momentum) == 0:
        raise NetspecError("nesterov=on needs a momentum above 0")


def _located(err: NetspecError, key: str, origin: str, spans: Mapping[str, Span]) -> NetspecError:
    """Point an error at the key in the spec (its span, kept in the IR), or name the flag."""
    if origin == "flag":
        flag = "--" + key.replace("_", "-")
        if flag not in err.message:
            err.message = f"{flag}: {err.message}"
        return err
    if err.span is None:
        err.span = spans.get(key)
    if err.span is None:
        err.message += " (in the spec's train section)"
    return err


def describe_keys() -> str:
    """The keys with their defaults and help, one a line (for `netspec train --help`)."""
    defaults = TrainSettings()
    lines = []
    for name, key in KEYS.items():
        default = getattr(defaults, name)
        if isinstance(default, bool):
            shown = "on" if default else "off"
        elif isinstance(default, tuple):
            shown = f"[{', '.join(map(str, default))}]" if default else "none"
        else:
            shown = "none" if default is None else default
        lines.append(f"{name} (default {shown}): {key.help}")
    return "\n".join(lines)
