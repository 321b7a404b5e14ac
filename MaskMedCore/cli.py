"""``maskmed`` command line: thin subcommands that validate input, call one library function and
exit non-zero with one clear line on error. torch is imported lazily so ``maskmed --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from MaskMedCore._version import __version__
from MaskMedCore.errors import ConfigError, MaskMedError


def _parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with value parsed as JSON when possible (``head=pointwise``, ``bridge_layers=2``)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _model_config(args: argparse.Namespace):
    from MaskMedCore.config import ModelConfig

    overrides = dict(_parse_override(t) for t in args.set or [])
    if args.config:
        from pathlib import Path

        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"model config file {path} does not exist")
        cfg = ModelConfig.from_json(path.read_text(), source=str(path))
        return cfg.replace(**overrides) if overrides else cfg
    return ModelConfig.preset(args.preset, args.in_channels, args.num_classes, **overrides)


def cmd_model(args: argparse.Namespace) -> int:
    """Print a model's config summary and parameter counts; optionally time a CPU/GPU train step."""
    from MaskMedCore.models.summary import describe_model

    cfg = _model_config(args)
    if args.json_out:
        from MaskMedCore.io_utils import atomic_write_text

        atomic_write_text(args.json_out, cfg.to_json() + "\n")
    report = describe_model(cfg, patch=tuple(args.patch) if args.patch else None, batch=args.batch, device=args.device)
    print(json.dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskmed", description="MaskMed: decoupled mask and class prediction for 3D medical segmentation."
    )
    parser.add_argument("--version", action="version", version=f"maskmed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("model", help="describe a network: config, parameter counts, optional step timing")
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    p.add_argument("--in-channels", type=int, default=1, help="input channels C (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes K including background (default 2)")
    p.add_argument("--config", help="a model config JSON file instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"), help="time forward+backward at this patch")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json-out", help="also write the resolved model config JSON here")
    p.set_defaults(func=cmd_model)
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
