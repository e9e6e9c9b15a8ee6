"""Families for comparing `netspec explore`'s fast path with plain light builds: the zoo's
families and fuzzed specs with free parameters (tests/helpers/fuzz_specs.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from helpers.fuzz_specs import ZOO, generated_spec, mutated_spec
from netspec.errors import NetspecError, SpecErrors
from netspec.ir.build import Spec, load_spec_text

MAX_MEMBERS = 200  # a fuzzed family larger than this is skipped


def zoo_families() -> dict[str, str]:
    """The zoo's specs with free parameters, by name."""
    out = {}
    for name, text in ZOO.items():
        try:
            spec = load_spec_text(text, f"{name}.ns")
        except (NetspecError, SpecErrors):
            continue
        if spec.free:
            out[name] = text
    return out


def fuzz_families(count: int, seed: int = 0) -> Iterator[tuple[int, str]]:
    """`count` fuzzed specs (generated or mutated from the zoo) that parse and have free
    parameters, up to MAX_MEMBERS members each: (seed, text)."""
    found = 0
    s = seed
    while found < count:
        r = random.Random(s)
        text = generated_spec(r) if s % 4 else mutated_spec(r)
        s += 1
        try:
            spec = load_spec_text(text, "<fuzz>")
        except (NetspecError, SpecErrors):
            continue
        if spec.free and _size(spec) <= MAX_MEMBERS:
            found += 1
            yield s - 1, text


def _size(spec: Spec) -> int:
    n = 1
    for d in spec.free.values():
        n *= len(d.values)
    return n
