"""Discriminator with a shared trunk and two heads: real/fake and semantic segmentation.

The segmentation-aware GAN (Wang, Jin, Zhou, Multimedia Systems 2025) gives the SR generator's discriminator a
second, *task* branch: on HR images it learns to segment; on SR images it tells the generator how well the SR
image can be segmented. Here the trunk and both heads are configuration, not subclasses:

- trunks (``trunk``): ``unet`` — Real-ESRGAN's U-Net discriminator with spectral norm, features at full
  resolution; ``patch`` — a VGG/PatchGAN-style strided stack (spectral norm, batch norm or none);
- real/fake heads (``rf_head``): ``pixel`` (a map at input resolution, the U-Net default), ``patch`` (a map on
  the coarsest features, the patch default) or ``global`` (one score per image, like BasicSR's
  ``VGGStyleDiscriminator``);
- segmentation head: fuses every trunk level (FPN-style) and predicts class logits at the input resolution.

Any input size works (the U-Net decoder resizes to its skip connections; the patch trunk pads nothing).
"""
from typing import Dict, List, Optional, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, negative_slope=0.2, inplace=True)


def _norm_conv(in_ch: int, out_ch: int, kernel: int, stride: int, norm: str) -> nn.Module:
    """Conv with spectral norm, or conv + BatchNorm, or a plain conv (``norm``: spectral | batch | none)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2 if kernel % 2 else 1, bias=norm == 'none')
    if norm == 'spectral':
        return spectral_norm(conv)
    if norm == 'batch':
        return nn.Sequential(conv, nn.BatchNorm2d(out_ch))
    if norm == 'none':
        return conv
    raise ValueError(f"norm '{norm}' is not supported; use 'spectral', 'batch' or 'none'.")


class UNetTrunk(nn.Module):
    """Real-ESRGAN's U-Net discriminator body (spectral norm), returning decoder features at strides 1, 2, 4.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Base channels. Default: 64.
        skip_connection: Add encoder features to the decoder's (Real-ESRGAN's default). Default: True.
        norm: ``spectral`` (default), ``batch`` or ``none``.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True,
                 norm: str = 'spectral') -> None:
        super().__init__()
        self.skip_connection = skip_connection
        nf = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, nf, 3, 1, 1)
        self.down = nn.ModuleList([_norm_conv(nf, nf * 2, 4, 2, norm), _norm_conv(nf * 2, nf * 4, 4, 2, norm),
                                   _norm_conv(nf * 4, nf * 8, 4, 2, norm)])
        self.up = nn.ModuleList([_norm_conv(nf * 8, nf * 4, 3, 1, norm), _norm_conv(nf * 4, nf * 2, 3, 1, norm),
                                 _norm_conv(nf * 2, nf, 3, 1, norm)])
        self.refine = nn.Sequential(_norm_conv(nf, nf, 3, 1, norm), nn.LeakyReLU(0.2, True),
                                    _norm_conv(nf, nf, 3, 1, norm), nn.LeakyReLU(0.2, True))
        self.out_channels = [nf, nf * 2, nf * 4]
        self.strides = [1, 2, 4]

    def forward(self, x: Tensor) -> List[Tensor]:
        enc = [_lrelu(self.conv0(x))]
        for conv in self.down:
            enc.append(_lrelu(conv(enc[-1])))
        feat, dec = enc[-1], []
        for conv, skip in zip(self.up, reversed(enc[:-1])):  # skips at strides 4, 2, 1
            feat = F.interpolate(feat, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            feat = _lrelu(conv(feat))
            if self.skip_connection:
                feat = feat + skip
            dec.append(feat)
        return [self.refine(dec[-1]), dec[-2], dec[-3]]  # fine to coarse


class PatchTrunk(nn.Module):
    """VGG/PatchGAN-style trunk: ``num_down`` stride-2 stages of (4x4 stride-2 conv, 3x3 conv).

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Channels of the first stage (doubled per stage, at most ``8 * num_feat``). Default: 64.
        num_down: Number of stride-2 stages; features at strides ``2 .. 2**num_down``. Default: 3.
        norm: ``spectral`` (default), ``batch`` or ``none``.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_down: int = 3, norm: str = 'spectral') -> None:
        super().__init__()
        if num_down < 1:
            raise ValueError(f'num_down must be >= 1, got {num_down}.')
        self.conv0 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        stages, in_ch, self.out_channels = [], num_feat, []
        for i in range(num_down):
            out_ch = num_feat * min(2**(i + 1), 8)
            stages.append(nn.Sequential(_norm_conv(in_ch, out_ch, 4, 2, norm), nn.LeakyReLU(0.2, True),
                                        _norm_conv(out_ch, out_ch, 3, 1, norm), nn.LeakyReLU(0.2, True)))
            self.out_channels.append(out_ch)
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.strides = [2**(i + 1) for i in range(num_down)]

    def forward(self, x: Tensor) -> List[Tensor]:
        feat, feats = _lrelu(self.conv0(x)), []
        for stage in self.stages:
            feat = stage(feat)
            feats.append(feat)
        return feats


TRUNKS = {'unet': UNetTrunk, 'patch': PatchTrunk}
DEFAULT_RF_HEAD = {'unet': 'pixel', 'patch': 'patch'}


class RealFakeHead(nn.Module):
    """Real/fake scores from trunk features.

    Args:
        kind: ``pixel`` (3x3 conv on the finest features), ``patch`` (3x3 conv on the coarsest features) or
            ``global`` (average pool of the coarsest features + two linear layers: one score per image).
        in_channels: Channels of the trunk levels (fine to coarse).
    """

    def __init__(self, kind: str, in_channels: Sequence[int]) -> None:
        super().__init__()
        if kind not in ('pixel', 'patch', 'global'):
            raise ValueError(f"rf_head '{kind}' is not supported; use 'pixel', 'patch' or 'global'.")
        self.kind = kind
        if kind == 'pixel':
            self.head = nn.Conv2d(in_channels[0], 1, 3, 1, 1)
        elif kind == 'patch':
            self.head = nn.Conv2d(in_channels[-1], 1, 3, 1, 1)
        else:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels[-1], 100),
                                      nn.LeakyReLU(0.2, True), nn.Linear(100, 1))

    def forward(self, feats: List[Tensor]) -> Tensor:
        return self.head(feats[0] if self.kind == 'pixel' else feats[-1])


class SegHead(nn.Module):
    """FPN-style segmentation head: project every trunk level, upsample to the finest, sum, classify.

    GroupNorm, not BatchNorm: the head also runs on SR images in the generator step, which must not move
    running statistics.

    Args:
        in_channels: Channels of the trunk levels (fine to coarse).
        num_classes: Number of classes.
        hidden: Channels of the fused features. Default: 64.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(c, hidden, 1) for c in in_channels])
        self.fuse = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1),
                                  nn.GroupNorm(8 if hidden % 8 == 0 else 1, hidden), nn.ReLU(True),
                                  nn.Conv2d(hidden, num_classes, 1))

    def forward(self, feats: List[Tensor], size) -> Tensor:
        fused = self.proj[0](feats[0])
        for proj, feat in zip(self.proj[1:], feats[1:]):
            fused = fused + F.interpolate(proj(feat), size=fused.shape[-2:], mode='bilinear', align_corners=False)
        logits = self.fuse(fused)
        if logits.shape[-2:] != tuple(size):
            logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        return logits


@ARCH_REGISTRY.register()
class SegAwareDiscriminator(nn.Module):
    """Discriminator with a real/fake head and a segmentation (task) head on one shared trunk.

    ``forward(x)`` returns ``{'rf': real/fake scores, 'seg': B x num_classes x H x W logits}``; with
    ``return_seg=False`` only ``rf`` is computed (the segmentation head is skipped).

    Args:
        num_classes: Number of segmentation classes.
        num_in_ch: Input channels. Default: 3.
        num_feat: Base channels of the trunk. Default: 64.
        trunk: ``unet`` (default) or ``patch``.
        rf_head: ``pixel``, ``patch`` or ``global``. Default: ``pixel`` for ``unet``, ``patch`` for ``patch``.
        seg_hidden: Channels of the segmentation head. Default: 64.
        norm: Trunk normalisation: ``spectral`` (default), ``batch`` or ``none``.
        skip_connection: U-Net trunk only: skip connections. Default: True.
        num_down: Patch trunk only: number of stride-2 stages. Default: 3.
    """

    def __init__(self,
                 num_classes: int,
                 num_in_ch: int = 3,
                 num_feat: int = 64,
                 trunk: str = 'unet',
                 rf_head: Optional[str] = None,
                 seg_hidden: int = 64,
                 norm: str = 'spectral',
                 skip_connection: bool = True,
                 num_down: int = 3) -> None:
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"trunk '{trunk}' is not supported; use one of {sorted(TRUNKS)}.")
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
        self.num_classes = int(num_classes)
        if trunk == 'unet':
            self.trunk = UNetTrunk(num_in_ch, num_feat, skip_connection=skip_connection, norm=norm)
        else:
            self.trunk = PatchTrunk(num_in_ch, num_feat, num_down=num_down, norm=norm)
        self.rf_head = RealFakeHead(rf_head or DEFAULT_RF_HEAD[trunk], self.trunk.out_channels)
        self.seg_head = SegHead(self.trunk.out_channels, self.num_classes, seg_hidden)

    def forward(self, x: Tensor, return_seg: bool = True) -> Dict[str, Tensor]:
        """
        Args:
            x: ``B x C x H x W`` images in [0, 1].
            return_seg: Also run the segmentation head. Default: True.
        """
        feats = self.trunk(x)
        out = {'rf': self.rf_head(feats)}
        if return_seg:
            out['seg'] = self.seg_head(feats, x.shape[-2:])
        return out

    @torch.no_grad()
    def segment(self, x: Tensor) -> Tensor:
        """Segmentation logits of the task head (for validation), in eval mode, restoring the previous mode."""
        was_training = self.training
        self.eval()
        logits = self.forward(x, return_seg=True)['seg']
        self.train(was_training)
        return logits
