"""``maskmed model``: describe a network (config, parameter counts, optional timed training step)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from MaskMedCore.commands._common import parse_overrides
from MaskMedCore.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser("model", help="describe a network: config, parameter counts, optional step timing")
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    p.add_argument("--in-channels", type=int, default=1, help="input channels C (default 1)")
    p.add_argument("--num-classes", type=int, default=2, help="classes K including background (default 2)")
    p.add_argument("--config", help="a model config JSON file instead of a preset")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--patch", type=int, nargs=3, metavar=("D", "H", "W"), help="time forward+backward at this patch")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json-out", help="also write the resolved model config JSON here")
    p.set_defaults(func=run)


def _model_config(args: argparse.Namespace):
    from MaskMedCore.config import ModelConfig

    overrides = parse_overrides(args.set)
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"model config file {path} does not exist")
        cfg = ModelConfig.from_json(path.read_text(), source=str(path))
        return cfg.replace(**overrides) if overrides else cfg
    return ModelConfig.preset(args.preset, args.in_channels, args.num_classes, **overrides)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.models.summary import describe_model

    cfg = _model_config(args)
    if args.json_out:
        from MaskMedCore.io_utils import atomic_write_text

        atomic_write_text(args.json_out, cfg.to_json() + "\n")
    report = describe_model(cfg, patch=tuple(args.patch) if args.patch else None, batch=args.batch, device=args.device)
    print(json.dumps(report, indent=2))
    return 0
