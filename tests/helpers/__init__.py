"""Shared test helpers. Test files import from here (`from helpers.graphs import spec_graph`),
never from another test file; pytest puts tests/ on sys.path, so `helpers` is importable from
every test module and from tools/ scripts that add tests/ to the path."""
