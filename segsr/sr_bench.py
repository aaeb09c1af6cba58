"""Score bicubic and generator checkpoints on the classic SR test sets (Set5, Set14, BSD100).

``python segsr/sr_bench.py -opt options/sed/evaluate_sr_bench_x4.yml`` writes ``results.md`` (one table: PSNR /
SSIM / NIQE (/ LPIPS) per set and method), ``results.json`` and ``grid.png`` (HR crop | each method) to
``output_dir`` (default ``results/<name>``); with ``save_img: true`` also every SR image.

Data (``bench_root``, required): ``<set>/HR/*.png``; LR inputs from ``<set>/LRbicx4``
(``LRbicx<scale>``) when that folder exists, else made from HR with BasicSR's MATLAB-style bicubic
(``basicsr.utils.matlab_functions.imresize``) after cropping HR to a multiple of the scale. Images are read as
stored (:func:`segsr.utils.image_io.read_image`): 16-bit files keep their 16 bits, grayscale ones (Set14's img_003)
become 3-channel, an alpha channel is dropped.

Metrics (BasicSR's own functions): PSNR and SSIM on Y with a ``scale``-pixel border, NIQE (BasicSR's, on Y, with
its bundled parameters: works offline) on the SR image; LPIPS (``lpips`` package, AlexNet) only when its
backbone weights are available locally (torch hub cache or ``lpips.backbone_path``); otherwise it is skipped with
a message saying what is missing.

Config keys:
    name: Run name.
    scale: SR scale (default 4).
    num_gpu: 0 for CPU, ``auto`` (default) to use CUDA when present.
    bench_root: Folder holding the sets. sets: Set names (default ``[Set5, Set14, BSD100]``).
    metrics: BasicSR metric blocks (default PSNR, SSIM, NIQE as above).
    lpips: ``{enabled: true, net: alex, backbone_path: ~}`` (default enabled-if-available).
    methods: List of ``{name, type}``, type ``bicubic``, ``hr`` or ``generator`` (``path`` + optional ``network_g``
        + optional ``param_key``; any checkpoint spandrel detects needs no ``network_g``), as in
        ``segsr/evaluate.py`` (one loader: :func:`segsr.utils.model_io.load_generator`).
    grid: ``{crop: 128, images: ['Set5/butterfly', ...]}`` (default: the first image of each set).
    save_img: Save every SR image under ``output_dir/images/<method>/<set>/``.
"""
import glob
import logging
import os
import sys
import time
from collections import OrderedDict
from copy import deepcopy
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import segsr  # noqa: E402,F401
from basicsr.metrics import calculate_metric  # noqa: E402
from basicsr.utils import get_root_logger, get_time_str, tensor2img  # noqa: E402
from basicsr.utils.matlab_functions import imresize  # noqa: E402

from segsr.evaluate import build_method, check_methods, run_cli  # noqa: E402
from segsr.report import (finite_or_none, fmt_value, markdown_lines, psnr_ssim_metrics, write_json,  # noqa: E402
                          write_text)
from segsr.utils.misc import sync_device  # noqa: E402
from segsr.utils.image_io import read_image, split_image  # noqa: E402
from segsr.utils.visual import make_grid, make_panel, save_rgb, tensor_to_rgb  # noqa: E402
from segsr.weights import freeze, load_into, read_weights  # noqa: E402

DEFAULT_SETS = ('Set5', 'Set14', 'BSD100')
IMAGE_EXTS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff')


def load_config(path: str) -> dict:
    """Read and validate an SR-bench config (errors name the file and key)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'SR-bench config {path} does not exist.')
    with open(path, 'r') as f:
        cfg = yaml.safe_load(f) or {}
    for key in ('name', 'methods', 'bench_root'):
        if key not in cfg:
            raise ValueError(f"{path}: key '{key}' is required" + (
                ' (the folder holding Set5/, Set14/, ... with HR/ inside each).' if key == 'bench_root' else '.'))
    check_methods(cfg['methods'], path, {'val': {'metrics': cfg.get('metrics') or {}}})
    return cfg


def _read_rgb(path: str) -> np.ndarray:
    """``H x W x 3`` float32 RGB in [0, 1] as stored: 8 or 16 bits, grayscale repeated, alpha dropped."""
    return split_image(read_image(path))[0]


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()


def load_bench_set(root: str, name: str, scale: int) -> List[Tuple[str, torch.Tensor, torch.Tensor]]:
    """``[(image name, lq 3 x h x w, gt 3 x H x W)]`` of one set, RGB in [0, 1] (see module doc)."""
    hr_dir = os.path.join(root, name, 'HR')
    paths = sorted(p for p in glob.glob(os.path.join(hr_dir, '*')) if p.lower().endswith(IMAGE_EXTS))
    if not paths:
        raise FileNotFoundError(f"SR bench set '{name}': no images in {hr_dir}.")
    lr_dir = os.path.join(root, name, f'LRbicx{scale}')
    samples = []
    for path in paths:
        hr = _read_rgb(path)
        h, w = hr.shape[0] - hr.shape[0] % scale, hr.shape[1] - hr.shape[1] % scale
        hr = hr[:h, :w]
        if os.path.isdir(lr_dir):
            lr_path = os.path.join(lr_dir, os.path.basename(path))
            if not os.path.isfile(lr_path):
                raise FileNotFoundError(f"SR bench set '{name}': {lr_path} (LR of {path}) does not exist.")
            lr = _read_rgb(lr_path)
            if lr.shape[:2] != (h // scale, w // scale):
                raise ValueError(f'{lr_path} is {lr.shape[1]}x{lr.shape[0]}, expected {w // scale}x{h // scale} '
                                 f'(HR {path} cropped to a multiple of {scale}).')
        else:
            lr = np.clip(imresize(hr, 1 / scale), 0, 1).astype(np.float32)
        samples.append((os.path.splitext(os.path.basename(path))[0], _to_tensor(lr), _to_tensor(hr)))
    return samples


def check_niqe_sizes(sets: Dict[str, list], metrics: dict) -> None:
    """BasicSR's NIQE fits a Gaussian over 96 x 96 blocks: refuse images with fewer than two (after the border)."""
    for m_opt in metrics.values():
        if m_opt.get('type') != 'calculate_niqe':
            continue
        border = int(m_opt.get('crop_border', 0))
        for set_name, samples in sets.items():
            for name, _, gt in samples:
                h, w = gt.shape[-2] - 2 * border, gt.shape[-1] - 2 * border
                if (h // 96) * (w // 96) < 2:
                    raise ValueError(f'{set_name}/{name} ({gt.shape[-2]}x{gt.shape[-1]}) is too small for NIQE: it '
                                     f'needs two 96 x 96 blocks after a {border}-pixel border; drop NIQE from '
                                     "'metrics' or this image.")


class LPIPSScorer:
    """LPIPS (``lpips`` package) when the package and its backbone weights are local; ``reason`` says why not."""

    def __init__(self, opt: Optional[dict], device: torch.device) -> None:
        opt = dict(opt or {})
        self.model, self.reason = None, None
        if not opt.get('enabled', True):
            self.reason = 'disabled in the config (lpips.enabled: false)'
            return
        net = opt.get('net', 'alex')
        try:
            import lpips
        except ImportError:
            self.reason = "the 'lpips' package is not installed (pip install lpips)"
            return
        backbone = self._backbone_file(net, opt.get('backbone_path'))
        if backbone is None:
            return
        self.model = freeze_lpips(lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False), backbone, net)
        self.model = self.model.to(device)

    def _backbone_file(self, net: str, path: Optional[str]) -> Optional[str]:
        import torchvision

        weights = {'alex': torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
                   'vgg': torchvision.models.VGG16_Weights.IMAGENET1K_V1,
                   'squeeze': torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1}.get(net)
        if weights is None:
            raise ValueError(f"lpips.net '{net}' is not supported; use alex, vgg or squeeze.")
        path = path or os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(weights.url))
        if not os.path.isfile(path):
            self.reason = (f'its {net} backbone weights are not available locally ({path} is missing; download '
                           f'{weights.url} there or set lpips.backbone_path)')
            return None
        return path

    def __call__(self, sr: torch.Tensor, gt: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.model(sr * 2 - 1, gt * 2 - 1).mean())


def freeze_lpips(model: torch.nn.Module, backbone: str, net: str) -> torch.nn.Module:
    """Load the local backbone weights into an LPIPS model built with a random backbone; eval, no gradients."""
    import torchvision

    tv_net = {'alex': torchvision.models.alexnet, 'vgg': torchvision.models.vgg16,
              'squeeze': torchvision.models.squeezenet1_1}[net](weights=None)
    load_into(tv_net, read_weights(backbone, 'lpips.backbone_path'), backbone, 'lpips.backbone_path')
    # lpips splits torchvision's ``features`` into slices whose children keep the feature indices as names
    for name, module in model.net.named_modules():
        parts = name.split('.')
        if len(parts) == 2 and parts[0].startswith('slice'):
            module.load_state_dict(tv_net.features[int(parts[1])].state_dict())
    return freeze(model)


def image_metrics(sr: torch.Tensor, gt: torch.Tensor, metrics: dict, label: str) -> Dict[str, float]:
    """BasicSR metrics of one SR image; a metric undefined on it (NIQE of a flat image) is NaN, with a warning."""
    data = {'img': tensor2img([sr.detach().cpu()]), 'img2': tensor2img([gt.detach().cpu()])}
    values = {}
    for name, m_opt in metrics.items():
        try:
            values[name] = float(calculate_metric(data, m_opt))
        except (np.linalg.LinAlgError, ValueError) as err:
            get_root_logger().warning(f'{name} is undefined for {label} ({err}); counted as n/a.')
            values[name] = float('nan')
    return values


def evaluate_set(fn, samples, metrics: dict, lpips_scorer: LPIPSScorer, device: torch.device,
                 image_dir: Optional[str], label: str = '') -> Tuple[dict, Dict[str, np.ndarray]]:
    """One method on one set: averaged metrics and seconds per image, plus the SR images (uint8 RGB) by name.

    A metric that is undefined on any image of the set averages to NaN (``n/a`` in the table, ``null`` in JSON).
    """
    seconds, totals, outputs = 0.0, {name: 0.0 for name in metrics}, {}
    lpips_sum = 0.0
    for name, lq, gt in samples:
        lq, gt = lq.unsqueeze(0).to(device), gt.unsqueeze(0).to(device)
        sync_device(device)
        start = time.perf_counter()
        with torch.no_grad():
            sr = fn(lq, gt).clamp(0, 1)
        sync_device(device)
        seconds += time.perf_counter() - start
        for metric, value in image_metrics(sr, gt, metrics, f'{label}/{name}').items():
            totals[metric] += value
        if lpips_scorer.model is not None:
            lpips_sum += lpips_scorer(sr, gt)
        outputs[name] = tensor_to_rgb(sr)
        if image_dir:
            save_rgb(os.path.join(image_dir, f'{name}.png'), outputs[name])
    summary: Dict[str, Optional[float]] = OrderedDict((k, v / len(samples)) for k, v in totals.items())
    summary['lpips'] = lpips_sum / len(samples) if lpips_scorer.model is not None else None
    summary['sec_per_img'] = seconds / len(samples)
    return summary, outputs


def crop_grid(sets: Dict[str, list], outputs: Dict[str, Dict[str, Dict[str, np.ndarray]]], grid_opt: dict) -> np.ndarray:
    """Rows ``HR crop | method crops`` for the chosen images (centre crops of ``grid.crop`` HR pixels)."""
    crop = int(grid_opt.get('crop', 128))
    chosen = grid_opt.get('images') or [f'{s}/{samples[0][0]}' for s, samples in sets.items()]
    rows = []
    for item in chosen:
        set_name, _, image = str(item).partition('/')
        gts = {n: gt for n, _, gt in sets.get(set_name, [])}
        if image not in gts:
            raise ValueError(f"grid.images: '{item}' is not an image of the evaluated sets.")
        hr = tensor_to_rgb(gts[image])
        h, w = hr.shape[:2]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)

        def cut(img: np.ndarray) -> np.ndarray:
            return img[top:top + crop, left:left + crop]

        images = [cut(hr)] + [cut(out[set_name][image]) for out in outputs.values()]
        rows.append(make_panel(images, [f'HR {item}'] + list(outputs)))
    return make_grid(rows)


def markdown_table(results: Dict[str, Dict[str, dict]], metric_names: List[str], with_lpips: bool) -> str:
    names = metric_names + (['lpips'] if with_lpips else [])
    sets = list(next(iter(results.values())))
    header = ['method'] + [f'{s} {m.upper()}' for s in sets for m in names] + ['s / image']
    rows = []
    for method, per_set in results.items():
        cells = [method]
        for s in sets:
            cells += [fmt_value(per_set[s].get(m), 4 if m in ('ssim', 'lpips') else 2) for m in names]
        seconds = [per_set[s]['sec_per_img'] for s in sets]
        cells.append(fmt_value(float(np.mean(seconds)), 4))
        rows.append(cells)
    return '\n'.join(markdown_lines(header, rows)) + '\n'


def run_sr_bench(cfg: dict, output_dir: Optional[str] = None) -> dict:
    """Evaluate every method on every set of a (validated) config; write table, JSON and grid; return results."""
    cfg = deepcopy(cfg)
    root = cfg['bench_root']
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{cfg['name']}: bench_root '{root}' is not a folder (it must hold Set5/, Set14/, "
                                '... with HR/ inside each).')
    scale = int(cfg.get('scale', 4))
    use_cuda = torch.cuda.is_available() and cfg.get('num_gpu', 'auto') != 0
    device = torch.device('cuda' if use_cuda else 'cpu')
    output_dir = output_dir or cfg.get('output_dir') or os.path.join('results', cfg['name'])
    os.makedirs(output_dir, exist_ok=True)
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO,
                             log_file=os.path.join(output_dir, f"sr_bench_{cfg['name']}_{get_time_str()}.log"))
    sets = OrderedDict((s, load_bench_set(root, s, scale)) for s in cfg.get('sets', DEFAULT_SETS))
    metrics = cfg.get('metrics') or psnr_ssim_metrics(scale, niqe=True)
    check_niqe_sizes(sets, metrics)
    lpips_scorer = LPIPSScorer(cfg.get('lpips'), device)
    if lpips_scorer.model is None:
        logger.warning(f'LPIPS skipped: {lpips_scorer.reason}.')
    results: Dict[str, Dict[str, dict]] = OrderedDict()
    outputs: Dict[str, Dict[str, Dict[str, np.ndarray]]] = OrderedDict()
    for method in cfg['methods']:
        fn = build_method(method, device)
        results[method['name']], outputs[method['name']] = OrderedDict(), OrderedDict()
        for set_name, samples in sets.items():
            image_dir = os.path.join(output_dir, 'images', method['name'], set_name) if cfg.get('save_img') else None
            summary, outputs[method['name']][set_name] = evaluate_set(fn, samples, metrics, lpips_scorer, device,
                                                                      image_dir, f"{method['name']}/{set_name}")
            results[method['name']][set_name] = summary
            logger.info(f"{method['name']} on {set_name} ({len(samples)} images): " +
                        ', '.join(f'{k} {v:.4f}' for k, v in summary.items() if v is not None and np.isfinite(v)))
    table = markdown_table(results, list(metrics), lpips_scorer.model is not None)
    note = '' if lpips_scorer.model is not None else f'\nLPIPS skipped: {lpips_scorer.reason}.\n'
    write_text(os.path.join(output_dir, 'results.md'),
               f"# {cfg['name']}: x{scale} on {', '.join(sets)}\n\n{table}{note}")
    payload = {m: {s: finite_or_none(v) for s, v in per_set.items()} for m, per_set in results.items()}
    write_json(os.path.join(output_dir, 'results.json'), dict(
        name=cfg['name'], scale=scale, sets={s: len(v) for s, v in sets.items()}, device=str(device),
        lpips_skipped=lpips_scorer.reason, methods=payload))
    save_rgb(os.path.join(output_dir, 'grid.png'), crop_grid(sets, outputs, cfg.get('grid') or {}))
    logger.info(f'SR-bench table ({output_dir}/results.md):\n{table}{note}')
    return payload


def main(argv: Optional[List[str]] = None) -> None:
    run_cli(__doc__.split('\n\n')[0], load_config, run_sr_bench, argv)


if __name__ == '__main__':
    main()
