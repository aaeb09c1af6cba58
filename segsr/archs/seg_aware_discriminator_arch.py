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
from typing import Dict, Optional

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from segsr.archs.discriminator_parts import DEFAULT_RF_HEAD, TRUNKS, RealFakeHead, SegHead, Trunk, build_trunk
from segsr.archs.semantic_fusion import SemanticFusionBlock, make_fusion_spec
from segsr.weights import frozen_eval



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
        with frozen_eval(self):
            return self.forward(x, semantic, return_seg=True)['seg']


class _SemanticDiscriminator(nn.Module):
    """A trunk and a real/fake head; ``forward(x, semantic)`` returns the real/fake map (a tensor, as BasicSR's
    discriminators do, so BasicSR's ``ESRGANModel`` / ``RealESRGANModel`` can drive the unconditioned variants)."""

    def __init__(self, trunk: Trunk, rf_head: str) -> None:
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
