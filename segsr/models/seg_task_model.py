"""Train a segmentation network through BasicSR's pipeline (the papers' H->T and L->T rows, and the judge)."""
import os
from collections import OrderedDict
from typing import Dict

import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import MODEL_REGISTRY

from segsr.metrics import ConfusionMatrix
from segsr.models.base import SegsrModelMixin, check_num_classes
from segsr.models.task_eval import seg_logits, seg_picture
from segsr.models.validation import class_names_of, log_per_class_iou, log_validation, record_best_metrics
from segsr.utils.visual import save_rgb
from segsr.weights import eval_mode

TASK_INPUTS = ('hr', 'lq_bicubic')


def upsample_bicubic(lq: torch.Tensor, size) -> torch.Tensor:
    """Bicubic upsampling of an LR batch to ``size`` (H, W), clamped to [0, 1] (the L->T input)."""
    return F.interpolate(lq, size=tuple(size), mode='bicubic', align_corners=False).clamp(0, 1)


@MODEL_REGISTRY.register()
class SegTaskModel(SegsrModelMixin, BaseModel):
    """Segmentation network trained on HR images or on bicubic-upsampled LR images.

    Options:
        network_task: Task network block (e.g. ``{type: SegUNet, num_classes: 11}``); saved as ``net_task``. A
            :class:`~segsr.archs.seg_aware_discriminator_arch.SegAwareDiscriminator` (no semantic input) works too:
            its segmentation head (output ``'seg'``) is trained on the task, which warm-starts the segmentation-aware
            GAN's task branch (``path.pretrain_network_d`` = the saved ``net_task``).
        task_input: ``hr`` (H->T, default) or ``lq_bicubic`` (L->T: the dataset's LR image upsampled by bicubic).
        train.seg_opt: Loss block, e.g. ``{type: SegCrossEntropyLoss, ignore_index: 255}``.
        train.aux_weight: Weight of the same loss on the aux head's logits when the net has one. Default: 0.4.
        train.optim_task: Optimizer block (``Adam``, ``AdamW``, ``SGD``, ...); train.scheduler: any scheduler.
        val.metrics: ignored; validation reports ``miou``, ``pixacc``, ``macc`` and per-class IoU.
    """

    OPTION_KEYS = {'': ('task_input', 'network_task'),
                   'train': ('seg_opt', 'aux_weight', 'optim_task', 'scheduler_task')}

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.best_metric_results: Dict[str, Dict[str, dict]] = {}
        self.task_input = opt.get('task_input', 'hr')
        if self.task_input not in TASK_INPUTS:
            raise ValueError(f"Option 'task_input' = '{self.task_input}' is not one of {list(TASK_INPUTS)}.")
        net_opt = opt.get('network_task')
        if not isinstance(net_opt, dict):
            raise ValueError("Option 'network_task' (the segmentation network block) is required by SegTaskModel.")
        self.net_task = build_network(net_opt)
        if getattr(self.net_task, 'semantic_dim', None):
            raise ValueError("Option 'network_task' is a semantic-conditioned discriminator (semantic_dim = "
                             f'{self.net_task.semantic_dim}); SegTaskModel feeds images only: drop semantic_dim.')
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
        if not train_opt.get('seg_opt'):
            raise ValueError("Option 'train.seg_opt' (e.g. {type: SegCrossEntropyLoss}) is required by SegTaskModel.")
        self.cri_seg = build_loss(train_opt['seg_opt']).to(self.device)
        has_aux = getattr(self.bare_net, 'has_aux', False)  # SegAwareDiscriminator: no aux head
        self.aux_weight = float(train_opt.get('aux_weight', 0.4)) if has_aux else 0.0
        self.optimizer_task = self.build_optimizer('optim_task', self.net_task.parameters())
        self.setup_schedulers()

    def feed_data(self, data: Dict[str, torch.Tensor]) -> None:
        self.gt = data['gt'].to(self.device)
        self.lq = data['lq'].to(self.device) if 'lq' in data else None
        if 'seg' not in data:
            raise KeyError("SegTaskModel needs labelled data: the dataset must return 'seg' "
                           '(use PairedImageSegDataset).')
        self.seg = data['seg'].to(self.device)

    def task_image(self) -> torch.Tensor:
        """The image the task network sees: HR, or LR upsampled by bicubic to HR size."""
        if self.task_input == 'hr':
            return self.gt
        if self.lq is None:
            raise KeyError("task_input 'lq_bicubic' needs 'lq' from the dataset.")
        return upsample_bicubic(self.lq, self.gt.shape[-2:])

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_task.zero_grad()
        out = self.net_task(self.task_image())
        loss_dict = OrderedDict()
        l_total = l_seg = self.cri_seg(seg_logits(out), self.seg)
        loss_dict['l_seg'] = l_seg
        if self.aux_weight > 0 and 'aux' in out:
            l_aux = self.aux_weight * self.cri_seg(out['aux'], self.seg)
            l_total = l_total + l_aux
            loss_dict['l_seg_aux'] = l_aux
        l_total.backward()
        self.optimizer_task.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)

    @torch.no_grad()
    def test(self) -> None:
        with eval_mode(self.bare_net) as net:  # bare module: no DDP buffer broadcast on a single validating rank
            self.output = seg_logits(net(self.task_image()))

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        if self.opt['rank'] == 0:
            self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        matrix = ConfusionMatrix(self.num_classes, dataset.opt.get('ignore_index', 255))
        for val_data in dataloader:
            self.feed_data(val_data)
            self.test()
            matrix.update(self.output, self.seg)
            if save_img:
                self._save_prediction(val_data, current_iter, dataset_name, getattr(dataset, 'palette', None))
        res = matrix.compute()
        self.metric_results = {'miou': res.miou, 'pixacc': res.pixel_acc, 'macc': res.mean_acc}
        record_best_metrics(self.best_metric_results, None, dataset_name, self.metric_results, current_iter)
        log_validation(f'Validation {dataset_name} ({self.task_input} input)', dataset_name, self.metric_results,
                       self.best_metric_results, current_iter, tb_logger)
        log_per_class_iou({'task_iou': res.iou}, dataset_name, class_names_of(dataset))

    def _save_prediction(self, val_data, current_iter, dataset_name, palette) -> None:
        img_name = os.path.splitext(os.path.basename(val_data['gt_path'][0]))[0]
        folder = os.path.join(self.opt['path']['visualization'], img_name if self.opt['is_train'] else dataset_name)
        panel = seg_picture(self.task_image(), self.output.argmax(1)[0].cpu().numpy(), self.seg, palette,
                            self.num_classes, 'prediction', image_caption=f'{self.task_input} input')
        save_rgb(os.path.join(folder, f'{img_name}_{current_iter}_seg.png'), panel)

    def get_current_visuals(self) -> Dict[str, torch.Tensor]:
        return OrderedDict(input=self.task_image().detach().cpu(), pred=self.output.argmax(1).detach().cpu(),
                           seg=self.seg.detach().cpu())

    def saved_networks(self) -> Dict[str, torch.nn.Module]:
        return {'net_task': self.net_task}

    def save(self, epoch: int, current_iter: int) -> None:
        super().save(epoch, current_iter)  # net_task
        self.save_training_state(epoch, current_iter)
