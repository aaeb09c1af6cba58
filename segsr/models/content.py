"""The content term of every generator step (GAN models and SR4IR): pixel, perceptual/style and spectral losses."""
from typing import Dict, Mapping, Optional

from torch import Tensor, nn


def content_loss(output: Tensor, targets: Mapping[str, Tensor], loss_dict: Dict[str, Tensor],
                 cri_pix: Optional[nn.Module] = None, cri_perceptual: Optional[nn.Module] = None,
                 cri_freq: Optional[nn.Module] = None) -> Tensor:
    """Sum of the configured content losses of ``output``, each logged under BasicSR's generator names.

    Args:
        output: The generator's images.
        targets: ``{'pix': ..., 'percep': ...}`` (``'freq'`` defaults to ``'pix'``): the HR images each term compares
            with (Real-ESRGAN may use sharpened ones).
        loss_dict: Where the terms are logged: ``l_g_pix``, ``l_g_percep``, ``l_g_style``, ``l_g_freq``.
        cri_pix / cri_perceptual / cri_freq: The criteria (None: off). ``cri_perceptual`` returns
            ``(percep, style)``, either of which may be None (BasicSR's ``PerceptualLoss``).

    Returns:
        The sum (a zero scalar when no term is configured).
    """
    total = output.new_zeros(())
    if cri_pix is not None:
        loss_dict['l_g_pix'] = cri_pix(output, targets['pix'])
        total = total + loss_dict['l_g_pix']
    if cri_perceptual is not None:
        l_percep, l_style = cri_perceptual(output, targets['percep'])
        for name, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
            if value is not None:
                loss_dict[name] = value
                total = total + value
    if cri_freq is not None:
        loss_dict['l_g_freq'] = cri_freq(output, targets.get('freq', targets['pix']))
        total = total + loss_dict['l_g_freq']
    return total
