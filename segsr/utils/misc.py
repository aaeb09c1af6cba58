"""Small shared helpers."""
import importlib
import os
import sys
from types import ModuleType
from typing import Dict, List, Tuple


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


def module_command(module: str, *args: str) -> Tuple[List[str], Dict[str, str]]:
    """``python -m <module> args...`` with this interpreter, and an environment in which that import finds the
    ``segsr`` package this process runs (installed, ``--target`` folder or a checkout alike).

    Returns:
        The command list and the environment for ``subprocess.run``.
    """
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (package_parent, env.get('PYTHONPATH')) if p)
    return [sys.executable, '-m', module, *args], env


def sync_device(device) -> None:
    """Wait for queued CUDA work on ``device`` (no-op elsewhere), so that a timer measures the work itself."""
    import torch

    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)
