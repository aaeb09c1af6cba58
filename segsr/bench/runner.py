"""The benchmark's runner: trains (or resumes) every step, scores every row, times the fine-tuning steps, then
writes the results (:mod:`segsr.bench.report`); finished work is recorded in ``state/`` and skipped on a rerun."""
import json
import logging
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml
from basicsr.data import build_dataset
from basicsr.utils import get_root_logger, get_time_str

from segsr.bench.data import prepare_data, program_kind
from segsr.bench.options import OptionBuilder
from segsr.bench.predictors import own_predictor
from segsr.bench.recipes import REFERENCE, SPEED_BASE, Row, finetune_steps, table_rows
from segsr.bench.report import aggregate, stage_text, transfer_ratio, write_results
from segsr.evaluate import build_method, evaluate_method, grid_indices
from segsr.models.task_eval import TaskScorer, build_judge, network_predictor
from segsr.report import BOOTSTRAP_DEFAULTS, psnr_ssim_metrics, write_json
from segsr.step_bench import measure_in_subprocess
from segsr.utils.misc import module_command
from segsr.utils.visual import save_rgb


STATS_SEP = '__'  # ``<net>__<part>``: a net's per-image statistics in several arrays (detection)
SCORING_KEY = 'scoring'  # scored_by's entry for the task's scoring_version (no frozen net has this name)


def save_prediction(base: str, pred) -> None:
    """A pictured image's prediction: ``<base>_pred.npy`` (a label map) or ``<base>_pred.npz`` (detections, a
    predicted class)."""
    if isinstance(pred, np.ndarray):
        np.save(base + '_pred.npy', pred.astype(np.int16))
    else:
        np.savez(base + '_pred.npz', **{k: np.asarray(v) for k, v in pred.items()})


class Benchmark:
    """Runs (or resumes) one benchmark: training runs, evaluation rows, step timing, then the outputs.

    Args:
        profile: A loaded profile (:func:`segsr.bench.profile.load_profile`).
        out_dir: Work and output folder.
        data_root: Dataset root (default: the profile's ``data.root``).
        device: cpu | cuda | auto (default: the profile's ``device``).
        judge / deployed / l1_start: Checkpoints of starting points to use instead of training them (each must
            match the profile's network block: ``judge.network``, ``deployed.network``, ``generator``).
        source: Raw dataset to prepare ``data_root`` from when it is not prepared (default: ``data.source``).
        cache_dir: Where starting points are trained and found again (default:
            :func:`segsr.bench.options.default_cache_dir`).
        jobs: Training runs at a time (each its own process): the starting points are independent of each other,
            and the fine-tuned runs depend only on them. More than 1 fills a large GPU; on a CPU the runs share
            its cores. Default: the profile's ``jobs``, else 1.
    """

    def __init__(self, profile: dict, out_dir: Optional[str] = None, data_root: Optional[str] = None,
                 device: Optional[str] = None, judge: Optional[str] = None, source: Optional[str] = None,
                 cache_dir: Optional[str] = None, deployed: Optional[str] = None,
                 l1_start: Optional[str] = None, jobs: Optional[int] = None) -> None:
        self.profile = deepcopy(profile)
        self.jobs = int(jobs or profile.get('jobs', 1))
        if self.jobs < 1:
            raise ValueError(f'jobs = {self.jobs}: at least one training run at a time.')
        self.out_dir = osp.abspath(out_dir or osp.join('experiments', profile['name']))
        self.device_name = device or profile.get('device', 'cpu')
        if self.device_name == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available; use --device cpu or auto.")
        use_cuda = self.device_name == 'cuda' or (self.device_name == 'auto' and torch.cuda.is_available())
        self.device = torch.device('cuda' if use_cuda else 'cpu')
        if deployed and program_kind(deployed):  # the user's TorchScript / torch.export file, used as it is
            self.profile['deployed']['network'] = dict(type='ImportedSegNet', path=osp.abspath(deployed))
            deployed = None
        starts = {'judge': judge, 'deployed': deployed, 'l1': l1_start}
        for step, path in starts.items():
            if path and not osp.isfile(path):
                flag = {'l1': '--l1-start'}.get(step, f'--{step}')
                raise FileNotFoundError(f'{flag} {path}: no such checkpoint.')
        for sub in ('options', 'runs', 'state', 'logs', 'pictures'):
            os.makedirs(osp.join(self.out_dir, sub), exist_ok=True)
        self.logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO,
                                      log_file=osp.join(self.out_dir, 'logs', f'benchmark_{get_time_str()}.log'))
        self.data = prepare_data(profile['data'], data_root, source)
        self.builder = OptionBuilder(self.profile, self.data, self.out_dir, self.device_name,
                                     osp.abspath(cache_dir) if cache_dir else None, starts)
        self.options = self.builder.all()
        labels = self.profile.get('labels') or {}
        self.rows = [replace(r, label=labels.get(r.key, r.label)) for r in table_rows()
                     if r.step not in finetune_steps() or r.step in self.builder.rows]
        self.judge_path = self.builder.checkpoint('judge', 'task')

    # state files: finished work
    def _state(self, kind: str, key: str, ext: str = 'json') -> str:
        return osp.join(self.out_dir, 'state', f'{kind}_{key}.{ext}')

    def _load_state(self, kind: str, key: str) -> Optional[dict]:
        path = self._state(kind, key)
        if not osp.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _save_state(self, kind: str, key: str, payload: dict, path: Optional[str] = None) -> None:
        write_json(path or self._state(kind, key), payload)

    # 1. training
    def write_options(self, step_id: str) -> str:
        """Write ``options/<step id>.yml``; refuse to resume a run whose options changed since it started.

        Args:
            step_id: A step id.
        """
        path = osp.join(self.out_dir, 'options', f'{step_id}.yml')
        text = yaml.safe_dump(self.options[step_id], sort_keys=False)
        before = None
        if osp.isfile(path):
            with open(path) as f:
                before = f.read()
        if before == text:
            return path
        if before is not None and not self.builder.is_start(step_id) and osp.isdir(self.builder.run_dir(step_id)):
            raise ValueError(f'{path}: the options of step {step_id} changed since this benchmark started '
                             f'(profile, data or a starting point); use another --out or delete {self.out_dir}.')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def _done_file(self, step_id: str) -> str:
        """Finished-run record: in the cache folder for starting points (shared), in ``state/`` otherwise."""
        if self.builder.is_start(step_id):
            return osp.join(self.builder.run_dir(step_id), 'segsr_finished.json')
        return self._state('train', step_id)

    def train_record(self, step_id: str) -> Optional[dict]:
        """A finished run's record (``seconds``, ``iters``, ``options``; ``given`` for a given net), None if unfinished.

        Args:
            step_id: A step id.
        """
        if step_id in self.builder.given:
            return {'given': self.builder.frozen_network(step_id)}
        if step_id in self.builder.starts:
            return {'given': self.builder.starts[step_id]}
        path = self._done_file(step_id)
        if not osp.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def train(self, step_id: str) -> None:
        """Train (or resume) one step in a fresh ``segsr.train`` process, unless it is finished or given.

        Args:
            step_id: A step id.
        """
        base = self.builder.step(step_id).base
        if step_id in self.builder.starts:
            self.logger.info(f'{step_id}: using the given checkpoint {self.builder.starts[step_id]}')
            return
        net = self.builder.start_net(base) if self.builder.is_start(base) else 'g'
        expected = self.builder.checkpoint(step_id, net)
        opt_path = self.write_options(step_id)  # a finished run too: one trained from another starting point is refused
        done = self.train_record(step_id)
        if done and osp.isfile(expected):
            where = f' (cached: {self.builder.run_dir(step_id)})' if self.builder.is_start(step_id) else ''
            self.logger.info(f'{step_id}: trained already ({done["seconds"] / 60:.1f} min){where}, skipped.')
            return
        cmd, env = module_command('segsr.train', '-opt', opt_path, '--auto_resume')
        log_path = osp.join(self.out_dir, 'logs', f'train_{step_id}.txt')
        self.logger.info(f'{step_id}: training ({self.options[step_id]["train"]["total_iter"]} iterations) in '
                         f'{self.builder.run_dir(step_id)}: {shlex.join(cmd)}')
        start = time.time()
        with open(log_path, 'a') as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        seconds = time.time() - start + (self._load_state('partial', step_id) or {}).get('seconds', 0.0)
        if proc.returncode != 0 or not osp.isfile(expected):
            self._save_state('partial', step_id, {'seconds': seconds})
            with open(log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f'{step_id}: training failed (exit {proc.returncode}); log {log_path}:\n{tail}')
        record = {'seconds': seconds, 'iters': self.options[step_id]['train']['total_iter'], 'options': opt_path}
        self._save_state('train', step_id, record, path=self._done_file(step_id))
        self.logger.info(f'{step_id}: done in {seconds / 60:.1f} min.')

    def train_all(self) -> None:
        """Train every step: the starting points, then the fine-tuned runs, ``jobs`` runs at a time."""
        steps = self.builder.step_ids()
        starts = [s for s in steps if self.builder.is_start(s)]
        for group in (starts, [s for s in steps if s not in starts]):
            if self.jobs == 1 or len(group) < 2:
                for step_id in group:
                    self.train(step_id)
                continue
            with ThreadPoolExecutor(min(self.jobs, len(group))) as pool:  # each run is a subprocess
                futures = [pool.submit(self.train, step_id) for step_id in group]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:  # every run of the group has ended; the first failure's message names its log
                raise errors[0]

    # 2. evaluation
    def val_dataset(self, kernel: Optional[str] = None):
        """The evaluation split with LR made by ``kernel`` (default: the training kernel, ``lq_downsample``).

        Args:
            kernel: An LR degradation (``LQ_DOWNSAMPLE_METHODS``).
        """
        opt = dict(self.data.block(self.data.eval_split), phase='val', scale=self.builder.scale,
                   lq_downsample=kernel or self.profile.get('lq_downsample', 'matlab'))
        return build_dataset(opt)

    @property
    def eval_opt(self) -> dict:
        """The profile's ``eval`` block (``grid_images``; ``niqe``: False skips NIQE, 0.5 s an image on a CPU)."""
        return self.profile.get('eval') or {}

    @property
    def kernels(self) -> List[str]:
        """The profile's ``kernels``: LR degradations every row is also scored with (none trained on them)."""
        return list(self.profile.get('kernels') or [])

    def method_entry(self, row: Row, step_id: Optional[str]) -> dict:
        """The evaluation method of a row (:func:`segsr.evaluate.build_method`): its generator's EMA weights.

        Args:
            row: A table row.
            step_id: The run that made it (None: bicubic).
        """
        if row.kind != 'generator':
            return {'name': row.label, 'type': row.kind}
        return {'name': row.label, 'type': 'generator', 'network_g': self.options[step_id]['network_g'],
                'path': self.builder.checkpoint(step_id, 'g'), 'param_key': 'params_ema'}

    def row_runs(self, row: Row) -> List[Tuple[int, Optional[str]]]:
        """``(seed, step id)`` of each evaluation of a row: one per seed for fine-tuned rows, one otherwise.

        Args:
            row: A table row.
        """
        if row.step in finetune_steps():
            return [(step.seed, step.id) for step in self.builder.runs_of(row.step)]
        return [(self.builder.seeds[0], row.step)]

    @staticmethod
    def eval_key(row: Row, seed: int, kernel: Optional[str] = None) -> str:
        """State key of one evaluation: ``<row>_s<seed>``, ``<row>_s<seed>@<kernel>`` under another kernel.

        Args:
            row: A table row.
            seed: The run's seed.
            kernel: Another LR degradation (None: the training kernel).
        """
        return f'{row.key}_s{seed}' + (f'@{kernel}' if kernel else '')

    def scored_by(self) -> Dict[str, str]:
        """What scored a row: each frozen net (its checkpoint, as a starting point's folder is named by its options,
        or the network block of a net that comes with its weights) and, under ``scoring``, the task's
        ``scoring_version``. An evaluation by other nets or by an older version is redone."""
        nets = {name: self.builder.checkpoint(name, 'task') or json.dumps(self.builder.frozen_network(name),
                                                                            sort_keys=True, default=str)
                for name in self.builder.judge_names}
        return {**nets, SCORING_KEY: self._scoring(self.task.scoring_version)}

    def _scoring(self, version: int) -> str:
        return f'{self.task.name} v{version}'

    def _evaluated(self, key: str) -> bool:
        state = self._load_state('eval', key)
        if not (state and osp.isfile(self._state('matrices', key, 'npz'))):
            return False
        recorded, current = dict(state.get('scored_by') or {}), self.scored_by()
        recorded.setdefault(SCORING_KEY, self._scoring(1))  # recorded before versions were
        changed = sorted(name for name in set(recorded) | set(current) if recorded.get(name) != current.get(name))
        if changed:  # also an evaluation from before a judge was added
            self.logger.info(f"{key}: scored by other frozen nets or an older scoring version ({', '.join(changed)} "
                             'changed); scoring again.')
            return False
        return True

    @property
    def task(self):
        """The task of the data and of every frozen net (:mod:`segsr.tasks`)."""
        return self.builder.task

    def save_stats(self, key: str, scorer: TaskScorer, names: List[str]) -> None:
        """Write the per-image statistics of the nets ``names`` (``state/matrices_<key>.npz``: confusion matrices
        under the net's name for segmentation; ``<name>__<part>`` arrays for the other tasks)."""
        arrays = {}
        for name in names:
            parts = self.task.save_stats(scorer.meters[name].image_stats())
            arrays.update({name + (f'{STATS_SEP}{part}' if part else ''): value for part, value in parts.items()})
        tmp = self._state('matrices', key, 'tmp.npz')
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self._state('matrices', key, 'npz'))

    def load_stats(self, key: str) -> Dict[str, object]:
        """The per-image statistics :meth:`save_stats` wrote, by net name."""
        with np.load(self._state('matrices', key, 'npz')) as mats:
            arrays = {name: mats[name] for name in mats.files}
        out = {}
        for name in self.builder.judge_names:
            parts = {k[len(name) + len(STATS_SEP):] if k != name else '': v for k, v in arrays.items()
                     if k == name or k.startswith(name + STATS_SEP)}
            out[name] = self.task.load_stats(parts, self.data.num_classes, self.data.class_names)
        return out

    def evaluate(self, row: Row, seed: int, step_id: Optional[str], dataset, nets: dict, keep: List[int],
                 kernel: Optional[str] = None) -> None:
        """Score one run on ``dataset``; under another ``kernel``: PSNR/SSIM and the frozen nets only, no pictures.

        Args:
            row: A table row.
            seed: The run's seed.
            step_id: The run (None: bicubic).
            dataset: The evaluation split (LR by ``kernel``).
            nets: The frozen nets that score it, by name.
            keep: Indices of the pictured images.
            kernel: Another LR degradation (None: the training kernel).
        """
        key = self.eval_key(row, seed, kernel)
        if self._evaluated(key):
            self.logger.info(f'{row.label} (seed {seed}{f", kernel {kernel}" if kernel else ""}): evaluated already, '
                             'skipped.')
            return
        predictors = {name: network_predictor(net) for name, net in nets.items()}
        if row.own and kernel is None:
            predictors['own'] = own_predictor(row.own, self.options[step_id], self.builder.run_dir(step_id),
                                              self.device, step_id)
        metrics = psnr_ssim_metrics(self.builder.scale)
        metrics['grid'] = dict(type='calculate_grid_share', crop_border=self.builder.scale, scale=self.builder.scale)
        if kernel is None and self.eval_opt.get('niqe', True):
            metrics['niqe'] = dict(type='calculate_niqe', crop_border=self.builder.scale)
        scorer = TaskScorer(metrics, predictors, self.data.num_classes, self.data.ignore_index, self.task,
                            self.data.class_names)
        result = evaluate_method(build_method(self.method_entry(row, step_id), self.device), dataset, scorer,
                                 self.device, keep if kernel is None else [])
        pictures = {}
        for idx, (sr_rgb, pred) in result['pictures'].items():
            base = osp.join(self.out_dir, 'pictures', f'{key}_{idx}')
            save_rgb(base + '_sr.png', sr_rgb)
            save_prediction(base, pred)
            pictures[str(idx)] = base
        self.save_stats(key, scorer, list(nets))
        summary = {k: v for k, v in result['summary'].items()}
        self._save_state('eval', key, {'summary': summary, 'pictures': pictures, 'scored_by': self.scored_by()})
        main, label = self.task.report_metrics[0]
        scores = ', '.join(f"{name} {label} {summary[f'{name}_{main}']:.2f}" for name in nets)
        self.logger.info(f"{row.label} (seed {seed}{f', kernel {kernel}' if kernel else ''}): {scores}, PSNR "
                         f"{summary['psnr']:.2f}, SSIM {summary['ssim']:.4f}"
                         + (f", NIQE {summary['niqe']:.2f}" if 'niqe' in summary else ''))

    def intervals(self, row: Row, seed: int, kernel: Optional[str] = None) -> Dict[str, dict]:
        """Paired bootstrap intervals of the row's main task metric (mIoU: blocks of frames; mAP@.5, top-1: single
        images) minus S->T's (same seed, same kernel) for every frozen net (``<name>_vs_s2t``), and the transfer
        ratio (:func:`segsr.bench.report.transfer_ratio`).

        Args:
            row: A table row.
            seed: The run's seed.
            kernel: Another LR degradation (None: the training kernel).
        """
        ref_seeds = self.builder.seeds_of(REFERENCE)
        ref_key = self.eval_key(Row(REFERENCE, '', 'generator'), seed if seed in ref_seeds else ref_seeds[0], kernel)
        stats, ref = (self.load_stats(k) for k in (self.eval_key(row, seed, kernel), ref_key))
        boot = dict(BOOTSTRAP_DEFAULTS, **(self.profile.get('bootstrap') or {}))
        out = {f'{name}_vs_s2t': self.task.interval(
            stats[name], ref[name], int(boot['block']), int(boot['samples']), float(boot['level']),
            int(boot['seed'])).as_dict() for name in self.builder.judge_names}
        out['transfer_ratio'] = transfer_ratio(out, self.builder.extra_judges)
        return out

    # 3. step timing
    def speed(self, row: Row) -> None:
        """Time a fine-tuned row's training step in a fresh process (once; recorded in ``state/``).

        Args:
            row: A table row.
        """
        spd = self.profile.get('speed') or {}
        if row.step not in finetune_steps() or self._load_state('speed', row.key) or int(spd.get('iters', 10)) == 0:
            return  # speed.iters 0: no timing (runs that share the machine with others time nothing useful)
        stage = self.profile['finetune']
        opt_path = self.write_options(self.row_runs(row)[0][1])
        self.logger.info(f'{row.label}: timing training steps ({spd.get("iters", 10)} steps, batch {stage["batch"]} '
                         f'x {stage["gt_size"]}).')
        result = measure_in_subprocess(opt_path, iters=int(spd.get('iters', 10)), warmup=int(spd.get('warmup', 3)),
                                       batch=int(stage['batch']), gt_size=int(stage['gt_size']),
                                       device=self.device.type)
        self._save_state('speed', row.key, result)

    # the whole run
    def run(self) -> dict:
        """Train, score, time, then write the results; returns the ``results.json`` payload."""
        self.logger.info(f"Benchmark '{self.profile['name']}' ({self.profile['_path']}) on {self.data.root} "
                         f'(train {self.data.train_split}, evaluate {self.data.eval_split}), device {self.device}, '
                         f'seeds {self.builder.seeds}, out {self.out_dir}, starting points in {self.builder.cache_dir}')
        self.train_all()
        dataset = self.val_dataset()
        nets = {name: build_judge({'network': self.builder.frozen_network(name),
                                   'path': self.builder.checkpoint(name, 'task'), 'param_key': 'params'},
                                  self.device, name) for name in self.builder.judge_names}
        keep = grid_indices(len(dataset), int(self.eval_opt.get('grid_images', 3)))
        for row in self.rows:
            for seed, step_id in self.row_runs(row):
                self.evaluate(row, seed, step_id, dataset, nets, keep)
        for kernel in self.kernels:
            kernel_set = self.val_dataset(kernel)
            for row in self.rows:
                for seed, step_id in self.row_runs(row) if row.kind != 'hr' else []:  # HR has no LR
                    self.evaluate(row, seed, step_id, kernel_set, nets, [], kernel)
        for row in self.rows:
            self.speed(row)
        return self.write_outputs(dataset, keep)

    # 4. outputs
    def collect(self) -> List[dict]:
        """One record per row from the state files: per-seed summaries and intervals, and their aggregate."""
        records = []
        for row in self.rows:
            runs = []
            for seed, step_id in self.row_runs(row):
                ev = self._load_state('eval', f'{row.key}_s{seed}')
                kernels = {} if row.kind == 'hr' else {
                    k: dict(summary=self._load_state('eval', self.eval_key(row, seed, k))['summary'],
                            intervals=self.intervals(row, seed, k)) for k in self.kernels}
                runs.append(dict(seed=seed, step=step_id, summary=ev['summary'], pictures=ev['pictures'],
                                 intervals=self.intervals(row, seed), kernels=kernels,
                                 train=self.train_record(step_id) if step_id else None))
            records.append(dict(key=row.key, label=row.label, step=row.step, runs=runs,
                                summary=aggregate([r['summary'] for r in runs]), pictures=runs[0]['pictures'],
                                intervals=runs[0]['intervals'], speed=self._load_state('speed', row.key)))
        base = next((r['speed'] for r in records if r['key'] == SPEED_BASE), None)
        for r in records:
            if r['speed'] and base:
                r['speed']['x_esrgan_time'] = r['speed']['sec_per_iter'] / base['sec_per_iter']
                r['speed']['x_esrgan_mem'] = r['speed']['peak_mb'] / base['peak_mb']
        return records

    def write_outputs(self, dataset, keep: List[int]) -> dict:
        """Write the results (:func:`segsr.bench.report.write_results`) from the state files; returns the JSON payload.

        Args:
            dataset: The evaluation dataset.
            keep: Indices of the pictured images.
        """
        records = self.collect()
        payload, table = write_results(self.out_dir, records, self.metadata(len(dataset)), self.builder.judge_names,
                                       self.builder.extra_judges, dataset, keep)
        self.logger.info(f'Benchmark table ({self.out_dir}/results.md):\n{table}')
        return payload

    def metadata(self, num_images: int) -> dict:
        """The run's metadata (title, command, machine, data, seeds, starting points, schedule).

        Args:
            num_images: Images in the evaluation split.
        """
        p = self.profile
        threads = torch.get_num_threads()
        machine = (torch.cuda.get_device_name(self.device) if self.device.type == 'cuda' else
                   f'CPU, {os.cpu_count()} cores ({threads} torch threads)')
        starts = {s: self.builder.checkpoint(s, self.builder.start_net(s)) for s in self.builder.start_steps}
        return dict(
            title=f"{p['name']}: x{self.builder.scale} {self.data.name} {self.data.eval_split}, {num_images} images",
            profile=p['_path'], dataset=self.data.root, train_split=self.data.train_split,
            eval_split=self.data.eval_split, num_val_images=num_images, device=str(self.device), task=self.task.name,
            metric=dict(zip(('key', 'label'), self.task.report_metrics[0])),
            machine=f'{machine}, {platform.machine()}, torch {torch.__version__}', amp=p.get('amp', False),
            date=time.strftime('%Y-%m-%d'), command=shlex.join(['segsr-benchmark'] + sys.argv[1:]),
            seeds=self.builder.seeds, seeded_rows=p.get('seeded_rows') or self.builder.rows, starts=starts,
            bootstrap=dict(BOOTSTRAP_DEFAULTS, **(p.get('bootstrap') or {})),
            lq_downsample=p.get('lq_downsample', 'matlab'), kernels=self.kernels,
            l1_lq_downsample=p['l1'].get('lq_downsample', p.get('lq_downsample', 'matlab')),
            judges={name: self.builder.frozen_network(name) for name in self.builder.judge_names},
            schedule=dict(judge=stage_text(p['judge']), deployed=stage_text(p['deployed']), l1=stage_text(p['l1']),
                          finetune=stage_text(p['finetune'])))
