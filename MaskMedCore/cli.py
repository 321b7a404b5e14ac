"""``maskmed`` command line: thin subcommands that validate input, call one library function and
exit non-zero with one clear line on error. torch is imported lazily so ``maskmed --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from MaskMedCore._version import __version__
from MaskMedCore.commands import COMMAND_MODULES
from MaskMedCore.errors import MaskMedError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskmed", description="MaskMed: decoupled mask and class prediction for 3D medical segmentation."
    )
    parser.add_argument("--version", action="version", version=f"maskmed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"MaskMedCore.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MaskMedError as exc:
        print(f"maskmed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskmed {args.command}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
