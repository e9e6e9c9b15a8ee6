"""`netspec serve`: the playground page on this machine (edit a spec, see it live)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import click

from netspec.errors import NetspecError
from netspec.serve.settings import Settings, is_loopback

KEEP_ALIVE_S = 5  # an idle connection is closed after this


@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="the address to listen on")
@click.option(
    "--port", default=8000, show_default=True, type=int, help="the port (0: any free one)"
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="let --host be an address other machines can reach (anyone who can reach the page "
    "and read it can write SPEC)",
)
@click.option(
    "--job-seconds",
    default=Settings().job_seconds,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="the longest an Explore may run before it stops",
)
@click.option(
    "--explore-max-members",
    default=Settings().explore_max_members,
    show_default=True,
    type=click.IntRange(min=1),
    help="Explore a random sample of this many members of a larger family",
)
@click.option(
    "--max-export-mb",
    default=Settings().max_export_mb,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="the largest model Export builds, in MiB of fp32 weights (refused before building)",
)
@click.option("--open", "open_browser", is_flag=True, help="open the page in a web browser")
def serve(
    spec: str | None,
    host: str,
    port: int,
    allow_remote: bool,
    job_seconds: float,
    explore_max_members: int,
    max_export_mb: float,
    open_browser: bool,
) -> None:
    """Serve the playground: an editor for SPEC (a file, or zoo:NAME) with, as you type, the summary
    table, budget verdicts, diagram and errors. Specs are compiled, never executed.

    \b
    Binds to 127.0.0.1 (this machine only); another --host needs --allow-remote. The server
    answers only its own page: a request that writes or starts work must come from the page
    (same origin, JSON, and the launch's token), and names this machine as its Host."""
    try:
        import uvicorn
    except ImportError:
        raise NetspecError(
            "netspec serve needs uvicorn and starlette", hint="pip install uvicorn starlette"
        ) from None
    from netspec.serve.app import create_app

    remote = not _loopback(host)
    if remote and not allow_remote:
        raise NetspecError(
            f"--host {host} would let other machines reach the playground, which reads and "
            "writes SPEC",
            hint="keep the default --host 127.0.0.1, or add --allow-remote if you mean it",
        )
    spec_arg = spec
    if spec is not None:
        path = _resolve(spec)
        if not path.is_file():
            raise NetspecError(f"no such spec file: {spec}")
        spec = str(path)
    hosts = (host, socket.gethostname()) if remote else (host,)
    settings = Settings(
        hosts=hosts,
        allow_remote=remote,
        job_seconds=job_seconds,
        explore_max_members=explore_max_members,
        max_export_mb=max_export_mb,
    )
    # a zoo spec (`zoo:resnet50`) opens read-only: Save never writes into the package
    app = create_app(spec, writable=not (spec_arg or "").startswith("zoo:"), settings=settings)
    if remote:
        click.echo(
            f"warning: listening on {host}: other machines can reach this page and, through "
            "it, read and write the served spec",
            err=True,
        )
    sock = _listen(host, port)
    bound = sock.getsockname()[1]  # the real port, when --port 0
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    click.echo(f"netspec playground at {url}  (Ctrl+C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(app, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C is how a server stops
        server.run(sockets=[sock])
    click.echo("netspec playground stopped")


def _loopback(host: str) -> bool:
    """Whether every address `host` names is this machine only."""
    if is_loopback(host):
        return True
    try:
        found = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(found) and all(is_loopback(str(info[4][0])) for info in found)


def _listen(host: str, port: int) -> socket.socket:
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
    return sock


def _resolve(spec: str) -> Path:
    """A file, or `zoo:NAME` for a bundled spec (an unknown name: the zoo's error)."""
    from netspec.zoo import PREFIX, path_of

    return path_of(spec[len(PREFIX) :]) if spec.startswith(PREFIX) else Path(spec)
