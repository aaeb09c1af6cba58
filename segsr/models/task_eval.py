"""Scoring SR outputs for a segmentation task: shared by the models' validation and by the evaluation command.

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
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from torch import Tensor, nn

from segsr.metrics import ConfusionMatrix
from segsr.weights import eval_mode, freeze, load_checkpoint, weights_included
from segsr.utils.visual import colorize, make_panel, tensor_to_rgb

Predictor = Callable[[torch.Tensor], torch.Tensor]
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
        with eval_mode(net):
            return seg_logits(net(img))

    return predict


def discriminator_predictor(net_d: nn.Module, semantic_net: Optional[nn.Module] = None) -> Predictor:
    """A task-branch discriminator's segmentation head as a predictor; with ``semantic_net``, the discriminator gets
    the semantics of the image it segments (SeD conditioning under the SR image's own semantics)."""
    if semantic_net is None:
        return net_d.segment
    return lambda img: net_d.segment(img, semantic=semantic_net(img))


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
