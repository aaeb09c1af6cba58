"""Random views of an SR batch and its labels for a frozen task network (expectation over transformations).

A loss back-propagated through one frozen segmenter can be lowered by features that only that network reads: a
periodic pattern aligned with its stride-16 grid, say. Showing the frozen network a randomly rescaled, flipped and
shifted view of the SR image each step (the labels moved with the pixels) makes such a pattern useless unless it
survives every view, the idea of expectation over transformation (Athalye et al., ICML 2018) and of the
augmentations used to make adversarial features transfer (Xie et al., CVPR 2019). Used by ``SR4IRModel``'s
``train.sr_ce_views`` (issue 23's transfer ablations).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

VIEW_KEYS = ('scale', 'hflip', 'shift')


class TaskViews:
    """Draws one random view per sample: rescale (one factor per batch), horizontal flip, shift (per sample).

    Order: rescale (images bilinear, antialiased when shrinking; labels nearest), then flip, then shift by up to
    ``shift`` pixels in each direction (images padded by edge replication, labels by ``ignore_index``); a shifted
    view keeps the (rescaled) size. Every step is differentiable in the images. Randomness comes from torch's
    global generator, which segsr's training state saves, so a resumed run draws the same views.

    Args:
        scale: ``[low, high]`` range of the rescale factor, or None for no rescale. Default: None.
        hflip: Flip each sample horizontally with probability 0.5. Default: False.
        shift: Largest shift in pixels (0: none). Default: 0.
        ignore_index: Label of the pixels a shift brings in. Default: 255.
        option_name: Option path named in errors. Default: ``'train.sr_ce_views'``.
    """

    def __init__(self,
                 scale: Optional[Sequence[float]] = None,
                 hflip: bool = False,
                 shift: int = 0,
                 ignore_index: int = 255,
                 option_name: str = 'train.sr_ce_views') -> None:
        if scale is not None:
            if not (isinstance(scale, (list, tuple)) and len(scale) == 2
                    and all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale)
                    and 0 < scale[0] <= scale[1]):
                raise ValueError(f"Option '{option_name}.scale' = {scale!r}; expected [low, high] with "
                                 '0 < low <= high.')
            scale = (float(scale[0]), float(scale[1]))
        if not isinstance(hflip, bool):
            raise ValueError(f"Option '{option_name}.hflip' = {hflip!r}; expected true or false.")
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"Option '{option_name}.shift' = {shift!r}; expected an integer >= 0.")
        self.scale, self.hflip, self.shift, self.ignore_index = scale, hflip, shift, int(ignore_index)

    @classmethod
    def from_opt(cls, opt: Optional[dict], ignore_index: int, option_name: str) -> Optional['TaskViews']:
        """``TaskViews`` from an option block (``{scale: [0.75, 1.25], hflip: true, shift: 8}``); None if empty."""
        if not opt:
            return None
        if not isinstance(opt, dict):
            raise ValueError(f"Option '{option_name}' = {opt!r}; expected a block with keys {list(VIEW_KEYS)}.")
        unknown = set(opt) - set(VIEW_KEYS)
        if unknown:
            raise ValueError(f"Option '{option_name}' has unknown keys {sorted(unknown)}; known: {list(VIEW_KEYS)}.")
        return cls(ignore_index=ignore_index, option_name=option_name, **opt)

    def __call__(self, images: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """A random view of ``images`` (``B x C x H x W``) and of ``labels`` (``B x H x W``), moved together."""
        if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f'images {tuple(images.shape)} and labels {tuple(labels.shape)} differ in size.')
        if self.scale is not None:
            images, labels = self._rescale(images, labels)
        if self.hflip:
            flip = (torch.rand(images.shape[0]) < 0.5).to(images.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
        if self.shift > 0:
            images, labels = self._shift(images, labels)
        return images, labels

    def _rescale(self, images: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        low, high = self.scale
        factor = low + (high - low) * float(torch.rand(()))
        size = tuple(max(1, round(s * factor)) for s in images.shape[-2:])
        if size == tuple(images.shape[-2:]):
            return images, labels
        images = F.interpolate(images, size=size, mode='bilinear', align_corners=False, antialias=factor < 1)
        labels = F.interpolate(labels[:, None].float(), size=size, mode='nearest-exact')[:, 0].to(labels.dtype)
        return images, labels

    def _shift(self, images: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        s, (h, w) = self.shift, images.shape[-2:]
        offsets = torch.randint(0, 2 * s + 1, (images.shape[0], 2)).tolist()
        padded = F.pad(images, (s, s, s, s), mode='replicate')
        padded_labels = F.pad(labels, (s, s, s, s), value=self.ignore_index)
        views = [padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)]
        label_views = [padded_labels[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)]
        return torch.stack(views), torch.stack(label_views)
