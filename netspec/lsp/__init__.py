"""The language server: analysis.py knows the spec (no pygls), server.py speaks LSP."""
