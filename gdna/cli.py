"""`gdna` command line: data | train | sweep | resume | status | ui | analyze.

Each area registers its own sub-commands (`register(subparsers)` in gdna/<area>/cli.py).
User errors (GdnaError) become one line on stderr and exit code 2, before any Ray work starts.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from gdna.errors import GdnaError

AREAS = ("gdna.data.cli", "gdna.train.cli", "gdna.sweep.cli", "gdna.analysis.cli", "gdna.cluster.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gdna", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in AREAS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GdnaError as e:
        print(f"gdna: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gdna: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
