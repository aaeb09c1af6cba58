"""SR4IR: SR for image recognition with a task-driven perceptual loss and alternate training.

Kim, Oh, Lee, "Beyond Image Super-Resolution for Image Recognition with Task-Driven Perceptual Loss", CVPR 2024.
Every iteration has two phases:

1. *SR phase*: the SR network is updated with pixel (+ perceptual) + TDP loss (+ optionally a cross-entropy of the
   frozen task network's prediction on the SR image); the task network is frozen and in eval mode. TDP is off for
   the first ``tdp_warmup_iter`` iterations.
2. *Task phase*: the task network is updated with cross-entropy (+ aux head) on the SR image (detached, recomputed
   with the updated SR network), the HR image and a cross-quality patch-mix (CQMix) image, each with its own
   weight. The three views go through the task network in ONE forward pass (one DDP forward per step), so
   BatchNorm statistics are taken over their union.

Switching phases off gives the paper's baselines and ablations (see the README and ``options/sr4ir``):
``update_sr: false`` trains a task network on the outputs of a frozen SR network (T->S), ``update_task: false``
trains the SR network against a frozen task network, and ``alternate: false`` does one joint step in which the task
loss on SR images is back-propagated into both networks (S+T).
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from segsr.data.cqmix import cross_quality_mix, grid_shape
from segsr.data.task_views import VIEW_KEYS, TaskViews
from segsr.models.base import SegsrModelMixin, check_num_classes, require_labelled_train_data
from segsr.models.content import content_loss
from segsr.models.task_eval import Predictor, network_predictor
from segsr.models.task_feature import TDPTerm
from segsr.models.validation import TaskValidator
from segsr.tasks import task_of_network
from segsr.weights import eval_mode, freeze, weights_included

SR_LOSSES = ('pixel_opt', 'perceptual_opt', 'frequency_opt', 'tdp_opt', 'sr_ce_opt')
TASK_VIEWS = ('sr', 'hr', 'cqmix')  # train.task_<view>_opt


@MODEL_REGISTRY.register()
class SR4IRModel(SegsrModelMixin, SRModel):
    """SR network (``network_g``) and task network (``network_task``) trained alternately.

    The task is the task network's (:mod:`segsr.tasks`): segmentation, detection or classification; the data must
    return its targets (``PairedImageSegDataset``, ``PairedImageDetDataset``, ``PairedImageClsDataset``), and the task
    losses are its losses (``SegCrossEntropyLoss``, ``DetectionLoss``, ``ClassCrossEntropyLoss``). A detector computes
    its losses itself, one forward pass per view; CQMix images keep the batch's boxes (SR and HR pixels sit at the
    same places).

    Options on top of BasicSR's ``SRModel`` ones (``network_g``, ``path.pretrain_network_g``, ``train.ema_decay``):
        network_task: Task network block (e.g. ``{type: SegUNet, num_classes: 11}``, ``{type: TorchvisionDetNet,
            arch: fasterrcnn_mobilenet_v3_large_fpn, num_classes: 3}``, ``{type: TorchvisionClsNet, arch: resnet18,
            num_classes: 10}``); weights from ``path.pretrain_network_task`` (``param_key_task``, ``strict_load_task``); saved as
            ``net_task``.
        train.update_sr / train.update_task: Run the SR phase / the task phase. Default: true. A network that is
            not updated is frozen (eval mode, no gradient, no optimizer, not DDP-wrapped).
        train.alternate: Two phases per iteration (SR4IR). False: one joint step (S+T). Default: true.
        train.pixel_opt, train.perceptual_opt: SR-phase content losses (BasicSR's).
        train.frequency_opt: Optional SR-phase spectral loss (e.g. :class:`FocalFrequencyLoss`), logged ``l_g_freq``.
        train.tdp_opt: :class:`TDPLoss` block, e.g. ``{type: TDPLoss, layer_weights: {C5: 1.0}}``.
        train.tdp_warmup_iter: Iterations without TDP. Default: 0.
        train.sr_ce_opt: Optional task loss of the frozen task network on SR images, back-propagated into the
            SR network only (the SR4IR code's "T2S" configuration; *SR for my segmenter / detector / classifier*).
        train.sr_ce_views: Optional random views for that loss (segmentation only) (:class:`TaskViews`: ``{scale: [0.75,
            1.25], hflip: true, shift: 8}``): the frozen network sees a rescaled, flipped, shifted SR image and
            labels moved with it, a new draw each step.
        train.task_sr_opt, train.task_hr_opt, train.task_cqmix_opt: Task-phase loss blocks (the task's loss, each
            with its own ``loss_weight``; paper: 0.34 each); absent = view unused.
        train.aux_weight: Weight of the aux head's loss relative to the main head, per view. Default: 0.5.
        train.cqmix: ``{grid: 8, prob: 0.5}``: grid cells per side (int or ``[rows, cols]``) and the probability
            that a cell shows the SR image.
        train.optim_g, train.optim_task: Optimizers (any ``torch.optim`` class: Adam, AdamW, SGD...).
        train.scheduler_g, train.scheduler_task: Schedulers; either falls back to ``train.scheduler``.

    Validation reports PSNR/SSIM (``val.metrics``), the task metrics of this model's task network on SR images
    (``task_miou``; ``task_map_50``; ``task_top1``, ...) and, with ``val.judge``, the judge's (``judge_miou``, ...);
    pictures of both with ``save_img``.
    """

    OPTION_KEYS = {
        '': ('network_task', ),
        'train': ('update_sr', 'update_task', 'alternate', 'frequency_opt', 'sr_ce_opt', 'sr_ce_views', 'task_sr_opt',
                  'task_hr_opt', 'task_cqmix_opt', 'aux_weight', 'cqmix', 'optim_task', 'scheduler_g',
                  'scheduler_task'),
        'train.cqmix': ('grid', 'prob'),
        'train.sr_ce_views': VIEW_KEYS,
    }
    PARTS = (TaskValidator, TDPTerm)

    # ----------------------------------------------------------------------------------------- construction
    def __init__(self, opt: dict) -> None:
        self.net_task: Optional[nn.Module] = None
        self.tdp: Optional[TDPTerm] = None
        super().__init__(opt)  # SRModel builds net_g and, for training, calls init_training_settings
        if self.net_task is None and self.opt['path'].get('pretrain_network_task'):
            self._build_task_network(trainable=False)  # testing: score the trained task network too
        self.task_validator = TaskValidator(self.opt, self.device)

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.update_sr = bool(train_opt.get('update_sr', True))
        self.update_task = bool(train_opt.get('update_task', True))
        self.alternate = bool(train_opt.get('alternate', True))
        self._check_training_options(train_opt)
        self._build_task_network(trainable=self.update_task)
        require_labelled_train_data(self.opt, 'SR4IRModel', self.task)
        self._build_losses(train_opt)
        self.tdp = TDPTerm.from_opt(train_opt, self.get_bare_model(self.net_task), self.device)
        if self.update_sr:
            self.init_ema()
            self.net_g.train()
        else:
            self.ema_decay = 0
            self.net_g = freeze(self.get_bare_model(self.net_g))  # frozen: never DDP-wrapped
        self.setup_optimizers()
        self.setup_schedulers()

    def _check_training_options(self, train_opt: dict) -> None:
        """Refuse option sets that would train nothing or silently ignore a loss."""
        if not (self.update_sr or self.update_task):
            raise ValueError("SR4IRModel: 'train.update_sr' and 'train.update_task' are both false: nothing trains.")
        task_keys = tuple(f'task_{v}_opt' for v in TASK_VIEWS)
        for flag, on, keys, phase in (('update_sr', self.update_sr, SR_LOSSES, 'SR'),
                                      ('update_task', self.update_task, task_keys, 'task')):
            names = [f'train.{k}' for k in keys]
            present = [f'train.{k}' for k in keys if train_opt.get(k)]
            sr_fed_by_task = flag == 'update_sr' and not self.alternate and (train_opt.get('task_sr_opt') or
                                                                           train_opt.get('task_cqmix_opt'))
            if on and not present and not sr_fed_by_task:
                raise ValueError(f"SR4IRModel: 'train.{flag}' is true but no {phase}-phase loss is set; set one of "
                                 f'{names}.')
            if not on and present:
                raise ValueError(f"SR4IRModel: 'train.{flag}' is false, so {present} would be ignored; remove them "
                                 'or set the flag to true.')
        if not self.alternate and not (self.update_sr and self.update_task):
            raise ValueError("SR4IRModel: 'train.alternate: false' (joint training) needs 'train.update_sr' and "
                             "'train.update_task' both true.")

    def _build_task_network(self, trainable: bool) -> None:
        net_opt = self.opt.get('network_task')
        if not isinstance(net_opt, dict) or 'type' not in net_opt:
            raise ValueError("Option 'network_task' (the task network block with a 'type') is required by "
                             'SR4IRModel.')
        path_opt = self.opt['path']
        if trainable:
            self.net_task = self.model_to_device(build_network(net_opt))
            self.load_network_from_path_opt(self.net_task, 'task')
            self.net_task.train()
        else:
            load_path = path_opt.get('pretrain_network_task')
            if load_path is None and not weights_included(net_opt):
                get_root_logger().warning('SR4IRModel: the task network is frozen but '
                                          "'path.pretrain_network_task' is not set: it keeps its initial weights.")
            self.net_task = self.build_frozen_network(net_opt, 'network_task', load_path,
                                                      path_opt.get('param_key_task', 'params'))
        self.print_network(self.net_task)
        bare = self.get_bare_model(self.net_task)
        self.task = task_of_network(bare)
        self.num_classes = int(bare.num_classes)
        check_num_classes(self.opt, self.num_classes, 'network_task.num_classes')

    def _build_losses(self, train_opt: dict) -> None:
        def build(key):
            return build_loss(train_opt[key]).to(self.device) if train_opt.get(key) else None

        self.cri_pix, self.cri_perceptual, self.cri_sr_ce = build('pixel_opt'), build('perceptual_opt'), \
            build('sr_ce_opt')
        self.cri_freq = build('frequency_opt')
        if train_opt.get('sr_ce_views') and self.cri_sr_ce is None:
            raise ValueError("Option 'train.sr_ce_views' needs 'train.sr_ce_opt' (the cross-entropy it augments).")
        if train_opt.get('sr_ce_views') and not self.task.supports_views:
            raise ValueError(f"Option 'train.sr_ce_views' moves label maps with the image; the task network solves "
                             f"'{self.task.name}', which it does not support: remove the option.")
        self.sr_ce_views = TaskViews.from_opt(train_opt.get('sr_ce_views'), getattr(self.cri_sr_ce, 'ignore_index', 255),
                                              'train.sr_ce_views')
        self.cri_task = {view: build(f'task_{view}_opt') for view in TASK_VIEWS}
        for key, criterion in [('sr_ce_opt', self.cri_sr_ce)] + [(f'task_{v}_opt', c) for v, c in self.cri_task.items()]:
            if criterion is not None:
                self.task.check_loss(criterion, f'train.{key}')
        bare = self.get_bare_model(self.net_task)
        self.aux_weight = float(train_opt.get('aux_weight', 0.5)) if getattr(bare, 'has_aux', False) else 0.0
        cqmix_opt = dict(train_opt.get('cqmix') or {})
        unknown = set(cqmix_opt) - {'grid', 'prob'}
        if unknown:
            raise ValueError(f"Option 'train.cqmix' has unknown keys {sorted(unknown)}; known: ['grid', 'prob'].")
        self.cqmix_grid = grid_shape(cqmix_opt.get('grid', 8))
        self.cqmix_prob = float(cqmix_opt.get('prob', 0.5))
        if not 0.0 <= self.cqmix_prob <= 1.0:
            raise ValueError(f"Option 'train.cqmix.prob' = {self.cqmix_prob} is not in [0, 1].")

    def setup_optimizers(self) -> None:
        if self.update_sr:
            self.optimizer_g = self.build_optimizer('optim_g', self.net_g.parameters())
        if self.update_task:
            self.optimizer_task = self.build_optimizer('optim_task', self.net_task.parameters())

    def feed_data(self, data: Dict[str, Tensor]) -> None:
        super().feed_data(data)
        self.feed_labels(data)

    # ------------------------------------------------------------------------------------------ training step
    def optimize_parameters(self, current_iter: int) -> None:
        self.require_labels()
        loss_dict = OrderedDict()
        if not self.alternate:
            self.joint_step(current_iter, loss_dict)
        else:
            if self.update_sr:
                self.sr_step(current_iter, loss_dict)
            if self.update_task:
                self.task_step(loss_dict)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def sr_step(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> None:
        """Phase 1: update the SR network; the task network is frozen and in eval mode."""
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        self.sr_loss(current_iter, loss_dict).backward()
        self.optimizer_g.step()

    def task_step(self, loss_dict: Dict[str, Tensor]) -> None:
        """Phase 2: update the task network on SR (detached, from the current SR network), HR and CQMix images."""
        with torch.no_grad():
            self.output = self.net_g(self.lq)
        self.optimizer_task.zero_grad()
        self.task_loss(self.output, loss_dict).backward()
        self.optimizer_task.step()

    def joint_step(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> None:
        """S+T: one backward of SR-phase + task-phase losses; the task loss on SR reaches the SR network."""
        self.optimizer_g.zero_grad()
        self.optimizer_task.zero_grad()
        self.output = self.net_g(self.lq)
        (self.sr_loss(current_iter, loss_dict) + self.task_loss(self.output, loss_dict)).backward()
        self.optimizer_g.step()
        self.optimizer_task.step()

    def sr_loss(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Content (:func:`content_loss`: ``l_g_pix``, ``l_g_percep``, ``l_g_freq``), TDP and (optional) frozen-task
        cross-entropy of ``self.output``."""
        terms: List[Tensor] = []
        if self.cri_pix or self.cri_perceptual or self.cri_freq:
            terms.append(content_loss(self.output, {'pix': self.gt, 'percep': self.gt}, loss_dict, self.cri_pix,
                                      self.cri_perceptual, self.cri_freq))
        l_tdp = self.tdp.loss(self.output, self.gt, current_iter, loss_dict) if self.tdp is not None else None
        if l_tdp is not None:
            terms.append(l_tdp)
        if self.cri_sr_ce:
            image, targets = self.output, self.targets
            if self.sr_ce_views is not None:
                image, targets = self.sr_ce_views(image, targets)
            loss_dict['l_sr_ce'] = self.task.frozen_loss(self.get_bare_model(self.net_task), image, targets,
                                                         self.cri_sr_ce, self.aux_weight)
            terms.append(loss_dict['l_sr_ce'])
        return sum(terms[1:], terms[0]) if terms else self.output.new_zeros(())

    def task_views(self, sr: Tensor) -> List[Tuple[str, Tensor]]:
        """The task network's training images for this batch: ``(view name, images)`` for the configured views."""
        images = {'sr': lambda: sr, 'hr': lambda: self.gt,
                  'cqmix': lambda: cross_quality_mix(sr, self.gt, self.cqmix_grid, self.cqmix_prob)[0]}
        return [(view, images[view]()) for view in TASK_VIEWS if self.cri_task[view] is not None]

    def task_loss(self, sr: Tensor, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Weighted task loss of the task network on each view (the task decides how the views go through it:
        one forward over all views for logits tasks, one per view for detectors)."""
        views = self.task_views(sr)
        losses = self.task.view_losses(self.net_task, views, self.targets, self.cri_task, self.aux_weight)
        total = None
        for view, _ in views:
            loss_dict[f'l_task_{view}'] = losses[view]
            total = losses[view] if total is None else total + losses[view]
        return total

    # ------------------------------------------------------------------------------------ validation, saving
    def own_predictors(self) -> Dict[str, Predictor]:
        """This model's task network (``task``) when it has one."""
        if self.net_task is None:
            return {}
        return {'task': network_predictor(self.get_bare_model(self.net_task))}

    def saved_networks(self) -> Dict[str, nn.Module]:
        """``net_task`` (saved before ``net_g``, its EMA and the training state with both optimizers)."""
        return {'net_task': self.net_task}

    def test(self) -> None:
        with eval_mode(self.net_g):  # BasicSR's test() leaves net_g training: a frozen SR network stays in eval mode
            super().test()

    def get_current_learning_rate(self) -> List[float]:
        return [optimizer.param_groups[0]['lr'] for optimizer in self.optimizers]

