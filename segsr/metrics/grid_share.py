"""A number for the periodic grid that task losses can paint: the share of the error spectrum at the LR pixel grid.

A pattern repeated every LR pixel (``scale`` output pixels) puts its energy at the harmonics of ``1 / scale`` cycles
per pixel; HR detail and noise spread theirs over the whole spectrum.
"""
import numpy as np
from basicsr.metrics.metric_util import reorder_image, to_y_channel
from basicsr.utils.registry import METRIC_REGISTRY


def lr_grid_mask(height: int, width: int, scale: int, radius: int = 1) -> np.ndarray:
    """The 2-D FFT bins of an ``height x width`` image at the harmonics of the LR grid (``k / scale`` cycles per
    pixel in each direction, not both 0), each with ``radius`` bins around it.

    Args:
        height: Image height.
        width: Image width.
        scale: Upscaling factor (the LR pixel's size in output pixels).
        radius: Bins on each side of a harmonic that count to it (frequencies fall between bins when the size is not
            a multiple of ``scale``). Default: 1.
    """
    mask = np.zeros((height, width), bool)
    for ky in range(scale):
        for kx in range(scale):
            if ky == 0 and kx == 0:
                continue
            cy, cx = round(ky * height / scale), round(kx * width / scale)
            for y in range(cy - radius, cy + radius + 1):
                for x in range(cx - radius, cx + radius + 1):
                    mask[y % height, x % width] = True
    return mask


@METRIC_REGISTRY.register()
def calculate_grid_share(img: np.ndarray, img2: np.ndarray, crop_border: int, scale: int = 4, input_order: str = 'HWC',
                         test_y_channel: bool = True, **kwargs) -> float:
    """Percent of the energy of ``img - img2`` (SR minus HR) at the LR grid's harmonics (:func:`lr_grid_mask`).

    About ``100 * (9 * scale**2 - 9) / (H * W)`` for an error without structure (0.08% at 480 x 360, x4); S->T on
    CamVid 0.2%, rows with a visible grid 1-6% (docs/ablations.md). Use it like BasicSR's metrics
    (``metrics: {grid: {type: calculate_grid_share, crop_border: 4, scale: 4}}``).

    Args:
        img: The SR image, range [0, 255].
        img2: The HR image, range [0, 255].
        crop_border: Pixels cropped from each edge before the FFT.
        scale: Upscaling factor. Default: 4.
        input_order: ``HWC`` or ``CHW``. Default: ``HWC``.
        test_y_channel: Score the Y channel (BasicSR's ``to_y_channel``) instead of all channels. Default: True.

    Returns:
        The share in percent; 0 when the two images are equal.
    """
    if img.shape != img2.shape:
        raise ValueError(f'calculate_grid_share: image shapes differ: {img.shape} vs {img2.shape}.')
    img, img2 = (reorder_image(x, input_order=input_order).astype(np.float64) for x in (img, img2))
    if crop_border:
        img, img2 = (x[crop_border:-crop_border, crop_border:-crop_border] for x in (img, img2))
    if test_y_channel:
        img, img2 = to_y_channel(img), to_y_channel(img2)
    diff = img - img2
    diff = diff - diff.mean(axis=(0, 1), keepdims=True)
    power = np.abs(np.fft.fft2(diff, axes=(0, 1)))**2
    power = power.reshape(power.shape[0], power.shape[1], -1).sum(axis=2)
    total = power.sum()
    if total == 0:
        return 0.0
    mask = lr_grid_mask(power.shape[0], power.shape[1], int(scale))
    return float(100 * power[mask].sum() / total)
