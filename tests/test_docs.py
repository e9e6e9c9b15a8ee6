"""The generated reference pages (docs/layers.md from the layer registry, docs/cli.md from the
click commands) are what tools/gen_docs.py writes now, and the README's links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.mark.parametrize("page", sorted(GEN.PAGES))
def test_generated_page_is_fresh(page: str) -> None:
    path = ROOT / "docs" / page
    assert path.exists(), f"docs/{page} is missing: run `python tools/gen_docs.py`"
    assert path.read_text(encoding="utf-8") == GEN.PAGES[page](), (
        f"docs/{page} is stale: run `python tools/gen_docs.py`"
    )


def test_every_command_and_option_is_in_the_cli_page() -> None:
    import importlib

    import click

    from netspec.cli import COMMANDS

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, (module, attr) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        assert f"## netspec {name}\n" in page
        for param in command.params:
            if isinstance(param, click.Option):
                assert f"`{param.opts[0]}`" in page, f"{name} {param.opts[0]}"


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))]
)
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc if doc == "README.md" else ROOT / "docs" / doc
    text = path.read_text(encoding="utf-8")
    broken = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        if "://" not in target and not (path.parent / target).exists()
    ]
    assert not broken, f"{doc} links to missing files: {broken}"


def test_ci_runs_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## A 30-second tour")[0]
    [command] = re.findall(r"^    .*(python -m pytest[^\n]*)$", setup, re.MULTILINE)  # a code line
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert any(line.split("#")[0].strip() == command for line in ci), (
        f".ci/run must run the README's test command verbatim: {command}"
    )
