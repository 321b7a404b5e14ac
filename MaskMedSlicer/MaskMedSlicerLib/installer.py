"""Install what MaskMed's child processes need inside Slicer, only after asking.

PyTorch always comes through Slicer's PyTorch extension (``PyTorchUtils``, which picks the build that
matches the GPU driver, or the CPU build), never from a bare ``pip install torch``; the other packages
(:data:`~MaskMedSlicerLib.dependencies.REQUIRED_PACKAGES`, which Slicer normally ships) through Slicer's
``slicer.util.pip_install``. Nothing is downloaded unless ``confirm`` returns True (``confirm=None``:
scripts and the opt-in self-test, which run unattended). This runs only inside Slicer: ``slicer.modules``
and ``PyTorchUtils`` exist only in the application.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import slicer

from MaskMedSlicerLib.dependencies import missing_packages
from MaskMedSlicerLib.errors import MaskMedSlicerError

MIN_TORCH_VERSION = "2.2"

Confirm = Callable[[str], bool] | None


def install_dependencies(confirm: Confirm = None, log: Callable[[str], None] | None = None) -> None:
    """Install the missing packages (torch through the PyTorch extension) and check torch's version.

    Raises:
        MaskMedSlicerError: the user said no, the PyTorch extension is missing, or an install failed.
    """
    report = log or logging.info
    missing = missing_packages()
    if "torch" in missing:
        install_torch(confirm, report)
    else:
        check_torch_version()
    others = [name for name in missing if name != "torch"]
    if others:
        names = ", ".join(others)
        if confirm is not None and not confirm(f"MaskMed needs these Python packages: {names}. Install them now?"):
            raise MaskMedSlicerError(f"cancelled: MaskMed cannot run without {names}")
        report(f"installing {' '.join(others)}")
        slicer.util.pip_install(" ".join(others))
    still = missing_packages()
    if still:
        raise MaskMedSlicerError(f"could not install {', '.join(still)}; see the Python console for pip's output")


def install_torch(confirm: Confirm, report: Callable[[str], None]) -> None:
    """Install PyTorch through the PyTorch extension's ``PyTorchUtilsLogic`` after asking."""
    if not hasattr(getattr(slicer, "modules", None), "pytorchutils"):
        raise MaskMedSlicerError(
            "MaskMed needs the PyTorch extension: install 'PyTorch' from the Extensions Manager, restart Slicer"
            " and try again"
        )
    import PyTorchUtils

    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if torch_logic.torchInstalled():
        return
    message = (
        "MaskMed needs PyTorch, which is not installed yet. Install it now through the PyTorch extension? It"
        " downloads up to a few GB (the build that matches your GPU driver, or the CPU build)."
    )
    if confirm is not None and not confirm(message):
        raise MaskMedSlicerError("cancelled: MaskMed cannot run without PyTorch")
    report("installing PyTorch through the PyTorch extension")
    if torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=f">={MIN_TORCH_VERSION}") is None:
        raise MaskMedSlicerError("PyTorch could not be installed; see the PyTorch Util module")


def check_torch_version(installed: str | None = None) -> None:
    """Refuse a torch older than :data:`MIN_TORCH_VERSION` (read from its metadata; torch is not imported)."""
    try:
        installed = installed or version("torch")
        from packaging.version import Version
    except (PackageNotFoundError, ImportError):
        return
    if Version(installed.split("+")[0]) < Version(MIN_TORCH_VERSION):
        raise MaskMedSlicerError(
            f"MaskMed needs PyTorch >= {MIN_TORCH_VERSION}, found {installed}: install a newer one in the PyTorch"
            " Util module, then restart Slicer"
        )
