"""Explorations as JSON, and shards joined back into one exploration (never imports torch).

    netspec explore fam.ns --shard 1/2 --json a.json     # on one machine
    netspec explore fam.ns --shard 2/2 --json b.json     # on another
    netspec explore merge a.json b.json                  # one Pareto front, as if unsharded

A result file holds the spec's text (so merging needs no file but the results), the selection
(grid, sample, seed), the shard and every explored member's verdict and figures. `merge`
refuses results of different specs or selections, a shard given twice, and a missing shard:
a front over part of the space would look complete and be wrong.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from netspec.errors import NetspecError, Span
from netspec.explore import (
    Exploration,
    Member,
    Space,
    _budget_checks,
    _group_failures,
    _set_front,
    _show_limit,
    locate,
)
from netspec.ir.build import load_spec_text

FORMAT = "netspec-explore/1"
KEYS = ("spec_path", "spec_sha256", "spec_text", "grid", "sample", "seed", "shard", "members")


def to_json(exp: Exploration, sample: int | None = None, seed: int = 0) -> str:
    """The exploration as JSON text: spec, selection, shard and every member."""
    grid = {
        d.name: list(c)
        for d, c in zip(exp.space.domains, exp.space.choices, strict=True)
        if not isinstance(c, range)
    }
    doc = {
        "format": FORMAT,
        "spec_path": exp.spec.path,
        "spec_sha256": _sha(exp.spec.text),
        "spec_text": exp.spec.text,
        "grid": grid,
        "sample": sample,
        "seed": seed,
        "shard": list(exp.shard or (1, 1)),
        "seconds": exp.seconds,
        "members": [_member_json(m) for m in exp.members],
    }
    return json.dumps(doc, indent=1) + "\n"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _member_json(m: Member) -> dict[str, Any]:
    e = m.error
    return {
        "number": m.number,
        "bindings": m.bindings,
        "valid": m.valid,
        "error": None
        if e is None
        else {
            "message": e.message,
            "hint": e.hint,
            "span": e.span.model_dump() if e.span else None,
        },
        "over": list(m.over),
        "params": m.params,
        "macs": m.macs,
        "memory": m.memory,
        "verified": m.verified,
        "score": None if m.score is None or math.isnan(m.score) else m.score,
        "score_nan": m.score is not None and math.isnan(m.score),
        "measured": m.measured,
    }


def _member_of(d: dict[str, Any]) -> Member:
    m = Member(int(d["number"]), dict(d["bindings"]))
    m.valid = bool(d["valid"])
    if d["error"] is not None:
        span = d["error"]["span"]
        m.error = NetspecError(
            d["error"]["message"],
            Span(**span) if span else None,
            hint=d["error"]["hint"],
        )
    m.over = tuple(d["over"])
    m.params, m.macs, m.memory = int(d["params"]), int(d["macs"]), int(d["memory"])
    m.verified = bool(d["verified"])
    m.score = math.nan if d.get("score_nan") else d.get("score")
    m.measured = d.get("measured")
    return m


def read_result(path: str | Path) -> dict[str, Any]:
    """One result file, checked to be one."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise NetspecError(f"no such result file: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NetspecError(
            f"{path} is not an explore result: {exc}",
            hint="write one with `netspec explore SPEC --shard K/N --json FILE`",
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise NetspecError(
            f"{path} is not an explore result (no `format: {FORMAT}`)",
            hint="write one with `netspec explore SPEC --shard K/N --json FILE`",
        )
    missing = [k for k in KEYS if k not in doc]
    if missing:
        raise NetspecError(
            f"{path} is an incomplete explore result: no {', '.join(missing)}",
            hint="write it again with `netspec explore SPEC --shard K/N --json FILE`",
        )
    return doc


def merge(paths: Sequence[str | Path]) -> Exploration:
    """Join the shards in `paths` into one exploration with one Pareto front."""
    if not paths:
        raise NetspecError("merge needs result files", hint="netspec explore merge a.json b.json")
    docs = [read_result(p) for p in paths]
    first = docs[0]
    same = ("spec_sha256", "grid", "sample", "seed")
    for path, doc in zip(paths[1:], docs[1:], strict=True):
        for key in same:
            if doc[key] != first[key]:
                raise NetspecError(
                    f"{path} and {paths[0]} explore different things (their {key} differ)",
                    hint="merge the shards of one `netspec explore` command, run with the same spec and options",
                )
    _check_shards(paths, docs)
    spec = load_spec_text(first["spec_text"], first["spec_path"])
    grid = {k: tuple(v) for k, v in first["grid"].items()}
    space = Space.of(spec, grid)
    members = sorted(
        (_member_of(d) for doc in docs for d in doc["members"]), key=lambda m: m.number
    )
    if not any(m.valid for m in members):
        raise NetspecError(f"none of the {len(members):,} members in the shards is valid")
    exp = Exploration(
        spec=spec,
        space=space,
        members=members,
        failures=_group_failures(members),
        front=[],
        front_fits=True,
        budgets={
            b.metric: f"{b.op} {_show_limit(b.metric, b.limit)}"
            for b in _budget_checks(spec, members)
        },
        seconds=sum(float(doc.get("seconds", 0.0)) for doc in docs),
        sampled=first["sample"] is not None and first["sample"] < space.size,
    )
    _set_front(exp)
    for group in exp.failures:
        group.detail = locate(spec, group)
    return exp


def _check_shards(paths: Sequence[str | Path], docs: list[dict[str, Any]]) -> None:
    counts = {doc["shard"][1] for doc in docs}
    if len(counts) > 1:
        raise NetspecError(
            f"the results split the space differently: into {' and '.join(map(str, sorted(counts)))} shards",
            hint="merge the shards of one split (all --shard K/N with the same N)",
        )
    n = counts.pop()
    seen: dict[int, str | Path] = {}
    for path, doc in zip(paths, docs, strict=True):
        k = doc["shard"][0]
        if k in seen:
            raise NetspecError(f"shard {k}/{n} is given twice: {seen[k]} and {path}")
        seen[k] = path
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        raise NetspecError(
            f"shard(s) {', '.join(f'{k}/{n}' for k in missing)} missing: the front would cover part of the space",
            hint="run `netspec explore SPEC --shard K/N --json FILE` for each missing K and merge every file",
        )
