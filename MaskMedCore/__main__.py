"""``python -m MaskMedCore`` (also used as ``torchrun -m MaskMedCore``) runs the ``maskmed`` CLI."""

import sys

from MaskMedCore.cli import main

# The guard matters: worker processes started with "spawn" import this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())
