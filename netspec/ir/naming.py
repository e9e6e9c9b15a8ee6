"""Naming: scopes and their counters (`conv1`, `layer2.basic1`), the names PyTorch reserves,
and a `Value` (a named node output and its shape) flowing through the builder."""

from __future__ import annotations

from dataclasses import dataclass, field

from netspec.frontend import ast

# Attributes of torch.nn.Module: a layer named so could not be a submodule.
RESERVED_NAMES = frozenset(  # noqa: SIM905 (one word list, easier to read and diff)
    [
        "T_destination",
        "add_module",
        "apply",
        "bfloat16",
        "buffers",
        "call_super_init",
        "children",
        "compile",
        "cpu",
        "cuda",
        "double",
        "dump_patches",
        "eval",
        "extra_repr",
        "float",
        "forward",
        "get_buffer",
        "get_extra_state",
        "get_parameter",
        "get_submodule",
        "half",
        "ipu",
        "load_state_dict",
        "modules",
        "mtia",
        "named_buffers",
        "named_children",
        "named_modules",
        "named_parameters",
        "parameters",
        "register_backward_hook",
        "register_buffer",
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_load_state_dict_post_hook",
        "register_load_state_dict_pre_hook",
        "register_module",
        "register_parameter",
        "register_state_dict_post_hook",
        "register_state_dict_pre_hook",
        "requires_grad_",
        "set_extra_state",
        "set_submodule",
        "share_memory",
        "state_dict",
        "to",
        "to_empty",
        "train",
        "training",
        "type",
        "xpu",
        "zero_grad",
        "graph",
        "logits",
        "plan",
    ]
)


@dataclass(slots=True)
class Value:
    node: str
    shape: tuple[int, ...]


@dataclass(slots=True)
class Scope:
    prefix: str
    counters: dict[str, int] = field(default_factory=dict)
    checked: bool = False  # its prefixes were checked against layer names

    def next_name(self, base: str) -> str:
        n = self.counters.get(base, 0) + 1
        self.counters[base] = n
        return f"{base}{n}"

    def child(self, name: str) -> Scope:
        return Scope(f"{self.prefix}{name}.")


def switch_name(el: ast.Element) -> str | None:
    """The free parameter an `X?` without a condition reads: its label, or X's name in lower
    case (None for an unlabelled group)."""
    if el.label:
        return el.label
    if isinstance(el.primary, ast.Call):
        return el.primary.name.lower()
    return None
