"""Image classification: class indices, cross-entropy of image logits, top-k accuracy, captioned pictures."""
from typing import Dict

import numpy as np
import torch

from segsr.metrics.bootstrap import paired_image_bootstrap
from segsr.metrics.cls_metrics import ClassificationScores
from segsr.tasks.base import LogitsTask, Meter, register_task
from segsr.utils.visual import make_panel, tensor_to_rgb


class ClsMeter(Meter):
    """Top-1 / top-5 and per-class accuracy of one predictor (:class:`ClassificationScores`); per-image ranks of
    the true class for the paired image bootstrap.

    Args:
        num_classes: Number of classes.
        class_names: Names for the per-class keys.
    """

    def __init__(self, num_classes: int, class_names=None) -> None:
        self.scores = ClassificationScores(num_classes, topk=(1, min(5, num_classes)), class_names=class_names)

    def add(self, prediction: torch.Tensor, targets) -> Dict[str, object]:
        """Add one image's logits (``1 x C``); returns ``{'label': predicted class, 'prob': its probability, 'top':
        [(class, probability)] of the five most likely}``."""
        probs = prediction.float().softmax(dim=1)[0].cpu()
        if targets is not None:
            self.scores.add(prediction[0].float().cpu(), targets.reshape(-1)[0].cpu())
        top = probs.topk(min(5, probs.numel()))
        ranked = [(int(i), float(p)) for p, i in zip(top.values, top.indices)]
        return {'label': ranked[0][0], 'prob': ranked[0][1], 'top': ranked}

    def summary(self):
        out = self.scores.summary()
        out.pop('num_images')
        return out

    def image_stats(self) -> np.ndarray:
        """Per-image rank of the true class (0: top-1 correct)."""
        return self.scores.ranks()


@register_task
class ClassificationTask(LogitsTask):
    """Targets: ``label`` (``B`` int64 class indices). Losses: :class:`~segsr.losses.cls_loss.ClassCrossEntropyLoss`.
    Metric: top-1 accuracy (and top-5)."""

    name = 'cls'
    target_keys = ('label', )
    dataset_types = ('PairedImageClsDataset', )
    main_metric = 'top1'
    loss_types = ('ClassCrossEntropyLoss', )
    report_metrics = (('top1', 'top-1'), ('top5', 'top-5'))  # top5: n/a with fewer than 5 classes

    def targets(self, data, device):
        return data['label'].reshape(-1).to(device) if 'label' in data else None

    def random_targets(self, batch, height, width, num_classes, generator=None):
        return {'label': torch.randint(0, int(num_classes), (batch, ), generator=generator)}

    def loss_block(self, loss_weight=1.0, ignore_index=255):
        return dict(type='ClassCrossEntropyLoss', loss_weight=float(loss_weight))

    def meter(self, num_classes, ignore_index=255, class_names=None):
        return ClsMeter(num_classes, class_names)

    def interval(self, stats, reference, block=1, samples=2000, level=0.95, seed=0):
        """Independent images: the paired image bootstrap of top-1 accuracy (``block`` is not used)."""
        ranks, ref = np.asarray(stats), np.asarray(reference)
        if ranks.shape != ref.shape:
            raise ValueError(f'paired bootstrap: {ranks.shape} and {ref.shape} are not the same images.')
        return paired_image_bootstrap(lambda idx: 100.0 * float(np.mean(ranks[idx] < 1)),
                                      lambda idx: 100.0 * float(np.mean(ref[idx] < 1)), len(ranks), int(samples),
                                      float(level), int(seed))

    def picture(self, image, prediction, targets, num_classes, palette=None, class_names=None, caption='judge',
                image_caption='SR'):
        """The image, captioned with the predicted class, its probability and the true class."""
        names = class_names or [str(i) for i in range(num_classes)]
        text = f"{caption}: {names[prediction['label']]} {100 * prediction['prob']:.0f}%"
        if targets is not None:
            truth = int(targets.reshape(-1)[0])
            text += f" ({'right' if truth == prediction['label'] else 'true: ' + names[truth]})"
        return make_panel([tensor_to_rgb(image)], [f'{image_caption} | {text}'])

    def truth_picture(self, image, targets, num_classes, palette=None, class_names=None, image_caption='HR'):
        names = class_names or [str(i) for i in range(num_classes)]
        return make_panel([tensor_to_rgb(image)], [f'{image_caption} | true: {names[int(targets.reshape(-1)[0])]}'])

    def to_json(self, prediction, class_names):
        return {'class': class_names[prediction['label']], 'probability': prediction['prob'],
                'top5': [{'class': class_names[i], 'probability': p} for i, p in prediction['top']]}
