"""`netspec serve`: the playground page on this machine (edit a spec, see it live)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import click

from netspec.errors import NetspecError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option(
    "--port", default=8000, show_default=True, type=int, help="the port (0: any free one)"
)
@click.option("--open", "open_browser", is_flag=True, help="open the page in a web browser")
def serve(spec: str | None, host: str, port: int, open_browser: bool) -> None:
    """Serve the playground: an editor for SPEC (a file, or zoo:NAME) with, as you type, the summary
    table, budget verdicts, diagram and errors. Specs are compiled, never executed.

    \b
    Binds to 127.0.0.1 (this machine only) unless --host says otherwise."""
    try:
        import uvicorn
    except ImportError:
        raise NetspecError(
            "netspec serve needs uvicorn and starlette", hint="pip install uvicorn starlette"
        ) from None
    from starlette.types import ASGIApp

    from netspec.serve.app import create_app, local_only

    spec_arg = spec
    if spec is not None:
        path = _resolve(spec)
        if not path.is_file():
            raise NetspecError(f"no such spec file: {spec}")
        spec = str(path)
    # a zoo spec (`zoo:resnet50`) opens read-only: Save never writes into the package
    app: ASGIApp = create_app(spec, writable=not (spec_arg or "").startswith("zoo:"))
    if host in ("127.0.0.1", "localhost"):
        # Starlette's host check cannot read an IPv6 Host header, so ::1 goes without it
        app = local_only(app)
    elif host not in LOOPBACK:
        click.echo(f"warning: listening on {host}: other machines can reach this page", err=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise NetspecError(
            f"cannot listen on {host}:{port}: {e.strerror}", hint="try another --port"
        ) from None
    bound = sock.getsockname()[1]  # the real port, when --port 0
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    click.echo(f"netspec playground at {url}  (Ctrl+C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a server stops
        server.run(sockets=[sock])
    click.echo("netspec playground stopped")


def _resolve(spec: str) -> Path:
    """A file, or `zoo:NAME` for a bundled spec (an unknown name: the zoo's error)."""
    from netspec.zoo import PREFIX, path_of

    return path_of(spec[len(PREFIX) :]) if spec.startswith(PREFIX) else Path(spec)
