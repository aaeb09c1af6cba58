"""Scoring SR outputs for a recognition task: shared by the models' validation and by the evaluation command.

One mechanism scores SR outputs: PSNR/SSIM (and any other BasicSR metric) through BasicSR's own
``calculate_metric``, plus the task metric of one or more *predictors* run on the SR image (the frozen judge, a
method's own task network, a discriminator's task head), each with the task's meter (:mod:`segsr.tasks`: a confusion
matrix for mIoU, COCO mAP, top-k accuracy) accumulated over the whole set. Optional pictures: the task's panels.

Option block (``val.judge``)::

    judge:
      network: {type: SegUNet, num_classes: 11}   # any registered task network
      path: experiments/judge/models/net_task_latest.pth
      param_key: params                           # default: params
"""
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from torch import nn

from segsr.tasks import Predictor, Task, get_task, predictor_output
from segsr.weights import eval_mode, freeze, load_checkpoint, weights_included
_NEEDS_REFERENCE = ('calculate_psnr', 'calculate_ssim', 'calculate_psnr_pt', 'calculate_ssim_pt', 'calculate_grid_share')
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


seg_logits = predictor_output  # the name segmentation callers know


def network_predictor(net: nn.Module) -> Predictor:
    """Wrap a task network (``forward(x)['out']``, a task-branch discriminator's ``['seg']`` or plain logits) as a
    predictor returning its prediction (logits; a detector's list of box dicts).

    The network runs in eval mode (a network that is training, e.g. SR4IR's task net, is put back afterwards).
    """

    def predict(img: torch.Tensor) -> torch.Tensor:
        with eval_mode(net):
            return predictor_output(net(img))

    return predict


def discriminator_predictor(net_d: nn.Module, semantic_net: Optional[nn.Module] = None) -> Predictor:
    """A task-branch discriminator's segmentation head as a predictor; with ``semantic_net``, the discriminator gets
    the semantics of the image it segments (SeD conditioning under the SR image's own semantics)."""
    if semantic_net is None:
        return net_d.segment
    return lambda img: net_d.segment(img, semantic=semantic_net(img))


class TaskScorer:
    """Accumulates image metrics and, per predictor, the task's :class:`~segsr.tasks.base.Meter` over a set.

    Args:
        metrics_opt: BasicSR metric blocks (``val.metrics``), e.g. ``{psnr: {type: calculate_psnr, crop_border: 4}}``.
        predictors: ``name -> callable(sr) -> prediction``; results are reported as ``<name>_<metric>`` (``miou``,
            ``pixacc``; ``map``, ``map_50``; ``top1``, ``top5``; see the task's meter).
        num_classes: Number of scored classes.
        ignore_index: Ignored label value (segmentation). Default: 255.
        task: The task the predictors solve. Default: segmentation.
        class_names: Class names for per-class keys (detection, classification).
    """

    def __init__(self, metrics_opt: Optional[dict], predictors: Dict[str, Predictor], num_classes: Optional[int],
                 ignore_index: int = 255, task: Optional[Task] = None,
                 class_names: Optional[Sequence[str]] = None) -> None:
        self.metrics_opt = dict(metrics_opt or {})
        self.predictors = dict(predictors)
        self.task = task or get_task('seg')
        if self.predictors and not num_classes:
            raise ValueError('TaskScorer: num_classes is required to score task predictors.')
        self.meters = {name: self.task.meter(num_classes, ignore_index, class_names) for name in self.predictors}
        self.sums = {name: 0.0 for name in self.metrics_opt}
        self.counts = {name: 0 for name in self.metrics_opt}
        self.count = 0

    @property
    def image_matrices(self) -> Dict[str, object]:
        """Per-image statistics of each predictor (segmentation: confusion matrices) for set-level intervals."""
        return {name: meter.image_stats() for name, meter in self.meters.items()}

    def _add_metrics(self, data: Dict[str, np.ndarray], record: Dict[str, object]) -> None:
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

    @torch.no_grad()
    def add(self, sr: torch.Tensor, gt: Optional[torch.Tensor] = None, targets=None) -> Dict[str, object]:
        """Score one SR image (``1 x 3 x H x W`` in [0, 1]) against its targets (the task's, on any device).

        Returns:
            Per-image record: metric values and ``<name>_pred`` (the prediction as the task's pictures need it:
            a label map, the detections, the predicted class) for each predictor.
        """
        record: Dict[str, object] = {}
        sr = sr.clamp(0, 1)
        data = {'img': tensor2img([sr.detach().cpu()])}
        if gt is not None:
            data['img2'] = tensor2img([gt.detach().cpu()])
        self._add_metrics(data, record)
        for name, predict in self.predictors.items():
            record[f'{name}_pred'] = self.meters[name].add(predict(sr), targets)
        self.count += 1
        return record

    def summary(self) -> Dict[str, object]:
        """Averages of image metrics and each predictor's ``<name>_<metric>`` (per-class values as lists).

        A metric undefined on some images (NIQE of a flat image) is averaged over the others (NaN if none).
        """
        out: Dict[str, object] = OrderedDict()
        for name, total in self.sums.items():
            out[name] = total / self.counts[name] if self.counts[name] else float('nan')
        for name, meter in self.meters.items():
            out.update({f'{name}_{key}': value for key, value in meter.summary().items()})
        return out


def seg_picture(sr: torch.Tensor, pred: np.ndarray, seg: Optional[torch.Tensor], palette=None,
                num_classes: Optional[int] = None, pred_caption: str = 'judge', image_caption: str = 'SR') -> np.ndarray:
    """Panel ``SR | predicted segmentation | ground-truth segmentation`` (palette-coloured) as RGB uint8."""
    return get_task('seg').picture(sr, pred, seg, num_classes, palette, None, pred_caption, image_caption)
