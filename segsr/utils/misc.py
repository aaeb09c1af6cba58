"""Small shared helpers."""
import importlib
import os
from types import ModuleType
from typing import List


def import_modules_by_suffix(package: str, init_file: str, suffix: str) -> List[ModuleType]:
    """Import every ``*<suffix>.py`` module of a subpackage so that its classes register (BasicSR's scan).

    Args:
        package: Dotted package name, e.g. ``segsr.archs``.
        init_file: The package's ``__file__``.
        suffix: File ending such as ``_arch.py``.
    """
    folder = os.path.dirname(os.path.abspath(init_file))
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]
