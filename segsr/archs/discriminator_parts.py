"""Parts of segsr's discriminators: trunks (U-Net, patch, PatchGAN), the real/fake head and the segmentation head.

Building blocks only (not registered); :mod:`segsr.archs.seg_aware_discriminator_arch` composes them into the
registered discriminators.
"""
from functools import partial
from typing import List, Optional, Sequence

from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from segsr.archs.semantic_fusion import FusionSpec, SemanticFusion

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


class Trunk(nn.Module):
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


class UNetTrunk(Trunk):
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


class PatchTrunk(Trunk):
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
                fusion: Optional[FusionSpec] = None, skip_connection: bool = True, num_down: int = 3) -> Trunk:
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
