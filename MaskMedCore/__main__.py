"""``python -m MaskMedCore`` (also used as ``torchrun -m MaskMedCore``) runs the ``maskmed`` CLI."""

import sys

from MaskMedCore.cli import main

sys.exit(main())
