"""Tiny segmenters of the shapes users bring: importable factories for ``ImportedSegNet`` tests."""
from types import SimpleNamespace

from torch import nn


class StridedSegmenter(nn.Module):
    """Conv net with logits at stride ``stride``; ``output``: tensor | dict (``{'out': ..}``) | hf (``.logits``) |
    tuple."""

    def __init__(self, num_classes: int = 6, stride: int = 4, output: str = 'tensor', width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width),
                                     nn.ReLU())
        self.head = nn.Conv2d(width, num_classes, 1)
        self.output = output

    def forward(self, x):
        logits = self.head(self.encoder(x))
        if self.output == 'dict':
            return {'out': logits, 'aux': logits}
        if self.output == 'hf':
            return SimpleNamespace(logits=logits, hidden_states=None)
        if self.output == 'tuple':
            return logits, None
        return logits


def strided_segmenter(**kwargs) -> StridedSegmenter:
    return StridedSegmenter(**kwargs)


def not_a_module(**kwargs):
    return {'weights': 1}
