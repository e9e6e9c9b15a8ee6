"""`netspec fmt`: rewrite spec files in the one canonical layout (netspec/frontend/format.py)."""

from __future__ import annotations

import difflib

import click

from netspec.cli import set_exit_code
from netspec.errors import NetspecError
from netspec.frontend.format import format_text
from netspec.frontend.parser import read_spec_file
from netspec.io import atomic_write


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="change nothing; exit 1 if a file would change")
@click.option("--diff", is_flag=True, help="change nothing; print what would change (unified)")
def fmt(files: tuple[str, ...], check: bool, diff: bool) -> None:
    """Format spec FILES in place (or check them, for CI); a file that does not parse is left
    untouched and reported with its located error (exit 2)."""
    changed: list[str] = []
    errors: list[NetspecError] = []
    for path in files:
        try:
            text = read_spec_file(path)
            new = format_text(text, path)
        except NetspecError as e:
            errors.append(e)
            continue
        if new == text:
            continue
        changed.append(path)
        if diff:
            lines = difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True), path, path
            )
            click.echo("".join(lines), nl=False)
        if not (check or diff):
            atomic_write(path, new)
    for err in errors:
        click.echo(err.render(), err=True)
    verb = "would reformat" if check or diff else "reformatted"
    for path in changed:
        click.echo(f"{verb} {path}", err=True)
    if errors:
        set_exit_code(2)
    elif changed and (check or diff):
        set_exit_code(1)
