"""The contract of SeD's frozen semantic extractors (base class; the registered ones are in
:mod:`segsr.archs.semantic_extractor_arch`)."""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

_PROBE_SIZE = 128  # side of the zero image used to measure out_channels and stride at build time


class SemanticExtractor(nn.Module):
    """Base class: normalisation, frozen eval-mode forward, measured ``out_channels`` / ``stride``.

    Subclasses build their layers, call :meth:`freeze_and_measure` at the end of ``__init__`` and implement
    :meth:`extract` (normalised input -> features).

    Args:
        mean: Per-channel mean of the input normalisation (None: no normalisation).
        std: Per-channel std of the input normalisation.
    """

    def __init__(self, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.out_channels = 0
        self.stride = 0

    def freeze_and_measure(self) -> None:
        """Switch off gradients, enter eval mode and measure ``out_channels`` and ``stride`` on a probe image."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        feat = self.forward(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE, device=self._device()))
        self.out_channels = int(feat.shape[1])
        self.stride = max(1, round(_PROBE_SIZE / feat.shape[-1]))

    def _device(self) -> torch.device:
        tensor = next(iter(self.parameters()), None)
        return tensor.device if tensor is not None else torch.device('cpu')

    def train(self, mode: bool = True) -> 'SemanticExtractor':
        """Always eval mode: the extractor is frozen (``mode`` is ignored)."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """Semantic features of ``B x 3 x H x W`` RGB images in ``[0, 1]`` (no autograd graph is built)."""
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f'{type(self).__name__} expects a B x 3 x H x W RGB tensor, got {tuple(x.shape)}.')
        with torch.no_grad():
            if self.normalize:
                x = (x - self.mean) / self.std
            return self.extract(x)

    def extract(self, x: Tensor) -> Tensor:
        """Features of normalised input (implemented by subclasses)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f'out_channels={self.out_channels}, stride={self.stride}'
