"""Who may talk to the playground, and how much they may send.

The server writes the served spec and starts work, so it answers only the page it served:

- every request: a Host header naming this machine (DNS rebinding sends another name);
- every request but GET and HEAD: same-origin as browsers say it (no `Sec-Fetch-Site` of
  `cross-site` or `same-site`; an `Origin`, when sent, equal to the served origin), a JSON
  body (`Content-Type: application/json`, which a cross-site page cannot send without a
  preflight this server never grants), and the launch's secret token in `X-Netspec-Token`,
  which only a page read from this server can know.

A refused request gets a JSON error (400 for the Host, 403 for the rest) before its body is
read. `read_json` reads a body with a size cap, a time limit and a nesting limit.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from netspec.serve.settings import Settings

TOKEN_HEADER = "x-netspec-token"
SAFE_METHODS = ("GET", "HEAD")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_JSON_DEPTH = 16  # the page sends flat objects; deeper is never the page


class BadRequest(Exception):
    """A request the page would never send: answered with `status` and the reason."""

    def __init__(self, message: str, status: int = 400, close: bool = False) -> None:
        super().__init__(message)
        self.message, self.status, self.close = message, status, close


class Gone(Exception):
    """The client went away while sending its body: nobody is left to answer."""


def error(message: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "errors": [{"message": message, "span": None}]}, status, headers=headers
    )


def hostname(header: str) -> str | None:
    """The name in a Host header, without the port: `[::1]:8000` -> `::1`, `a.b:80` -> `a.b`;
    None when it is not a well-formed name or address."""
    if header.startswith("["):
        end = header.find("]")
        rest = header[end + 1 :]
        if end < 0 or (rest and not re.fullmatch(r":\d{1,5}", rest)):
            return None
        name = header[1:end]
        try:
            return str(ipaddress.IPv6Address(name))
        except ValueError:
            return None
    name, _, port = header.partition(":")
    if (port and not port.isdigit()) or not re.fullmatch(r"[A-Za-z0-9.\-_]+", name):
        return None
    return name.lower().rstrip(".")


def _normal(host: str) -> str:
    """A host as `hostname` returns it: addresses in their short form, names in lower case."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower().rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: the Host check on every request, and the same-origin and token checks
    on every request that may change a file or start work (see the module's docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings, token: str) -> None:
        self.app, self.settings, self.token = app, settings, token
        self.hosts = {_normal(h) for h in (*LOOPBACK_NAMES, *settings.hosts)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope["method"], headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def host_allowed(self, name: str | None) -> bool:
        if name is None:
            return False
        # an address cannot be rebound: a page elsewhere reaches this one only through a name
        return name in self.hosts or (self.settings.allow_remote and _is_address(name))

    def refusal(self, method: str, headers: dict[str, str]) -> JSONResponse | None:
        """The answer refusing this request, or None to let it through."""
        host = headers.get("host", "")
        if not self.host_allowed(hostname(host)):
            return error(f"invalid Host header {host[:100]!r}: this server answers its own names")
        if method in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site in ("cross-site", "same-site"):
            return error(f"refused a {site} request: only the playground page may do this", 403)
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return error(f"refused a request from origin {origin[:100]!r}", 403)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return error("refused: the body must be sent as Content-Type: application/json", 403)
        if not hmac.compare_digest(headers.get(TOKEN_HEADER, "").encode(), self.token.encode()):
            return error(
                "refused: missing or wrong X-Netspec-Token (reload the page: the server restarted)",
                403,
            )
        return None


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value's arrays and objects nest, walked without recursion."""
    deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            todo.extend((child, depth + 1) for child in children)
    return deepest


async def read_json(request: Request, settings: Settings) -> dict[str, Any]:
    """The request's JSON object: at most `settings.max_body` bytes, arriving within
    `settings.body_seconds`, nested at most MAX_JSON_DEPTH deep.

    Raises:
        BadRequest: the body is too large (413), too slow (408, and the connection closes),
            not a JSON object, or nested too deep (400).
        Gone: the client disconnected mid-body.
    """
    limit = settings.max_body
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(f"request body over the limit of {limit // 1024} KiB", 413)
    body = bytearray()
    try:
        with anyio.fail_after(settings.body_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BadRequest(f"request body over the limit of {limit // 1024} KiB", 413)
    except TimeoutError:
        raise BadRequest(
            f"request body not received within {settings.body_seconds:g} s", 408, close=True
        ) from None
    except ClientDisconnect:
        raise Gone from None
    try:
        data = json.loads(body or b"{}")
    except RecursionError:  # json's C parser stops at the interpreter's recursion limit
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"not JSON: {e}") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(data, dict):
        raise BadRequest("expected a JSON object")
    return data
