"""Packaging glue that pyproject.toml cannot say: every top-level folder
(dtn, crypto, consensus, dfs, tools) is installed under one namespace, dcis
(``package-dir``), and its subpackages are found when the wheel is built.
The folder layout stays as it is; ``dcis`` itself is an implicit namespace
package, so the wheel adds exactly one top-level name to site-packages."""

from setuptools import find_packages, setup

TOPS = ("dtn", "crypto", "consensus", "dfs", "tools")

setup(
    package_dir={f"dcis.{top}": top for top in TOPS},
    packages=[
        f"dcis.{name}"
        for name in find_packages(
            include=[f"{top}" for top in TOPS] + [f"{top}.*" for top in TOPS]
        )
    ]
    # The demo's shipped contact plans (dcis.tools.demo reads them beside its
    # module), so `python -m dcis.tools.demo` works from the wheel too: a
    # data-only package, named so setuptools does not warn about it.
    + ["dcis.tools.plans"],
    package_data={"dcis.tools.plans": ["*.ionrc"]},
)
