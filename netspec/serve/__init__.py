"""The playground: a local web page to write a spec and see, as you type, its summary,
budgets, diagram and errors. `netspec serve` runs it; `create_app` is the ASGI app.

Specs are compiled (parsed and built into the IR), never executed: the page gets the same
limits and errors as `netspec check`.
"""

from __future__ import annotations

from netspec.serve.app import create_app

__all__ = ["create_app"]
