"""BasicSR's Real-ESRGAN / Real-ESRNet training on any device (CPU included), without patching BasicSR.

BasicSR 1.4.2's ``RealESRGANModel`` / ``RealESRNetModel`` put their JPEG simulator, USM sharpener and training-pair
pool on CUDA with ``.cuda()``, and their ``filter2D`` calls ``.view`` on tensors that CPU ops (the JPEG simulator)
leave non-contiguous. segsr's own subclasses inherit :class:`DeviceAwareRealESRGANModel`; stock models get the same
pieces only through :func:`segsr.compat.apply_basicsr_fixes`.
"""
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


@torch.no_grad()
def dequeue_and_enqueue(self) -> None:
    """Real-ESRGAN's training-pair pool, allocated on the batch's device.

    Fills the pool with the first ``queue_size`` samples; once full, each batch is swapped with ``b`` random
    samples of the pool, which mixes degradations across batches. A pool size that the batch size does not divide
    is a ``ValueError`` naming ``queue_size`` (BasicSR asserts).
    """
    b = self.lq.size(0)
    if not hasattr(self, 'queue_lr'):
        if self.queue_size % b:
            raise ValueError(f"Option 'queue_size' = {self.queue_size} must be divisible by the batch size {b}.")
        self.queue_lr = self.lq.new_zeros((self.queue_size, ) + tuple(self.lq.shape[1:]))
        self.queue_gt = self.gt.new_zeros((self.queue_size, ) + tuple(self.gt.shape[1:]))
        self.queue_ptr = 0
    if self.queue_ptr < self.queue_size:  # still filling: keep the batch as it is
        self.queue_lr[self.queue_ptr:self.queue_ptr + b] = self.lq
        self.queue_gt[self.queue_ptr:self.queue_ptr + b] = self.gt
        self.queue_ptr += b
        return
    order = torch.randperm(self.queue_size, device=self.queue_lr.device)
    self.queue_lr, self.queue_gt = self.queue_lr[order], self.queue_gt[order]
    lq_out, gt_out = self.queue_lr[:b].clone(), self.queue_gt[:b].clone()
    self.queue_lr[:b], self.queue_gt[:b] = self.lq, self.gt
    self.lq, self.gt = lq_out, gt_out


class ContiguousOutput(nn.Module):
    """Wraps a module so that its output is contiguous (BasicSR's ``filter2D`` needs that after the JPEG simulator)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.module(*args, **kwargs).contiguous()


def init_degradation_tools(self, opt: dict) -> None:
    """The JPEG simulator, USM sharpener and pool size of ``RealESRGANModel.__init__``, on ``self.device``."""
    from basicsr.utils import DiffJPEG, USMSharp

    self.jpeger = ContiguousOutput(DiffJPEG(differentiable=False)).to(self.device)  # JPEG compression artefacts
    self.usm_sharpener = USMSharp().to(self.device)
    self.queue_size = opt.get('queue_size', 180)


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
