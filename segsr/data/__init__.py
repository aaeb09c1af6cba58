"""Imports every `*_dataset.py` module of this folder so that its classes register into BasicSR's registries."""
from segsr.utils.misc import import_modules_by_suffix

_modules = import_modules_by_suffix(__name__, __file__, '_dataset.py')
__all__ = []
