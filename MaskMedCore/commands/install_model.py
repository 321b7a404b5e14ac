"""``maskmed install-nnunet``: verify a zip of nnU-Net v2 result folders and install it.

The zip is what nnU-Net's ``nnUNetv2_export_model_to_zip`` writes. Every check runs before anything
is written (:mod:`MaskMedCore.nnunet.model_zip`); each installed folder is a model for ``maskmed predict -m``.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "install-nnunet",
        help="verify and install a zip of nnU-Net v2 result folders (nnUNetv2_export_model_to_zip output)",
    )
    p.add_argument("zip", metavar="ZIP", help="the model zip")
    p.add_argument(
        "--to",
        required=True,
        metavar="DIR",
        help="install folder (an nnUNet_results-style folder; created if missing); existing models are never replaced",
    )
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the zip (64 hex digits); refused if it differs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from MaskMedCore.nnunet.model_zip import install_nnunet_zip
    from MaskMedCore.nnunet.result_folder import read_result_folder

    for folder in install_nnunet_zip(args.zip, args.to, sha256=args.sha256):
        print(f"installed {folder}")
        print(f"  {read_result_folder(folder).describe()}")
        print(f"  run it with: maskmed predict -m {folder} -i IMAGES -o OUT")
    return 0
