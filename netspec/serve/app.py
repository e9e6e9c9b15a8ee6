"""The playground's ASGI app (Starlette): the page, its assets, and a small JSON API.

    GET  /                 the page, carrying this launch's token (every asset is served from
                           the package; nothing external)
    GET  /api/start        the spec to open with (`netspec serve SPEC`, or the zoo's first)
    GET  /api/zoo          the zoo menu;  GET /api/zoo/NAME: one zoo spec's text
    POST /api/compile      {text, bindings, depth, collapse, color, diagram, summary}
                           -> the summary, errors, and diagram (SVG)
    POST /api/export       {text, bindings} -> the ONNX model (checked as `netspec export` does)
    POST /api/explore      {text} -> the design space's Pareto front and its plot (PNG)
    POST /api/save         {text, base} -> writes SPEC (`netspec serve SPEC` only), atomically

Every request passes `guard.Guard` (Host; for a POST also same origin, JSON and the token),
and bodies are read by `guard.read_json` (size, time, depth). Compiling runs in a worker
thread so the server keeps answering while it works; explore and export are `jobs` (one at a
time, off the compile lock, bounded and cancellable).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from netspec.errors import NetspecError
from netspec.io import atomic_write
from netspec.serve import compile as comp
from netspec.serve import jobs
from netspec.serve.guard import BadRequest, Gone, Guard, error, read_json
from netspec.serve.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
TOKEN_SLOT = "__NETSPEC_TOKEN__"  # in index.html: the served page carries the launch's token
Handler = Callable[[dict[str, Any]], Awaitable[Response]]


def create_app(
    spec: str | Path | None = None,
    writable: bool = True,
    settings: Settings | None = None,
    token: str | None = None,
) -> Starlette:
    """The playground app; `spec` is the file the page opens with, and the only file it
    writes (Save), unless `writable` is False (a zoo spec opens read-only). `token` is the
    secret the page sends back with every POST (a fresh random one unless given).

    `app.state.playground` is the `Playground` (its `jobs` say what runs)."""
    play = Playground(spec, writable, settings or Settings(), token or secrets.token_urlsafe(32))
    routes = [
        Route("/", play.index),
        Route("/api/start", play.start),
        Route("/api/zoo", play.zoo),
        Route("/api/zoo/{name}", play.zoo_spec),
        Route("/api/compile", play.compile, methods=["POST"]),
        Route("/api/export", play.export, methods=["POST"]),
        Route("/api/explore", play.explore, methods=["POST"]),
        Route("/api/save", play.save, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard = Middleware(Guard, settings=play.settings, token=play.token)
    app = Starlette(routes=routes, middleware=[guard], lifespan=_warm)
    app.state.playground = play
    return app


class Playground:
    """The routes' handlers and what they share: the served file, the limits, the token and
    the heavy-job slot."""

    def __init__(self, spec: str | Path | None, writable: bool, settings: Settings, token: str):
        self.path = Path(spec) if spec else None
        self.writable = writable
        self.settings = settings
        self.token = token
        self.jobs = jobs.Jobs(settings)

    async def guarded(self, request: Request, handler: Handler) -> Response:
        """Read the body as JSON and hand it to `handler`: a bad body gets its 4xx, a heavy
        job while another runs gets 429, and a client gone mid-body gets nothing, quietly."""
        try:
            data = await read_json(request, self.settings)
            return await handler(data)
        except BadRequest as e:
            headers = {"Connection": "close"} if e.close else None
            return error(f"bad request: {e.message}", e.status, headers)
        except Gone:
            return Response(status_code=400)  # nobody is left to read it
        except jobs.Busy as e:
            return error(str(e), 429, {"Retry-After": str(e.retry_after)})

    async def index(self, request: Request) -> Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8").replace(TOKEN_SLOT, self.token)
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        return HTMLResponse(page, headers=headers)

    async def start(self, request: Request) -> Response:
        if self.path is not None:
            text = self.path.read_text(encoding="utf-8")
            saves = _digest(text) if self.writable else None
            return JSONResponse({"name": self.path.name, "text": text, "saves": saves})
        names = [z["name"] for z in comp.zoo()]
        first = "mnist_cnn" if "mnist_cnn" in names else (names[0] if names else None)
        opening = (comp.zoo_text(first) if first else None) or ""
        return JSONResponse({"name": first, "text": opening, "saves": None})

    async def zoo(self, request: Request) -> Response:
        return JSONResponse(comp.zoo())

    async def zoo_spec(self, request: Request) -> Response:
        text = comp.zoo_text(request.path_params["name"])
        if text is None:
            return error("no such spec in the zoo", 404)
        return JSONResponse({"name": request.path_params["name"], "text": text})

    async def save(self, request: Request) -> Response:
        """Write the page's text to SPEC (the one file given at start), atomically, when it
        parses as a spec and the file is as the page read it (`base`: the digest it read)."""

        async def handle(data: dict[str, Any]) -> Response:
            text, _ = _text(data)
            path = self.path
            if path is None or not self.writable:
                return error("nothing to save to: start with `netspec serve SPEC`", 404)
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if data.get("base") != _digest(current):
                return error(f"{path} changed on disk since the page read it; not saved", 409)
            problems = await run_in_threadpool(comp.parse_errors, text)
            if problems:
                return JSONResponse({"ok": False, "errors": problems}, 400)
            try:
                await run_in_threadpool(atomic_write, path, text)
            except NetspecError as e:  # a folder gone or unwritable: nothing was written
                return error(e.message, 500)
            return JSONResponse({"ok": True, "saves": _digest(text), "path": str(path)})

        return await self.guarded(request, handle)

    async def compile(self, request: Request) -> Response:
        async def handle(data: dict[str, Any]) -> Response:
            text, bindings = _text(data)
            depth = data.get("depth")
            if depth is not None and (not isinstance(depth, int) or depth < 1):
                raise BadRequest("`depth` must be a positive integer")
            color = data.get("color") or None
            if color is not None and color not in ("params", "macs", "memory"):
                raise BadRequest("`color` must be params, macs or memory")
            result = await run_in_threadpool(
                comp.compile_text,
                text,
                bindings,
                depth,
                bool(data.get("collapse")),
                color,
                data.get("diagram", True) is not False,
                data.get("summary", True) is not False,
            )
            return JSONResponse(result)

        return await self.guarded(request, handle)

    async def export(self, request: Request) -> Response:
        async def handle(data: dict[str, Any]) -> Response:
            text, bindings = _text(data)
            settings = self.settings
            try:
                name, blob = await self.jobs.run(
                    request, "export", lambda job: jobs.export_onnx(text, bindings, settings, job)
                )
            except jobs.Stopped as e:
                return _failed(jobs.stopped_message("export", e, settings), text)
            except NetspecError as e:
                return _failed(e, text)
            return Response(
                blob,
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{name}.onnx"'},
            )

        return await self.guarded(request, handle)

    async def explore(self, request: Request) -> Response:
        async def handle(data: dict[str, Any]) -> Response:
            text, _ = _text(data)
            settings = self.settings
            try:
                result = await self.jobs.run(
                    request, "explore", lambda job: jobs.explore_json(text, settings, job)
                )
            except jobs.Stopped as e:
                return _failed(jobs.stopped_message("explore", e, settings), text)
            except NetspecError as e:
                return _failed(e, text)
            return JSONResponse(result)

        return await self.guarded(request, handle)


def _text(data: dict[str, Any]) -> tuple[str, str]:
    text, bindings = data.get("text", ""), data.get("bindings", "") or ""
    if not isinstance(text, str) or not isinstance(bindings, str):
        raise BadRequest("`text` and `bindings` must be strings")
    return text, bindings


def _failed(err: NetspecError, text: str) -> JSONResponse:
    return JSONResponse({"ok": False, "errors": comp.errors_json(err, text)}, 400)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.asynccontextmanager
async def _warm(app: Starlette) -> AsyncIterator[None]:
    """Compile a small spec once at start-up, so the first keystroke is not the slow one."""
    first = comp.zoo_text("mnist_cnn")
    if first:
        await run_in_threadpool(comp.compile_text, first)
    yield
