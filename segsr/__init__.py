"""segsr: task-aware image super-resolution on BasicSR.

``import segsr`` first makes basicsr 1.4.2 work with current torchvision and on CPU (:mod:`segsr.compat`), then
registers segsr's architectures, datasets, losses and models into BasicSR's registries.
"""
# flake8: noqa
from segsr import compat as _compat

_compat.apply()

from segsr.archs import *
from segsr.data import *
from segsr.losses import *
from segsr.metrics import *
from segsr.models import *
from segsr.version import __version__
