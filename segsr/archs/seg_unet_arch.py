"""A compact U-Net segmentation task network that trains from scratch in minutes on a CPU."""
import math
from typing import Dict, List, Optional, Tuple

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.segmentation.fcn import FCNHead

from segsr.archs.task_net_util import SegTaskNet


class _DoubleConv(nn.Sequential):
    """(3x3 conv, BN, ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: Optional[int] = None) -> None:
        mid_channels = mid_channels or out_channels
        super().__init__(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False), nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True), nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _Up(nn.Module):
    """2x upsampling (bilinear or transposed conv), concatenation with the skip, double conv.

    Bilinear: the input has ``in_channels // 2`` channels, like the skip. Transposed conv: the input has
    ``in_channels`` channels and is reduced to ``in_channels // 2`` by the transposed conv.
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
            self.conv = _DoubleConv(in_channels, out_channels, in_channels // 2)
        else:
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
            self.conv = _DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


@ARCH_REGISTRY.register()
class SegUNet(SegTaskNet):
    """Compact U-Net for semantic segmentation (about 1.08M parameters at the defaults).

    Encoder: a double conv then ``num_levels`` times (2x2 max-pool, double conv), channels ``base_channels * 2**i``
    (the bottleneck is halved when ``bilinear``); decoder: upsampling, concatenation with the encoder skip and a
    double conv per level; a 1x1 conv gives the logits. Any input size works: the input is padded (replicate,
    bottom/right) to a multiple of ``2**num_levels`` and the outputs are cropped back.

    Features (``feature_names``): ``'enc1'`` .. ``'enc{num_levels}'`` = encoder outputs at strides 1, 2, ..,
    ``2**(num_levels-1)``; ``'C5'`` (alias ``'bottleneck'``) = bottleneck at stride ``2**num_levels``;
    ``'dec{num_levels}'`` .. ``'dec1'`` = decoder outputs, ``'decK'`` at the stride of ``'encK'``. A feature at
    stride ``s`` is cropped to ``ceil(H / s) x ceil(W / s)``.

    Args:
        num_classes: Number of classes.
        in_channels: Input channels (3 when ``input_norm``).
        base_channels: Channels of the first level.
        num_levels: Number of down-sampling steps.
        bilinear: Bilinear upsampling (True) or transposed convolutions (False).
        aux_head: Add an auxiliary FCN head on the bottleneck (``forward`` then returns ``'aux'``).
        input_norm: Normalise ``[0, 1]`` RGB input with ImageNet mean/std inside the network.
        pretrained: None (random init) or the path of a weights file: a plain state dict of this network or a
            BasicSR checkpoint (``params_ema`` preferred over ``params`` unless ``param_key`` is given). Aux-head
            weights in the file are ignored (logged) when ``aux_head`` is off.
        param_key: Key of the state dict inside a BasicSR checkpoint.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 3,
                 base_channels: int = 16,
                 num_levels: int = 4,
                 bilinear: bool = True,
                 aux_head: bool = False,
                 input_norm: bool = True,
                 pretrained: Optional[str] = None,
                 param_key: Optional[str] = None) -> None:
        if num_levels < 1 or base_channels < 2:
            raise ValueError(f'SegUNet: num_levels must be >= 1 and base_channels >= 2, got {num_levels} and '
                             f'{base_channels}.')
        names = ([f'enc{i}' for i in range(1, num_levels + 1)] + ['C5', 'bottleneck'] +
                 [f'dec{i}' for i in range(num_levels, 0, -1)])
        super().__init__(num_classes, has_aux=aux_head, feature_names=names, in_channels=in_channels,
                         input_norm=input_norm)
        self.num_levels = num_levels
        factor = 2 if bilinear else 1
        ch = [base_channels * 2**i for i in range(num_levels + 1)]
        self.inc = _DoubleConv(in_channels, ch[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _DoubleConv(ch[i - 1], ch[i] // factor if i == num_levels else ch[i]))
            for i in range(1, num_levels + 1))
        self.ups = nn.ModuleList(
            _Up(ch[j], ch[j - 1] // factor if j > 1 else ch[0], bilinear) for j in range(num_levels, 0, -1))
        self.head = nn.Conv2d(ch[0], self.num_classes, 1)
        self.aux_classifier = FCNHead(ch[num_levels] // factor, self.num_classes) if aux_head else None
        self._init_weights()
        if pretrained is not None:
            if pretrained == 'hub':
                raise ValueError("SegUNet has no hub weights; set pretrained to None or a local file path.")
            self.load_pretrained(pretrained, param_key=param_key)

    def _convert_state_dict(self, state: Dict[str, Tensor], source: str) -> Tuple[Dict[str, Tensor], List[str]]:
        return self._drop_aux_keys(state, source, 'aux_classifier.'), []

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _forward_logits(self, x: Tensor,
                        feature_names: Tuple[str, ...]) -> Tuple[Tensor, Optional[Tensor], Dict[str, Tensor]]:
        h, w = x.shape[-2:]
        multiple = 2**self.num_levels
        x = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode='replicate')
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        feats = {f'enc{i + 1}': s for i, s in enumerate(skips[:-1])}
        feats['C5'] = feats['bottleneck'] = skips[-1]
        y = skips[-1]
        for k, up in enumerate(self.ups):
            y = up(y, skips[-2 - k])
            feats[f'dec{self.num_levels - k}'] = y
        out = self.head(y)[..., :h, :w]
        aux = None
        if self.aux_classifier is not None:
            aux = self.aux_classifier(skips[-1])
            aux = F.interpolate(aux, size=x.shape[-2:], mode='bilinear', align_corners=False)[..., :h, :w]
        return out, aux, {n: self._crop(feats[n], x.size(-2), h, w) for n in feature_names}

    @staticmethod
    def _crop(feat: Tensor, padded_h: int, h: int, w: int) -> Tensor:
        """Crop a feature map of the padded input to the part that covers the ``h x w`` input."""
        stride = padded_h // feat.size(-2)
        return feat[..., :math.ceil(h / stride), :math.ceil(w / stride)]
