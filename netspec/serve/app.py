"""The playground's ASGI app (Starlette): the page, its assets, and a small JSON API.

    GET  /                 the page (every asset is served from the package; nothing external)
    GET  /api/start        the spec to open with (`netspec serve SPEC`, or the zoo's first)
    GET  /api/zoo          the zoo menu;  GET /api/zoo/NAME: one zoo spec's text
    POST /api/compile      {text, bindings, depth, collapse, color, diagram, summary}
                           -> the summary, errors, and diagram (SVG)
    POST /api/export       {text, bindings} -> the ONNX model (checked as `netspec export` does)
    POST /api/explore      {text} -> the design space's Pareto front and its plot (PNG)
    POST /api/save         {text, base} -> writes SPEC (`netspec serve SPEC` only), atomically

Request bodies are capped (`MAX_BODY`); compiling runs in a worker thread so the server keeps
answering while it works.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from netspec.errors import NetspecError
from netspec.io import atomic_write
from netspec.serve import compile as comp

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 256 * 1024  # bytes; the largest zoo spec is about 2 KB
EXPLORE_CAP = 50_000  # members explored in full on the page; larger spaces are sampled
EXPLORE_SAMPLE = 5_000
LOCAL_HOSTS = ["127.0.0.1", "localhost"]


class BodyTooLarge(Exception):
    pass


class BadRequest(Exception):
    """A request the page would never send: answered 400 with the reason."""


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object, refusing bodies over MAX_BODY before reading them whole."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    return data


def _text(data: dict[str, Any]) -> tuple[str, str]:
    text, bindings = data.get("text", ""), data.get("bindings", "") or ""
    if not isinstance(text, str) or not isinstance(bindings, str):
        raise BadRequest("`text` and `bindings` must be strings")
    return text, bindings


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"ok": False, "errors": [{"message": message, "span": None}]}, status)


async def guarded(request: Request, handler) -> Response:
    try:
        data = await read_json(request)
        return await handler(data)
    except BodyTooLarge:
        return _bad(f"request body over the limit of {MAX_BODY // 1024} KiB", 413)
    except BadRequest as e:
        return _bad(f"bad request: {e}")


def create_app(spec: str | Path | None = None, writable: bool = True) -> Starlette:
    """The playground app; `spec` is the file the page opens with, and the only file it
    writes (Save), unless `writable` is False (a zoo spec opens read-only)."""
    path = Path(spec) if spec else None

    async def start(request: Request) -> Response:
        if path is not None:
            text = path.read_text(encoding="utf-8")
            saves = _digest(text) if writable else None
            return JSONResponse({"name": path.name, "text": text, "saves": saves})
        names = [z["name"] for z in comp.zoo()]
        first = "mnist_cnn" if "mnist_cnn" in names else (names[0] if names else None)
        opening = (comp.zoo_text(first) if first else None) or ""
        return JSONResponse({"name": first, "text": opening, "saves": None})

    async def save(request: Request) -> Response:
        """Write the page's text to SPEC (the one file given at start), atomically, unless
        the file changed on disk since the page read it (`base`: the digest it read)."""

        async def handle(data: dict[str, Any]) -> Response:
            text, _ = _text(data)
            if path is None or not writable:
                return _bad("nothing to save to: start with `netspec serve SPEC`", 404)
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if data.get("base") != _digest(current):
                return _bad(f"{path} changed on disk since the page read it; not saved", 409)
            try:
                await run_in_threadpool(atomic_write, path, text)
            except NetspecError as e:  # a folder gone or unwritable: nothing was written
                return _bad(e.message, 500)
            return JSONResponse({"ok": True, "saves": _digest(text), "path": str(path)})

        return await guarded(request, handle)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def zoo(request: Request) -> Response:
        return JSONResponse(comp.zoo())

    async def zoo_spec(request: Request) -> Response:
        text = comp.zoo_text(request.path_params["name"])
        if text is None:
            return _bad("no such spec in the zoo", 404)
        return JSONResponse({"name": request.path_params["name"], "text": text})

    async def compile_(request: Request) -> Response:
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

        return await guarded(request, handle)

    async def export(request: Request) -> Response:
        async def handle(data: dict[str, Any]) -> Response:
            text, bindings = _text(data)
            try:
                name, blob = await run_in_threadpool(export_onnx, text, bindings)
            except NetspecError as e:
                return JSONResponse(
                    {"ok": False, "errors": [comp.error_json(x) for x in comp.flatten_errors(e)]},
                    400,
                )
            return Response(
                blob,
                media_type="application/octet-stream",
                headers={"Content-Disposition": f'attachment; filename="{name}.onnx"'},
            )

        return await guarded(request, handle)

    async def explore(request: Request) -> Response:
        async def handle(data: dict[str, Any]) -> Response:
            text, _ = _text(data)
            try:
                result = await run_in_threadpool(explore_json, text)
            except NetspecError as e:
                return JSONResponse(
                    {"ok": False, "errors": [comp.error_json(x) for x in comp.flatten_errors(e)]},
                    400,
                )
            return JSONResponse(result)

        return await guarded(request, handle)

    routes = [
        Route("/", index),
        Route("/api/start", start),
        Route("/api/zoo", zoo),
        Route("/api/zoo/{name}", zoo_spec),
        Route("/api/compile", compile_, methods=["POST"]),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/explore", explore, methods=["POST"]),
        Route("/api/save", save, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=_warm)


@contextlib.asynccontextmanager
async def _warm(app: Starlette) -> AsyncIterator[None]:
    """Compile a small spec once at start-up, so the first keystroke is not the slow one."""
    first = comp.zoo_text("mnist_cnn")
    if first:
        await run_in_threadpool(comp.compile_text, first)
    yield


def local_only(app: ASGIApp) -> TrustedHostMiddleware:
    """Refuse requests whose Host is not this machine (a page elsewhere rebinding a name)."""
    return TrustedHostMiddleware(app, allowed_hosts=LOCAL_HOSTS)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _graph(text: str, bindings: str) -> Any:
    from netspec.commands.options import parse_bindings
    from netspec.ir.build import load_spec_text

    with comp.LOCK:
        return load_spec_text(text, comp.SOURCE_NAME).instantiate(
            parse_bindings((bindings,)) if bindings.strip() else {}
        )


def export_onnx(text: str, bindings: str) -> tuple[str, bytes]:
    """The spec's ONNX model with seeded initial weights, checked as `netspec export` checks."""
    from netspec.backends import lower_onnx

    graph = _graph(text, bindings)
    with tempfile.TemporaryDirectory(prefix="netspec-serve-") as folder:
        path = Path(folder) / "model.onnx"
        try:
            lower_onnx.export(graph, path, lower_onnx.initial_weights(graph, 0), note="seed=0")
        except lower_onnx.ExportCheckFailed as err:
            raise NetspecError(
                f"the lowered model failed a check: {err}",
                hint="this is a bug in netspec; please report it with the spec",
            ) from None
        return graph.name, path.read_bytes()


def explore_json(text: str) -> dict[str, Any]:
    """Explore the spec's design space: counts, the Pareto front and its plot as a PNG."""
    from netspec import explore as ex
    from netspec.ir.build import load_spec_text

    with comp.LOCK:
        spec = load_spec_text(text, comp.SOURCE_NAME)
        space_size = ex.Space.of(spec, None).size if spec.free else 0
        sample = EXPLORE_SAMPLE if space_size > EXPLORE_CAP else None
        result = ex.explore(spec, sample=sample, seed=0)
    with tempfile.TemporaryDirectory(prefix="netspec-serve-") as folder:
        png = Path(folder) / "front.png"
        ex.plot(result, png)
        image = base64.b64encode(png.read_bytes()).decode()
    return {
        "ok": True,
        "members": len(result.members),
        "space": space_size,
        "sampled": result.sampled,
        "valid": len(result.valid),
        "fitting": len(result.fitting),
        "front": [
            {
                "number": m.number,
                "bindings": m.label(),
                "params": m.params,
                "macs": m.macs,
                "memory": m.memory,
                "fits": m.fits,
            }
            for m in result.front[:50]
        ],
        "seconds": round(result.seconds, 3),
        "plot": "data:image/png;base64," + image,
    }
