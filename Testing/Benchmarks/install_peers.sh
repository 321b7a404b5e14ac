#!/usr/bin/env bash
# Install the benchmark peers next to MaskMedCore without replacing the installed torch:
# nnU-Net v2 (nnunetv2 + dynamic-network-architectures, --no-deps so timm/torchvision do not pull a
# CUDA torch over a CPU one) and MONAI. Run from the repository root after `pip install torch==...`.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install --quiet -e ".[test,bench]"
python3 -m pip install --quiet --no-deps nnunetv2==2.8.1 dynamic-network-architectures==0.4.4
python3 -c "import nnunetv2, dynamic_network_architectures, monai, torch; print('peers ready; torch', torch.__version__)"
