"""Shared model plumbing for segsr's models (a mixin for BasicSR ``BaseModel`` subclasses).

The mixin carries its own versions of the ``BaseModel`` methods that basicsr 1.4.2 gets wrong (DDP on CPU, optimizers
by name, atomic checkpoint writes), so segsr's models behave the same whether or not
:func:`segsr.compat.apply_basicsr_fixes` patched BasicSR. BasicSR pops ``type`` out of ``train.optim_*`` and ``train.scheduler`` (mutating the options) and knows only two
scheduler families. The helpers here read option blocks without mutating them, accept any ``torch.optim`` optimizer
and ``torch.optim.lr_scheduler`` scheduler, and load/freeze auxiliary networks in one place (with
:mod:`segsr.weights`).
"""
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from torch import Tensor, nn

from segsr.tasks import Task, get_task
from segsr.utils import checkpoint
from segsr.utils.options import build_optimizer, build_optimizer_from_opt, build_scheduler
from segsr.weights import basicsr_state_dict, freeze, load_checkpoint, load_into, pretrain_option_name, read_weights

if TYPE_CHECKING:
    from segsr.models.task_eval import Predictor
    from segsr.models.validation import TaskValidator


class SegsrModelMixin:
    """BasicSR's ``BaseModel`` plumbing done right, for every segsr model (put it before the BasicSR base).

    It holds no method-specific state: the parts a model is built from (:class:`~segsr.models.validation.TaskValidator`,
    :class:`~segsr.models.task_feature.TDPTerm`, :class:`~segsr.models.gan_step.SemanticConditioner`, ...) are
    attributes the model sets in its ``__init__``, None when off. Here: atomic saving, DDP on CPU, optimizers and
    schedulers by option key, safe loading, the label map of a batch, and validation through the model's
    ``task_validator`` (BasicSR's own validation when it has none).
    """

    save_network = checkpoint.save_network  # atomic writes that raise on failure
    save_training_state = checkpoint.save_training_state

    def __init__(self, opt: dict) -> None:
        self.optimizer_keys: List[Optional[str]] = []  # train.optim_* key of each optimizer in self.optimizers
        self.seg: Optional[Tensor] = None  # the batch's label map
        self.task: Task = get_task('seg')  # the task the model trains and scores for (models set their own)
        self.targets = None  # the batch's targets of self.task (self.seg for segmentation)
        self.task_validator: Optional['TaskValidator'] = None
        super().__init__(opt)  # BasicSR builds the networks and, for training, calls init_training_settings

    def own_predictors(self) -> Dict[str, 'Predictor']:
        """Segmentation predictors of the model itself, scored next to the judge (none here)."""
        return {}

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        """Validation by the model's :class:`~segsr.models.validation.TaskValidator`."""
        if self.task_validator is None:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        else:
            self.task_validator.validate(self, dataloader, current_iter, tb_logger, save_img)

    def saved_networks(self) -> Dict[str, nn.Module]:
        """Networks saved with each checkpoint besides BasicSR's (``net_task``, ``net_sem``): label -> network."""
        return {}

    def save(self, epoch: int, current_iter: int) -> None:
        """Save each of :meth:`saved_networks` with its option block inside (``network_task`` for ``net_task``, so
        that ``segsr-infer --seg net_task_latest.pth`` needs no ``--seg-network``), then BasicSR's networks and
        training state."""
        for label, net in self.saved_networks().items():
            self.save_network(net, label, current_iter, network=self.opt.get('network_' + label[len('net_'):]))
        super().save(epoch, current_iter)

    def model_to_device(self, net: nn.Module) -> nn.Module:
        """Move ``net`` to ``self.device``; wrap in DDP (``device_ids`` only on CUDA) or DataParallel as configured."""
        from torch.nn.parallel import DataParallel, DistributedDataParallel

        net = net.to(self.device)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        """Any ``torch.optim`` optimizer by class name (BasicSR's knows only Adam)."""
        return build_optimizer(optim_type, params, lr, **kwargs)

    def build_optimizer(self, key: str, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """Build ``train.<key>`` (e.g. ``optim_g``) for ``params``, append it to ``self.optimizers`` and return it."""
        train_opt = self.opt['train']
        if key not in train_opt:
            raise ValueError(f"Option 'train.{key}' is required by {type(self).__name__}.")
        params = [p for p in params if p.requires_grad]
        optimizer = build_optimizer_from_opt(train_opt[key], params, f'train.{key}')
        self.optimizers.append(optimizer)
        self.optimizer_keys.append(key)
        return optimizer

    def setup_schedulers(self) -> None:
        """One scheduler per optimizer, none for optimizers without a block (blocks are not mutated).

        The optimizer built from ``train.optim_<name>`` uses ``train.scheduler_<name>`` when present (e.g.
        ``scheduler_g`` / ``scheduler_task``), else the shared ``train.scheduler``.
        """
        train_opt = self.opt['train']
        total_iter = int(train_opt.get('total_iter', 0))
        keys = list(self.optimizer_keys)
        keys += [None] * (len(self.optimizers) - len(keys))  # built by BasicSR's own setup_optimizers
        self.schedulers = []
        for key, optimizer in zip(keys, self.optimizers):
            own_key = 'scheduler_' + key[len('optim_'):] if key and key.startswith('optim_') else None
            sched_key = own_key if own_key and train_opt.get(own_key) else 'scheduler'
            if train_opt.get(sched_key):
                self.schedulers.append(build_scheduler(train_opt[sched_key], optimizer, total_iter,
                                                       f'train.{sched_key}'))

    def init_ema(self) -> None:
        """BasicSR's EMA copy of ``net_g`` (``train.ema_decay`` > 0), loaded from ``params_ema`` when resuming."""
        self.ema_decay = float(self.opt['train'].get('ema_decay', 0))
        if self.ema_decay <= 0:
            return
        get_root_logger().info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
        else:
            self.model_ema(0)
        self.net_g_ema.eval()

    def feed_labels(self, data: dict) -> None:
        """Take the batch's targets of :attr:`task` (``self.targets``; None when the dataset has none, e.g. an
        unlabelled val set) and its ``seg`` label map (``self.seg``)."""
        self.seg = data['seg'].to(self.device) if 'seg' in data else None
        self.targets = self.task.targets(data, self.device)

    def require_labels(self) -> None:
        """Raise ``KeyError`` when a training batch came without the task's targets (call at the start of a
        training step)."""
        if self.targets is None:
            key = self.task.target_keys[0]
            raise KeyError(f"{type(self).__name__}: the training batch has no '{key}'; 'datasets.train' must return "
                           f"{self.task.name} targets ({', '.join(self.task.dataset_types)}).")

    def get_current_learning_rate(self) -> List[float]:
        return [group['lr'] for group in self.optimizers[0].param_groups]

    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: Optional[str] = 'params'
                     ) -> None:
        """BasicSR's ``BaseModel.load_network``, reading safely and naming the option and the file on failure.

        Same semantics as BasicSR's: the state dict under ``param_key`` (``params`` when ``param_key`` is absent but
        ``params`` is there, e.g. ``params_ema`` of a file saved without EMA), ``module.`` prefixes removed, keys
        that differ logged, and with ``strict=False`` keys of another shape logged and skipped. Unlike BasicSR's, the
        file is read by :func:`segsr.weights.read_weights` (``weights_only=True`` or ``.safetensors``: no code
        from the file runs), ``param_key=None`` finds a nested state dict (see :func:`segsr.weights.extract_state_dict`)
        and :func:`segsr.weights.load_into` checks the fit. :func:`segsr.compat.apply_basicsr_fixes` puts this
        method on ``BaseModel``, so stock BasicSR models use it too.

        Args:
            net: Network to load into (DDP/DataParallel wrappers are looked through).
            load_path: Checkpoint file, normally a ``path.pretrain_network_*`` option.
            strict: Require exactly the network's keys and shapes.
            param_key: Key of the state dict inside the checkpoint; None: the checkpoint itself (or the state dict
                nested in it).

        Raises:
            FileNotFoundError: no such file.
            ValueError: empty, truncated or unreadable file, a pickle of anything but tensors, no ``param_key``, or
                weights that do not fit; each naming the ``path.pretrain_network_*`` option and the file.
        """
        option_name = pretrain_option_name(self.opt.get('path') or {}, load_path,
                                           f'{type(self).__name__}.load_network(load_path)')
        ckpt = read_weights(load_path, option_name)
        param_key, state = basicsr_state_dict(ckpt, load_path, param_key, option_name)
        net = self.get_bare_model(net)
        get_root_logger().info(f'Loading {type(net).__name__} model from {load_path}, with param key: [{param_key}].')
        self._print_different_keys_loading(net, state, strict)  # with strict=False, drops keys of another shape
        load_into(net, state, load_path, option_name, strict)

    def load_network_from_path_opt(self, net: nn.Module, label: str) -> None:
        """Load ``path.pretrain_network_<label>`` (with ``param_key_<label>``, ``strict_load_<label>``) if set."""
        path_opt = self.opt['path']
        load_path = path_opt.get(f'pretrain_network_{label}')
        if load_path is not None:
            self.load_network(net, load_path, path_opt.get(f'strict_load_{label}', True),
                              path_opt.get(f'param_key_{label}', 'params'))

    def build_frozen_network(self, net_opt: dict, option_name: str, load_path: Optional[str] = None,
                             param_key: Optional[str] = 'params') -> nn.Module:
        """Build a network that is never trained: eval mode, no gradients, on ``self.device``, never DDP-wrapped.

        Args:
            net_opt: Network option block with ``type``.
            option_name: Option name of the block for error messages (e.g. ``network_task``); errors about the file
                name the ``path.pretrain_network_*`` option that gives ``load_path`` when there is one.
            load_path: Checkpoint to load (BasicSR format or plain state dict); None keeps the constructor's weights.
            param_key: Key inside the checkpoint; falls back to ``params`` / the plain dict.
        """
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise ValueError(f"Option '{option_name}' must be a network block with a 'type'.")
        net = build_network(net_opt)
        if load_path is not None:
            load_checkpoint(net, load_path, param_key, pretrain_option_name(self.opt.get('path') or {}, load_path,
                                                                            option_name))
        return freeze(net.to(self.device))


def require_labelled_train_data(opt: dict, model_name: str, task: Optional[Task] = None) -> None:
    """Raise ``ValueError`` unless ``datasets.train`` returns the targets of ``task`` (default segmentation): for
    segmentation it declares ``num_classes`` (i.e. returns label maps), for another task its type is one of the
    task's datasets."""
    task = task or get_task('seg')
    train_set = (opt.get('datasets') or {}).get('train') or {}
    labelled = 'num_classes' in train_set if task.name == 'seg' else train_set.get('type') in task.dataset_types
    if labelled:
        return
    example = ("PairedImageSegDataset with 'dataroot_seg' and 'num_classes'" if task.name == 'seg'
               else ' or '.join(task.dataset_types))
    raise ValueError(f"{model_name} needs labelled training data: 'datasets.train' (type "
                     f"'{train_set.get('type')}') must provide '{task.target_keys[0]}' for its {task.name} "
                     f'network, e.g. {example}.')


def dataset_num_classes(opt: dict) -> dict:
    """``{'datasets.<phase>.num_classes': value}`` for every dataset block that declares ``num_classes``."""
    return {f'datasets.{phase}.num_classes': d['num_classes']
            for phase, d in (opt.get('datasets') or {}).items() if isinstance(d, dict) and 'num_classes' in d}


def check_num_classes(opt: dict, num_classes: int, option_name: str) -> None:
    """Raise ``ValueError`` naming both options when a dataset's ``num_classes`` differs from ``num_classes``."""
    for key, value in dataset_num_classes(opt).items():
        if int(value) != int(num_classes):
            raise ValueError(f"Option '{option_name}' = {num_classes} does not match '{key}' = {value}: "
                             'the networks and the data must agree on the number of classes.')
