"""tsgate: an L4 ingress gateway on Twisted that reads Istio's own YAML."""

from setuptools import find_packages, setup

setup(
    name="tsgate",
    version="0.1.0",
    description="Layer-4 ingress gateway (TCP routes, TLS SNI passthrough) configured by Istio YAML",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # twisted.plugins is listed explicitly: it has no __init__.py of ours
    # (it is Twisted's namespace), so find_packages would not see it.
    packages=find_packages(include=["tsgate", "tsgate.*"]) + ["twisted.plugins"],
    package_data={"tsgate": ["py.typed", "admin/static/*"]},
    install_requires=[
        "twisted>=23.10",
        "pyopenssl",
        "service-identity",
        "zope.interface",
        "pyyaml",
        "attrs",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-twisted",
            "hypothesis",
            "ruff",
            "mypy",
            "mypy-zope",
            "types-PyYAML",
            "cryptography",
            "prometheus_client",
        ],
        # Mutation testing (tests/mutation/run, docs/testing.md).
        "mutation": ["mutmut>=3"],
        # Only for re-recording the protocol samples in tests/data/
        # (tests/support/capture_samples.py); the tests read committed files.
        "capture": [
            "psycopg[binary]",
            "PyMySQL",
            "mysql-connector-python",
            "paho-mqtt",
        ],
    },
    entry_points={"console_scripts": ["tsgate=tsgate.cli:main"]},
)
