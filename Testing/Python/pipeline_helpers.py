"""Constants and helpers shared by the pipeline tests (importable because conftest's folder is on sys.path)."""

PHANTOM_SHAPE = (24, 48, 48)
PHANTOM_PATCH = (16, 32, 32)


def quick_training_config(**changes):
    """A training recipe that finishes in seconds on 2 CPU cores."""
    from MaskMedCore.config import TrainingConfig

    base = dict(
        preset="tiny",
        epochs=2,
        iterations_per_epoch=3,
        val_iterations=1,
        val_every=1,
        device="cpu",
        num_workers=0,
        initial_lr=1e-2,
        recipe="paper",  # SGD, Transformer ratio 0.1: what these plumbing tests were written against
    )
    base.update(changes)
    return TrainingConfig(**base)
