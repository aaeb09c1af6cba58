"""segsr: task-aware image super-resolution on BasicSR.

``import segsr`` registers segsr's architectures, datasets, losses and models into BasicSR's registries and changes
nothing else in other libraries, except a ``torchvision.transforms.functional_tensor`` alias without which basicsr
1.4.2 cannot be imported with a current torchvision. The basicsr fixes of :mod:`segsr.compat` (CPU resume, gloo,
atomic saves, optimizers by name, Real-ESRGAN on CPU, early unknown-``type`` errors, ...) are applied to the whole
process only by :func:`apply_basicsr_fixes`, which segsr's entry points call; segsr's own models do not need them.
"""
# flake8: noqa
from segsr import compat as _compat

_compat.install_functional_tensor_shim()

from segsr.archs import *
from segsr.compat import apply_basicsr_fixes
from segsr.data import *
from segsr.losses import *
from segsr.metrics import *
from segsr.models import *
from segsr.version import __version__
