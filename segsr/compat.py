"""Make basicsr 1.4.2 work with current torchvision and on CPU.

``import segsr`` does only what basicsr needs to import at all (fix 1). Everything else is applied by one explicit
call, :func:`apply_basicsr_fixes` (also ``segsr.apply_basicsr_fixes``), made by segsr's entry points (``segsr.train``,
``segsr.test``, ``segsr.evaluate``, ``segsr.sr_bench``, ``segsr.benchmark``, ``segsr.step_bench`` and their console
scripts). A user script that drives BasicSR's own pipeline or stock models opts in with the same call. segsr's own
models do not need it: they carry fixes 3-4, 6, 8 and 9 as methods (:class:`segsr.models.base.SegsrModelMixin`,
:class:`segsr.models.realesr_util.DeviceAwareRealESRGANModel`) and behave identically either way.

Every fix here repairs a concrete breakage of the newest basicsr release; nothing else belongs in this module. Each
is applied once and is idempotent.

Fixes:
    1. ``basicsr.data.degradations`` imports ``torchvision.transforms.functional_tensor`` (removed from
       torchvision 0.17): a shim module re-exports ``rgb_to_grayscale`` from ``functional``. Applied on import.
    2. ``basicsr.train.load_resume_state`` maps the state to ``torch.cuda.current_device()`` (fails on CPU), looks
       for ``--auto_resume`` states relative to the working directory and unpickles anything: replaced by
       :func:`segsr.utils.resume.find_resume_state` (``opt['path']['training_states']``, ``weights_only=True``,
       damaged states skipped). segsr's own training loop does not use it.
    3. ``basicsr.utils.dist_util`` always uses NCCL and ``torch.cuda.set_device``: on a machine without CUDA the
       pytorch launcher now uses gloo; ``BaseModel.model_to_device`` wraps in DDP without ``device_ids`` on CPU.
    4. ``BaseModel.get_optimizer`` knows only Adam: any ``torch.optim`` optimizer is accepted by class name.
    5. ``PerceptualLoss(criterion='l2')`` calls the non-existent ``torch.nn.L2loss``.
    6. ``BaseModel.save_network`` / ``save_training_state`` write in place (a crash mid-write leaves a truncated
       latest file) and swallow errors: replaced by atomic writes.
    7. ``parse_options`` ignores ``path.experiments_root`` / ``path.results_root``, sends a stock ``num_gpu: 1``
       config to CUDA on a CPU-only machine, reports an unknown ``type`` only deep inside building, ignores
       misspelled keys silently and ``exec``s ``--force_yml`` entries (which cannot create keys): replaced by
       :func:`segsr.utils.options.parse_options` (typed ``--force_yml`` for any key, option keys checked).
    8. ``RealESRGANModel`` / ``RealESRNetModel`` put their JPEG simulator, USM sharpener and training-pair pool on
       CUDA with ``.cuda()``: now on the model's device (CPU included); a pool size that the batch size does not
       divide is a ``ValueError`` naming ``queue_size`` instead of an assert. Their ``filter2D`` calls ``.view`` on
       tensors that CPU ops (the JPEG simulator) leave non-contiguous: replaced by a version using ``reshape``
       (see :mod:`segsr.models.realesr_util`).
    9. ``BaseModel.load_network`` reads ``path.pretrain_network_*`` with a plain ``torch.load`` (unsafe before torch
       2.6: a pickle can run code) and fails with a bare ``KeyError`` / ``RuntimeError`` that names neither the
       option nor the file: replaced by a reader that never runs code from the file (``weights_only=True`` or
       ``.safetensors``) and raises errors naming both, with BasicSR's key rules.
"""
import os
import sys
import types

import torch
import torchvision.transforms.functional as _tv_functional

_PATCHED = False


def install_functional_tensor_shim() -> None:
    """Let basicsr import with a torchvision that no longer ships ``transforms.functional_tensor`` (fix 1)."""
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
    """Replacement of ``basicsr.train.load_resume_state``: CPU-safe, ``weights_only``, damaged states skipped.

    Used by ``basicsr.train.train_pipeline`` when a script drives it; segsr's own loop (``segsr.train``) does more
    (exact resume, see :mod:`segsr.utils.resume`).
    """
    from basicsr.utils import check_resume

    from segsr.utils.resume import find_resume_state

    resume = find_resume_state(opt)
    if resume.state is None:
        return None
    opt['path']['resume_state'] = resume.path
    check_resume(opt, resume.state['iter'])
    return resume.state


def _init_dist_pytorch(backend: str = 'nccl', **kwargs) -> None:
    """``torchrun`` initialisation that falls back to gloo when CUDA is absent."""
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
    else:
        backend = 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


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
    __init__.__wrapped__ = original_init  # inspect.signature (option-key checks) sees the real arguments
    PerceptualLoss.__init__ = __init__


def _patch_realesr_models() -> None:
    import basicsr.models.realesrgan_model as realesrgan_model
    import basicsr.models.realesrnet_model as realesrnet_model
    import basicsr.utils.img_process_util as img_process_util

    from segsr.models.realesr_util import dequeue_and_enqueue, device_aware_init, filter2d

    for module in (realesrgan_model, realesrnet_model):
        model_cls = module.RealESRGANModel if module is realesrgan_model else module.RealESRNetModel
        model_cls.__init__ = device_aware_init(model_cls)
        model_cls._dequeue_and_enqueue = dequeue_and_enqueue
        module.filter2D = filter2d
    img_process_util.filter2D = filter2d


def _wrap_parse_options(original):
    """segsr's own ``parse_options`` (fix 7), which replaces BasicSR's ``original`` entirely (same command line)."""
    from segsr.utils.options import parse_options

    return parse_options


def apply_basicsr_fixes() -> None:
    """Apply fixes 2-9 to basicsr for this process (idempotent); see the module docstring.

    Called by every segsr entry point. Call it yourself before ``basicsr.train.train_pipeline`` or before building
    stock BasicSR models on CPU in your own script; segsr's models and losses do not need it.
    """
    global _PATCHED
    if _PATCHED:
        return
    install_functional_tensor_shim()

    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util as dist_util
    from basicsr.models.base_model import BaseModel

    from segsr.models.base import SegsrModelMixin

    basicsr.train.load_resume_state = _load_resume_state
    basicsr.train.parse_options = _wrap_parse_options(basicsr.train.parse_options)
    basicsr.test.parse_options = _wrap_parse_options(basicsr.test.parse_options)
    dist_util._init_dist_pytorch = _init_dist_pytorch
    for name in ('model_to_device', 'get_optimizer', 'save_network', 'save_training_state', 'load_network'):
        setattr(BaseModel, name, getattr(SegsrModelMixin, name))
    _patch_perceptual_l2()
    _patch_realesr_models()
    _PATCHED = True


def is_applied() -> bool:
    """Whether :func:`apply_basicsr_fixes` ran in this process."""
    return _PATCHED
