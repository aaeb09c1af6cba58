"""Object detection: boxes, the detector's own losses, COCO mAP, pictures with boxes drawn.

Boxes are pixel ``x1, y1, x2, y2`` on the HR grid with labels ``0 .. num_classes - 1`` (no background class)
everywhere outside a detector wrapper. Batches carry them padded (``boxes`` ``B x max_boxes x 4``, ``labels``
``B x max_boxes`` padded with -1, ``num_boxes`` ``B``; :func:`segsr.data.box_transforms.pad_boxes`).
"""
from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np
import torch

from segsr.metrics.bootstrap import paired_image_bootstrap
from segsr.metrics.det_metrics import DetectionScores
from segsr.tasks.base import Meter, Task, register_task
from segsr.utils.visual import default_palette, make_panel, tensor_to_rgb
from segsr.weights import frozen_eval

BoxTargets = List[Dict[str, torch.Tensor]]
DRAW_SCORE = 0.5  # pictures draw the detections scoring at least this


def unpad_targets(data: Mapping[str, torch.Tensor], device: torch.device) -> BoxTargets:
    """``[{'boxes': N x 4 float32, 'labels': N int64}]`` per image of a padded batch, on ``device``."""
    counts = data['num_boxes'].reshape(-1).tolist()
    return [{'boxes': data['boxes'][i, :int(n)].to(device, torch.float32),
             'labels': data['labels'][i, :int(n)].to(device, torch.int64)} for i, n in enumerate(counts)]


class DetMeter(Meter):
    """COCO mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of one predictor (:class:`DetectionScores`, i.e.
    torchmetrics + pycocotools); the images' detections stay for the paired image bootstrap.

    Args:
        num_classes: Number of object classes.
        class_names: Names for the per-class keys (``ap50_<name>``).
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None) -> None:
        self.scores = DetectionScores(num_classes, class_names)

    def add(self, prediction: BoxTargets, targets: Optional[BoxTargets]) -> Dict[str, np.ndarray]:
        """Add one image's detections (a list of one dict); returns them as numpy arrays."""
        det = {key: prediction[0][key].detach().cpu() for key in ('boxes', 'scores', 'labels')}
        if targets is not None:
            gt = targets[0]
            self.scores.add(det['boxes'], det['scores'], det['labels'], gt['boxes'].cpu(), gt['labels'].cpu())
        return {key: value.numpy() for key, value in det.items()}

    def summary(self):
        out = self.scores.summary()
        out.pop('num_images')
        return out

    def image_stats(self) -> DetectionScores:
        """The scores object: ``summary(indices)`` scores any resample of the images."""
        return self.scores


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
               scores: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of ``rgb`` with each box drawn in its class colour and labelled (name, score)."""
    out = np.ascontiguousarray(rgb.copy())
    palette = default_palette(len(class_names))
    for i, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1))):
        colour = tuple(int(c) for c in palette[int(label)])
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, 1)
        text = class_names[int(label)] + (f' {scores[i]:.2f}' if scores is not None else '')
        cv2.putText(out, text, (x1 + 1, max(9, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return out


@register_task
class DetectionTask(Task):
    """Targets: ``boxes`` / ``labels`` / ``num_boxes`` (padded). Losses: :class:`~segsr.losses.det_loss.DetectionLoss`
    (the detector's own terms, weighted). Metric: COCO mAP (``map``, ``map_50``, ``map_75``, per-class AP).

    The detector computes its losses itself from the targets (``net(x, targets=...)['losses']``), so each view is
    its own forward pass. A CQMix image shows SR and HR pixels at the same places, so the boxes stay valid on it.
    """

    name = 'det'
    target_keys = ('boxes', 'labels', 'num_boxes')
    dataset_types = ('PairedImageDetDataset', )
    main_metric = 'map_50'
    loss_types = ('DetectionLoss', )
    report_metrics = (('map_50', 'mAP@.5'), ('map', 'mAP@[.5:.95]'))
    scoring_version = 2  # 2: COCO's float64 recall / IoU points (torchmetrics' float32 ones moved some APs)

    def targets(self, data, device):
        return unpad_targets(data, device) if 'boxes' in data else None

    def random_targets(self, batch, height, width, num_classes, generator=None, boxes_per_image=4):
        """``boxes_per_image`` boxes per image, each side between 1/16 and 1/4 of the image's side."""
        size = torch.tensor([width, height, width, height], dtype=torch.float32)
        wh = (1 / 16 + 3 / 16 * torch.rand(batch, boxes_per_image, 2, generator=generator)) * size[:2]
        xy = torch.rand(batch, boxes_per_image, 2, generator=generator) * (size[:2] - wh)
        return {'boxes': torch.cat([xy, xy + wh], dim=2),
                'labels': torch.randint(0, int(num_classes), (batch, boxes_per_image), generator=generator),
                'num_boxes': torch.full((batch, ), boxes_per_image, dtype=torch.int64)}

    def view_losses(self, net, views, targets, criteria, aux_weight=0.0):
        return {view: criteria[view](net(images, targets=targets)['losses']) for view, images in views}

    def loss_terms(self, net, images, targets, criterion, aux_weight=0.0):
        return {'': criterion(net(images, targets=targets)['losses'])}

    def frozen_loss(self, net, images, targets, criterion, aux_weight=0.0):
        with frozen_eval(net):
            return criterion(net(images, targets=targets)['losses'])

    def loss_block(self, loss_weight=1.0, ignore_index=255):
        return dict(type='DetectionLoss', loss_weight=float(loss_weight))

    def save_stats(self, stats):
        """Every image's detections and ground truth, concatenated, with the image index of each row."""
        out = {}
        for side, records in (('pred', stats.preds), ('gt', stats.targets)):
            keys = ('boxes', 'scores', 'labels') if side == 'pred' else ('boxes', 'labels')
            for key in keys:
                parts = [r[key].numpy() for r in records]
                out[f'{side}_{key}'] = np.concatenate(parts) if parts else np.zeros((0, 4) if key == 'boxes' else 0)
            out[f'{side}_image'] = np.concatenate([np.full(len(r['labels']), i) for i, r in enumerate(records)]
                                                  or [np.zeros(0, np.int64)])
        out['num_images'] = np.asarray(len(stats))
        return out

    def load_stats(self, arrays, num_classes, class_names=None):
        scores = DetectionScores(num_classes, class_names)
        pred_at, gt_at = arrays['pred_image'], arrays['gt_image']
        for i in range(int(arrays['num_images'])):
            p, g = pred_at == i, gt_at == i
            scores.add(arrays['pred_boxes'][p], arrays['pred_scores'][p], arrays['pred_labels'][p],
                       arrays['gt_boxes'][g], arrays['gt_labels'][g])
        return scores

    def meter(self, num_classes, ignore_index=255, class_names=None):
        return DetMeter(num_classes, class_names)

    def interval(self, stats, reference, block=1, samples=2000, level=0.95, seed=0):
        """Independent images: the paired image bootstrap of COCO mAP@.5 (``DetectionScores.map_50``: one COCO
        matching per method, then about a millisecond per draw)."""
        if len(stats) != len(reference):
            raise ValueError(f'paired bootstrap: {len(stats)} and {len(reference)} images are not the same images.')
        return paired_image_bootstrap(stats.map_50, reference.map_50, len(stats), int(samples), float(level),
                                      int(seed))

    def picture(self, image, prediction, targets, num_classes, palette=None, class_names=None, caption='judge',
                image_caption='SR'):
        """Panel ``image with the detections (score >= 0.5) | image with the ground-truth boxes``."""
        names = list(class_names or [str(i) for i in range(num_classes)])
        rgb = tensor_to_rgb(image)
        keep = prediction['scores'] >= DRAW_SCORE
        images = [draw_boxes(rgb, prediction['boxes'][keep], prediction['labels'][keep], names,
                             prediction['scores'][keep])]
        captions = [f'{image_caption} | {caption}']
        if targets is not None:
            images.append(draw_boxes(rgb, targets[0]['boxes'].cpu().numpy(), targets[0]['labels'].cpu().numpy(), names))
            captions.append('ground truth')
        return make_panel(images, captions)

    def truth_picture(self, image, targets, num_classes, palette=None, class_names=None, image_caption='HR'):
        names = list(class_names or [str(i) for i in range(num_classes)])
        boxes = draw_boxes(tensor_to_rgb(image), targets[0]['boxes'].cpu().numpy(), targets[0]['labels'].cpu().numpy(),
                           names)
        return make_panel([boxes], [f'{image_caption} | ground truth'])

    def to_json(self, prediction, class_names):
        return [{'box': [round(float(v), 2) for v in box], 'score': float(score), 'class': class_names[int(label)]}
                for box, score, label in zip(prediction['boxes'], prediction['scores'], prediction['labels'])]
