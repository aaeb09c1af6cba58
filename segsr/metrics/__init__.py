"""Task metrics: confusion-matrix mIoU / pixel accuracy accumulated over a whole set."""
from segsr.metrics.seg_metrics import ConfusionMatrix, SegMetricResult

__all__ = ['ConfusionMatrix', 'SegMetricResult']
