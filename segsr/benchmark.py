"""One-command benchmark: task-aware SR methods against stock BasicSR baselines on one labelled dataset.

``segsr-benchmark --profile quick --source <CamVid>`` follows the fine-tuning protocol users follow:

* **Starting points, trained once** and cached under a key derived from their options (``--cache``, default
  ``~/.cache/segsr/benchmark``; reused by every profile, seed and rerun, or given by flag: ``--judge``,
  ``--deployed``, ``--l1-start``): the *judge* (a segmentation network trained on HR images: the H->T row; it scores
  every row and no SR method sees it), the *deployed* segmenter (another seed and architecture: the network a user
  already has; TDP, SeD's semantics, SR4IR's task net and *SR for my segmenter* use it) and an L1 generator (stock
  ``SRModel``).
* **Fine-tuned rows**, each from the L1 start with the same iterations, batch, crop and learning rate
  (``finetune``), one run per seed in ``seeds`` (``seeded_rows``; the others run the first seed): S->T (L1 alone),
  stock ESRGAN (``ESRGANModel`` + ``VGGStyleDiscriminator``), the segmentation-aware GAN, SR4IR, SeD (P+SeD), the
  combination (task branch + SeD + TDP) and *SR for my segmenter* (L1 + cross-entropy through the frozen deployed
  network: ``SR4IRModel`` with ``update_task: false``).

Every row (plus bicubic L->T, HR H->T and the L1 start) is scored on the evaluation split by the judge, by the
deployed network and by each *other-family judge* (``judges.<name>``: a segmenter of another architecture family,
trained once on HR and cached like the judge as step ``judge_<name>``; no SR method sees it) (mIoU from summed
confusion matrices), with the paired block-bootstrap 95% interval of its
difference to S->T of the same seed (:func:`segsr.metrics.paired_block_bootstrap`: blocks of consecutive frames),
the method's own task network where it has one, PSNR/SSIM (Y, ``scale``-pixel border), NIQE and inference time;
each fine-tuning step is timed on a fixed random batch in a fresh process, as a ratio to stock ESRGAN's. Every row is
scored again with LR made by each of ``kernels`` (downsampling methods no row trained on: PSNR/SSIM and every frozen
net), and ``results.md`` ends with one *transfer table* per kernel: each net's difference to S->T and the *transfer
ratio* (mean gain of the other-family judges / the deployed network's gain). ``l1.lq_downsample`` may be a list: the
L1 start's training mix of downsampling methods (one drawn per sample).

Everything else lives in ``--out`` (default ``experiments/<profile name>``): ``options/<step>.yml`` (the generated
BasicSR option files: run any of them with ``segsr-train``), ``runs/<step>_s<seed>/``, ``state/`` (finished work: a
rerun skips it, an interrupted training resumes from its last saved state), ``logs/``, ``results.md``,
``results.json``, ``grid.png`` (LR | each method | HR, judge segmentation under each) and ``miou_vs_psnr.png``.

Profiles (shipped with the package in ``segsr/benchmark_profiles/<name>.yml``, or any YAML path): ``smoke`` (tiny
synthetic data, 2 iterations per step: CI), ``demo`` (synthetic street scenes, every row in minutes on a CPU:
``scripts/demo.sh``), ``quick`` (CamVid on CPU), ``full`` (CamVid on a CUDA GPU, bf16 autocast). CamVid profiles
prepare ``data.root`` from ``--source`` (the SegNet-layout CamVid folder) when it is not prepared yet, and train on
``seq_train`` / score on ``seq_dev`` (video sequences disjoint from training). A profile with ``base: <profile>``
states only what it changes (``rows`` picks fine-tuned rows, ``labels`` renames them: the ablations in
``options/benchmark/``); ``finetune.task_d_warm_start`` adds the cached starting point ``disc`` (SegAwareGAN's
discriminator with its segmentation head trained on HR crops, SegAwareGAN's ``pretrain_network_d``).
"""
import argparse
import hashlib
import json
import logging
import os
import os.path as osp
import platform
import re
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass, replace
from importlib import resources
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml

import segsr  # noqa: F401  (before basicsr)
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils import get_root_logger, get_time_str

from segsr.compat import apply_basicsr_fixes
from segsr.data.seg_transforms import LQ_DOWNSAMPLE_METHODS
from segsr.evaluate import build_method, evaluate_method, grid_indices, picture_grid
from segsr.metrics.bootstrap import paired_block_bootstrap
from segsr.report import (BOOTSTRAP_DEFAULTS, finite_or_none, fmt_value, markdown_lines, psnr_ssim_metrics,
                          write_json, write_text)
from segsr.weights import freeze, load_checkpoint, weights_included
from segsr.models.task_eval import TaskScorer, build_judge, network_predictor
from segsr.step_bench import measure_in_subprocess
from segsr.utils.misc import module_command
from segsr.utils.visual import save_rgb

PROFILE_PACKAGE = 'segsr.benchmark_profiles'
REQUIRED_KEYS = ('name', 'data', 'judge', 'deployed', 'generator', 'l1', 'finetune')
STAGE_KEYS = ('iters', 'batch', 'gt_size', 'lr')
START_STEPS = ('judge', 'deployed', 'l1', 'disc')  # trained once per options, cached across profiles, seeds, reruns
EXTRA_JUDGE_PREFIX = 'judge_'  # the step of an other-family judge `judges.<name>`: judge_<name> (a starting point too)
OPTIONAL_START = 'disc'  # the task-branch warm start: only with finetune.task_d_warm_start
FINETUNE_STEPS = ('s2t', 'esrgan', 'segaware', 'sr4ir', 'sed', 'combo', 'sfms')  # from the L1 start, per seed
TRAIN_STEPS = START_STEPS + FINETUNE_STEPS
REFERENCE = 's2t'  # every interval is a difference to S->T of the same seed
SPEED_BASE = 'esrgan'
DEFAULT_EMA_DECAY = 0.999  # BasicSR's; a stage's `ema_decay` when the profile gives none
MAX_EMA_START_WEIGHT = 0.05  # ema_decay ** iters: the share of a run's starting weights left in its scored EMA


@dataclass(frozen=True)
class Row:
    """One table row: ``kind`` hr | bicubic | generator; ``own``: the method's own task network (task | disc)."""
    key: str
    label: str
    kind: str
    step: Optional[str] = None
    own: Optional[str] = None


ROWS = (
    Row('hr', 'H->T (judge on HR)', 'hr', step='judge'),
    Row('bicubic', 'L->T (bicubic)', 'bicubic'),
    Row('l1', 'L1 start (stock SRModel)', 'generator', step='l1'),
    Row('s2t', 'S->T (L1 fine-tune)', 'generator', step='s2t'),
    Row('esrgan', 'ESRGAN (stock ESRGANModel)', 'generator', step='esrgan'),
    Row('segaware', 'SegAwareGAN (task-branch D)', 'generator', step='segaware', own='disc'),
    Row('sr4ir', 'SR4IR (TDP + alternate)', 'generator', step='sr4ir', own='task'),
    Row('sed', 'SeD (P+SeD)', 'generator', step='sed'),
    Row('combo', 'Combination (task branch + SeD + TDP)', 'generator', step='combo', own='disc'),
    Row('sfms', 'SR for my segmenter (CE through the deployed net)', 'generator', step='sfms'),
)


# --------------------------------------------------------------------------------------------------- profile, data
def profile_names() -> List[str]:
    """Names of the profiles shipped with the package (``segsr/benchmark_profiles/*.yml``)."""
    return sorted(p.name[:-4] for p in resources.files(PROFILE_PACKAGE).iterdir() if p.name.endswith('.yml'))


def ema_decay(stage: dict) -> float:
    """A training stage's EMA decay (``DEFAULT_EMA_DECAY`` when the profile gives none)."""
    return float(stage.get('ema_decay', DEFAULT_EMA_DECAY))


def load_profile(name_or_path: str) -> dict:
    """Read a profile (a shipped profile's name or a YAML path) and check its keys (errors name the file).

    A profile with ``base: <name or path>`` is that profile (a relative path: relative to this file) updated
    recursively by the rest of this one: an ablation states only what it changes.
    """
    profile, path = _read_profile(name_or_path, chain=())
    _check_profile(profile, path)
    profile['_path'] = path
    return profile


def _read_profile(name_or_path: str, chain: Tuple[str, ...]) -> Tuple[dict, str]:
    """The profile's dict with its ``base`` chain merged in, and the profile's path (for messages)."""
    if name_or_path.endswith(('.yml', '.yaml')):
        if not osp.isfile(name_or_path):
            raise FileNotFoundError(f"benchmark profile file '{name_or_path}' does not exist.")
        path = osp.abspath(name_or_path)
        with open(path) as f:
            text = f.read()
    else:
        if name_or_path not in profile_names():
            raise FileNotFoundError(f"benchmark profile '{name_or_path}' not found; shipped profiles: "
                                    f'{profile_names()} (or pass a YAML path).')
        resource = resources.files(PROFILE_PACKAGE) / f'{name_or_path}.yml'
        path = f'{PROFILE_PACKAGE}:{name_or_path}.yml'
        text = resource.read_text(encoding='utf-8')
    profile = yaml.safe_load(text) or {}
    if not isinstance(profile, dict):
        raise ValueError(f'{path}: a profile is a mapping of keys, not a {type(profile).__name__}.')
    base = profile.pop('base', None)
    if base is None:
        return profile, path
    if path in chain:
        raise ValueError(f"{path}: 'base' chain loops: {' -> '.join(chain + (path,))}.")
    if str(base).endswith(('.yml', '.yaml')) and not osp.isabs(base) and osp.isfile(path):
        base = osp.join(osp.dirname(path), base)
    try:
        base_profile, _ = _read_profile(str(base), chain + (path,))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: 'base' = {base!r}: {err}") from err
    return deep_merge(base_profile, profile), path


def _check_profile(profile: dict, path: str) -> None:
    for key in REQUIRED_KEYS:
        if key not in profile:
            raise ValueError(f"{path}: key '{key}' is required.")
    stages = {s: profile[s] for s in ('judge', 'deployed', 'l1', 'finetune')}
    stages.update({f'judges.{name}': stage for name, stage in _extra_judges(profile, path).items()})
    if profile['finetune'].get('task_d_warm_start') is not None:
        stages['finetune.task_d_warm_start'] = profile['finetune']['task_d_warm_start']
    for stage, values in stages.items():
        missing = [k for k in STAGE_KEYS if k not in (values or {})]
        if missing:
            raise ValueError(f"{path}: '{stage}' needs keys {missing}.")
    if profile['finetune']['gt_size'] not in (128, 256):
        raise ValueError(f"{path}: 'finetune.gt_size' = {profile['finetune']['gt_size']}: stock ESRGAN's "
                         'VGGStyleDiscriminator takes 128 or 256.')
    for stage in ('l1', 'finetune'):  # the EMA weights are the ones scored: they must have left the start
        decay, iters = ema_decay(profile[stage]), int(profile[stage]['iters'])
        if not 0 < decay < 1 or decay**iters > MAX_EMA_START_WEIGHT:
            raise ValueError(f"{path}: '{stage}.ema_decay' = {decay} over {iters} iterations keeps "
                             f'{decay**iters:.0%} of the starting weights in the EMA that is scored (at most '
                             f'{MAX_EMA_START_WEIGHT:.0%}): lower it or raise {stage}.iters.')
    seeds = profile.get('seeds', [profile.get('seed', 0)])
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: 'seeds' = {seeds!r}; expected a non-empty list of distinct integers.")
    unknown_rows = set(profile.get('seeded_rows') or []) - set(FINETUNE_STEPS)
    if unknown_rows:
        raise ValueError(f"{path}: 'seeded_rows' has unknown rows {sorted(unknown_rows)}; fine-tuned rows: "
                         f'{list(FINETUNE_STEPS)}.')
    for key in ('device', 'amp'):
        allowed = {'device': ('cpu', 'cuda', 'auto'), 'amp': (False, 'bf16', 'auto')}[key]
        if profile.get(key, allowed[0]) not in allowed:
            raise ValueError(f"{path}: '{key}' = {profile[key]!r}; expected one of {list(allowed)}.")
    unknown = set(profile.get('overrides') or {}) - set(TRAIN_STEPS)
    if unknown:
        raise ValueError(f"{path}: 'overrides' has unknown steps {sorted(unknown)}; steps: {list(TRAIN_STEPS)}.")
    unknown = set(profile.get('labels') or {}) - {r.key for r in ROWS}
    if unknown:
        raise ValueError(f"{path}: 'labels' has unknown rows {sorted(unknown)}; rows: {[r.key for r in ROWS]}.")
    _check_kernels(profile, path)
    rows = profile.get('rows', list(FINETUNE_STEPS))
    if not isinstance(rows, list) or set(rows) - set(FINETUNE_STEPS) or REFERENCE not in rows:
        raise ValueError(f"{path}: 'rows' = {rows!r}; expected a list of fine-tuned rows from {list(FINETUNE_STEPS)} "
                         f"that includes '{REFERENCE}' (every interval is a difference to it).")


def _extra_judges(profile: dict, path: str) -> Dict[str, dict]:
    """``judges``: other-family judges by name (each a stage with a ``network`` block), checked."""
    judges = profile.get('judges') or {}
    if not isinstance(judges, dict):
        raise ValueError(f"{path}: 'judges' must map judge names to training stages, got {type(judges).__name__}.")
    for name, stage in judges.items():
        if not re.fullmatch(r'[a-z0-9]+', str(name)):
            raise ValueError(f"{path}: 'judges.{name}': a judge name is lower-case letters and digits only.")
        if not isinstance(stage, dict) or not isinstance(stage.get('network'), dict) or 'type' not in stage['network']:
            raise ValueError(f"{path}: 'judges.{name}' needs a 'network' block with a 'type'.")
    return judges


def _check_kernels(profile: dict, path: str) -> None:
    """``lq_downsample`` (one method), ``l1.lq_downsample`` (one or a list: the L1 start's training mix) and
    ``kernels`` (methods every row is also scored with) name known downsampling methods."""
    train = profile.get('lq_downsample', 'matlab')
    checks = {'lq_downsample': [train], 'kernels': profile.get('kernels') or []}
    mix = profile['l1'].get('lq_downsample', train)
    checks['l1.lq_downsample'] = mix if isinstance(mix, list) else [mix]
    for key, methods in checks.items():
        if not isinstance(methods, list) or not methods and key != 'kernels':
            raise ValueError(f"{path}: '{key}' = {methods!r}; expected a method or a list of methods.")
        unknown = [m for m in methods if m not in LQ_DOWNSAMPLE_METHODS]
        if unknown:
            raise ValueError(f"{path}: '{key}' has unknown downsampling methods {unknown}; choose from "
                             f'{list(LQ_DOWNSAMPLE_METHODS)}.')
    if train in checks['kernels']:
        raise ValueError(f"{path}: 'kernels' lists the training kernel '{train}' (lq_downsample); it is scored anyway.")


@dataclass
class DataInfo:
    """A prepared labelled dataset in segsr's layout (``dataset_info.yml`` + LMDBs or ``<split>/{hr,seg}``).

    ``train_split`` feeds every training step, ``eval_split`` every score (CamVid: ``seq_train`` / ``seq_dev``).
    """
    root: str
    name: str
    num_classes: int
    ignore_index: int
    backend: str
    train_split: str = 'train'
    eval_split: str = 'val'

    def block(self, split: str) -> dict:
        """A ``PairedImageSegDataset`` option block for ``split``."""
        if self.backend == 'lmdb':
            roots = {k: osp.join(self.root, 'lmdb', f'{split}_{k}.lmdb') for k in ('hr', 'seg')}
        else:
            roots = {k: osp.join(self.root, split, k) for k in ('hr', 'seg')}
        return dict(name=f'{self.name}_{split}', type='PairedImageSegDataset', dataroot_gt=roots['hr'],
                    dataroot_seg=roots['seg'], io_backend={'type': self.backend}, num_classes=self.num_classes,
                    ignore_index=self.ignore_index)


def prepare_data(data_opt: dict, root: Optional[str] = None, source: Optional[str] = None) -> DataInfo:
    """Return the dataset at ``root`` (default ``data.root``), preparing it first when the profile says how.

    Args:
        data_opt: The profile's ``data`` block (``root``, ``prepare``: camvid | synthetic, ``source``, ``synthetic``).
        root: Dataset root in segsr's layout; overrides ``data.root``.
        source: Raw dataset to prepare ``root`` from (CamVid: the SegNet-layout folder); overrides ``data.source``.
    """
    root = osp.abspath(root or data_opt['root'])
    info_path = osp.join(root, 'dataset_info.yml')
    if not osp.isfile(info_path):
        _prepare(data_opt, root, source or data_opt.get('source'))
    if not osp.isfile(info_path):
        raise FileNotFoundError(f"dataset {root}: no dataset_info.yml (prepare it with segsr-prepare-camvid or "
                                'segsr-make-synthetic, or set data.prepare in the profile).')
    with open(info_path) as f:
        info = yaml.safe_load(f) or {}
    if 'num_classes' not in info:
        raise ValueError(f"{info_path}: key 'num_classes' is required.")
    splits = (data_opt.get('train_split', 'train'), data_opt.get('eval_split', 'val'))
    backend = 'lmdb' if osp.isdir(osp.join(root, 'lmdb', f'{splits[0]}_hr.lmdb')) else 'disk'
    for split in splits:
        block = DataInfo(root, '', 1, 255, backend).block(split)
        for key in ('dataroot_gt', 'dataroot_seg'):
            if not osp.exists(block[key]):
                raise FileNotFoundError(f'dataset {root}: {block[key]} is missing (split {split}; data.train_split / '
                                        'data.eval_split name the splits).')
    return DataInfo(root, str(info.get('name', osp.basename(root))).lower(), int(info['num_classes']),
                    int(info.get('ignore_index', 255)), backend, *splits)


def _prepare(data_opt: dict, root: str, source: Optional[str]) -> None:
    kind = data_opt.get('prepare')
    if kind == 'camvid':
        from segsr.data.camvid import prepare_camvid

        if not source:
            raise FileNotFoundError(f"dataset {root} is not prepared and no CamVid source is given: pass --source "
                                    '<SegNet-layout CamVid folder> (train/, trainannot/, val/, valannot/; see '
                                    'docs/datasets.md), or --data <a prepared dataset root>.')
        if not osp.isdir(source):
            raise FileNotFoundError(f"--source / data.source: CamVid folder '{source}' does not exist.")
        get_root_logger().info(f'Preparing CamVid from {source} into {root}.')
        prepare_camvid(source, root)
    elif kind == 'synthetic':
        from segsr.data.synthetic import make_synthetic_dataset

        syn = dict(data_opt.get('synthetic') or {})
        get_root_logger().info(f'Making synthetic data in {root}: {syn}.')
        try:
            make_synthetic_dataset(root, **syn)
        except TypeError as err:
            raise ValueError(f'data.synthetic = {syn}: {err}') from err
    elif kind:
        raise ValueError(f"data.prepare = {kind!r}: expected camvid, synthetic or none.")


# ------------------------------------------------------------------------------------------------ option builders
def program_kind(path: str) -> Optional[str]:
    """``'export'`` for a ``torch.export`` file (``.pt2``), ``'torchscript'`` for a TorchScript archive (a zip with
    ``code/``), None for a weights file."""
    import zipfile

    if path.endswith('.pt2'):
        return 'export'
    if osp.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.split('/')[1:2] == ['code'] for name in archive.namelist()):
                return 'torchscript'
    return None


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated recursively by ``update`` (new dict; a None value in ``update`` replaces, and so does a
    block with another ``type``: a network of another class keeps none of the old one's arguments)."""
    out = deepcopy(base)
    for key, value in (update or {}).items():
        old = out.get(key)
        merge = isinstance(value, dict) and isinstance(old, dict) and \
            value.get('type', old.get('type')) == old.get('type')
        out[key] = deep_merge(old, value) if merge else deepcopy(value)
    return out


def options_key(opt: dict) -> str:
    """12 hex digits identifying a training step by what it trains: its options without ``name``, ``path``,
    ``logger`` and ``num_gpu`` (a starting point trained on one device is reused on another)."""
    core = {k: v for k, v in opt.items() if k not in ('name', 'path', 'logger', 'num_gpu', 'dist_params')}
    text = json.dumps(core, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/segsr/benchmark`` (``~/.cache/segsr/benchmark``)."""
    return osp.join(os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache'), 'segsr', 'benchmark')


class OptionBuilder:
    """Builds the BasicSR training options of every step from a profile (pure: nothing is written).

    Step ids: the starting points are ``judge``, ``deployed``, ``l1``; a fine-tuned row's run is ``<row>_s<seed>``.

    Args:
        profile: A loaded profile.
        data: The prepared dataset.
        out_dir: The benchmark's folder (fine-tuned runs go to ``<out_dir>/runs``).
        device: cpu | cuda | auto.
        cache_dir: Where starting points are trained and found again (``<cache_dir>/<step>-<options key>``).
        starts: User-given checkpoints of starting points (``{'judge': path, ...}``), used instead of training.
    """

    def __init__(self, profile: dict, data: DataInfo, out_dir: str, device: str, cache_dir: Optional[str] = None,
                 starts: Optional[Dict[str, str]] = None) -> None:
        self.p = profile
        self.data = data
        self.out_dir = out_dir
        self.device = device
        self.cache_dir = cache_dir or default_cache_dir()
        self.starts = {k: osp.abspath(v) for k, v in (starts or {}).items() if v}
        self.seed = int(profile.get('seed', 0))
        self.seeds = [int(s) for s in profile.get('seeds', [self.seed])]
        self.rows = [s for s in FINETUNE_STEPS if s in profile.get('rows', FINETUNE_STEPS)]
        self.scale = int(profile.get('scale', 4))
        self.num_classes = data.num_classes
        overrides = profile.get('overrides') or {}
        self.extra_judges = [EXTRA_JUDGE_PREFIX + name for name in profile.get('judges') or {}]
        # frozen nets that come with their weights (ImportedSegNet: the user's TorchScript, export or factory): used
        # as they are, never trained
        self.given = [s for s in ['judge', 'deployed'] + self.extra_judges if weights_included(self.frozen_network(s))]
        self.start_steps = [s for s in list(START_STEPS) + self.extra_judges
                            if (s != OPTIONAL_START or self.warm_start) and s not in self.given]
        self._check_deployed_features()
        builders = dict(judge=lambda: self.task_opt('judge', 0), deployed=lambda: self.task_opt('deployed', 1),
                        l1=self.l1_opt, disc=self.disc_opt)
        for offset, step in enumerate(self.extra_judges, start=3):  # seeds 0, 1, 2: judge, deployed, disc
            builders[step] = lambda step=step, offset=offset: self.extra_judge_opt(step, offset)
        self._start_opts = {k: deep_merge(builders[k](), overrides.get(k) or {}) for k in self.start_steps}

    # ids, folders and checkpoints
    def seeds_of(self, step: str) -> List[int]:
        """The seeds a fine-tuned row runs with: every seed for ``seeded_rows`` (all rows when absent)."""
        seeded = self.p.get('seeded_rows')
        return self.seeds if seeded is None or step in seeded else self.seeds[:1]

    def step_ids(self) -> List[str]:
        """Every training run in run order: the starting points, then each fine-tuned row per seed."""
        return list(self.start_steps) + [f'{s}_s{seed}' for s in self.rows for seed in self.seeds_of(s)]

    def frozen_network(self, name: str) -> dict:
        """The network block of a frozen net (``judge``, ``deployed``, ``judge_<name>``) with the data's classes."""
        if name.startswith(EXTRA_JUDGE_PREFIX):
            stage = self.p['judges'][name[len(EXTRA_JUDGE_PREFIX):]]
        else:
            stage = self.p[name]
        return dict(stage['network'], num_classes=self.num_classes)

    def _check_deployed_features(self) -> None:
        """TDP (SR4IR, the combination) and SeD's semantics read ``deployed.feature`` from the deployed net: an
        imported network has features only where its block names them (``feature_layers``, factory models)."""
        net, feature = self.frozen_network('deployed'), self.p['deployed'].get('feature', 'C5')
        needs = [r for r in self.rows if r in ('sr4ir', 'sed', 'combo')] + (['sfms'] if self.p['finetune'].get(
            'sfms_tdp') and 'sfms' in self.rows else [])
        if 'deployed' in self.given and needs and feature not in (net.get('feature_layers') or {}):
            raise ValueError(f"profile: rows {needs} need feature '{feature}' (deployed.feature) of the deployed "
                             f"network, and deployed.network ({net['type']}) has none: name it in its feature_layers "
                             '(a factory model) or run the other rows (rows: [s2t, esrgan, segaware, sfms]).')

    def is_start(self, step_id: str) -> bool:
        """A starting point (trained once, cached): judge, deployed, l1, disc, judge_<name>."""
        return step_id in START_STEPS or step_id in self.extra_judges

    def base_step(self, step_id: str) -> str:
        return step_id if self.is_start(step_id) else step_id.rsplit('_s', 1)[0]

    @property
    def judge_names(self) -> List[str]:
        """Every frozen network that scores the rows: ``judge``, ``deployed``, then ``judge_<name>`` per other judge."""
        return ['judge', 'deployed'] + self.extra_judges

    def run_dir(self, step_id: str) -> str:
        if self.is_start(step_id):
            return osp.join(self.cache_dir, f'{step_id}-{options_key(self._start_opts[step_id])}')
        return osp.join(self.out_dir, 'runs', step_id)

    @property
    def warm_start(self) -> Optional[dict]:
        """``finetune.task_d_warm_start``: the stage that trains the task-branch discriminator's segmentation head on
        HR images before SegAwareGAN fine-tunes from it (None: the discriminator starts from scratch)."""
        return self.p['finetune'].get('task_d_warm_start')

    @staticmethod
    def start_net(step_id: str) -> str:
        """The network label a starting point's checkpoint is saved under (``net_<label>_latest.pth``)."""
        return 'g' if step_id == 'l1' else 'task'

    def checkpoint(self, step_id: str, net: str, iteration: Optional[int] = None) -> Optional[str]:
        """A step's checkpoint (None for a frozen net that comes with its weights: :attr:`given`)."""
        if step_id in self.given:
            return None
        if step_id in self.starts and iteration is None:
            return self.starts[step_id]
        tag = 'latest' if iteration is None else str(iteration)
        return osp.join(self.run_dir(step_id), 'models', f'net_{net}_{tag}.pth')

    @property
    def l1_init(self) -> str:
        """The L1 start: every fine-tuned row begins here."""
        return self.checkpoint('l1', 'g')

    def semantic_extractor(self) -> dict:
        return dict(type='TaskNetSemanticExtractor', network=self.frozen_network('deployed'),
                    feature=self.p['deployed'].get('feature', 'C5'), pretrained=self.checkpoint('deployed', 'task'))

    def semantic_shape(self) -> tuple:
        """Channels and stride of the semantic map (built once, untrained, just to measure)."""
        net = build_network(dict(self.semantic_extractor(), pretrained=None))
        return int(net.out_channels), int(net.stride)

    # the common skeleton
    def base(self, step_id: str, model_type: str, stage: dict, total_iter: int, seed: int) -> dict:
        train_set = dict(self.data.block(self.data.train_split), lq_downsample=self.p.get('lq_downsample', 'matlab'),
                         gt_size=stage['gt_size'], use_hflip=True, use_rot=False,
                         num_worker_per_gpu=int(self.p.get('num_worker', 1)), batch_size_per_gpu=int(stage['batch']),
                         dataset_enlarge_ratio=int(self.p.get('dataset_enlarge_ratio', 10)), prefetch_mode=None)
        num_gpu = {'cpu': 0, 'cuda': 1, 'auto': 'auto'}[self.device]
        return dict(
            name=f"{self.p['name']}_{step_id}", model_type=model_type, scale=self.scale, num_gpu=num_gpu,
            manual_seed=int(seed), datasets={'train': train_set},
            path={'resume_state': None},
            train={'total_iter': int(total_iter), 'warmup_iter': -1, 'amp': self.p.get('amp', False)},
            logger={'print_freq': max(1, min(50, total_iter // 10)), 'use_tb_logger': False,
                    'save_checkpoint_freq': max(1, total_iter // 4)},
            dist_params={'backend': 'nccl', 'port': 29500})

    def task_opt(self, stage_name: str, seed_offset: int) -> dict:
        """H->T task network training (``SegTaskModel`` on HR crops): the judge and the deployed network."""
        return self._seg_training(stage_name, self.p[stage_name], self.frozen_network(stage_name), seed_offset)

    def extra_judge_opt(self, step_id: str, seed_offset: int) -> dict:
        """An other-family judge (``judges.<name>``), trained on HR like the judge; no SR method sees it."""
        stage = self.p['judges'][step_id[len(EXTRA_JUDGE_PREFIX):]]
        return self._seg_training(step_id, stage, self.frozen_network(step_id), seed_offset)

    def disc_opt(self) -> dict:
        """The task-branch warm start: SegAwareGAN's discriminator, its segmentation head trained on HR crops."""
        return self._seg_training('disc', self.warm_start, self.seg_aware_d(semantic=False), 2)

    def _seg_training(self, step_id: str, stage: dict, network: dict, seed_offset: int) -> dict:
        opt = self.base(step_id, 'SegTaskModel', stage, stage['iters'], self.seed + seed_offset)
        opt['task_input'] = 'hr'
        opt['datasets']['train']['lq_downsample'] = 'torch'  # the LR image is unused
        opt['network_task'] = network
        opt['train'].update(optim_task=dict(type='AdamW', lr=float(stage['lr']), weight_decay=1e-4),
                            scheduler=dict(type='OneCycleLR', pct_start=0.15),
                            seg_opt=dict(type='SegCrossEntropyLoss', ignore_index=self.data.ignore_index))
        return opt

    def adam(self, lr: float) -> dict:
        return dict(type='Adam', lr=float(lr), weight_decay=0, betas=[0.9, 0.99])

    def l1_opt(self) -> dict:
        """The L1 start (stock ``SRModel``), cosine learning rate to ``1e-6``."""
        stage = self.p['l1']
        iters = int(stage['iters'])
        opt = self.base('l1', 'SRModel', stage, iters, self.seed)
        if 'lq_downsample' in stage:  # one method, or a list: each training sample draws one
            opt['datasets']['train']['lq_downsample'] = deepcopy(stage['lq_downsample'])
        opt['network_g'] = dict(self.p['generator'])
        opt['train'].update(ema_decay=ema_decay(stage), optim_g=self.adam(stage['lr']),
                            scheduler=dict(type='CosineAnnealingRestartLR', periods=[iters], restart_weights=[1],
                                           eta_min=1e-6),
                            pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
        return opt

    def finetune_opt(self, step_id: str, model_type: str, seed: int) -> dict:
        """The schedule every fine-tuned row shares: generator from the L1 start, same lr, batch, crop, iterations."""
        stage = self.p['finetune']
        iters = int(stage['iters'])
        opt = self.base(step_id, model_type, stage, iters, seed)
        opt['network_g'] = dict(self.p['generator'])
        opt['path'].update(pretrain_network_g=self.l1_init, param_key_g='params_ema', strict_load_g=True)
        opt['train'].update(
            ema_decay=ema_decay(stage), optim_g=self.adam(stage['lr']),
            scheduler=dict(type='MultiStepLR', milestones=[max(1, int(2 * iters / 3))], gamma=0.5),
            pixel_opt=dict(type='L1Loss', loss_weight=float(stage.get('pixel_weight', 1.0)), reduction='mean'))
        return opt

    def gan_opt(self, step_id: str, model_type: str, network_d: dict, seed: int) -> dict:
        """A fine-tuned GAN row: the shared schedule plus one discriminator, GAN loss and optimizer for every row."""
        stage = self.p['finetune']
        opt = self.finetune_opt(step_id, model_type, seed)
        opt['network_d'] = network_d
        opt['train'].update(
            optim_d=self.adam(stage['lr']),
            gan_opt=dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0,
                         loss_weight=float(stage.get('gan_weight', 5e-3))),
            net_d_iters=1, net_d_init_iters=0)
        if model_type != 'ESRGANModel':  # ESRGANModel is relativistic by construction: the same for every row
            opt['train']['relativistic'] = True
        if stage.get('perceptual_weight'):
            opt['train']['perceptual_opt'] = dict(
                type='PerceptualLoss', layer_weights={'conv5_4': 1}, vgg_type='vgg19', use_input_norm=True,
                range_norm=False, perceptual_weight=float(stage['perceptual_weight']), style_weight=0,
                criterion='l1')
        return opt

    def task_losses(self) -> dict:
        ignore, warmup = self.data.ignore_index, int(self.p['finetune']['iters']) // 6
        return dict(task_adv_opt=dict(type='TaskAdversarialLoss', loss_weight=0.05, ignore_index=ignore),
                    d_task_opt=dict(type='DiscriminatorTaskLoss', loss_weight=5.0, sr_weight=0.0,
                                    ignore_index=ignore),
                    task_warmup_iter=warmup)

    def tdp(self) -> dict:
        return dict(tdp_opt=dict(type='TDPLoss', layer_weights={self.p['deployed'].get('feature', 'C5'): 1.0},
                                 criterion='l1', loss_weight=float(self.p['finetune'].get('tdp_weight', 1.0))),
                    tdp_warmup_iter=int(self.p['finetune']['iters']) // 6)

    def seg_aware_d(self, semantic: bool) -> dict:
        """The task-branch discriminator (``finetune.task_d_feat`` channels; default ``finetune.d_feat``)."""
        stage = self.p['finetune']
        d_feat = int(stage.get('task_d_feat', stage.get('d_feat', 64)))
        d = dict(type='SegAwareDiscriminator', num_classes=self.num_classes, num_in_ch=3, num_feat=d_feat,
                 trunk='unet', rf_head='pixel', seg_hidden=d_feat, skip_connection=True)
        if semantic:
            d['semantic_dim'], d['semantic_stride'] = self.semantic_shape()
        return d

    # the rows
    def s2t(self, step_id: str, seed: int) -> dict:
        """S->T: the L1 start continued with L1 alone (stock ``SRModel``)."""
        return self.finetune_opt(step_id, 'SRModel', seed)

    def esrgan(self, step_id: str, seed: int) -> dict:
        stage = self.p['finetune']
        d = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=int(stage.get('d_feat', 64)),
                 input_size=int(stage['gt_size']))
        return self.gan_opt(step_id, 'ESRGANModel', d, seed)

    def segaware(self, step_id: str, seed: int) -> dict:
        opt = self.gan_opt(step_id, 'SegAwareGANModel', self.seg_aware_d(semantic=False), seed)
        opt['train'].update(self.task_losses())
        if self.warm_start:
            opt['path'].update(pretrain_network_d=self.checkpoint('disc', 'task'), param_key_d='params',
                               strict_load_d=True)
        return opt

    def sed(self, step_id: str, seed: int) -> dict:
        dim, stride = self.semantic_shape()
        d = dict(type='SeDPatchDiscriminator', num_in_ch=3, num_feat=int(self.p['finetune'].get('d_feat', 64)),
                 semantic_dim=dim, semantic_stride=stride)
        opt = self.gan_opt(step_id, 'SeDModel', d, seed)
        opt['network_sem'] = self.semantic_extractor()
        return opt

    def combo(self, step_id: str, seed: int) -> dict:
        opt = self.gan_opt(step_id, 'SegAwareGANModel', self.seg_aware_d(semantic=True), seed)
        opt['network_sem'] = self.semantic_extractor()
        opt['network_task'] = self.frozen_network('deployed')
        opt['path'].update(pretrain_network_task=self.checkpoint('deployed', 'task'))
        opt['train'].update(self.task_losses(), **self.tdp())
        return opt

    def _sr4ir_base(self, step_id: str, seed: int) -> dict:
        opt = self.finetune_opt(step_id, 'SR4IRModel', seed)
        opt['network_task'] = self.frozen_network('deployed')
        opt['path'].update(pretrain_network_task=self.checkpoint('deployed', 'task'))
        opt['train']['scheduler_g'] = opt['train'].pop('scheduler')
        return opt

    def sr4ir(self, step_id: str, seed: int) -> dict:
        """SR4IR on the shared schedule; its task network starts from the deployed network."""
        iters, ignore = int(self.p['finetune']['iters']), self.data.ignore_index
        opt = self._sr4ir_base(step_id, seed)
        task_loss = dict(type='SegCrossEntropyLoss', loss_weight=0.34, ignore_index=ignore)
        opt['train'].update(
            update_sr=True, update_task=True, alternate=True,
            optim_task=dict(type='AdamW', lr=float(self.p.get('sr4ir_task_lr', 2e-4)), weight_decay=1e-4),
            scheduler_task=dict(type='MultiStepLR', milestones=[max(1, int(2 * iters / 3))], gamma=0.5),
            task_sr_opt=dict(task_loss), task_hr_opt=dict(task_loss), task_cqmix_opt=dict(task_loss),
            cqmix=dict(grid=8, prob=0.5), **self.tdp())
        return opt

    def sfms(self, step_id: str, seed: int) -> dict:
        """*SR for my segmenter*: L1 + ``finetune.ce_weight`` x cross-entropy through the frozen deployed network
        (+ TDP with ``finetune.sfms_tdp``), back-propagated into the SR network only (SR4IR's T2S)."""
        stage = self.p['finetune']
        opt = self._sr4ir_base(step_id, seed)
        opt['train'].update(update_sr=True, update_task=False,
                            sr_ce_opt=dict(type='SegCrossEntropyLoss', loss_weight=float(stage.get('ce_weight', 0.1)),
                                           ignore_index=self.data.ignore_index))
        if stage.get('sfms_tdp'):
            opt['train'].update(self.tdp())
        return opt

    def all(self) -> Dict[str, dict]:
        """Options of every training run (by step id), in run order, with the profile's ``overrides`` merged in."""
        overrides = self.p.get('overrides') or {}
        steps = OrderedDict()
        for step_id in self.step_ids():
            base = self.base_step(step_id)
            if self.is_start(base):
                steps[step_id] = deepcopy(self._start_opts[base])
            else:
                opt = getattr(self, base)(step_id, int(step_id.rsplit('_s', 1)[1]))
                steps[step_id] = deep_merge(opt, overrides.get(base) or {})
        for step_id, opt in steps.items():
            opt['path']['experiments_root'] = self.run_dir(step_id)
        return steps


# ------------------------------------------------------------------------------------------------------ the runner
class Benchmark:
    """Runs (or resumes) one benchmark: training runs, evaluation rows, step timing, then the outputs.

    Args:
        profile: A loaded profile (:func:`load_profile`).
        out_dir: Work and output folder.
        data_root: Dataset root (default: the profile's ``data.root``).
        device: cpu | cuda | auto (default: the profile's ``device``).
        judge / deployed / l1_start: Checkpoints of starting points to use instead of training them (each must
            match the profile's network block: ``judge.network``, ``deployed.network``, ``generator``).
        source: Raw dataset to prepare ``data_root`` from when it is not prepared (default: ``data.source``).
        cache_dir: Where starting points are trained and found again (default :func:`default_cache_dir`).
    """

    def __init__(self, profile: dict, out_dir: Optional[str] = None, data_root: Optional[str] = None,
                 device: Optional[str] = None, judge: Optional[str] = None, source: Optional[str] = None,
                 cache_dir: Optional[str] = None, deployed: Optional[str] = None,
                 l1_start: Optional[str] = None) -> None:
        self.profile = deepcopy(profile)
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
        self.rows = [replace(r, label=labels.get(r.key, r.label)) for r in ROWS
                     if r.step not in FINETUNE_STEPS or r.step in self.builder.rows]
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
        """Write ``options/<step id>.yml``; refuse to resume a run whose options changed since it started."""
        path = osp.join(self.out_dir, 'options', f'{step_id}.yml')
        text = yaml.safe_dump(self.options[step_id], sort_keys=False)
        if not self.builder.is_start(step_id) and osp.isfile(path) and osp.isdir(self.builder.run_dir(step_id)):
            with open(path) as f:
                if f.read() != text:
                    raise ValueError(f'{path}: the options of step {step_id} changed since this benchmark started '
                                     f'(profile or data); use another --out or delete {self.out_dir}.')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def _done_file(self, step_id: str) -> str:
        """Finished-run record: in the cache folder for starting points (shared), in ``state/`` otherwise."""
        if self.builder.is_start(step_id):
            return osp.join(self.builder.run_dir(step_id), 'segsr_finished.json')
        return self._state('train', step_id)

    def train_record(self, step_id: str) -> Optional[dict]:
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
        base = self.builder.base_step(step_id)
        if step_id in self.builder.starts:
            self.logger.info(f'{step_id}: using the given checkpoint {self.builder.starts[step_id]}')
            return
        net = self.builder.start_net(base) if self.builder.is_start(base) else 'g'
        expected = self.builder.checkpoint(step_id, net)
        done = self.train_record(step_id)
        if done and osp.isfile(expected):
            where = f' (cached: {self.builder.run_dir(step_id)})' if self.builder.is_start(step_id) else ''
            self.logger.info(f'{step_id}: trained already ({done["seconds"] / 60:.1f} min){where}, skipped.')
            return
        opt_path = self.write_options(step_id)
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

    # 2. evaluation
    def val_dataset(self, kernel: Optional[str] = None):
        """The evaluation split with LR made by ``kernel`` (default: the training kernel, ``lq_downsample``)."""
        opt = dict(self.data.block(self.data.eval_split), phase='val', scale=self.builder.scale,
                   lq_downsample=kernel or self.profile.get('lq_downsample', 'matlab'))
        return build_dataset(opt)

    @property
    def kernels(self) -> List[str]:
        """The profile's ``kernels``: LR degradations every row is also scored with (none trained on them)."""
        return list(self.profile.get('kernels') or [])

    def method_entry(self, row: Row, step_id: Optional[str]) -> dict:
        if row.kind != 'generator':
            return {'name': row.label, 'type': row.kind}
        return {'name': row.label, 'type': 'generator', 'network_g': self.options[step_id]['network_g'],
                'path': self.builder.checkpoint(step_id, 'g'), 'param_key': 'params_ema'}

    def own_predictor(self, row: Row, step_id: str):
        """The method's own task network on its SR output: SR4IR's task net or the discriminator's task head."""
        opt, models = self.options[step_id], osp.join(self.builder.run_dir(step_id), 'models')
        if row.own == 'task':
            net = build_network(opt['network_task'])
            load_checkpoint(net, osp.join(models, 'net_task_latest.pth'), 'params', f'{step_id} net_task')
            return network_predictor(freeze(net.to(self.device)))
        net_d = build_network(opt['network_d'])
        load_checkpoint(net_d, osp.join(models, 'net_d_latest.pth'), 'params', f'{step_id} net_d')
        net_d = freeze(net_d.to(self.device))
        if not opt.get('network_sem'):
            return net_d.segment
        sem = freeze(build_network(opt['network_sem']).to(self.device))
        return lambda img: net_d.segment(img, semantic=sem(img))

    def row_runs(self, row: Row) -> List[Tuple[int, Optional[str]]]:
        """``(seed, step id)`` of each evaluation of a row: one per seed for fine-tuned rows, one otherwise."""
        if row.step in FINETUNE_STEPS:
            return [(seed, f'{row.step}_s{seed}') for seed in self.builder.seeds_of(row.step)]
        return [(self.builder.seeds[0], row.step)]

    @staticmethod
    def eval_key(row: Row, seed: int, kernel: Optional[str] = None) -> str:
        """State key of one evaluation: ``<row>_s<seed>``, ``<row>_s<seed>@<kernel>`` under another kernel."""
        return f'{row.key}_s{seed}' + (f'@{kernel}' if kernel else '')

    def _evaluated(self, key: str) -> bool:
        path = self._state('matrices', key, 'npz')
        if not (self._load_state('eval', key) and osp.isfile(path)):
            return False
        with np.load(path) as mats:  # an evaluation from before a judge was added is redone
            return set(self.builder.judge_names) <= set(mats.files)

    def evaluate(self, row: Row, seed: int, step_id: Optional[str], dataset, nets: dict, keep: List[int],
                 kernel: Optional[str] = None) -> None:
        """Score one run on ``dataset``; under another ``kernel``: PSNR/SSIM and the frozen nets only, no pictures."""
        key = self.eval_key(row, seed, kernel)
        if self._evaluated(key):
            self.logger.info(f'{row.label} (seed {seed}{f", kernel {kernel}" if kernel else ""}): evaluated already, '
                             'skipped.')
            return
        predictors = {name: network_predictor(net) for name, net in nets.items()}
        if row.own and kernel is None:
            predictors['own'] = self.own_predictor(row, step_id)
        metrics = psnr_ssim_metrics(self.builder.scale)
        if kernel is None:
            metrics['niqe'] = dict(type='calculate_niqe', crop_border=self.builder.scale)
        scorer = TaskScorer(metrics, predictors, self.data.num_classes, self.data.ignore_index)
        result = evaluate_method(build_method(self.method_entry(row, step_id), self.device), dataset, scorer,
                                 self.device, keep if kernel is None else [])
        pictures = {}
        for idx, (sr_rgb, pred) in result['pictures'].items():
            base = osp.join(self.out_dir, 'pictures', f'{key}_{idx}')
            save_rgb(base + '_sr.png', sr_rgb)
            np.save(base + '_pred.npy', pred.astype(np.int16))
            pictures[str(idx)] = base
        tmp = self._state('matrices', key, 'tmp.npz')
        np.savez_compressed(tmp, **{name: np.stack(scorer.image_matrices[name]) for name in nets})
        os.replace(tmp, self._state('matrices', key, 'npz'))
        summary = {k: v for k, v in result['summary'].items()}
        self._save_state('eval', key, {'summary': summary, 'pictures': pictures})
        scores = ', '.join(f"{name} mIoU {summary[f'{name}_miou']:.2f}" for name in nets)
        self.logger.info(f"{row.label} (seed {seed}{f', kernel {kernel}' if kernel else ''}): {scores}, PSNR "
                         f"{summary['psnr']:.2f}, SSIM {summary['ssim']:.4f}"
                         + (f", NIQE {summary['niqe']:.2f}" if 'niqe' in summary else ''))

    def intervals(self, row: Row, seed: int, kernel: Optional[str] = None) -> Dict[str, dict]:
        """Paired block-bootstrap intervals of the row's mIoU minus S->T's (same seed, same kernel) for every frozen
        net (``<name>_vs_s2t``), and the transfer ratio (:func:`transfer_ratio`)."""
        ref_seeds = self.builder.seeds_of(REFERENCE)
        ref_key = self.eval_key(Row(REFERENCE, '', 'generator'), seed if seed in ref_seeds else ref_seeds[0], kernel)
        mats, ref = (np.load(self._state('matrices', k, 'npz')) for k in (self.eval_key(row, seed, kernel), ref_key))
        boot = dict(BOOTSTRAP_DEFAULTS, **(self.profile.get('bootstrap') or {}))
        out = {f'{name}_vs_s2t': paired_block_bootstrap(
            mats[name], ref[name], int(boot['block']), int(boot['samples']), float(boot['level']),
            int(boot['seed'])).as_dict() for name in self.builder.judge_names}
        out['transfer_ratio'] = transfer_ratio(out, self.builder.extra_judges)
        return out

    # 3. step timing
    def speed(self, row: Row) -> None:
        if row.step not in FINETUNE_STEPS or self._load_state('speed', row.key):
            return
        spd = self.profile.get('speed') or {}
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
        self.logger.info(f"Benchmark '{self.profile['name']}' ({self.profile['_path']}) on {self.data.root} "
                         f'(train {self.data.train_split}, evaluate {self.data.eval_split}), device {self.device}, '
                         f'seeds {self.builder.seeds}, out {self.out_dir}, starting points in {self.builder.cache_dir}')
        for step_id in self.builder.step_ids():
            self.train(step_id)
        dataset = self.val_dataset()
        nets = {name: build_judge({'network': self.builder.frozen_network(name),
                                   'path': self.builder.checkpoint(name, 'task'), 'param_key': 'params'},
                                  self.device, name) for name in self.builder.judge_names}
        keep = grid_indices(len(dataset), int((self.profile.get('eval') or {}).get('grid_images', 3)))
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
        records = self.collect()
        meta = self.metadata(len(dataset))
        table = markdown_table(records)
        transfer = ''.join(transfer_table(records, self.builder.judge_names, self.builder.extra_judges, kernel,
                                          meta['lq_downsample']) for kernel in [None] + self.kernels)
        write_text(osp.join(self.out_dir, 'results.md'),
                   header_text(meta) + '\n' + table + '\n' + FOOTNOTES + '\n' + transfer + TRANSFER_NOTES)
        payload = finite_or_none(dict(meta=meta, rows=[strip_pictures(r) for r in records]))
        write_json(osp.join(self.out_dir, 'results.json'), payload)
        save_rgb(osp.join(self.out_dir, 'grid.png'), self.grid(records, dataset, keep))
        plot_miou_vs_psnr(records, osp.join(self.out_dir, 'miou_vs_psnr.png'), meta['title'])
        self.logger.info(f'Benchmark table ({self.out_dir}/results.md):\n{table}')
        return payload

    def grid(self, records: List[dict], dataset, keep: List[int]) -> np.ndarray:
        """LR | each method | HR, the judge's segmentation under each (the LR column shows the ground truth)."""
        import cv2

        ordered = [r for r in records if r['key'] != 'hr'] + [r for r in records if r['key'] == 'hr']
        results = OrderedDict()
        for r in ordered:
            pics = {}
            for idx in keep:
                base = r['pictures'][str(idx)]
                pics[idx] = (cv2.cvtColor(cv2.imread(base + '_sr.png'), cv2.COLOR_BGR2RGB), np.load(base + '_pred.npy'))
            results['HR' if r['key'] == 'hr' else r['label'].split(' (')[0]] = {'pictures': pics}
        return picture_grid(dataset, results, keep)

    def metadata(self, num_images: int) -> dict:
        p = self.profile
        threads = torch.get_num_threads()
        machine = (torch.cuda.get_device_name(self.device) if self.device.type == 'cuda' else
                   f'CPU, {os.cpu_count()} cores ({threads} torch threads)')
        starts = {s: self.builder.checkpoint(s, self.builder.start_net(s)) for s in self.builder.start_steps}
        return dict(
            title=f"{p['name']}: x{self.builder.scale} {self.data.name} {self.data.eval_split}, {num_images} images",
            profile=p['_path'], dataset=self.data.root, train_split=self.data.train_split,
            eval_split=self.data.eval_split, num_val_images=num_images, device=str(self.device),
            machine=f'{machine}, {platform.machine()}, torch {torch.__version__}', amp=p.get('amp', False),
            date=time.strftime('%Y-%m-%d'), command=shlex.join(['segsr-benchmark'] + sys.argv[1:]),
            seeds=self.builder.seeds, seeded_rows=p.get('seeded_rows') or self.builder.rows, starts=starts,
            bootstrap=dict(BOOTSTRAP_DEFAULTS, **(p.get('bootstrap') or {})),
            lq_downsample=p.get('lq_downsample', 'matlab'), kernels=self.kernels,
            l1_lq_downsample=p['l1'].get('lq_downsample', p.get('lq_downsample', 'matlab')),
            judges={name: self.builder.frozen_network(name) for name in self.builder.judge_names},
            schedule=dict(judge=_stage(p['judge']), deployed=_stage(p['deployed']), l1=_stage(p['l1']),
                          finetune=_stage(p['finetune'])))


def strip_pictures(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k != 'pictures'}
    out['runs'] = [{k: v for k, v in run.items() if k != 'pictures'} for run in record['runs']]
    return out


def aggregate(summaries: List[dict]) -> dict:
    """Mean over seeds of every scalar of the summaries, plus ``<name>_sd`` (sample sd) when there are several."""
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


def _stage(stage: dict) -> str:
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
TRANSFER_NOTES = """\
Transfer tables: each frozen net's mIoU on the row's SR output and its difference to S->T of the same seed and
kernel (95% paired block-bootstrap interval; several seeds: mean, range, seeds with the interval above 0). judge and
judge_<name> never trained with any SR method (judge_<name>: other architecture families); deployed is the network
the task-aware rows train through. transfer ratio: mean gain of the judge_<name> nets / the deployed net's gain (of
the seeds' means): 1 = the gain holds for networks the SR never saw, 0 = it is tied to the deployed network; it is
only meaningful where the deployed gain's interval is above 0.
"""


def header_text(meta: dict) -> str:
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


def markdown_table(records: List[dict]) -> str:
    header = ['method', 'judge mIoU', '- S->T [95% CI]', 'deployed mIoU', '- S->T [95% CI]', 'own mIoU', 'PSNR',
              'SSIM', 'NIQE', 's / iter', 'x ESRGAN', 'infer s / img', 'train min']
    rows = []
    for r in records:
        s, spd = r['summary'], r['speed'] or {}
        seconds = [run['train']['seconds'] for run in r['runs'] if (run['train'] or {}).get('seconds') is not None]
        cells = [r['label'], _mean_sd(s, 'judge_miou', 2), _delta(r, 'judge'), _mean_sd(s, 'deployed_miou', 2),
                 _delta(r, 'deployed'), _mean_sd(s, 'own_miou', 2), _mean_sd(s, 'psnr', 2), fmt_value(s.get('ssim'), 4),
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
    """
    deployed = intervals['deployed_vs_s2t']['diff']
    if not others or deployed == 0:
        return None
    return float(np.mean([intervals[f'{name}_vs_s2t']['diff'] for name in others]) / deployed)


def _run_part(run: dict, kernel: Optional[str]) -> Optional[dict]:
    return run if kernel is None else run['kernels'].get(kernel)


def transfer_table(records: List[dict], names: List[str], others: List[str], kernel: Optional[str],
                   train_kernel: str) -> str:
    """Rows against S->T for every frozen net ``names`` (judge, deployed, the other-family judges ``others``) and the
    transfer ratio, with LR from the training kernel (``kernel`` None) or from another kernel."""
    title = f'LR from `{kernel}` (never trained on)' if kernel else f'LR from `{train_kernel}` (the training kernel)'
    header = ['method', 'PSNR-Y'] + [f'{n} mIoU - S->T' for n in names] + ['transfer ratio']
    rows = []
    for r in records:
        parts = [_run_part(run, kernel) for run in r['runs']]
        if r['key'] == 'hr' and kernel or any(p is None for p in parts):
            continue
        summary = aggregate([p['summary'] for p in parts])
        cells = [r['label'], _mean_sd(summary, 'psnr', 2)]
        for name in names:
            mean = _mean_sd(summary, f'{name}_miou', 2)
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


def plot_miou_vs_psnr(records: List[dict], path: str, title: str) -> None:
    """Scatter of judge mIoU against PSNR, one labelled point per method; H->T (no PSNR) as a dashed line."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    for r in records:
        s = r['summary']
        if s.get('psnr') is None or not np.isfinite(s['psnr']):
            if s.get('judge_miou') is not None:
                ax.axhline(s['judge_miou'], ls='--', c='gray', lw=1)
                ax.annotate(r['label'], (0.01, s['judge_miou']), xycoords=('axes fraction', 'data'), fontsize=8,
                            va='bottom', color='gray')
            continue
        ax.scatter(s['psnr'], s['judge_miou'], s=30)
        ax.annotate(r['label'].split(' (')[0], (s['psnr'], s['judge_miou']), textcoords='offset points',
                    xytext=(4, 4), fontsize=8)
    ax.set_xlabel('PSNR (dB, Y)')
    ax.set_ylabel('judge mIoU (%)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--profile', default='quick', help=f'{" | ".join(profile_names())}, or a profile YAML path.')
    parser.add_argument('--data', default=None, help="Dataset root in segsr's layout (default: the profile's).")
    parser.add_argument('--source', default=None,
                        help='Raw dataset to prepare --data from when it is not prepared yet (CamVid profiles: the '
                        'SegNet-layout CamVid folder with train/, trainannot/, val/, valannot/).')
    parser.add_argument('--out', default=None, help='Work/output folder (default: experiments/<profile name>).')
    parser.add_argument('--device', default=None, choices=['cpu', 'cuda', 'auto'], help="Default: the profile's.")
    parser.add_argument('--cache', default=None,
                        help=f'Where starting points are trained and found again (default: {default_cache_dir()}).')
    parser.add_argument('--judge', default=None, help='Use this judge checkpoint instead of training one.')
    parser.add_argument('--deployed', default=None,
                        help='Use this deployed segmenter (your own network): a checkpoint that matches deployed.network, '
                        'or a TorchScript / torch.export (.pt2) file, used as it is (ImportedSegNet with RGB in [0, 1]; '
                        'other input conventions or a factory: set deployed.network in a profile, docs/methods.md).')
    parser.add_argument('--l1-start', default=None,
                        help='Start every fine-tuned row from this generator checkpoint (must match generator).')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    apply_basicsr_fixes()
    Benchmark(load_profile(args.profile), args.out, args.data, args.device, args.judge, args.source, args.cache,
              args.deployed, args.l1_start).run()


if __name__ == '__main__':
    main()
