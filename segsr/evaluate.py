"""Score bicubic and any generator checkpoints on a labelled set with one frozen judge (any task).

``python segsr/evaluate.py -opt options/evaluate_demo.yml`` writes ``results.md`` (Markdown table),
``results.json``, ``grid.png`` (segmentation: LR | each method | HR, with the judge's segmentation under each;
detection / classification: LR | each method with the judge's boxes or class | HR with the ground truth) and, for
segmentation, ``judge_confusion.npz`` (``methods``: names, ``images``: image names in dataset order, ``matrices``: the
judge's per-image confusion matrices, methods x images x C x C, for intervals against any row later) to
``output_dir`` (default ``results/<name>``).

The task is the judge's (its network's ``task``: ``seg``, ``det``, ``cls``); the table shows its metrics (mIoU and
pixel accuracy; mAP@.5 and mAP@[.5:.95]; top-1 and top-5).

Config keys:
    name: Run name.
    scale: SR scale.
    num_gpu: 0 for CPU, ``auto`` (default) to use CUDA when present.
    dataset: A ``PairedImageSegDataset`` / ``PairedImageDetDataset`` / ``PairedImageClsDataset`` block (validation
        phase: whole images, cropped to a multiple of scale); the judge's task.
    judge: ``{network: {...}, path: ..., param_key: params}`` (see :mod:`segsr.models.task_eval`).
    metrics: BasicSR metric blocks; default PSNR and SSIM on Y with a ``scale``-pixel border.
    methods: List of ``{name, type}`` with type ``bicubic``, ``hr`` (the HR image itself: the judge's upper bound)
        or ``generator``: ``path`` (a checkpoint, ``.safetensors`` or options file) + optional ``network_g`` block +
        optional ``param_key`` (default ``params_ema`` falling back to ``params``): ours, stock BasicSR ``net_g``
        files, or any public checkpoint whose architecture spandrel detects (no ``network_g`` needed; see
        :func:`segsr.utils.model_io.load_generator`).
    grid: ``{num_images: 3}``: images spread evenly over the set.
    reference: Name of a method (e.g. ``S->T``): every other row gets the paired bootstrap 95% interval of its
        difference to it in the judge's main metric (segmentation: :func:`segsr.metrics.paired_block_bootstrap`,
        blocks of consecutive images in dataset order, mIoU recomputed from the summed confusion matrices;
        detection and classification: :func:`segsr.metrics.bootstrap.paired_image_bootstrap`, single images,
        mAP@.5 / top-1 recomputed per draw). Optional.
    bootstrap: ``{block: 10, samples: 2000, level: 0.95, seed: 0}`` (the defaults; ``block`` is for segmentation;
        a detection draw costs about 0.7 s on 2 cores at BCCD's val size, so ``samples: 200`` is a few minutes).
"""
import argparse
import logging
import os
import sys
import time
from collections import OrderedDict
from copy import deepcopy
from typing import Callable, Dict, List, Optional

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

import segsr  # noqa: E402,F401
from basicsr.data import build_dataset  # noqa: E402
from basicsr.utils import get_root_logger, get_time_str  # noqa: E402

from segsr.compat import apply_basicsr_fixes  # noqa: E402
from segsr.models.seg_task_model import upsample_bicubic  # noqa: E402
from segsr.report import (BOOTSTRAP_DEFAULTS, finite_or_none, fmt_interval, fmt_value, markdown_lines,  # noqa: E402
                          psnr_ssim_metrics, write_json, write_text)  # noqa: E402
from segsr.models.task_eval import TaskScorer, build_judge, network_predictor  # noqa: E402
from segsr.tasks import Task, get_task, task_of_network  # noqa: E402
from torch.utils.data.dataloader import default_collate  # noqa: E402
from segsr.utils.misc import sync_device  # noqa: E402
from segsr.utils.model_io import load_generator  # noqa: E402
from segsr.utils.options import check_registered_types  # noqa: E402
from segsr.utils.visual import colorize, make_grid, make_panel, save_rgb, tensor_to_rgb  # noqa: E402

SRFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METHOD_TYPES = ('bicubic', 'hr', 'generator')


def load_config(path: str) -> dict:
    """Read and validate an evaluation config (errors name the file and key)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'evaluation config {path} does not exist.')
    with open(path, 'r') as f:
        cfg = yaml.safe_load(f) or {}
    for key in ('name', 'scale', 'dataset', 'judge', 'methods'):
        if key not in cfg:
            raise ValueError(f"{path}: key '{key}' is required.")
    names = [m.get('name') for m in cfg['methods'] if isinstance(m, dict)]
    if cfg.get('reference') is not None and cfg['reference'] not in names:
        raise ValueError(f"{path}: 'reference' = {cfg['reference']!r} is not a method name; methods: {names}.")
    unknown = set(cfg.get('bootstrap') or {}) - set(BOOTSTRAP_DEFAULTS)
    if unknown:
        raise ValueError(f"{path}: 'bootstrap' has unknown keys {sorted(unknown)}; known: {list(BOOTSTRAP_DEFAULTS)}.")
    typed = {'datasets': {'val': cfg['dataset']}, 'val': {'judge': cfg['judge'], 'metrics': cfg.get('metrics') or {}}}
    check_methods(cfg['methods'], path, typed)
    return cfg


def check_methods(methods, path: str, typed: dict) -> None:
    """Validate a ``methods`` list, then every registered type in it and in ``typed`` (errors name the file)."""
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"{path}: 'methods' must be a non-empty list.")
    for i, method in enumerate(methods):
        if not isinstance(method, dict) or method.get('type') not in METHOD_TYPES or not method.get('name'):
            raise ValueError(f"{path}: methods[{i}] needs a 'name' and a 'type' in {list(METHOD_TYPES)}.")
        if method['type'] == 'generator' and not method.get('path'):
            raise ValueError(f"{path}: methods[{i}] ('{method['name']}') needs 'path' (a checkpoint or options file).")
        if method['type'] == 'generator' and not isinstance(method.get('network_g', {}), dict):
            raise ValueError(f"{path}: methods[{i}] ('{method['name']}'): 'network_g' must be a network block.")
    typed = dict(typed)
    typed.update({f'network_g_{i}': m['network_g'] for i, m in enumerate(methods)
                  if m['type'] == 'generator' and m.get('network_g') is not None})
    check_registered_types(typed, source=path)


def reference_intervals(stats: Dict[str, object], reference: str, task: Optional[Task] = None,
                        **bootstrap) -> Dict[str, dict]:
    """Paired bootstrap interval of each method's main task metric minus ``reference``'s (``{}`` for the
    reference), from the judge's per-image statistics (segmentation: confusion matrices)."""
    task = task or get_task('seg')
    opts = dict(BOOTSTRAP_DEFAULTS, **bootstrap)
    return {name: ({} if name == reference else
                   task.interval(values, stats[reference], int(opts['block']), int(opts['samples']),
                                 float(opts['level']), int(opts['seed'])).as_dict())
            for name, values in stats.items()}


def build_method(method: dict, device: torch.device) -> SRFn:
    """Return ``fn(lq, gt) -> sr`` for one method entry (generators through :func:`load_generator`)."""
    if method['type'] == 'bicubic':
        return lambda lq, gt: upsample_bicubic(lq, gt.shape[-2:])
    if method['type'] == 'hr':
        return lambda lq, gt: gt
    net = load_generator(method['path'], method.get('network_g'), device, method.get('param_key', 'params_ema'),
                         f"methods['{method['name']}'].path", f"methods['{method['name']}'].network_g")
    get_root_logger().info(f"Method '{method['name']}': {net.source}, x{net.scale}.")

    def generate(lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        sr = net(lq)
        if sr.shape[-2:] != gt.shape[-2:]:
            raise ValueError(f"method '{method['name']}': output {tuple(sr.shape[-2:])} != HR {tuple(gt.shape[-2:])}"
                             f' ({net.source}, x{net.scale}); check scale and the network.')
        return sr

    return generate


def grid_indices(num_images: int, keep: int) -> List[int]:
    """``keep`` image indices spread evenly over the set (consecutive video frames look alike)."""
    keep = max(0, min(keep, num_images))
    return sorted({int(round(i)) for i in np.linspace(0, num_images - 1, keep)}) if keep else []


@torch.no_grad()
def evaluate_method(fn: SRFn, dataset, scorer: TaskScorer, device: torch.device, keep: List[int]) -> dict:
    """Run one method over the dataset; returns summary, seconds per image and pictures of images ``keep``."""
    seconds, pictures, images = 0.0, {}, []
    for idx in range(len(dataset)):
        sample = dataset[idx]
        images.append(os.path.basename(str(sample['gt_path'])))
        lq = sample['lq'].unsqueeze(0).to(device)
        gt = sample['gt'].unsqueeze(0).to(device)
        sync_device(device)
        start = time.perf_counter()
        sr = fn(lq, gt).clamp(0, 1)
        sync_device(device)
        seconds += time.perf_counter() - start
        record = scorer.add(sr, gt, scorer.task.targets(default_collate([sample]), torch.device('cpu')))
        if idx in keep:
            pictures[idx] = (tensor_to_rgb(sr), record['judge_pred'])
    summary = scorer.summary()
    summary['sec_per_img'] = seconds / max(len(dataset), 1)
    return dict(summary=summary, pictures=pictures, stats=scorer.meters['judge'].image_stats(), images=images)


def picture_grid(dataset, results: Dict[str, dict], keep: List[int], task: Optional[Task] = None) -> np.ndarray:
    """Segmentation: rows of ``LR | method... `` images over their judge segmentations (the LR column shows the
    ground truth). Other tasks: one row per image, ``LR | each method with the judge's prediction | HR with the
    ground truth``."""
    task = task or get_task('seg')
    if task.name != 'seg':
        return task_picture_grid(dataset, results, keep, task)
    palette, num_classes = getattr(dataset, 'palette', None), dataset.opt['num_classes']
    rows = []
    for idx in keep:
        sample = dataset[idx]
        gt_rgb = tensor_to_rgb(sample['gt'])
        images, segs = [tensor_to_rgb(sample['lq'])], [colorize(sample['seg'].numpy(), palette, num_classes)]
        for res in results.values():
            sr_rgb, pred = res['pictures'][idx]
            images.append(sr_rgb)
            segs.append(colorize(pred, palette, num_classes))
        names = ['LR'] + list(results.keys())
        rows.append(make_panel([_resize_like(img, gt_rgb) for img in images], names))
        rows.append(make_panel(segs, ['ground truth'] + [f'judge on {n}' for n in results]))
    return make_grid(rows)


def task_picture_grid(dataset, results: Dict[str, dict], keep: List[int], task: Task) -> np.ndarray:
    """One row per image: ``LR | method with the judge's prediction ... | HR with the ground truth``."""
    names, num_classes = getattr(dataset, 'class_names', None), dataset.num_classes
    rows = []
    for idx in keep:
        sample = dataset[idx]
        targets = task.targets(default_collate([sample]), torch.device('cpu'))
        gt_rgb = tensor_to_rgb(sample['gt'])
        tiles = [make_panel([_resize_like(tensor_to_rgb(sample['lq']), gt_rgb)], ['LR'])]
        for name, res in results.items():
            sr_rgb, pred = res['pictures'][idx]
            sr = torch.from_numpy(np.ascontiguousarray(sr_rgb)).permute(2, 0, 1).float() / 255.0
            tiles.append(task.picture(sr, pred, None, num_classes, None, names, 'judge', name))
        tiles.append(task.truth_picture(sample['gt'], targets, num_classes, None, names))
        height = max(tile.shape[0] for tile in tiles)
        gap = np.full((height, 4, 3), 255, np.uint8)
        padded = [_pad_to_height(tile, height) for tile in tiles]
        rows.append(np.concatenate([part for tile in padded for part in (tile, gap)][:-1], axis=1))
    return make_grid(rows)


def _pad_to_height(img: np.ndarray, height: int) -> np.ndarray:
    """``img`` with white rows above it up to ``height`` (above: captions differ in lines, the images stay aligned)."""
    if img.shape[0] == height:
        return img
    return np.concatenate([np.full((height - img.shape[0], img.shape[1], 3), 255, np.uint8), img], axis=0)


def _resize_like(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import cv2

    if img.shape[:2] == ref.shape[:2]:
        return img
    return cv2.resize(img, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST)


def markdown_table(results: Dict[str, dict], metric_names: List[str], reference: Optional[str] = None,
                   task: Optional[Task] = None) -> str:
    task = task or get_task('seg')
    header = ['method'] + metric_names + [f'judge {label}' for _, label in task.report_metrics] + ['s / image']
    header += [f'judge {task.report_metrics[0][1]} - {reference} [95% CI]'] if reference else []
    rows = []
    for name, res in results.items():
        s = res['summary']
        cells = [name] + [fmt_value(s.get(m), 4 if 'ssim' in m else 2) for m in metric_names]
        cells += [fmt_value(s.get(f'judge_{key}'), 2) for key, _ in task.report_metrics]
        cells += [fmt_value(s['sec_per_img'], 4)]
        cells += [fmt_interval(s.get(f'judge_{task.main_metric}_vs_reference'))] if reference else []
        rows.append(cells)
    return '\n'.join(markdown_lines(header, rows)) + '\n'


def run_evaluation(cfg: dict, output_dir: Optional[str] = None) -> dict:
    """Evaluate every method of a (validated) config; write table, JSON and grid; return the results dict."""
    cfg = deepcopy(cfg)
    num_gpu = cfg.get('num_gpu', 'auto')
    use_cuda = torch.cuda.is_available() and num_gpu != 0
    device = torch.device('cuda' if use_cuda else 'cpu')
    output_dir = output_dir or cfg.get('output_dir') or os.path.join('results', cfg['name'])
    os.makedirs(output_dir, exist_ok=True)
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO,
                             log_file=os.path.join(output_dir, f"evaluate_{cfg['name']}_{get_time_str()}.log"))
    dataset_opt = dict(cfg['dataset'], phase='val', scale=cfg['scale'])
    dataset = build_dataset(dataset_opt)
    judge = build_judge(cfg['judge'], device, 'judge')
    task = task_of_network(judge)
    num_classes = getattr(dataset, 'num_classes', None) or dataset_opt.get('num_classes')
    if int(judge.num_classes) != int(num_classes):
        raise ValueError(f"judge.network.num_classes = {judge.num_classes} != dataset.num_classes = {num_classes}.")
    if getattr(dataset, 'task', task.name) != task.name:
        raise ValueError(f"the judge solves '{task.name}' but dataset '{dataset_opt.get('name')}' holds "
                         f"'{dataset.task}' targets.")
    metrics = cfg.get('metrics') or psnr_ssim_metrics(cfg['scale'])
    keep = grid_indices(len(dataset), int((cfg.get('grid') or {}).get('num_images', 3)))
    results: Dict[str, dict] = OrderedDict()
    for method in cfg['methods']:
        fn = build_method(method, device)
        scorer = TaskScorer(metrics, {'judge': network_predictor(judge)}, num_classes,
                            dataset_opt.get('ignore_index', 255), task, getattr(dataset, 'class_names', None))
        results[method['name']] = evaluate_method(fn, dataset, scorer, device, keep)
        s = results[method['name']]['summary']
        logger.info(f"{method['name']}: " + ', '.join(f"judge {label} {fmt_value(s.get(f'judge_{key}'), 2)}"
                                                      for key, label in task.report_metrics) + ', '
                    + ', '.join(f'{m} {s[m]:.4f}' for m in metrics if m in s))
    reference = cfg.get('reference')
    if reference:
        intervals = reference_intervals({n: r['stats'] for n, r in results.items()}, reference, task,
                                        **(cfg.get('bootstrap') or {}))
        for name, res in results.items():
            res['summary'][f'judge_{task.main_metric}_vs_reference'] = intervals[name]
    table = markdown_table(results, list(metrics), reference, task)
    write_text(os.path.join(output_dir, 'results.md'),
               f"# {cfg['name']}: x{cfg['scale']} on {dataset_opt['name']} ({len(dataset)} images)\n\n{table}")
    payload = {name: finite_or_none(res['summary']) for name, res in results.items()}
    write_json(os.path.join(output_dir, 'results.json'), dict(
        name=cfg['name'], scale=cfg['scale'], dataset=dataset_opt['name'], num_images=len(dataset), reference=reference,
        bootstrap=dict(BOOTSTRAP_DEFAULTS, **(cfg.get('bootstrap') or {})),
        class_names=getattr(dataset, 'class_names', None), device=str(device), task=task.name, methods=payload))
    save_rgb(os.path.join(output_dir, 'grid.png'), picture_grid(dataset, results, keep, task))
    if task.name == 'seg':
        np.savez_compressed(os.path.join(output_dir, 'judge_confusion.npz'), methods=np.array(list(results)),
                            images=np.array(next(iter(results.values()))['images']),
                            matrices=np.stack([np.stack(r['stats']) for r in results.values()]))
    logger.info(f'Evaluation table ({output_dir}/results.md):\n{table}')
    return payload


def run_cli(description: str, load: Callable[[str], dict], run: Callable[[dict, Optional[str]], dict],
            argv: Optional[List[str]] = None) -> None:
    """``-opt CONFIG [--output_dir DIR]`` command line of the evaluation commands."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('-opt', required=True, help='Path to the YAML config.')
    parser.add_argument('--output_dir', default=None, help='Where to write results (default: results/<name>).')
    args = parser.parse_args(argv)
    apply_basicsr_fixes()
    run(load(args.opt), args.output_dir)


def main(argv: Optional[List[str]] = None) -> None:
    run_cli(__doc__.split('\n\n')[0], load_config, run_evaluation, argv)


if __name__ == '__main__':
    main()
