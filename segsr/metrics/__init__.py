"""Task metrics: segmentation (confusion-matrix mIoU / pixel accuracy over a whole set), detection (COCO mAP through
torchmetrics), classification (top-k), paired bootstrap intervals of their differences, and the LR grid's share of
the SR error spectrum (``calculate_grid_share``, in BasicSR's METRIC_REGISTRY)."""
from segsr.metrics.bootstrap import PairedInterval, miou_of, paired_block_bootstrap, paired_image_bootstrap
from segsr.metrics.cls_metrics import ClassificationScores
from segsr.metrics.det_metrics import DetectionScores
from segsr.metrics.grid_share import calculate_grid_share, lr_grid_mask
from segsr.metrics.seg_metrics import ConfusionMatrix, SegMetricResult, confusion_matrix

__all__ = ['ConfusionMatrix', 'SegMetricResult', 'confusion_matrix', 'PairedInterval', 'miou_of',
           'paired_block_bootstrap', 'paired_image_bootstrap', 'ClassificationScores', 'DetectionScores',
           'calculate_grid_share', 'lr_grid_mask']
