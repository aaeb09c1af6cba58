"""Make basicsr 1.4.2 work with current torchvision and on CPU.

Imported by ``segsr/__init__.py`` before anything from basicsr. Every patch here fixes a concrete breakage of
the newest basicsr release; nothing else belongs in this module. Each patch is applied once and is idempotent.

Fixes:
    1. ``basicsr.data.degradations`` imports ``torchvision.transforms.functional_tensor`` (removed from
       torchvision 0.17): a shim module re-exports ``rgb_to_grayscale`` from ``functional``.
    2. ``basicsr.train.load_resume_state`` maps the state to ``torch.cuda.current_device()`` (fails on CPU) and
       looks for ``--auto_resume`` states relative to the working directory: replaced by a device-aware loader
       that looks in ``opt['path']['training_states']``.
    3. ``basicsr.utils.dist_util`` always uses NCCL and ``torch.cuda.set_device``: on a machine without CUDA the
       pytorch launcher now uses gloo; ``BaseModel.model_to_device`` wraps in DDP without ``device_ids`` on CPU.
    4. ``BaseModel.get_optimizer`` knows only Adam: any ``torch.optim`` optimizer is accepted by class name.
    5. ``PerceptualLoss(criterion='l2')`` calls the non-existent ``torch.nn.L2loss``.
    6. ``BaseModel.save_network`` / ``save_training_state`` write in place (a crash mid-write leaves a truncated
       latest file) and swallow errors: replaced by atomic writes.
    7. ``parse_options`` ignores ``path.experiments_root`` / ``path.results_root``, sends a stock ``num_gpu: 1``
       config to CUDA on a CPU-only machine, and reports an unknown ``type`` only deep inside building.
    8. ``RealESRGANModel`` / ``RealESRNetModel`` put their JPEG simulator, USM sharpener and training-pair pool on
       CUDA with ``.cuda()``: now on the model's device (CPU included); a pool size that the batch size does not
       divide is a ``ValueError`` naming ``queue_size`` instead of an assert. Their ``filter2D`` calls ``.view`` on
       tensors that CPU ops (the JPEG simulator) leave non-contiguous: replaced by a version using ``reshape``.
"""
import os
import sys
import types

import torch
import torchvision.transforms.functional as _tv_functional

_PATCHED = False


def _install_functional_tensor_shim() -> None:
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:  # an old torchvision still ships it
        __import__(name)
        return
    except ImportError:
        pass
    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = _tv_functional.rgb_to_grayscale
    sys.modules[name] = shim


def _load_resume_state(opt: dict):
    """Device-aware replacement of ``basicsr.train.load_resume_state``."""
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_path = opt['path']['training_states']
        if os.path.isdir(state_path):
            states = [int(v[:-len('.state')]) for v in scandir(state_path, suffix='.state', recursive=False)
                      if v[:-len('.state')].isdigit()]
            if states:
                resume_state_path = os.path.join(state_path, f'{max(states)}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if not os.path.isfile(resume_state_path):
        raise FileNotFoundError(f"path.resume_state: no training state at '{resume_state_path}'.")
    device = torch.device('cuda', torch.cuda.current_device()) if opt['num_gpu'] != 0 else torch.device('cpu')
    # Training states hold optimizer and scheduler objects written by our own runs.
    resume_state = torch.load(resume_state_path, map_location=device, weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def _init_dist_pytorch(backend: str = 'nccl', **kwargs) -> None:
    """``torchrun`` initialisation that falls back to gloo when CUDA is absent."""
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        find_unused = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
    from segsr.utils.options import build_optimizer

    return build_optimizer(optim_type, params, lr, **kwargs)


def _patch_perceptual_l2() -> None:
    from basicsr.losses.basic_loss import PerceptualLoss

    original_init = PerceptualLoss.__init__
    if getattr(original_init, '_segsr_patched', False):
        return

    def __init__(self, *args, criterion='l1', **kwargs):
        original_init(self, *args, criterion='l1' if criterion == 'l2' else criterion, **kwargs)
        if criterion == 'l2':
            self.criterion_type = 'l2'
            self.criterion = torch.nn.MSELoss()

    __init__._segsr_patched = True
    PerceptualLoss.__init__ = __init__


def _realesr_init(model_cls):
    """Device-aware ``__init__`` for BasicSR's Real-ESRGAN / Real-ESRNet models."""

    def __init__(self, opt):
        from basicsr.utils import DiffJPEG, USMSharp

        super(model_cls, self).__init__(opt)
        self.jpeger = DiffJPEG(differentiable=False).to(self.device)  # JPEG compression artefacts
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    return __init__


@torch.no_grad()
def _dequeue_and_enqueue(self) -> None:
    """Real-ESRGAN's training-pair pool, allocated on the batch's device.

    Fills the pool with the first ``queue_size`` samples; once full, each batch is swapped with ``b`` random
    samples of the pool, which mixes degradations across batches.
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


def _filter2d(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``basicsr.utils.img_process_util.filter2D`` (per-image ``k x k`` kernels, reflect padding) for any layout."""
    from torch.nn import functional as F

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


def _patch_realesr_models() -> None:
    import basicsr.models.realesrgan_model as realesrgan_model
    import basicsr.models.realesrnet_model as realesrnet_model
    import basicsr.utils.img_process_util as img_process_util

    for module in (realesrgan_model, realesrnet_model):
        model_cls = module.RealESRGANModel if module is realesrgan_model else module.RealESRNetModel
        model_cls.__init__ = _realesr_init(model_cls)
        model_cls._dequeue_and_enqueue = _dequeue_and_enqueue
        module.filter2D = _filter2d
    img_process_util.filter2D = _filter2d


def _wrap_parse_options(original):
    if getattr(original, '_segsr_patched', False):
        return original

    def parse_options(root_path, is_train=True):
        from segsr.utils.options import finalize_options

        opt, args = original(root_path, is_train=is_train)
        finalize_options(opt, args.opt, is_train=is_train)
        return opt, args

    parse_options._segsr_patched = True
    return parse_options


def apply() -> None:
    """Apply every patch (idempotent). Called by ``import segsr``."""
    global _PATCHED
    if _PATCHED:
        return
    _install_functional_tensor_shim()

    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util as dist_util
    from basicsr.models.base_model import BaseModel

    from segsr.utils.checkpoint import save_network, save_training_state

    basicsr.train.load_resume_state = _load_resume_state
    basicsr.train.parse_options = _wrap_parse_options(basicsr.train.parse_options)
    basicsr.test.parse_options = _wrap_parse_options(basicsr.test.parse_options)
    dist_util._init_dist_pytorch = _init_dist_pytorch
    BaseModel.model_to_device = _model_to_device
    BaseModel.get_optimizer = _get_optimizer
    BaseModel.save_network = save_network
    BaseModel.save_training_state = save_training_state
    _patch_perceptual_l2()
    _patch_realesr_models()
    _PATCHED = True
