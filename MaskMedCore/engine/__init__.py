"""Training engine: the trainer, LR schedule, checkpoints, distributed helpers, splits and progress.

A regular package (not a namespace package) so ``pip install .`` ships it like every other
sub-package; import the modules directly (``MaskMedCore.engine.trainer``).
"""
