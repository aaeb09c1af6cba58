"""The benchmark's results: ``results.md`` (header, the table, the transfer tables, their notes), ``results.json``,
``grid.png`` and ``<metric>_vs_psnr.png`` (``miou_vs_psnr.png`` for segmentation) from the per-row records that :class:`segsr.bench.runner.Benchmark` collects.

Formatting, tables, standard JSON and atomic writes are :mod:`segsr.report`'s, shared with the other commands.
"""
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np

from segsr.bench.recipes import REFERENCE
from segsr.evaluate import picture_grid
from segsr.tasks import get_task
from segsr.report import finite_or_none, fmt_value, markdown_lines, write_json, write_text
from segsr.utils.visual import save_rgb


def write_results(out_dir: str, records: List[dict], meta: dict, names: List[str], others: List[str], dataset,
                  keep: List[int]) -> Tuple[dict, str]:
    """Write ``results.md``, ``results.json``, ``grid.png`` and ``miou_vs_psnr.png`` into ``out_dir``.

    Args:
        out_dir: The benchmark's folder.
        records: One record per row (``Benchmark.collect``).
        meta: The run's metadata (``Benchmark.metadata``: title, ``lq_downsample``, ``kernels``, ...).
        names: Every frozen net that scores the rows (judge, deployed, ``judge_<name>``).
        others: The other-family judges among them (``judge_<name>``).
        dataset: The evaluation dataset (its LR / HR images in the grid).
        keep: Indices of the grid's images.

    Returns:
        The ``results.json`` payload and the markdown table.
    """
    metric = metric_of(meta)
    table = markdown_table(records, metric)
    transfer = ''.join(transfer_table(records, names, others, kernel, meta['lq_downsample'], metric)
                       for kernel in [None] + list(meta['kernels']))
    write_text(osp.join(out_dir, 'results.md'),
               header_text(meta) + '\n' + table + '\n' + footnotes(meta) + '\n' + transfer + transfer_notes(meta))
    payload = finite_or_none(dict(meta=meta, rows=[strip_pictures(r) for r in records]))
    write_json(osp.join(out_dir, 'results.json'), payload)
    save_rgb(osp.join(out_dir, 'grid.png'), grid(records, dataset, keep, meta.get('task', 'seg')))
    plot_miou_vs_psnr(records, osp.join(out_dir, f"{metric['key']}_vs_psnr.png"), meta['title'], metric)
    return payload, table


def metric_of(meta: dict) -> dict:
    """The main task metric of a run (``{'key': 'miou', 'label': 'mIoU'}``; mAP@.5, top-1 for the other tasks)."""
    return meta.get('metric') or {'key': 'miou', 'label': 'mIoU'}


def grid(records: List[dict], dataset, keep: List[int], task: str = 'seg') -> np.ndarray:
    """LR | each method | HR, the judge's segmentation under each (the LR column shows the ground truth); for
    detection and classification, each image with the judge's boxes or class (:func:`segsr.evaluate.picture_grid`).

    Args:
        records: One record per row, with its saved ``pictures``.
        dataset: The evaluation dataset.
        keep: Indices of the pictured images.
        task: The task's name.
    """
    import cv2

    ordered = [r for r in records if r['key'] != 'hr'] + [r for r in records if r['key'] == 'hr']
    results = OrderedDict()
    for r in ordered:
        pics = {}
        for idx in keep:
            base = r['pictures'][str(idx)]
            sr = cv2.imread(base + '_sr.png')
            pred_file = base + ('_pred.npy' if task == 'seg' else '_pred.npz')
            if sr is None or not osp.isfile(pred_file):
                raise FileNotFoundError(f"{base}_sr.png / {osp.basename(pred_file)} (row '{r['key']}', image {idx}): a "
                                        'saved picture of an evaluation is missing (moved output folder?); delete its '
                                        'state/eval_*.json to score that row again.')
            pics[idx] = (cv2.cvtColor(sr, cv2.COLOR_BGR2RGB), _load_prediction(pred_file))
        results['HR' if r['key'] == 'hr' else r['label'].split(' (')[0]] = {'pictures': pics}
    return picture_grid(dataset, results, keep, get_task(task))


def _load_prediction(path: str):
    """A saved prediction: a label map (``.npy``) or a dict of arrays (``.npz``)."""
    if path.endswith('.npy'):
        return np.load(path)
    with np.load(path) as arrays:
        return {k: arrays[k] for k in arrays.files}


def strip_pictures(record: dict) -> dict:
    """``record`` without its picture paths (``results.json``).

    Args:
        record: One row's record.
    """
    out = {k: v for k, v in record.items() if k != 'pictures'}
    out['runs'] = [{k: v for k, v in run.items() if k != 'pictures'} for run in record['runs']]
    return out


def aggregate(summaries: List[dict]) -> dict:
    """Mean over seeds of every scalar of the summaries, plus ``<name>_sd`` (sample sd) when there are several.

    Args:
        summaries: One evaluation summary per seed.
    """
    out = OrderedDict()
    for name, value in summaries[0].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            out[name] = value
            continue
        values = np.array([s.get(name) if s.get(name) is not None else np.nan for s in summaries], dtype=float)
        out[name] = float(np.mean(values))
        if len(values) > 1:
            out[f'{name}_sd'] = float(np.std(values, ddof=1))
    return out


def stage_text(stage: dict) -> str:
    """A training stage in words (metadata's schedule).

    Args:
        stage: A profile's training stage.
    """
    return f"{stage['iters']} it, batch {stage['batch']} x {stage['gt_size']}, lr {stage['lr']}"


FOOTNOTES = """\
judge mIoU: the frozen judge (H->T task network, never seen by an SR method) on each row's SR output of the
evaluation images; deployed mIoU: the deployed segmenter (the network SR for my segmenter, TDP, SeD and SR4IR use)
on the same outputs. - S->T [95% CI]: the difference to S->T of the same seed, with the paired block-bootstrap 95%
interval (blocks of consecutive frames resampled, mIoU recomputed from the summed confusion matrices); for rows with
several seeds: the mean over seeds, the smallest..largest seed's difference, and how many seeds have their whole
interval above 0 (every seed's interval: results.json).
Values with several seeds are means (± sample sd). own mIoU: the method's own task network on its SR output (SR4IR:
its task net; SegAwareGAN and the combination: the discriminator's segmentation head). PSNR/SSIM: Y channel,
scale-pixel border; NIQE: lower is better. s / iter: one training step on a fixed random batch (the fine-tuning batch
and crop for every row), median, in a fresh process; x ESRGAN: ratio to the stock ESRGAN step with the same
generator (peak memory: results.json). infer s / img: the generator alone on one image. train min: wall time of the
row's training run (summed over seeds).
"""
TASK_FOOTNOTES = """\
judge {label}: the frozen judge ({task} network trained on HR, never seen by an SR method) on each row's SR output of
the evaluation images; deployed {label}: the deployed network (the one SR for my {user}, TDP and SR4IR train through)
on the same outputs. - S->T [95% CI]: the difference to S->T of the same seed, with the paired image-bootstrap 95%
interval (independent images resampled, the score recomputed on each draw); for rows with several seeds: the mean
over seeds, the smallest..largest seed's difference, and how many seeds have their whole interval above 0.
Values with several seeds are means (± sample sd). own {label}: SR4IR's own task network on its SR output.
{metric_note} PSNR/SSIM: Y channel, scale-pixel border; NIQE: lower is better. s / iter, x ESRGAN, infer s / img,
train min: as in the segmentation benchmark (docs/benchmark.md).
"""
METRIC_NOTES = {
    'det': 'mAP@.5: COCO AP at IoU 0.5 (101 recall points, pycocotools COCOeval), in percent, averaged over classes.',
    'cls': 'top-1: share of images whose highest-scoring class is the true one, in percent.',
}
TASK_WORDS = {'det': ('detection', 'detector'), 'cls': ('classification', 'classifier')}


def footnotes(meta: dict) -> str:
    """The table's notes for the run's task."""
    task = meta.get('task', 'seg')
    if task == 'seg':
        return FOOTNOTES
    what, user = TASK_WORDS[task]
    return TASK_FOOTNOTES.format(label=metric_of(meta)['label'], task=what, user=user, metric_note=METRIC_NOTES[task])


TRANSFER_NOTES = """\
Transfer tables: each frozen net's {label} on the row's SR output and its difference to S->T of the same seed and
kernel (95% paired {bootstrap}-bootstrap interval; several seeds: mean, range, seeds with the interval above 0). judge and
judge_<name> never trained with any SR method (judge_<name>: other architecture families); deployed is the network
the task-aware rows train through. transfer ratio: mean gain of the judge_<name> nets / the deployed net's gain (of
the seeds' means): 1 = the gain holds for networks the SR never saw, 0 = it is tied to the deployed network; it is
only meaningful where the deployed gain's interval is above 0. grid %: the share of the error spectrum (SR - HR,
Y) at the LR pixel grid's harmonics (segsr.metrics.calculate_grid_share; about 0.1 for an error without a pattern,
higher for a periodic grid).
"""


def transfer_notes(meta: dict) -> str:
    """The transfer tables' notes: the run's metric, and block (segmentation: consecutive frames) or image bootstrap."""
    bootstrap = 'block' if meta.get('task', 'seg') == 'seg' else 'image'
    return TRANSFER_NOTES.format(label=metric_of(meta)['label'], bootstrap=bootstrap)


def header_text(meta: dict) -> str:
    """``results.md``'s header: title, command, machine, date and seeds, data, schedule.

    Args:
        meta: The run's metadata.
    """
    lines = [f"# {meta['title']}", '',
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; device {meta['device']}, "
             f"amp {meta['amp']}  ", f"Date: {meta['date']}; seeds {meta['seeds']} (rows {meta['seeded_rows']}; "
             f"the others: seed {meta['seeds'][0]})  ",
             f"Data: {meta['dataset']}, train on {meta['train_split']}, evaluate on {meta['eval_split']}  ",
             'Schedule: ' + '; '.join(f'{k} {v}' for k, v in meta['schedule'].items()), '']
    return '\n'.join(lines)


def _mean_sd(summary: dict, name: str, digits: int) -> str:
    value = fmt_value(summary.get(name), digits)
    sd = summary.get(f'{name}_sd')
    return value if sd is None or value == 'n/a' else f'{value} ± {sd:.{digits}f}'


def _delta(record: dict, name: str) -> str:
    """Difference to S->T: ``+1.23 [+0.40, +2.10]`` (one seed), or with several seeds the mean, the range of the
    per-seed differences and how many seeds have their whole interval above 0: ``+1.33 (+0.03..+2.32; CI>0 2/3)``."""
    if record['key'] == REFERENCE:
        return '—'
    cis = [run['intervals'][f'{name}_vs_s2t'] for run in record['runs']]
    diffs = [c['diff'] for c in cis]
    if len(cis) == 1:
        return f"{diffs[0]:+.2f} [{cis[0]['low']:+.2f}, {cis[0]['high']:+.2f}]"
    above = sum(c['low'] > 0 for c in cis)
    return f'{np.mean(diffs):+.2f} ({min(diffs):+.2f}..{max(diffs):+.2f}; CI>0 {above}/{len(cis)})'


def markdown_table(records: List[dict], metric: Optional[dict] = None) -> str:
    """The benchmark table: one line per row (scores, differences to S->T, timings).

    Args:
        records: One record per row.
        metric: The main task metric (:func:`metric_of`); default mIoU.
    """
    key, label = (metric or {}).get('key', 'miou'), (metric or {}).get('label', 'mIoU')
    header = ['method', f'judge {label}', '- S->T [95% CI]', f'deployed {label}', '- S->T [95% CI]', f'own {label}',
              'PSNR', 'SSIM', 'NIQE', 's / iter', 'x ESRGAN', 'infer s / img', 'train min']
    rows = []
    for r in records:
        s, spd = r['summary'], r['speed'] or {}
        seconds = [run['train']['seconds'] for run in r['runs'] if (run['train'] or {}).get('seconds') is not None]
        cells = [r['label'], _mean_sd(s, f'judge_{key}', 2), _delta(r, 'judge'), _mean_sd(s, f'deployed_{key}', 2),
                 _delta(r, 'deployed'), _mean_sd(s, f'own_{key}', 2), _mean_sd(s, 'psnr', 2), fmt_value(s.get('ssim'), 4),
                 fmt_value(s.get('niqe'), 2), fmt_value(spd.get('sec_per_iter'), 3), fmt_value(spd.get('x_esrgan_time'), 2),
                 fmt_value(s.get('sec_per_img') if r['step'] != 'judge' else None, 4),
                 fmt_value(sum(seconds) / 60 if seconds else None, 1)]
        rows.append(cells)
    return '\n'.join(markdown_lines(header, rows, numeric=True)) + '\n'


def transfer_ratio(intervals: Dict[str, dict], others: List[str]) -> Optional[float]:
    """Mean gain over S->T of the other-family judges ``others`` divided by the deployed network's gain.

    1 when the SR gains as much for networks it never saw as for the one it trained through; 0 when the gain is tied
    to the deployed network. None without other judges or when the deployed gain is 0 (S->T itself). Read it only
    where the deployed gain's interval is above 0: a ratio of two small numbers means nothing.

    Args:
        intervals: A run's intervals (``<name>_vs_s2t``: at least ``diff``).
        others: The other-family judges (``judge_<name>``).
    """
    deployed = intervals['deployed_vs_s2t']['diff']
    if not others or deployed == 0:
        return None
    return float(np.mean([intervals[f'{name}_vs_s2t']['diff'] for name in others]) / deployed)


def _run_part(run: dict, kernel: Optional[str]) -> Optional[dict]:
    return run if kernel is None else run['kernels'].get(kernel)


def transfer_table(records: List[dict], names: List[str], others: List[str], kernel: Optional[str],
                   train_kernel: str, metric: Optional[dict] = None) -> str:
    """Rows against S->T for every frozen net ``names`` (judge, deployed, the other-family judges ``others``) and the
    transfer ratio, with LR from the training kernel (``kernel`` None) or from another kernel.

    Args:
        records: One record per row.
        names: Every frozen net that scores the rows.
        others: The other-family judges among them.
        kernel: The LR degradation (None: the training kernel).
        train_kernel: The training kernel's name (the title).
        metric: The main task metric (:func:`metric_of`); default mIoU.
    """
    key, label = (metric or {}).get('key', 'miou'), (metric or {}).get('label', 'mIoU')
    title = f'LR from `{kernel}` (never trained on)' if kernel else f'LR from `{train_kernel}` (the training kernel)'
    header = ['method', 'PSNR-Y', 'grid %'] + [f'{n} {label} - S->T' for n in names] + ['transfer ratio']
    rows = []
    for r in records:
        parts = [_run_part(run, kernel) for run in r['runs']]
        if r['key'] == 'hr' and kernel or any(p is None for p in parts):
            continue
        summary = aggregate([p['summary'] for p in parts])
        cells = [r['label'], _mean_sd(summary, 'psnr', 2), _mean_sd(summary, 'grid', 2)]
        for name in names:
            mean = _mean_sd(summary, f'{name}_{key}', 2)
            delta = _delta({'key': r['key'], 'runs': parts}, name)
            cells.append(mean if r['key'] in (REFERENCE, 'hr') else f'{mean}: {delta}')
        cells.append(_transfer_cell(parts, others))
        rows.append(cells)
    return '\n'.join([f'## Transfer: {title}', ''] + markdown_lines(header, rows, numeric=True)) + '\n\n'


def _transfer_cell(parts: List[dict], others: List[str]) -> str:
    """The transfer ratio of the seeds' mean gains (``mean other-family gain / deployed gain``)."""
    mean = {f'{n}_vs_s2t': {'diff': float(np.mean([p['intervals'][f'{n}_vs_s2t']['diff'] for p in parts]))}
            for n in others + ['deployed']}
    ratio = transfer_ratio(mean, others)
    return '—' if ratio is None else f'{ratio:.2f}'


def plot_miou_vs_psnr(records: List[dict], path: str, title: str, metric: Optional[dict] = None) -> None:
    """Scatter of the judge's main metric (mIoU; mAP@.5, top-1) against PSNR, one labelled point per method; H->T (no
    PSNR) as a dashed line.

    Args:
        records: One record per row.
        path: The PNG to write.
        title: The plot's title.
        metric: The main task metric (:func:`metric_of`); default mIoU.
    """
    judge_key, label = f"judge_{(metric or {}).get('key', 'miou')}", (metric or {}).get('label', 'mIoU')
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for r in records:
        s = r['summary']
        if s.get('psnr') is None or not np.isfinite(s['psnr']):
            if s.get(judge_key) is not None:
                ax.axhline(s[judge_key], ls='--', c='gray', lw=1)
                ax.annotate(r['label'], (0.01, s[judge_key]), xycoords=('axes fraction', 'data'), fontsize=8,
                            va='bottom', color='gray')
            continue
        ax.scatter(s['psnr'], s[judge_key], s=30)
        ax.annotate(r['label'].split(' (')[0], (s['psnr'], s[judge_key]), textcoords='offset points',
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel('PSNR (dB, Y)')
    ax.set_ylabel(f'judge {label} (%)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
