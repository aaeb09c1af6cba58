"""Discriminator with a shared trunk and two heads: real/fake and semantic segmentation.

The segmentation-aware GAN (Wang, Jin, Zhou, Multimedia Systems 2025) gives the SR generator's discriminator a
second, *task* branch: on HR images it learns to segment; on SR images it tells the generator how well the SR
image can be segmented. Here the trunk and both heads are configuration, not subclasses:

- trunks (``trunk``): ``unet`` — Real-ESRGAN's U-Net discriminator with spectral norm, features at full
  resolution; ``patch`` — a VGG/PatchGAN-style strided stack (spectral norm, batch norm or none); ``patchgan`` —
  the pix2pix PatchGAN layout of SeD's patch discriminator;
- real/fake heads (``rf_head``): ``pixel`` (a map at input resolution, the U-Net default), ``patch`` (a map on
  the coarsest features, the patch default) or ``global`` (one score per image, like BasicSR's
  ``VGGStyleDiscriminator``);
- segmentation head: fuses every trunk level (FPN-style) and predicts class logits at the input resolution.

Any input size works (the U-Net decoder resizes to its skip connections; the patch trunk pads nothing).

The same trunks carry SeD's semantic conditioning (``semantic_dim``; fusion blocks in
:mod:`segsr.archs.semantic_fusion`), so one mechanism serves the SeD discriminators defined here
(:class:`SeDPatchDiscriminator` = P+SeD, :class:`SeDUNetDiscriminator` = U+SeD) and a SeD-conditioned
:class:`SegAwareDiscriminator` (task branch + SeD). The ``patchgan`` trunk is SeD's P layout.
"""
from functools import partial
from typing import Dict, List, Optional, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from segsr.archs.semantic_fusion import FusionSpec, SemanticFusion, SemanticFusionBlock, make_fusion_spec


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


class _Trunk(nn.Module):
    """Base of the trunks: optional SeD semantic fusion (one :class:`SemanticFusion` per fusion point).

    Subclasses create their layers, then call :meth:`_build_fusions` with the channels and strides of their fusion
    points, and call :meth:`_fuse` on those features in ``forward(x, semantic)``.
    """

    min_input_size = 1

    def __init__(self, fusion: Optional[FusionSpec], norm: str) -> None:
        super().__init__()
        self.fusion = fusion
        self.norm = norm
        self.fusions = nn.ModuleList()

    @property
    def semantic_dim(self) -> Optional[int]:
        """Channels of the semantic map the trunk fuses (None: not semantic-aware)."""
        return self.fusion.semantic_dim if self.fusion else None

    @property
    def semantic_stride(self) -> Optional[int]:
        return self.fusion.semantic_stride if self.fusion else None

    def _build_fusions(self, channels: Sequence[int], strides: Sequence[int]) -> None:
        if self.fusion is not None:
            conv = partial(_norm_conv, kernel=3, stride=1, norm=self.norm)
            self.fusions = nn.ModuleList(SemanticFusion(self.fusion, c, s, conv) for c, s in zip(channels, strides))

    def _check_input(self, x: Tensor, semantic: Optional[Tensor]) -> None:
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(f'{type(self).__name__}: input {tuple(x.shape[-2:])} is smaller than the minimum '
                             f'{self.min_input_size} x {self.min_input_size} of this discriminator.')
        if self.fusion is not None and semantic is None:
            raise ValueError(f'{type(self).__name__} is semantic-aware (semantic_dim={self.fusion.semantic_dim}): '
                             'forward needs the semantic map of the HR image.')
        if self.fusion is None and semantic is not None:
            raise ValueError(f'{type(self).__name__} has no semantic fusion (semantic_dim is not set) but was given '
                             'a semantic map.')

    def _fuse(self, index: int, feat: Tensor, semantic: Optional[Tensor]) -> Tensor:
        return self.fusions[index](feat, semantic) if self.fusion is not None else feat


class UNetTrunk(_Trunk):
    """Real-ESRGAN's U-Net discriminator body (spectral norm), returning decoder features at strides 1, 2, 4.

    With ``fusion`` (SeD's U+SeD), semantics are fused at the bottleneck (stride 8) and at the decoder levels of
    strides 4 and 2, as in the paper. Without it, the layers equal BasicSR's ``UNetDiscriminatorSN``.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Base channels. Default: 64.
        skip_connection: Add encoder features to the decoder's (Real-ESRGAN's default). Default: True.
        norm: ``spectral`` (default), ``batch`` or ``none``.
        fusion: Semantic fusion (:class:`FusionSpec`) or None.
    """

    min_input_size = 8

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True,
                 norm: str = 'spectral', fusion: Optional[FusionSpec] = None) -> None:
        super().__init__(fusion, norm)
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
        self._build_fusions([nf * 8, nf * 4, nf * 2], [8, 4, 2])  # bottleneck, then decoder levels

    def forward(self, x: Tensor, semantic: Optional[Tensor] = None) -> List[Tensor]:
        self._check_input(x, semantic)
        enc = [_lrelu(self.conv0(x))]
        for conv in self.down:
            enc.append(_lrelu(conv(enc[-1])))
        feat, dec = self._fuse(0, enc[-1], semantic), []
        for level, (conv, skip) in enumerate(zip(self.up, reversed(enc[:-1]))):  # skips at strides 4, 2, 1
            feat = F.interpolate(feat, size=skip.shape[-2:], mode='bilinear', align_corners=False)
            feat = _lrelu(conv(feat))
            if self.skip_connection:
                feat = feat + skip
            if level < 2:
                feat = self._fuse(level + 1, feat, semantic)
            dec.append(feat)
        return [self.refine(dec[-1]), dec[-2], dec[-3]]  # fine to coarse


class PatchTrunk(_Trunk):
    """Patch trunk: a stem, then stages of (4x4 strided conv, [semantic fusion], 3x3 conv).

    Two layouts: VGG-style (default: 3x3 stride-1 stem, stage strides 2, 2, 2) and the pix2pix PatchGAN layout of
    SeD's P / P+SeD (``stem_stride=2``: a 4x4 stride-2 stem; ``stage_strides=(2, 2, 1)``: the last stage's 4x4
    conv has stride 1 and shrinks the map by one pixel). With ``fusion``, semantics are fused in every stage.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Channels of the stem (doubled per stage, at most ``8 * num_feat``). Default: 64.
        num_down: Number of stride-2 stages when ``stage_strides`` is not given. Default: 3.
        norm: ``spectral`` (default), ``batch`` or ``none``.
        fusion: Semantic fusion (:class:`FusionSpec`) or None.
        stem_stride: 1 (3x3 conv) or 2 (4x4 stride-2 conv, no normalisation). Default: 1.
        stage_strides: Stride (1 or 2) of each stage's 4x4 conv. Default: ``num_down`` times 2.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_down: int = 3, norm: str = 'spectral',
                 fusion: Optional[FusionSpec] = None, stem_stride: int = 1,
                 stage_strides: Optional[Sequence[int]] = None) -> None:
        super().__init__(fusion, norm)
        stage_strides = list(stage_strides) if stage_strides is not None else [2] * int(num_down)
        if not stage_strides or any(s not in (1, 2) for s in stage_strides) or stem_stride not in (1, 2):
            raise ValueError(f'PatchTrunk: stem_stride must be 1 or 2 and stage_strides a non-empty list of 1 / 2 '
                             f'(num_down >= 1); got stem_stride={stem_stride}, stage_strides={stage_strides}.')
        self.conv0 = (nn.Conv2d(num_in_ch, num_feat, 3, 1, 1) if stem_stride == 1 else
                      nn.Conv2d(num_in_ch, num_feat, 4, 2, 1))
        downs, refines, in_ch, stride = [], [], num_feat, stem_stride
        self.out_channels, self.strides = [], []
        for i, s in enumerate(stage_strides):
            out_ch = num_feat * min(2**(i + 1), 8)
            downs.append(_norm_conv(in_ch, out_ch, 4, s, norm))
            refines.append(_norm_conv(out_ch, out_ch, 3, 1, norm))
            stride *= s
            self.out_channels.append(out_ch)
            self.strides.append(stride)
            in_ch = out_ch
        self.downs, self.refines = nn.ModuleList(downs), nn.ModuleList(refines)
        shrink = sum(1 for s in stage_strides if s == 1)  # each 4x4 stride-1 conv loses one pixel
        self.min_input_size = stride * (shrink + 1)
        self._build_fusions(self.out_channels, self.strides)

    def forward(self, x: Tensor, semantic: Optional[Tensor] = None) -> List[Tensor]:
        self._check_input(x, semantic)
        feat, feats = _lrelu(self.conv0(x)), []
        for i, (down, refine) in enumerate(zip(self.downs, self.refines)):
            feat = self._fuse(i, _lrelu(down(feat)), semantic)
            feat = _lrelu(refine(feat))
            feats.append(feat)
        return feats


TRUNKS = ('unet', 'patch', 'patchgan')
DEFAULT_RF_HEAD = {'unet': 'pixel', 'patch': 'patch', 'patchgan': 'patch'}


def build_trunk(trunk: str, num_in_ch: int = 3, num_feat: int = 64, norm: str = 'spectral',
                fusion: Optional[FusionSpec] = None, skip_connection: bool = True, num_down: int = 3) -> _Trunk:
    """Build a trunk by name: ``unet``, ``patch`` (VGG-style) or ``patchgan`` (SeD's P layout, 3 stages)."""
    if trunk == 'unet':
        return UNetTrunk(num_in_ch, num_feat, skip_connection=skip_connection, norm=norm, fusion=fusion)
    if trunk == 'patch':
        return PatchTrunk(num_in_ch, num_feat, num_down=num_down, norm=norm, fusion=fusion)
    if trunk == 'patchgan':
        return PatchTrunk(num_in_ch, num_feat, norm=norm, fusion=fusion, stem_stride=2, stage_strides=(2, 2, 1))
    raise ValueError(f"trunk '{trunk}' is not supported; use one of {list(TRUNKS)}.")


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
    ``return_seg=False`` only ``rf`` is computed (the segmentation head is skipped). With ``semantic_dim`` set, the
    trunk is SeD-conditioned (semantic fusion at three stages, see :mod:`segsr.archs.semantic_fusion`) and
    ``forward(x, semantic)`` needs the semantic map of the HR image: the task branch and SeD in one network.

    Args:
        num_classes: Number of segmentation classes.
        num_in_ch: Input channels. Default: 3.
        num_feat: Base channels of the trunk. Default: 64.
        trunk: ``unet`` (default), ``patch`` or ``patchgan`` (SeD's P layout).
        rf_head: ``pixel``, ``patch`` or ``global``. Default: ``pixel`` for ``unet``, ``patch`` otherwise.
        seg_hidden: Channels of the segmentation head. Default: 64.
        norm: Trunk normalisation: ``spectral`` (default), ``batch`` or ``none``.
        skip_connection: U-Net trunk only: skip connections. Default: True.
        num_down: ``patch`` trunk only: number of stride-2 stages. Default: 3.
        semantic_dim: Channels of the semantic map to fuse (SeD conditioning); None: no conditioning.
        semantic_stride: Stride of the semantic map (the extractor's). Default: 16.
        fusion_heads: Attention heads of the fusion blocks. Default: 1.
        fusion_head_dim: Channels per attention head. Default: 64.
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
                 num_down: int = 3,
                 semantic_dim: Optional[int] = None,
                 semantic_stride: int = 16,
                 fusion_heads: int = 1,
                 fusion_head_dim: int = 64) -> None:
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"trunk '{trunk}' is not supported; use one of {list(TRUNKS)}.")
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
        self.num_classes = int(num_classes)
        fusion = make_fusion_spec(semantic_dim, semantic_stride, fusion_heads, fusion_head_dim)
        self.trunk = build_trunk(trunk, num_in_ch, num_feat, norm, fusion, skip_connection, num_down)
        self.rf_head = RealFakeHead(rf_head or DEFAULT_RF_HEAD[trunk], self.trunk.out_channels)
        self.seg_head = SegHead(self.trunk.out_channels, self.num_classes, seg_hidden)

    semantic_dim = property(lambda self: self.trunk.semantic_dim, doc='Fused semantic channels (None: no SeD).')
    semantic_stride = property(lambda self: self.trunk.semantic_stride)
    min_input_size = property(lambda self: self.trunk.min_input_size)

    def forward(self, x: Tensor, semantic: Optional[Tensor] = None, return_seg: bool = True) -> Dict[str, Tensor]:
        """
        Args:
            x: ``B x C x H x W`` images in [0, 1].
            semantic: ``B x semantic_dim x h x w`` semantic map (required when ``semantic_dim`` is set).
            return_seg: Also run the segmentation head. Default: True.
        """
        feats = self.trunk(x, semantic)
        out = {'rf': self.rf_head(feats)}
        if return_seg:
            out['seg'] = self.seg_head(feats, x.shape[-2:])
        return out

    @torch.no_grad()
    def segment(self, x: Tensor, semantic: Optional[Tensor] = None) -> Tensor:
        """Segmentation logits of the task head (for validation), in eval mode, restoring the previous mode."""
        was_training = self.training
        self.eval()
        logits = self.forward(x, semantic, return_seg=True)['seg']
        self.train(was_training)
        return logits


class _SemanticDiscriminator(nn.Module):
    """A trunk and a real/fake head; ``forward(x, semantic)`` returns the real/fake map (a tensor, as BasicSR's
    discriminators do, so BasicSR's ``ESRGANModel`` / ``RealESRGANModel`` can drive the unconditioned variants)."""

    def __init__(self, trunk: _Trunk, rf_head: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.rf_head = RealFakeHead(rf_head, trunk.out_channels)

    semantic_dim = property(lambda self: self.trunk.semantic_dim, doc='Fused semantic channels (None: no SeD).')
    semantic_stride = property(lambda self: self.trunk.semantic_stride)
    min_input_size = property(lambda self: self.trunk.min_input_size)

    def forward(self, x: Tensor, semantic: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: ``B x C x H x W`` images in [0, 1].
            semantic: Semantic map of the HR image, ``B x semantic_dim x h x w`` (semantic-aware variants only).
        """
        return self.rf_head(self.trunk(x, semantic))


@ARCH_REGISTRY.register()
class SeDPatchDiscriminator(_SemanticDiscriminator):
    """P+SeD: the pix2pix-style patch discriminator with semantic fusion in its three stages.

    Layout (``num_feat`` = 64): 4x4/2 conv (64) -> [4x4/2 conv (128), SeFB, 3x3] -> [4x4/2 (256), SeFB, 3x3] ->
    [4x4/1 (512), SeFB, 3x3] -> 3x3 conv to one channel: a ``(H/8 - 1) x (W/8 - 1)`` map of patch scores, with
    semantics fused at strides 4, 8 and 8 (pixel-shuffle factors 4, 2, 2 for a stride-16 extractor). Inputs of
    any size from 16 x 16 work. ``semantic_dim: ~`` gives the same network without SeD (the paper's "P").
    Weights are initialised N(0, 0.02) as in pix2pix and SeD's code.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Channels of the first conv. Default: 64.
        semantic_dim: Channels of the semantic map. Default: 1024 (CLIP RN50 / ResNet-50 ``layer3``).
        semantic_stride: Stride of the semantic map. Default: 16.
        fusion_heads: Attention heads. Default: 1.
        fusion_head_dim: Channels per head. Default: 64.
        norm: ``spectral`` (default), ``batch`` or ``none``.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, semantic_dim: Optional[int] = 1024,
                 semantic_stride: int = 16, fusion_heads: int = 1, fusion_head_dim: int = 64,
                 norm: str = 'spectral') -> None:
        fusion = make_fusion_spec(semantic_dim, semantic_stride, fusion_heads, fusion_head_dim)
        super().__init__(build_trunk('patchgan', num_in_ch, num_feat, norm, fusion), 'patch')
        init_normal(self)


def init_normal(net: nn.Module, std: float = 0.02) -> None:
    """pix2pix's initialisation (as SeD's patch discriminator): conv / linear weights N(0, std), zero biases.

    The fusion blocks' ``proj_out`` stays zero, so training starts from the unconditioned discriminator.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = getattr(module, 'weight_orig', module.weight)  # spectral norm keeps the raw weight here
            nn.init.normal_(weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in net.modules():
        if isinstance(module, SemanticFusionBlock):
            nn.init.zeros_(module.proj_out.weight)


@ARCH_REGISTRY.register()
class SeDUNetDiscriminator(_SemanticDiscriminator):
    """U+SeD: Real-ESRGAN's U-Net discriminator (spectral norm) with semantic fusion at strides 8, 4 and 2.

    Returns a per-pixel real/fake map at the input size. Any input size from 8 x 8 works (the decoder resizes to
    its skip connections). ``semantic_dim: ~`` gives the layers of BasicSR's ``UNetDiscriminatorSN`` (the "U").

    Args:
        num_in_ch: Input channels. Default: 3.
        num_feat: Base channels. Default: 64.
        skip_connection: Skip connections. Default: True.
        semantic_dim: Channels of the semantic map. Default: 1024.
        semantic_stride: Stride of the semantic map. Default: 16.
        fusion_heads: Attention heads. Default: 1.
        fusion_head_dim: Channels per head. Default: 64.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True,
                 semantic_dim: Optional[int] = 1024, semantic_stride: int = 16, fusion_heads: int = 1,
                 fusion_head_dim: int = 64) -> None:
        fusion = make_fusion_spec(semantic_dim, semantic_stride, fusion_heads, fusion_head_dim)
        super().__init__(build_trunk('unet', num_in_ch, num_feat, 'spectral', fusion, skip_connection), 'pixel')
