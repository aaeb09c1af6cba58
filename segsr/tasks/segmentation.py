"""Semantic segmentation: label maps, pixel cross-entropy, mIoU from confusion matrices, palette pictures."""
from typing import Dict, List, Optional

import numpy as np
import torch

from segsr.metrics import ConfusionMatrix
from segsr.metrics.bootstrap import paired_block_bootstrap
from segsr.tasks.base import LogitsTask, Meter, register_task
from segsr.utils.visual import colorize, make_panel, tensor_to_rgb


class SegMeter(Meter):
    """mIoU / pixel accuracy / mean class accuracy / per-class IoU of one predictor from a confusion matrix over the set; per-image
    matrices for the paired block bootstrap.

    Args:
        num_classes: Number of scored classes.
        ignore_index: Label that is not scored.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.matrix = ConfusionMatrix(num_classes, ignore_index)
        self.matrices: List[np.ndarray] = []

    def add(self, prediction: torch.Tensor, targets: Optional[torch.Tensor]) -> np.ndarray:
        """Add one image's logits (``1 x C x H x W``); returns its label map (``H x W``)."""
        pred = prediction.argmax(dim=1)
        if targets is not None:
            self.matrices.append(self.matrix.update(pred, targets.to(pred.device)).numpy())
        return pred[0].cpu().numpy()

    def summary(self) -> Dict[str, object]:
        res = self.matrix.compute()
        return {'miou': res.miou, 'pixacc': res.pixel_acc, 'macc': res.mean_acc, 'iou': res.iou}

    def image_stats(self) -> List[np.ndarray]:
        """Per-image confusion matrices, in :meth:`add` order."""
        return self.matrices


@register_task
class SegmentationTask(LogitsTask):
    """Targets: ``seg`` (``B x H x W`` int64 label map, ``ignore_index`` unscored). Losses:
    :class:`~segsr.losses.seg_loss.SegCrossEntropyLoss`. Metric: mIoU."""

    name = 'seg'
    target_keys = ('seg', )
    dataset_types = ('PairedImageSegDataset', )
    main_metric = 'miou'
    loss_types = ('SegCrossEntropyLoss', 'TaskAdversarialLoss')
    supports_views = True
    report_metrics = (('miou', 'mIoU'), ('pixacc', 'pixel acc'))

    def targets(self, data, device):
        return data['seg'].to(device) if 'seg' in data else None

    def random_targets(self, batch, height, width, num_classes, generator=None):
        return {'seg': torch.randint(0, int(num_classes), (batch, height, width), generator=generator)}

    def loss_block(self, loss_weight=1.0, ignore_index=255):
        return dict(type='SegCrossEntropyLoss', loss_weight=float(loss_weight), ignore_index=int(ignore_index))

    def meter(self, num_classes, ignore_index=255, class_names=None):
        return SegMeter(num_classes, ignore_index)

    def interval(self, stats, reference, block=10, samples=2000, level=0.95, seed=0):
        """Blocks of ``block`` consecutive frames (video), mIoU from the summed confusion matrices of each draw."""
        return paired_block_bootstrap(stats, reference, int(block), int(samples), float(level), int(seed))

    def picture(self, image, prediction, targets, num_classes, palette=None, class_names=None, caption='judge',
                image_caption='SR'):
        """Panel ``image | predicted label map | ground truth`` (palette colours)."""
        images = [tensor_to_rgb(image), colorize(prediction, palette, num_classes)]
        captions = [image_caption, caption]
        if targets is not None:
            images.append(colorize(targets.reshape(targets.shape[-2:]).cpu().numpy(), palette, num_classes))
            captions.append('ground truth')
        return make_panel(images, captions)

    def truth_picture(self, image, targets, num_classes, palette=None, class_names=None, image_caption='HR'):
        label = targets.reshape(targets.shape[-2:]).cpu().numpy()
        return make_panel([colorize(label, palette, num_classes)], [f'{image_caption} ground truth'])
