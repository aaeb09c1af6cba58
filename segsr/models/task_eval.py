"""Task-aware validation shared by every SR model and by the evaluation command.

One mechanism scores SR outputs: PSNR/SSIM (and any other BasicSR metric) through BasicSR's own
``calculate_metric``, plus mIoU / pixel accuracy of one or more segmentation *predictors* run on the SR image
(the frozen judge, a method's own task network, a discriminator's task head), each with a confusion matrix
accumulated over the whole set. Optional pictures: SR | predicted segmentation | ground-truth segmentation.

Option block (``val.judge``)::

    judge:
      network: {type: SegUNet, num_classes: 11}   # any registered task network
      path: experiments/judge/models/net_task_latest.pth
      param_key: params                           # default: params
"""
import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from torch import Tensor, nn

from segsr.metrics import ConfusionMatrix
from segsr.models.base import check_num_classes, freeze, load_checkpoint, weights_included
from segsr.utils.visual import colorize, make_panel, save_rgb, tensor_to_rgb

Predictor = Callable[[torch.Tensor], torch.Tensor]
_NEEDS_REFERENCE = ('calculate_psnr', 'calculate_ssim', 'calculate_psnr_pt', 'calculate_ssim_pt')
_UNDEFINED_OK = ('calculate_niqe', )  # metrics that can be undefined on an image: averaged over the others


def build_judge(judge_opt: dict, device: torch.device, option_name: str = 'val.judge') -> nn.Module:
    """Build the frozen judge network from a ``val.judge`` block (checkpoint required)."""
    from basicsr.archs import build_network

    if not isinstance(judge_opt, dict) or not isinstance(judge_opt.get('network'), dict):
        raise ValueError(f"Option '{option_name}' must contain a 'network' block with a 'type'.")
    if not judge_opt.get('path') and not weights_included(judge_opt['network']):
        raise ValueError(f"Option '{option_name}.path' is required: the judge must be a trained checkpoint.")
    net = build_network(judge_opt['network'])
    if judge_opt.get('path'):
        load_checkpoint(net, judge_opt['path'], judge_opt.get('param_key', 'params'), f'{option_name}.path')
    return freeze(net.to(device))


def seg_logits(out: Union[Tensor, Dict[str, Tensor]]) -> Tensor:
    """Class logits of a task network's output: ``out['out']``, a segmentation-aware discriminator's ``out['seg']``,
    or plain logits."""
    if not isinstance(out, dict):
        return out
    return out['out'] if 'out' in out else out['seg']


def network_predictor(net: nn.Module) -> Predictor:
    """Wrap a task network (``forward(x)['out']``, a task-branch discriminator's ``['seg']`` or plain logits) as a
    predictor returning logits.

    The network runs in eval mode (a network that is training, e.g. SR4IR's task net, is put back afterwards).
    """

    def predict(img: torch.Tensor) -> torch.Tensor:
        was_training = net.training
        net.eval()
        try:
            out = net(img)
        finally:
            net.train(was_training)
        return seg_logits(out)

    return predict


class TaskScorer:
    """Accumulates image metrics and per-predictor confusion matrices over a set.

    Args:
        metrics_opt: BasicSR metric blocks (``val.metrics``), e.g. ``{psnr: {type: calculate_psnr, crop_border: 4}}``.
        predictors: ``name -> callable(sr) -> logits``; results are reported as ``<name>_miou`` / ``<name>_pixacc``.
        num_classes: Number of scored classes.
        ignore_index: Ignored label value. Default: 255.
    """

    def __init__(self, metrics_opt: Optional[dict], predictors: Dict[str, Predictor], num_classes: Optional[int],
                 ignore_index: int = 255) -> None:
        self.metrics_opt = dict(metrics_opt or {})
        self.predictors = dict(predictors)
        if self.predictors and not num_classes:
            raise ValueError('TaskScorer: num_classes is required to score segmentation predictors.')
        self.matrices = {name: ConfusionMatrix(num_classes, ignore_index) for name in self.predictors}
        self.image_matrices: Dict[str, List[np.ndarray]] = {name: [] for name in self.predictors}
        self.sums = {name: 0.0 for name in self.metrics_opt}
        self.counts = {name: 0 for name in self.metrics_opt}
        self.count = 0

    @torch.no_grad()
    def add(self, sr: torch.Tensor, gt: Optional[torch.Tensor] = None,
            seg: Optional[torch.Tensor] = None) -> Dict[str, object]:
        """Score one SR image (``1 x 3 x H x W`` in [0, 1]).

        Returns:
            Per-image record: metric values and ``<name>_pred`` (``H x W`` label map) for each predictor.
        """
        record: Dict[str, object] = {}
        sr = sr.clamp(0, 1)
        data = {'img': tensor2img([sr.detach().cpu()])}
        if gt is not None:
            data['img2'] = tensor2img([gt.detach().cpu()])
        for name, m_opt in self.metrics_opt.items():
            if 'img2' not in data and m_opt.get('type') in _NEEDS_REFERENCE:
                continue
            try:
                value = float(calculate_metric(data, m_opt))
            except (np.linalg.LinAlgError, ValueError) as err:  # NIQE of a flat image: not a failure
                if m_opt.get('type') not in _UNDEFINED_OK:
                    raise
                get_root_logger().warning(f'{name} is undefined for this image ({err}); left out of its mean.')
                record[name] = float('nan')
                continue
            record[name] = value
            self.sums[name] += value
            self.counts[name] += 1
        for name, predict in self.predictors.items():
            pred = predict(sr).argmax(dim=1)
            record[f'{name}_pred'] = pred[0].cpu().numpy()
            if seg is not None:  # per-image matrices too: set-level intervals resample images (segsr.metrics.bootstrap)
                self.image_matrices[name].append(self.matrices[name].update(pred, seg.to(pred.device)).numpy())
        self.count += 1
        return record

    def summary(self) -> Dict[str, object]:
        """Averages of image metrics and ``<name>_miou``, ``<name>_pixacc``, ``<name>_iou`` (per class).

        A metric undefined on some images (NIQE of a flat image) is averaged over the others (NaN if none).
        """
        out: Dict[str, object] = OrderedDict()
        for name, total in self.sums.items():
            out[name] = total / self.counts[name] if self.counts[name] else float('nan')
        for name, matrix in self.matrices.items():
            res = matrix.compute()
            out[f'{name}_miou'] = res.miou
            out[f'{name}_pixacc'] = res.pixel_acc
            out[f'{name}_iou'] = res.iou
        return out


def seg_picture(sr: torch.Tensor, pred: np.ndarray, seg: Optional[torch.Tensor], palette=None,
                num_classes: Optional[int] = None, pred_caption: str = 'judge', image_caption: str = 'SR') -> np.ndarray:
    """Panel ``SR | predicted segmentation | ground-truth segmentation`` (palette-coloured) as RGB uint8."""
    images = [tensor_to_rgb(sr), colorize(pred, palette, num_classes)]
    captions = [image_caption, pred_caption]
    if seg is not None:
        images.append(colorize(seg.reshape(seg.shape[-2:]).cpu().numpy(), palette, num_classes))
        captions.append('ground truth')
    return make_panel(images, captions)


class TaskValidationMixin:
    """Task-aware ``nondist_validation`` for SR models (``SRModel`` subclasses).

    Logs the ``val.metrics`` (PSNR/SSIM...) next to ``judge_miou`` / ``judge_pixacc`` when ``val.judge`` is set, plus
    any predictors a model adds through :meth:`task_predictors`. With ``save_img``, saves the SR image as BasicSR
    does and, with a judge, a ``*_seg.png`` panel SR | judge prediction | ground truth.
    """

    OPTION_KEYS = {'val': ('judge', 'metrics', 'suffix'), 'val.judge': ('network', 'path', 'param_key')}

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        self.init_task_validation()

    def init_task_validation(self) -> None:
        """Build the judge at model build time so a bad ``val.judge`` fails before training starts."""
        val_opt = self.opt.get('val') or {}
        self.judge = None
        judge_opt = val_opt.get('judge')
        if judge_opt:
            declared = (judge_opt.get('network') or {}).get('num_classes') if isinstance(judge_opt, dict) else None
            if declared is not None:  # before loading: a clearer message than a state-dict size mismatch
                check_num_classes(self.opt, declared, 'val.judge.network.num_classes')
            self.judge = build_judge(judge_opt, self.device)
            check_num_classes(self.opt, self.judge.num_classes, 'val.judge.network.num_classes')

    def task_predictors(self) -> Dict[str, Predictor]:
        """Segmentation predictors run on SR outputs during validation (override to add more)."""
        return {'judge': network_predictor(self.judge)} if getattr(self, 'judge', None) is not None else {}

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name']
        predictors = self.task_predictors()
        num_classes = dataset.opt.get('num_classes')
        scorer = TaskScorer(self.opt['val'].get('metrics'), predictors, num_classes,
                            dataset.opt.get('ignore_index', 255))
        palette = getattr(dataset, 'palette', None)
        for val_data in dataloader:
            img_name = os.path.splitext(os.path.basename(val_data['lq_path'][0]))[0]
            self.feed_data(val_data)
            self.test()
            seg = val_data.get('seg')
            record = scorer.add(self.output, getattr(self, 'gt', None), seg)
            if save_img:
                self._save_task_images(img_name, current_iter, dataset_name, record, seg, palette, num_classes)
            for attr in ('lq', 'gt', 'output'):
                if hasattr(self, attr):
                    delattr(self, attr)
        self._finish_task_validation(scorer.summary(), current_iter, dataset_name, tb_logger, class_names_of(dataset))

    def _save_task_images(self, img_name, current_iter, dataset_name, record, seg, palette, num_classes) -> None:
        if self.opt['is_train']:
            base = os.path.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}')
        else:
            suffix = self.opt['val'].get('suffix') or self.opt['name']
            base = os.path.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}')
        save_rgb(base + '.png', tensor_to_rgb(self.output))
        for name in self.task_predictors():
            panel = seg_picture(self.output, record[f'{name}_pred'], seg, palette, num_classes, name)
            save_rgb(f'{base}_{name}_seg.png', panel)

    def _finish_task_validation(self, summary: Dict[str, object], current_iter, dataset_name, tb_logger,
                                class_names: Optional[Sequence[str]] = None) -> None:
        scalars = {k: float(v) for k, v in summary.items() if not isinstance(v, list)}
        self.metric_results = scalars
        record_best_metrics(self, dataset_name, scalars, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        log_per_class_iou(summary, dataset_name, class_names)


def record_best_metrics(model, dataset_name: str, scalars: Dict[str, float], current_iter) -> None:
    """BasicSR-style best-metric bookkeeping for any set of scalars (``val.metrics.<name>.better`` respected)."""
    metrics_opt = model.opt['val'].get('metrics') or {}
    if not hasattr(model, 'best_metric_results'):
        model.best_metric_results = {}
    record = model.best_metric_results.setdefault(dataset_name, {})
    for name, value in scalars.items():
        better = (metrics_opt.get(name) or {}).get('better', 'higher')
        entry = record.setdefault(name, dict(better=better, val=float('-inf') if better == 'higher' else float('inf'),
                                             iter=-1))
        improved = value >= entry['val'] if better == 'higher' else value <= entry['val']
        if improved:
            entry['val'], entry['iter'] = value, current_iter


def log_per_class_iou(summary: Dict[str, object], dataset_name: str,
                      class_names: Optional[Sequence[str]] = None) -> None:
    """Log each predictor's per-class IoU on one line."""
    logger = get_root_logger()
    for key, values in summary.items():
        if key.endswith('_iou') and isinstance(values, list):
            names = class_names or [str(i) for i in range(len(values))]
            parts = ', '.join(f'{n}: {v:.1f}' if not np.isnan(v) else f'{n}: n/a' for n, v in zip(names, values))
            logger.info(f'Per-class IoU ({key[:-4]}) on {dataset_name}: {parts}')


def class_names_of(dataset) -> Optional[List[str]]:
    """Class names a dataset declares (``dataset.class_names``), if any."""
    return getattr(dataset, 'class_names', None)
