"""SeD's semantic-aware fusion block (SeFB) and the fusion step the discriminator trunks share.

Our implementation of the idea of Li et al., "SeD: Semantic-Aware Discriminator for Image Super-Resolution"
(CVPR 2024): the semantic map ``S`` (``B x C_s x h x w``, stride ``s`` of the extractor) gives the *queries*, the
discriminator's feature map ``F`` (``B x C_f x H x W``, stride ``t``) the *keys and values*. Each semantic token
thus gathers the image evidence that belongs to it. The attended tokens are then projected to
``c * u * u`` channels and pixel-shuffled by ``u = s / t`` to the feature map's resolution, refined by a 3x3 conv
and concatenated with ``F``; a 3x3 conv brings the channels back to ``C_f``.

As in the paper's code: GroupNorm on the semantics, a self-attention over the semantic tokens, the cross-attention,
a gated feed-forward (pre-LayerNorm, no residual connections inside the block), ``proj_out`` initialised to zero
(so training starts from the unconditioned discriminator) and ``c = C_s / u**2`` channels by default.

Sizes: any input size works. When ``H``, ``W`` are not multiples of the extractor's stride (or a trunk stage has a
4x4 stride-1 conv, like the paper's third patch stage), the shuffled map is resized (bilinear) to ``H x W``.
A stage whose stride is coarser than the extractor's, or not a divisor of it, is refused at build time.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class FusionSpec:
    """How a trunk fuses semantics (``semantic_dim`` = channels and ``semantic_stride`` = stride of the extractor).

    Args:
        semantic_dim: Channels of the semantic map (1024 for CLIP RN50 / ResNet-50 ``layer3``).
        semantic_stride: Stride of the semantic map w.r.t. the discriminator's input (16 for those).
        num_heads: Attention heads. Default: 1 (the paper's).
        head_dim: Channels per head. Default: 64 (the paper's).
    """
    semantic_dim: int
    semantic_stride: int = 16
    num_heads: int = 1
    head_dim: int = 64

    def __post_init__(self) -> None:
        for name in ('semantic_dim', 'semantic_stride', 'num_heads', 'head_dim'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}.')

    def up_factor(self, feat_stride: int) -> int:
        """Pixel-shuffle factor from the semantic map to a feature map at ``feat_stride``."""
        if feat_stride > self.semantic_stride or self.semantic_stride % feat_stride:
            raise ValueError(f'semantic_stride {self.semantic_stride} cannot be fused into a discriminator stage at '
                             f'stride {feat_stride}: the stage stride must divide the semantic stride. Use an '
                             'extractor with a coarser stride or a trunk with fewer stride-2 stages.')
        return self.semantic_stride // feat_stride


def _num_groups(channels: int, preferred: int = 32) -> int:
    return math.gcd(channels, preferred)


class _Attention(nn.Module):
    """Multi-head attention on token sequences (``B x N x D``) with separate query and key/value inputs."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(context)), self._heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(x.shape))


class _GatedFeedForward(nn.Module):
    """GEGLU feed-forward (``dim -> mult * dim -> dim``)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.proj_out = nn.Linear(dim * mult, dim)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(x * F.gelu(gate))


class SemanticFusionBlock(nn.Module):
    """SeFB: semantic queries attend to discriminator features; the result is shuffled up to the features' size.

    Args:
        semantic_dim: Channels of the semantic map.
        feat_dim: Channels of the discriminator feature map.
        up_factor: Pixel-shuffle factor (semantic stride / feature stride).
        out_channels: Channels of the output. Default: ``max(1, semantic_dim // up_factor**2)`` (the paper's).
        num_heads: Attention heads. Default: 1.
        head_dim: Channels per head. Default: 64.
        zero_init: Initialise ``proj_out`` to zero (the paper's choice). Default: True.
    """

    def __init__(self, semantic_dim: int, feat_dim: int, up_factor: int, out_channels: Optional[int] = None,
                 num_heads: int = 1, head_dim: int = 64, zero_init: bool = True) -> None:
        super().__init__()
        inner = num_heads * head_dim
        self.up_factor = int(up_factor)
        self.out_channels = int(out_channels or max(1, semantic_dim // self.up_factor**2))
        self.semantic_dim = int(semantic_dim)
        self.norm = nn.GroupNorm(_num_groups(semantic_dim), semantic_dim, eps=1e-6)
        self.proj_semantic = nn.Conv2d(semantic_dim, inner, 1)
        self.proj_feat = nn.Conv2d(feat_dim, inner, 1)
        self.norm_self, self.norm_cross, self.norm_ff = nn.LayerNorm(inner), nn.LayerNorm(inner), nn.LayerNorm(inner)
        self.self_attn = _Attention(inner, num_heads)
        self.cross_attn = _Attention(inner, num_heads)
        self.ff = _GatedFeedForward(inner)
        self.proj_out = nn.Conv2d(inner, self.out_channels * self.up_factor**2, 1)
        if zero_init:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)
        self.conv_out = nn.Conv2d(self.out_channels, self.out_channels, 3, 1, 1)

    def forward(self, semantic: Tensor, feat: Tensor) -> Tensor:
        """
        Args:
            semantic: ``B x semantic_dim x h x w`` semantic map (queries).
            feat: ``B x feat_dim x H x W`` discriminator features (keys and values).

        Returns:
            ``B x out_channels x H x W``.
        """
        if semantic.dim() != 4 or semantic.size(1) != self.semantic_dim or semantic.size(0) != feat.size(0):
            raise ValueError(f'SemanticFusionBlock: expected a {feat.size(0)} x {self.semantic_dim} x h x w semantic '
                             f'map, got {tuple(semantic.shape)}.')
        b, _, h, w = semantic.shape
        tokens = self.proj_semantic(self.norm(semantic)).flatten(2).transpose(1, 2)
        context = self.proj_feat(feat).flatten(2).transpose(1, 2)
        normed = self.norm_self(tokens)
        tokens = self.self_attn(normed, normed)
        tokens = self.cross_attn(self.norm_cross(tokens), context)
        tokens = self.ff(self.norm_ff(tokens))
        x = tokens.transpose(1, 2).reshape(b, -1, h, w)
        x = self.conv_out(F.pixel_shuffle(self.proj_out(x), self.up_factor))
        if x.shape[-2:] != feat.shape[-2:]:
            x = F.interpolate(x, size=feat.shape[-2:], mode='bilinear', align_corners=False)
        return x


class SemanticFusion(nn.Module):
    """One fusion point of a trunk: ``lrelu(conv3x3(cat(F, SeFB(S, F))))`` with ``C_f`` output channels.

    Args:
        spec: The trunk's :class:`FusionSpec`.
        feat_dim: Channels of the feature map at this point.
        feat_stride: Stride of the feature map w.r.t. the input.
        conv: Factory ``(in_ch, out_ch) -> 3x3 conv module`` (the trunk's normalisation, e.g. spectral norm).
    """

    def __init__(self, spec: FusionSpec, feat_dim: int, feat_stride: int, conv) -> None:
        super().__init__()
        self.sefb = SemanticFusionBlock(spec.semantic_dim, feat_dim, spec.up_factor(feat_stride),
                                        num_heads=spec.num_heads, head_dim=spec.head_dim)
        self.conv = conv(feat_dim + self.sefb.out_channels, feat_dim)

    def forward(self, feat: Tensor, semantic: Tensor) -> Tensor:
        fused = torch.cat([feat, self.sefb(semantic, feat)], dim=1)
        return F.leaky_relu(self.conv(fused), negative_slope=0.2, inplace=True)


def make_fusion_spec(semantic_dim: Optional[int], semantic_stride: int = 16, num_heads: int = 1,
                     head_dim: int = 64) -> Optional[FusionSpec]:
    """A :class:`FusionSpec`, or None when ``semantic_dim`` is None / 0 (no semantic conditioning)."""
    if not semantic_dim:
        return None
    return FusionSpec(int(semantic_dim), int(semantic_stride), int(num_heads), int(head_dim))
