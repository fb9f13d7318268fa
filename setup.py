"""
tsgate: an L4 ingress gateway on Twisted that reads Istio's own YAML.

The metadata (name, version, dependencies, extras, license, classifiers,
the ``tsgate`` script) is in pyproject.toml (PEP 621), which setuptools
reads; this file adds only what PEP 621 has no field for.
"""

from setuptools import find_packages, setup

setup(
    # twisted.plugins is listed explicitly: it has no __init__.py of ours
    # (it is Twisted's namespace), so find_packages would not see it.
    packages=find_packages(include=["tsgate", "tsgate.*"]) + ["twisted.plugins"],
    package_data={"tsgate": ["py.typed", "admin/static/*"]},
)
