"""``maskmed`` subcommands, one module each.

Each module defines ``register(subparsers)`` that adds its parser and sets ``func`` to a
``run(args) -> int`` function. Modules import torch and heavy code inside ``run`` only, so
``maskmed --help`` stays instant.
"""

COMMAND_MODULES = (
    "model",
    "validate_dataset",
    "plan",
    "evaluate",
    "phantom",
    "train",
    "predict",
    "demo",
    "models",
    "install_model",
)
