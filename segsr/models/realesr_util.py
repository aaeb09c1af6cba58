"""BasicSR's Real-ESRGAN / Real-ESRNet training on any device (CPU included), without patching BasicSR.

BasicSR 1.4.2's ``RealESRGANModel`` / ``RealESRNetModel`` put their JPEG simulator, USM sharpener and training-pair
pool on CUDA with ``.cuda()``, and their ``filter2D`` calls ``.view`` on tensors that CPU ops (the JPEG simulator)
leave non-contiguous. segsr's own subclasses inherit :class:`DeviceAwareRealESRGANModel`; stock models get the same
pieces only through :func:`segsr.compat.apply_basicsr_fixes`.
"""
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from basicsr.models.realesrgan_model import RealESRGANModel
from torch import nn
from torch.nn import functional as F


def filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``basicsr.utils.img_process_util.filter2D`` (per-image ``k x k`` kernels, reflect padding) for any layout.

    Args:
        img: Images (b, c, h, w), contiguous or not.
        kernel: One kernel (1, k, k) for the batch or one per image (b, k, k); ``k`` odd.
    """
    k = kernel.size(-1)
    if k % 2 != 1:
        raise ValueError(f'filter2D: the kernel size must be odd, got {k}.')
    b, c, h, w = img.size()
    img = F.pad(img, (k // 2, k // 2, k // 2, k // 2), mode='reflect')
    ph, pw = img.shape[-2:]
    if kernel.size(0) == 1:  # one kernel for the whole batch
        out = F.conv2d(img.reshape(b * c, 1, ph, pw), kernel.reshape(1, 1, k, k))
    else:
        weight = kernel.reshape(b, 1, k, k).repeat(1, c, 1, 1).reshape(b * c, 1, k, k)
        out = F.conv2d(img.reshape(1, b * c, ph, pw), weight, groups=b * c)
    return out.reshape(b, c, h, w)


class TrainingPairPool:
    """Real-ESRGAN's training-pair pool: it creates its buffers, swaps batches with them, saves and restores itself.

    Fills with the first ``size`` samples (the batches pass through unchanged); once full, each batch is swapped with
    ``b`` random samples of the pool, which mixes degradations across batches. The buffers live on the first batch's
    device. A pool size that the batch size does not divide is a ``ValueError`` naming ``queue_size`` (BasicSR
    asserts). Its :meth:`state_dict` (``queue_lr``, ``queue_gt``, ``queue_ptr``; None while no batch came) is what
    :func:`segsr.utils.checkpoint.training_state` saves under ``pool``.

    Args:
        size: Number of training pairs held (the ``queue_size`` option).
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"Option 'queue_size' = {size!r}; expected an integer >= 1.")
        self.size = size
        self.lq: Optional[torch.Tensor] = None
        self.gt: Optional[torch.Tensor] = None
        self.ptr = 0

    @torch.no_grad()
    def swap(self, lq: torch.Tensor, gt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The batch to train on: ``(lq, gt)`` itself while filling, else ``b`` random pairs of the pool."""
        b = lq.size(0)
        if self.lq is None:
            if self.size % b:
                raise ValueError(f"Option 'queue_size' = {self.size} must be divisible by the batch size {b}.")
            self.lq = lq.new_zeros((self.size, ) + tuple(lq.shape[1:]))
            self.gt = gt.new_zeros((self.size, ) + tuple(gt.shape[1:]))
            self.ptr = 0
        if self.ptr < self.size:  # still filling: keep the batch as it is
            self.lq[self.ptr:self.ptr + b] = lq
            self.gt[self.ptr:self.ptr + b] = gt
            self.ptr += b
            return lq, gt
        order = torch.randperm(self.size, device=self.lq.device)
        self.lq, self.gt = self.lq[order], self.gt[order]
        lq_out, gt_out = self.lq[:b].clone(), self.gt[:b].clone()
        self.lq[:b], self.gt[:b] = lq, gt
        return lq_out, gt_out

    def state_dict(self) -> Optional[Dict[str, Union[torch.Tensor, int]]]:
        """CPU copies of the buffers and the fill pointer; None before the first batch."""
        if self.lq is None:
            return None
        return {'queue_lr': self.lq.detach().cpu().clone(), 'queue_gt': self.gt.detach().cpu().clone(),
                'queue_ptr': int(self.ptr)}

    def load_state_dict(self, state: Mapping, device: torch.device) -> None:
        """Restore what :meth:`state_dict` returned, on ``device``."""
        lq, gt = state['queue_lr'], state['queue_gt']
        if lq.size(0) != self.size or gt.size(0) != self.size:
            raise ValueError(f"The saved training-pair pool holds {lq.size(0)} pairs but option 'queue_size' is "
                             f'{self.size}: resume with the queue_size it was trained with.')
        self.lq, self.gt, self.ptr = lq.to(device).clone(), gt.to(device).clone(), int(state['queue_ptr'])


def dequeue_and_enqueue(self) -> None:
    """``RealESRGANModel._dequeue_and_enqueue`` through the model's :class:`TrainingPairPool` (``self.pair_pool``)."""
    self.lq, self.gt = self.pair_pool.swap(self.lq, self.gt)


class ContiguousOutput(nn.Module):
    """Wraps a module so that its output is contiguous (BasicSR's ``filter2D`` needs that after the JPEG simulator)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.module(*args, **kwargs).contiguous()


def init_degradation_tools(self, opt: dict) -> None:
    """The JPEG simulator and USM sharpener of ``RealESRGANModel.__init__`` on ``self.device``, and the pair pool."""
    from basicsr.utils import DiffJPEG, USMSharp

    self.jpeger = ContiguousOutput(DiffJPEG(differentiable=False)).to(self.device)  # JPEG compression artefacts
    self.usm_sharpener = USMSharp().to(self.device)
    self.pair_pool = TrainingPairPool(opt.get('queue_size', 180))


def device_aware_init(model_cls: type):
    """An ``__init__`` for ``model_cls`` (a BasicSR Real-ESR* model) that skips its ``.cuda()`` calls."""

    def __init__(self, opt):
        super(model_cls, self).__init__(opt)
        init_degradation_tools(self, opt)

    return __init__


class DeviceAwareRealESRGANModel(RealESRGANModel):
    """``RealESRGANModel`` with its degradation tools and training-pair pool on the model's device (not registered).

    Subclasses behave on CUDA exactly like BasicSR's model and also train on CPU; numbers are identical.
    """

    __init__ = device_aware_init(RealESRGANModel)
    _dequeue_and_enqueue = dequeue_and_enqueue
