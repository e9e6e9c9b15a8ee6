"""`netspec lsp`: the language server over stdio. pygls loads only here (the optional `lsp`
extra), so `netspec check` never imports it."""

from __future__ import annotations

import click

from netspec.errors import NetspecError


@click.command()
@click.option("--stdio", is_flag=True, help="speak over stdin/stdout (the default and only way)")
def lsp(stdio: bool) -> None:
    """Run the netspec language server over stdio, for editors (docs/editors.md)."""
    try:
        from netspec.lsp.server import main
    except ImportError as e:
        raise NetspecError(
            f"the language server needs pygls ({e})", hint="pip install 'netspec[lsp]'"
        ) from None
    main()
