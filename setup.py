"""Package layout that pyproject.toml cannot say: top-level folders mapped into the package.

`grammars/` stays at the top level of the repository (the layout we keep) and ships inside
the wheel as `netspec/_grammars`, so an installed netspec parses specs without the checkout.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["netspec", "netspec.*"]), "netspec._grammars"],
    package_dir={"netspec._grammars": "grammars"},
    package_data={"netspec": ["py.typed"], "netspec._grammars": ["*.lark", "*.json"]},
)
