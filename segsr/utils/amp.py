"""Mixed-precision training for any BasicSR model: ``train.amp: bf16 | auto | false``.

BasicSR 1.4.2 trains in float32 only. ``segsr/train.py`` (and ``scripts/benchmark_gan_step.py``) run each model's
``optimize_parameters`` under :func:`torch.autocast` when ``train.amp`` asks for it, so stock models (SRModel,
ESRGANModel, ...) and ours get it alike. Only bfloat16 is offered: float16 needs loss scaling around every optimizer
step, and BasicSR models step their own optimizers. Parameters, optimizer states, EMA and checkpoints stay float32;
validation runs in float32.

Values of ``train.amp``: ``false`` / absent (float32), ``bf16`` (bfloat16 on the model's device, CPU included;
refused on a CUDA GPU without bfloat16), ``auto`` (bfloat16 on a CUDA GPU that supports it, else float32).
"""
import functools
from typing import Callable, Optional

import torch

AMP_CHOICES = (False, None, 'bf16', 'auto')


def amp_dtype(opt: dict, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype that ``opt['train']['amp']`` asks for on ``device`` (None: float32).

    Raises:
        ValueError: Unknown value, float16, or bf16 on a CUDA GPU without bfloat16 (message names ``train.amp``).
    """
    value = (opt.get('train') or {}).get('amp', False)
    if value not in AMP_CHOICES:
        hint = ' float16 needs loss scaling, which BasicSR models do not do; use bf16.' if value in (
            'fp16', 'float16') else ''
        raise ValueError(f"Option 'train.amp' = {value!r}: expected one of false, bf16, auto.{hint}")
    if not value:
        return None
    bf16_ok = device.type != 'cuda' or torch.cuda.is_bf16_supported()
    if value == 'auto':
        return torch.bfloat16 if device.type == 'cuda' and bf16_ok else None
    if not bf16_ok:
        raise ValueError(f"Option 'train.amp' = bf16, but the GPU {torch.cuda.get_device_name(device)} has no "
                         'bfloat16; use amp: auto or false.')
    return torch.bfloat16


def enable_amp(model, opt: dict):
    """Run ``model.optimize_parameters`` under autocast if ``opt['train']['amp']`` asks for it; returns the model."""
    dtype = amp_dtype(opt, model.device)
    if dtype is None:
        return model
    step = model.optimize_parameters

    @functools.wraps(step)
    def optimize_parameters(*args, **kwargs):
        with torch.autocast(device_type=model.device.type, dtype=dtype):
            return step(*args, **kwargs)

    model.optimize_parameters = optimize_parameters
    model.amp_dtype = dtype
    from basicsr.utils import get_root_logger

    get_root_logger().info(f'Mixed precision: training steps run under autocast({model.device.type}, {dtype}).')
    return model


def with_amp(build_model: Callable) -> Callable:
    """Wrap a ``build_model(opt)`` factory so training models honour ``train.amp``."""
    if getattr(build_model, '_segsr_amp', False):
        return build_model

    @functools.wraps(build_model)
    def build(opt):
        model = build_model(opt)
        return enable_amp(model, opt) if opt.get('is_train') else model

    build._segsr_amp = True
    return build
