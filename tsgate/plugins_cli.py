"""
``tsgate plugins``: list the protocol plugins found and where each came from.

Kept apart from ``tsgate.cli`` so the command can be registered by one call,
:func:`register`, without the CLI module knowing about plugin discovery.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO


def register(subparsers: Any) -> argparse.ArgumentParser:
    """
    Add the ``plugins`` subcommand to an ``argparse`` subparsers object.
    Its handler is set as ``func`` (``args.func(args) -> int``).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plugins",
        help="list protocol plugins (hint parsers, STARTTLS negotiators, observers)",
        description=(
            "List the protocol plugins found in the tsgate.plugins package namespace, "
            "including those of installed third-party distributions, and the file each "
            "came from. Exits 1 if two plugins of one kind share a name."
        ),
    )
    parser.set_defaults(func=run)
    return parser


def run(args: Any = None, out: TextIO | None = None) -> int:
    """Print the plugin listing; 1 and the error on stderr for duplicate names."""
    from tsgate.plugins import PluginError, describe, load_plugins

    out = out or sys.stdout
    try:
        plugin_set = load_plugins()
    except PluginError as e:
        print(f"tsgate plugins: {e}", file=sys.stderr)
        return 1
    out.write(describe(plugin_set))
    return 0
