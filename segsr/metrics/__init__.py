"""Task metrics: confusion-matrix mIoU / pixel accuracy accumulated over a whole set, and paired intervals; the LR
grid's share of the SR error spectrum (``calculate_grid_share``, in BasicSR's METRIC_REGISTRY)."""
from segsr.metrics.bootstrap import PairedInterval, miou_of, paired_block_bootstrap
from segsr.metrics.grid_share import calculate_grid_share, lr_grid_mask
from segsr.metrics.seg_metrics import ConfusionMatrix, SegMetricResult, confusion_matrix

__all__ = ['ConfusionMatrix', 'SegMetricResult', 'confusion_matrix', 'PairedInterval', 'miou_of',
           'paired_block_bootstrap', 'calculate_grid_share', 'lr_grid_mask']
