"""``maskmed models``: list the bundled models with their cards; install a trained checkpoint as one."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models", help="list the bundled models (names for 'maskmed predict -m'): path, classes, licence, input"
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument(
        "--install",
        nargs=2,
        metavar=("NAME", "CHECKPOINT"),
        help="copy a trained checkpoint (file or run folder) to bundled model NAME's place, weights only",
    )
    p.add_argument(
        "--write-cards", action="store_true", help="render MODEL_CARD.md from each model_card.json (after editing it)"
    )
    p.set_defaults(func=run)


def _as_dict(model) -> dict:
    card = model.card
    return {
        "name": model.name,
        "title": card.title,
        "status": card.status,
        "checkpoint": str(model.checkpoint) if model.checkpoint else None,
        "searched": [str(p) for p in model.searched] if not model.available else [],
        "classes": list(card.classes),
        "input": card.input.describe(),
        "licence": card.licence,
        "licence_url": card.licence_url,
        "attribution": card.attribution,
        "test_dice": card.test_dice,
        "sample_case": {"case": card.sample.case, "image": str(card.sample.image), "label": str(card.sample.label)}
        if card.sample
        else None,
        "card": str(card.source) if card.source else None,
    }


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.bundled_models import bundled_models, install_checkpoint, write_model_cards

    if args.install:
        name, source = args.install
        written = install_checkpoint(name, source)
        print(f"installed {source} as the bundled {name} model: {written}")
        print("now update its model_card.json (status, recipe, test numbers) and run 'maskmed models --write-cards'")
        return 0
    if args.write_cards:
        for path in write_model_cards():
            print(f"wrote {path}")
        return 0
    models = [_as_dict(m) for m in bundled_models(include_missing=True)]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for m in models:
        status = " [placeholder]" if m["status"] == "placeholder" else ""
        print(f"{m['name']}{status}: {m['title']}")
        if m["checkpoint"]:
            print(f"  path:      {m['checkpoint']}")
        else:
            print(f"  path:      not installed (looked at {', '.join(m['searched'])})")
        print(f"  classes:   {', '.join(m['classes'])}")
        print(f"  input:     {m['input']}")
        print(f"  licence:   {m['licence']} ({m['licence_url']}); {m['attribution']}")
        measured = {k: v for k, v in m["test_dice"].items() if v is not None}
        print("  test Dice: " + (", ".join(f"{k} {v:.3f}" for k, v in measured.items()) or "not measured yet"))
        if m["sample_case"]:
            print(f"  sample:    {m['sample_case']['case']}: {m['sample_case']['image']}")
        if m["card"]:
            print(f"  card:      {m['card']}")
    print("use a name with 'maskmed predict -m NAME -i ... -o ...'")
    return 0
