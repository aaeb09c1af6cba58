"""Train a task network (segmentation, detection, classification) through BasicSR's pipeline: the papers' H->T and
L->T rows, and the judges."""
import os
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import MODEL_REGISTRY

from segsr.models.base import SegsrModelMixin, check_num_classes
from segsr.models.task_eval import predictor_output
from segsr.models.validation import class_names_of, log_per_class_iou, log_validation, record_best_metrics
from segsr.tasks import task_of_network
from segsr.utils.visual import save_rgb
from segsr.weights import eval_mode

TASK_INPUTS = ('hr', 'lq_bicubic')


def upsample_bicubic(lq: torch.Tensor, size) -> torch.Tensor:
    """Bicubic upsampling of an LR batch to ``size`` (H, W), clamped to [0, 1] (the L->T input)."""
    return F.interpolate(lq, size=tuple(size), mode='bicubic', align_corners=False).clamp(0, 1)


@MODEL_REGISTRY.register()
class SegTaskModel(SegsrModelMixin, BaseModel):
    """A task network trained on HR images or on bicubic-upsampled LR images (any task: the network's ``task``).

    Options:
        network_task: Task network block (e.g. ``{type: SegUNet, num_classes: 11}``, ``{type: TorchvisionDetNet,
            ...}``, ``{type: TorchvisionClsNet, ...}``); saved as ``net_task``. A
            :class:`~segsr.archs.seg_aware_discriminator_arch.SegAwareDiscriminator` (no semantic input) works too:
            its segmentation head (output ``'seg'``) is trained on the task, which warm-starts the segmentation-aware
            GAN's task branch (``path.pretrain_network_d`` = the saved ``net_task``).
        task_input: ``hr`` (H->T, default) or ``lq_bicubic`` (L->T: the dataset's LR image upsampled by bicubic).
        train.seg_opt / train.task_opt: The task loss block (one of them), e.g. ``{type: SegCrossEntropyLoss,
            ignore_index: 255}``, ``{type: DetectionLoss}``, ``{type: ClassCrossEntropyLoss}``; logged ``l_<task>``.
        train.aux_weight: Weight of the same loss on the aux head's logits when the net has one. Default: 0.4.
        train.optim_task: Optimizer block (``Adam``, ``AdamW``, ``SGD``, ...); train.scheduler: any scheduler.
        val.metrics: ignored; validation reports the task's metrics (``miou``, ``pixacc``, ``macc`` and per-class
            IoU; ``map``, ``map_50``, ``map_75`` and per-class AP; ``top1``, ``top5`` and per-class accuracy).
    """

    OPTION_KEYS = {'': ('task_input', 'network_task'),
                   'train': ('seg_opt', 'task_opt', 'aux_weight', 'optim_task', 'scheduler_task')}

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.best_metric_results: Dict[str, Dict[str, dict]] = {}
        self.task_input = opt.get('task_input', 'hr')
        if self.task_input not in TASK_INPUTS:
            raise ValueError(f"Option 'task_input' = '{self.task_input}' is not one of {list(TASK_INPUTS)}.")
        net_opt = opt.get('network_task')
        if not isinstance(net_opt, dict):
            raise ValueError("Option 'network_task' (the task network block) is required by SegTaskModel.")
        self.net_task = build_network(net_opt)
        if getattr(self.net_task, 'semantic_dim', None):
            raise ValueError("Option 'network_task' is a semantic-conditioned discriminator (semantic_dim = "
                             f'{self.net_task.semantic_dim}); SegTaskModel feeds images only: drop semantic_dim.')
        self.task = task_of_network(self.net_task)
        self.num_classes = int(self.net_task.num_classes)
        check_num_classes(opt, self.num_classes, 'network_task.num_classes')
        self.net_task = self.model_to_device(self.net_task)
        self.print_network(self.net_task)
        self.load_network_from_path_opt(self.net_task, 'task')
        if self.is_train:
            self.init_training_settings()

    @property
    def bare_net(self) -> torch.nn.Module:
        return self.get_bare_model(self.net_task)

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.net_task.train()
        given = [key for key in ('seg_opt', 'task_opt') if train_opt.get(key)]
        if len(given) != 1:
            raise ValueError("SegTaskModel needs exactly one loss block, 'train.seg_opt' or 'train.task_opt' (e.g. "
                             f"{{type: {self.task.loss_types[0]}}}); got {['train.' + k for k in given] or 'none'}.")
        self.cri_task = build_loss(train_opt[given[0]]).to(self.device)
        self.task.check_loss(self.cri_task, f'train.{given[0]}')
        has_aux = getattr(self.bare_net, 'has_aux', False)  # SegAwareDiscriminator: no aux head
        self.aux_weight = float(train_opt.get('aux_weight', 0.4)) if has_aux else 0.0
        self.optimizer_task = self.build_optimizer('optim_task', self.net_task.parameters())
        self.setup_schedulers()

    def feed_data(self, data: Dict[str, torch.Tensor]) -> None:
        self.gt = data['gt'].to(self.device)
        self.lq = data['lq'].to(self.device) if 'lq' in data else None
        self.feed_labels(data)
        if self.targets is None:
            raise KeyError(f"SegTaskModel needs labelled data: the dataset must return "
                           f"'{self.task.target_keys[0]}' (use {' or '.join(self.task.dataset_types)}).")

    def task_image(self) -> torch.Tensor:
        """The image the task network sees: HR, or LR upsampled by bicubic to HR size."""
        if self.task_input == 'hr':
            return self.gt
        if self.lq is None:
            raise KeyError("task_input 'lq_bicubic' needs 'lq' from the dataset.")
        return upsample_bicubic(self.lq, self.gt.shape[-2:])

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_task.zero_grad()
        terms = self.task.loss_terms(self.net_task, self.task_image(), self.targets, self.cri_task, self.aux_weight)
        loss_dict = OrderedDict((f'l_{self.task.name}' + (f'_{name}' if name else ''), value)
                                for name, value in terms.items())
        sum(loss_dict.values()).backward()
        self.optimizer_task.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)

    @torch.no_grad()
    def test(self) -> None:
        with eval_mode(self.bare_net) as net:  # bare module: no DDP buffer broadcast on a single validating rank
            self.output = predictor_output(net(self.task_image()))

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        meter = self.task.meter(self.num_classes, dataset.opt.get('ignore_index', 255), class_names_of(dataset))
        for val_data in dataloader:
            self.feed_data(val_data)
            self.test()
            prediction = meter.add(self.output, self.targets)
            if save_img:
                self._save_prediction(val_data, prediction, current_iter, dataset)
        summary = meter.summary()
        self.metric_results = {k: float(v) for k, v in summary.items() if not isinstance(v, list)}
        record_best_metrics(self.best_metric_results, None, dataset_name, self.metric_results, current_iter)
        log_validation(f'Validation {dataset_name} ({self.task_input} input)', dataset_name, self.metric_results,
                       self.best_metric_results, current_iter, tb_logger)
        log_per_class_iou({f'task_{k}': v for k, v in summary.items() if isinstance(v, list)}, dataset_name,
                          class_names_of(dataset))

    def _save_prediction(self, val_data, prediction, current_iter, dataset) -> None:
        img_name = os.path.splitext(os.path.basename(val_data['gt_path'][0]))[0]
        folder = os.path.join(self.opt['path']['visualization'], img_name if self.opt['is_train'] else dataset.opt['name'])
        panel = self.task.picture(self.task_image(), prediction, self.targets, self.num_classes,
                                  getattr(dataset, 'palette', None), class_names_of(dataset), 'prediction',
                                  f'{self.task_input} input')
        save_rgb(os.path.join(folder, f'{img_name}_{current_iter}{self.task.picture_suffix()}.png'), panel)

    def get_current_visuals(self) -> Dict[str, torch.Tensor]:
        return OrderedDict(input=self.task_image().detach().cpu())

    def saved_networks(self) -> Dict[str, torch.nn.Module]:
        return {'net_task': self.net_task}

    def save(self, epoch: int, current_iter: int) -> None:
        super().save(epoch, current_iter)  # net_task
        self.save_training_state(epoch, current_iter)
