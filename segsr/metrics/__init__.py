"""Task metrics: confusion-matrix mIoU / pixel accuracy accumulated over a whole set, and paired intervals."""
from segsr.metrics.bootstrap import PairedInterval, miou_of, paired_block_bootstrap
from segsr.metrics.seg_metrics import ConfusionMatrix, SegMetricResult, confusion_matrix

__all__ = ['ConfusionMatrix', 'SegMetricResult', 'confusion_matrix', 'PairedInterval', 'miou_of',
           'paired_block_bootstrap']
