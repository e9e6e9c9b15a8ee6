"""Package layout that pyproject.toml cannot say: top-level folders mapped into the package.

`grammars/` and `specs/` stay at the top level of the repository (the layout we keep) and ship
inside the wheel as `netspec/_grammars` and `netspec/_zoo`, so an installed netspec parses specs
and knows its zoo (`netspec check zoo:resnet50`) without the checkout.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        # namespace packages too: netspec/serve/static holds the playground's files, no code
        *find_namespace_packages(include=["netspec", "netspec.*"], exclude=["*.__pycache__"]),
        "netspec._grammars",
        "netspec._zoo",
    ],
    package_dir={"netspec._grammars": "grammars", "netspec._zoo": "specs"},
    package_data={
        "netspec": ["py.typed"],
        "netspec.serve.static": ["*"],
        "netspec._grammars": ["*.lark", "*.json"],
        "netspec._zoo": ["*.ns"],
    },
)
