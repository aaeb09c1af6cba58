"""One-command benchmark: every method against stock BasicSR baselines on one labelled dataset, side by side.

``python scripts/benchmark.py --profile quick`` trains, in one go with one seed and one schedule:

* the judge (a segmentation network trained on HR images: the H->T row) and a second, smaller task network
  (the *prior*, another seed) that conditions SeD and gives the combination its TDP features, so the judge that
  scores every row is never seen by any SR method during training;
* an L1 RRDB (stock ``SRModel``: the S->T row), trained for ``l1.iters + gan.iters`` iterations; its checkpoint at
  ``l1.iters`` starts every other SR row, so every SR row has seen the same number of generator updates;
* stock ESRGAN (``ESRGANModel`` + ``VGGStyleDiscriminator``), the segmentation-aware GAN (``SegAwareGANModel``),
  SR4IR (``SR4IRModel``, its task network starting from the prior), SeD (``SeDModel`` + P+SeD discriminator) and
  the combination (``SegAwareGANModel`` with SeD conditioning and TDP), each for ``gan.iters`` iterations;

then scores bicubic (L->T), HR (H->T) and every generator on the val split with the same frozen judge: judge
mIoU and pixel accuracy, the method's own task network mIoU where it has one (SR4IR's task net, the segmentation
head of the SegAwareGAN discriminators), PSNR/SSIM (Y, ``scale``-pixel border), NIQE and generator inference time;
and measures each training step (seconds per iteration and peak memory, fixed random batch, fresh process) as a
ratio to the stock ESRGAN step with the same generator, batch and crop.

Everything lives in ``--out`` (default ``experiments/<profile name>``): ``options/<step>.yml`` (the generated
BasicSR option files: run any of them with ``segsr/train.py``), ``runs/<step>/`` (experiments), ``state/``
(finished work: a rerun skips it, an interrupted training resumes from its last saved state), ``logs/``,
``results.md``, ``results.json``, ``grid.png`` (LR | each method | HR, judge segmentation under each) and
``miou_vs_psnr.png``.

Profiles (shipped with the package in ``segsr/benchmark_profiles/<name>.yml``, or any YAML path): ``smoke`` (tiny
synthetic data, 2 iterations per step: CI), ``quick`` (CamVid on CPU, about 80 minutes on 2 cores), ``full`` (CamVid
on a CUDA GPU, bf16 autocast). CamVid profiles prepare ``data.root`` from ``--source`` (the SegNet-layout CamVid
folder) when it is not prepared yet.
"""
import argparse
import json
import logging
import math
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from copy import deepcopy
from dataclasses import dataclass
from importlib import resources
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml

import segsr  # noqa: F401  (before basicsr)
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils import get_root_logger, get_time_str

from segsr.compat import apply_basicsr_fixes
from segsr.evaluate import (_finite_or_none, _fmt, _json_default, build_method, evaluate_method, grid_indices,
                            picture_grid)
from segsr.models.base import freeze, load_checkpoint
from segsr.models.task_eval import TaskScorer, build_judge, network_predictor
from segsr.step_bench import measure_in_subprocess
from segsr.utils.misc import module_command
from segsr.utils.visual import save_rgb

PROFILE_PACKAGE = 'segsr.benchmark_profiles'
REQUIRED_KEYS = ('name', 'data', 'judge', 'prior', 'generator', 'l1', 'gan')
STAGE_KEYS = ('iters', 'batch', 'gt_size', 'lr')
TRAIN_STEPS = ('judge', 'prior', 'l1', 'esrgan', 'segaware', 'sr4ir', 'sed', 'combo')
SPEED_BASE = 'esrgan'


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
    Row('l1', 'S->T (L1; stock SRModel)', 'generator', step='l1'),
    Row('esrgan', 'ESRGAN (stock ESRGANModel)', 'generator', step='esrgan'),
    Row('segaware', 'SegAwareGAN (task-branch D)', 'generator', step='segaware', own='disc'),
    Row('sr4ir', 'SR4IR (TDP + alternate)', 'generator', step='sr4ir', own='task'),
    Row('sed', 'SeD (P+SeD)', 'generator', step='sed'),
    Row('combo', 'Combination (task branch + SeD + TDP)', 'generator', step='combo', own='disc'),
)


# --------------------------------------------------------------------------------------------------- profile, data
def profile_names() -> List[str]:
    """Names of the profiles shipped with the package (``segsr/benchmark_profiles/*.yml``)."""
    return sorted(p.name[:-4] for p in resources.files(PROFILE_PACKAGE).iterdir() if p.name.endswith('.yml'))


def load_profile(name_or_path: str) -> dict:
    """Read a profile (a shipped profile's name or a YAML path) and check its keys (errors name the file)."""
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
    for key in REQUIRED_KEYS:
        if key not in profile:
            raise ValueError(f"{path}: key '{key}' is required.")
    for stage in ('judge', 'prior', 'l1', 'gan'):
        missing = [k for k in STAGE_KEYS if k not in (profile[stage] or {})]
        if missing:
            raise ValueError(f"{path}: '{stage}' needs keys {missing}.")
    if profile['gan']['gt_size'] not in (128, 256):
        raise ValueError(f"{path}: 'gan.gt_size' = {profile['gan']['gt_size']}: stock ESRGAN's VGGStyleDiscriminator "
                         'takes 128 or 256.')
    for key in ('device', 'amp'):
        allowed = {'device': ('cpu', 'cuda', 'auto'), 'amp': (False, 'bf16', 'auto')}[key]
        if profile.get(key, allowed[0]) not in allowed:
            raise ValueError(f"{path}: '{key}' = {profile[key]!r}; expected one of {list(allowed)}.")
    unknown = set(profile.get('overrides') or {}) - set(TRAIN_STEPS)
    if unknown:
        raise ValueError(f"{path}: 'overrides' has unknown steps {sorted(unknown)}; steps: {list(TRAIN_STEPS)}.")
    profile['_path'] = path
    return profile


@dataclass
class DataInfo:
    """A prepared labelled dataset in segsr's layout (``dataset_info.yml`` + LMDBs or ``<split>/{hr,seg}``)."""
    root: str
    name: str
    num_classes: int
    ignore_index: int
    backend: str

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
    backend = 'lmdb' if osp.isdir(osp.join(root, 'lmdb', 'train_hr.lmdb')) else 'disk'
    for split in ('train', 'val'):
        block = DataInfo(root, '', 1, 255, backend).block(split)
        for key in ('dataroot_gt', 'dataroot_seg'):
            if not osp.exists(block[key]):
                raise FileNotFoundError(f'dataset {root}: {block[key]} is missing (split {split}).')
    return DataInfo(root, str(info.get('name', osp.basename(root))).lower(), int(info['num_classes']),
                    int(info.get('ignore_index', 255)), backend)


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
def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated recursively by ``update`` (new dict; a None value in ``update`` replaces)."""
    out = deepcopy(base)
    for key, value in (update or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else deepcopy(value)
    return out


class OptionBuilder:
    """Builds the BasicSR training options of every step from a profile (pure: nothing is written)."""

    def __init__(self, profile: dict, data: DataInfo, out_dir: str, device: str) -> None:
        self.p = profile
        self.data = data
        self.out_dir = out_dir
        self.device = device
        self.seed = int(profile.get('seed', 0))
        self.scale = int(profile.get('scale', 4))
        self.num_classes = data.num_classes

    # paths of other steps' outputs
    def run_dir(self, step: str) -> str:
        return osp.join(self.out_dir, 'runs', step)

    def checkpoint(self, step: str, net: str, iteration: Optional[int] = None) -> str:
        tag = 'latest' if iteration is None else str(iteration)
        return osp.join(self.run_dir(step), 'models', f'net_{net}_{tag}.pth')

    @property
    def l1_init(self) -> str:
        """The L1 RRDB after ``l1.iters``: the start of every GAN row and of SR4IR."""
        return self.checkpoint('l1', 'g', int(self.p['l1']['iters']))

    def task_network(self, stage: str) -> dict:
        return dict(self.p[stage]['network'], num_classes=self.num_classes)

    def semantic_extractor(self) -> dict:
        prior = self.p['prior']
        return dict(type='TaskNetSemanticExtractor', network=self.task_network('prior'),
                    feature=prior.get('feature', 'C5'), pretrained=self.checkpoint('prior', 'task'))

    def semantic_shape(self) -> tuple:
        """Channels and stride of the semantic map (built once, untrained, just to measure)."""
        opt = dict(self.semantic_extractor(), pretrained=None)
        net = build_network(opt)
        return int(net.out_channels), int(net.stride)

    # the common skeleton
    def base(self, step: str, model_type: str, stage: dict, total_iter: int, seed_offset: int = 0) -> dict:
        train_set = dict(self.data.block('train'), lq_downsample=self.p.get('lq_downsample', 'matlab'),
                         gt_size=stage['gt_size'], use_hflip=True, use_rot=False,
                         num_worker_per_gpu=int(self.p.get('num_worker', 1)), batch_size_per_gpu=int(stage['batch']),
                         dataset_enlarge_ratio=int(self.p.get('dataset_enlarge_ratio', 10)), prefetch_mode=None)
        num_gpu = {'cpu': 0, 'cuda': 1, 'auto': 'auto'}[self.device]
        return dict(
            name=f"{self.p['name']}_{step}", model_type=model_type, scale=self.scale, num_gpu=num_gpu,
            manual_seed=self.seed + seed_offset, datasets={'train': train_set},
            path={'experiments_root': self.run_dir(step), 'resume_state': None},
            train={'total_iter': int(total_iter), 'warmup_iter': -1, 'amp': self.p.get('amp', False)},
            logger={'print_freq': max(1, min(50, total_iter // 10)), 'use_tb_logger': False,
                    'save_checkpoint_freq': max(1, total_iter // 4)},
            dist_params={'backend': 'nccl', 'port': 29500})

    def task_opt(self, step: str, stage_name: str, seed_offset: int) -> dict:
        """H->T task network training (``SegTaskModel`` on HR crops): the judge and the prior."""
        stage = self.p[stage_name]
        opt = self.base(step, 'SegTaskModel', stage, stage['iters'], seed_offset)
        opt['task_input'] = 'hr'
        opt['datasets']['train']['lq_downsample'] = 'torch'  # the LR image is unused
        opt['network_task'] = self.task_network(stage_name)
        opt['train'].update(optim_task=dict(type='AdamW', lr=float(stage['lr']), weight_decay=1e-4),
                            scheduler=dict(type='OneCycleLR', pct_start=0.15),
                            seg_opt=dict(type='SegCrossEntropyLoss', ignore_index=self.data.ignore_index))
        return opt

    def adam(self, lr: float) -> dict:
        return dict(type='Adam', lr=float(lr), weight_decay=0, betas=[0.9, 0.99])

    def l1_opt(self) -> dict:
        stage, gan_iters = self.p['l1'], int(self.p['gan']['iters'])
        l1_iters = int(stage['iters'])
        opt = self.base('l1', 'SRModel', stage, l1_iters + gan_iters)
        opt['logger']['save_checkpoint_freq'] = math.gcd(l1_iters, gan_iters)  # a checkpoint at l1.iters
        opt['network_g'] = dict(self.p['generator'])
        opt['train'].update(ema_decay=float(stage.get('ema_decay', 0.999)), optim_g=self.adam(stage['lr']),
                            scheduler=dict(type='MultiStepLR', milestones=[int(0.8 * l1_iters)], gamma=0.5),
                            pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
        return opt

    def gan_opt(self, step: str, model_type: str, network_d: dict) -> dict:
        """The GAN schedule shared by every GAN row: generator from the L1 RRDB, same losses, lr and iterations."""
        stage = self.p['gan']
        iters = int(stage['iters'])
        opt = self.base(step, model_type, stage, iters)
        opt['network_g'] = dict(self.p['generator'])
        opt['network_d'] = network_d
        opt['path'].update(pretrain_network_g=self.l1_init, param_key_g='params_ema', strict_load_g=True)
        opt['train'].update(
            ema_decay=float(stage.get('ema_decay', 0.999)), optim_g=self.adam(stage['lr']),
            optim_d=self.adam(stage['lr']),
            scheduler=dict(type='MultiStepLR', milestones=[max(1, int(2 * iters / 3))], gamma=0.5),
            pixel_opt=dict(type='L1Loss', loss_weight=float(stage.get('pixel_weight', 1.0)), reduction='mean'),
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
        ignore, warmup = self.data.ignore_index, int(self.p['gan']['iters']) // 6
        return dict(task_adv_opt=dict(type='TaskAdversarialLoss', loss_weight=0.05, ignore_index=ignore),
                    d_task_opt=dict(type='DiscriminatorTaskLoss', loss_weight=5.0, sr_weight=0.0,
                                    ignore_index=ignore),
                    task_warmup_iter=warmup)

    def tdp(self) -> dict:
        return dict(tdp_opt=dict(type='TDPLoss', layer_weights={self.p['prior'].get('feature', 'C5'): 1.0},
                                 criterion='l1', loss_weight=float(self.p['gan'].get('tdp_weight', 1.0))),
                    tdp_warmup_iter=int(self.p['gan']['iters']) // 6)

    def seg_aware_d(self, semantic: bool) -> dict:
        d_feat = int(self.p['gan'].get('d_feat', 64))
        d = dict(type='SegAwareDiscriminator', num_classes=self.num_classes, num_in_ch=3, num_feat=d_feat,
                 trunk='unet', rf_head='pixel', seg_hidden=d_feat, skip_connection=True)
        if semantic:
            d['semantic_dim'], d['semantic_stride'] = self.semantic_shape()
        return d

    def esrgan(self) -> dict:
        stage = self.p['gan']
        d = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=int(stage.get('d_feat', 64)),
                 input_size=int(stage['gt_size']))
        return self.gan_opt('esrgan', 'ESRGANModel', d)

    def segaware(self) -> dict:
        opt = self.gan_opt('segaware', 'SegAwareGANModel', self.seg_aware_d(semantic=False))
        opt['train'].update(self.task_losses())
        return opt

    def sed(self) -> dict:
        dim, stride = self.semantic_shape()
        d = dict(type='SeDPatchDiscriminator', num_in_ch=3, num_feat=int(self.p['gan'].get('d_feat', 64)),
                 semantic_dim=dim, semantic_stride=stride)
        opt = self.gan_opt('sed', 'SeDModel', d)
        opt['network_sem'] = self.semantic_extractor()
        return opt

    def combo(self) -> dict:
        opt = self.gan_opt('combo', 'SegAwareGANModel', self.seg_aware_d(semantic=True))
        opt['network_sem'] = self.semantic_extractor()
        opt['network_task'] = self.task_network('prior')
        opt['path'].update(pretrain_network_task=self.checkpoint('prior', 'task'))
        opt['train'].update(self.task_losses(), **self.tdp())
        return opt

    def sr4ir(self) -> dict:
        """SR4IR on the GAN schedule's generator start, lr and iterations; its task network starts from the prior."""
        stage, ignore = self.p['gan'], self.data.ignore_index
        iters = int(stage['iters'])
        opt = self.base('sr4ir', 'SR4IRModel', stage, iters)
        opt['network_g'] = dict(self.p['generator'])
        opt['network_task'] = self.task_network('prior')
        opt['path'].update(pretrain_network_g=self.l1_init, param_key_g='params_ema', strict_load_g=True,
                           pretrain_network_task=self.checkpoint('prior', 'task'))
        task_loss = dict(type='SegCrossEntropyLoss', loss_weight=0.34, ignore_index=ignore)
        milestones = [max(1, int(2 * iters / 3))]
        opt['train'].update(
            ema_decay=float(stage.get('ema_decay', 0.999)), update_sr=True, update_task=True, alternate=True,
            optim_g=self.adam(stage['lr']),
            optim_task=dict(type='AdamW', lr=float(self.p.get('sr4ir_task_lr', 2e-4)), weight_decay=1e-4),
            scheduler_g=dict(type='MultiStepLR', milestones=milestones, gamma=0.5),
            scheduler_task=dict(type='MultiStepLR', milestones=milestones, gamma=0.5),
            pixel_opt=dict(type='L1Loss', loss_weight=float(stage.get('pixel_weight', 1.0)), reduction='mean'),
            task_sr_opt=dict(task_loss), task_hr_opt=dict(task_loss), task_cqmix_opt=dict(task_loss),
            cqmix=dict(grid=8, prob=0.5), **self.tdp())
        return opt

    def all(self) -> Dict[str, dict]:
        """Options of every training step, in run order, with the profile's ``overrides`` merged in."""
        steps = OrderedDict(judge=self.task_opt('judge', 'judge', 0), prior=self.task_opt('prior', 'prior', 1),
                            l1=self.l1_opt(), esrgan=self.esrgan(), segaware=self.segaware(), sr4ir=self.sr4ir(),
                            sed=self.sed(), combo=self.combo())
        overrides = self.p.get('overrides') or {}
        return OrderedDict((k, deep_merge(v, overrides.get(k) or {})) for k, v in steps.items())


# ------------------------------------------------------------------------------------------------------ the runner
class Benchmark:
    """Runs (or resumes) one benchmark: training steps, evaluation rows, step timing, then the outputs.

    Args:
        profile: A loaded profile (:func:`load_profile`).
        out_dir: Work and output folder.
        data_root: Dataset root (default: the profile's ``data.root``).
        device: cpu | cuda | auto (default: the profile's ``device``).
        judge: Path of a trained judge checkpoint to reuse instead of training one (must match ``judge.network``).
        source: Raw dataset to prepare ``data_root`` from when it is not prepared (default: ``data.source``).
    """

    def __init__(self, profile: dict, out_dir: Optional[str] = None, data_root: Optional[str] = None,
                 device: Optional[str] = None, judge: Optional[str] = None, source: Optional[str] = None) -> None:
        self.profile = deepcopy(profile)
        self.out_dir = osp.abspath(out_dir or osp.join('experiments', profile['name']))
        self.device_name = device or profile.get('device', 'cpu')
        if self.device_name == 'cuda' and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available; use --device cpu or auto.")
        use_cuda = self.device_name == 'cuda' or (self.device_name == 'auto' and torch.cuda.is_available())
        self.device = torch.device('cuda' if use_cuda else 'cpu')
        for sub in ('options', 'runs', 'state', 'logs', 'pictures'):
            os.makedirs(osp.join(self.out_dir, sub), exist_ok=True)
        self.logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO,
                                      log_file=osp.join(self.out_dir, 'logs', f'benchmark_{get_time_str()}.log'))
        self.data = prepare_data(profile['data'], data_root, source)
        self.builder = OptionBuilder(self.profile, self.data, self.out_dir, self.device_name)
        self.options = self.builder.all()
        self.judge_path = osp.abspath(judge) if judge else self.builder.checkpoint('judge', 'task')
        if judge and not osp.isfile(self.judge_path):
            raise FileNotFoundError(f'--judge {judge}: no such checkpoint.')
        self.reuse_judge = bool(judge)

    # state files: finished work
    def _state(self, kind: str, key: str) -> str:
        return osp.join(self.out_dir, 'state', f'{kind}_{key}.json')

    def _load_state(self, kind: str, key: str) -> Optional[dict]:
        path = self._state(kind, key)
        if not osp.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)

    def _save_state(self, kind: str, key: str, payload: dict) -> None:
        path = self._state(kind, key)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(_finite_or_none(payload), f, indent=2, default=_json_default, allow_nan=False)
        os.replace(tmp, path)

    # 1. training
    def write_options(self, step: str) -> str:
        """Write ``options/<step>.yml``; refuse to resume a step whose options changed since it started."""
        path = osp.join(self.out_dir, 'options', f'{step}.yml')
        text = yaml.safe_dump(self.options[step], sort_keys=False)
        if osp.isfile(path) and osp.isdir(self.builder.run_dir(step)):
            with open(path) as f:
                if f.read() != text:
                    raise ValueError(f'{path}: the options of step {step} changed since this benchmark started '
                                     f'(profile or data); use another --out or delete {self.out_dir}.')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def train(self, step: str) -> None:
        if step == 'judge' and self.reuse_judge:
            self.logger.info(f'judge: reusing {self.judge_path}')
            return
        done = self._load_state('train', step)
        expected = self.builder.checkpoint(step, 'task' if step in ('judge', 'prior') else 'g')
        if done and osp.isfile(expected):
            self.logger.info(f'{step}: trained already ({done["seconds"] / 60:.1f} min), skipped.')
            return
        opt_path = self.write_options(step)
        cmd, env = module_command('segsr.train', '-opt', opt_path, '--auto_resume')
        log_path = osp.join(self.out_dir, 'logs', f'train_{step}.txt')
        self.logger.info(f'{step}: training ({self.options[step]["train"]["total_iter"]} iterations): '
                         f'{shlex.join(cmd)}')
        start = time.time()
        with open(log_path, 'a') as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        seconds = time.time() - start + (self._load_state('partial', step) or {}).get('seconds', 0.0)
        if proc.returncode != 0 or not osp.isfile(expected):
            self._save_state('partial', step, {'seconds': seconds})
            with open(log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f'{step}: training failed (exit {proc.returncode}); log {log_path}:\n{tail}')
        self._save_state('train', step, {'seconds': seconds, 'iters': self.options[step]['train']['total_iter']})
        self.logger.info(f'{step}: done in {seconds / 60:.1f} min.')

    # 2. evaluation
    def val_dataset(self):
        opt = dict(self.data.block('val'), phase='val', scale=self.builder.scale,
                   lq_downsample=self.profile.get('lq_downsample', 'matlab'))
        return build_dataset(opt)

    def method_entry(self, row: Row) -> dict:
        if row.kind != 'generator':
            return {'name': row.label, 'type': row.kind}
        return {'name': row.label, 'type': 'generator', 'network_g': self.options[row.step]['network_g'],
                'path': self.builder.checkpoint(row.step, 'g'), 'param_key': 'params_ema'}

    def own_predictor(self, row: Row):
        """The method's own task network on its SR output: SR4IR's task net or the discriminator's task head."""
        opt, models = self.options[row.step], osp.join(self.builder.run_dir(row.step), 'models')
        if row.own == 'task':
            net = build_network(opt['network_task'])
            load_checkpoint(net, osp.join(models, 'net_task_latest.pth'), 'params', f'{row.step} net_task')
            return network_predictor(freeze(net.to(self.device)))
        net_d = build_network(opt['network_d'])
        load_checkpoint(net_d, osp.join(models, 'net_d_latest.pth'), 'params', f'{row.step} net_d')
        net_d = freeze(net_d.to(self.device))
        if not opt.get('network_sem'):
            return net_d.segment
        sem = freeze(build_network(opt['network_sem']).to(self.device))
        return lambda img: net_d.segment(img, semantic=sem(img))

    def evaluate(self, row: Row, dataset, judge, keep: List[int]) -> None:
        if self._load_state('eval', row.key):
            self.logger.info(f'{row.label}: evaluated already, skipped.')
            return
        predictors = {'judge': network_predictor(judge)}
        if row.own:
            predictors['own'] = self.own_predictor(row)
        metrics = OrderedDict(
            psnr=dict(type='calculate_psnr', crop_border=self.builder.scale, test_y_channel=True),
            ssim=dict(type='calculate_ssim', crop_border=self.builder.scale, test_y_channel=True),
            niqe=dict(type='calculate_niqe', crop_border=self.builder.scale))
        scorer = TaskScorer(metrics, predictors, self.data.num_classes, self.data.ignore_index)
        result = evaluate_method(build_method(self.method_entry(row), self.device), dataset, scorer, self.device,
                                 keep)
        pictures = {}
        for idx, (sr_rgb, pred) in result['pictures'].items():
            base = osp.join(self.out_dir, 'pictures', f'{row.key}_{idx}')
            save_rgb(base + '_sr.png', sr_rgb)
            np.save(base + '_pred.npy', pred.astype(np.int16))
            pictures[str(idx)] = base
        summary = result['summary']
        self._save_state('eval', row.key, {'summary': summary, 'pictures': pictures})
        self.logger.info(f"{row.label}: judge mIoU {summary['judge_miou']:.2f}, PSNR {summary['psnr']:.2f}, "
                         f"SSIM {summary['ssim']:.4f}, NIQE {summary['niqe']:.2f}")

    # 3. step timing
    def speed(self, row: Row) -> None:
        if row.kind != 'generator' or self._load_state('speed', row.key):
            return
        spd = self.profile.get('speed') or {}
        gan = self.profile['gan']
        opt_path = self.write_options(row.step)
        self.logger.info(f'{row.label}: timing training steps ({spd.get("iters", 10)} steps, batch {gan["batch"]} '
                         f'x {gan["gt_size"]}).')
        result = measure_in_subprocess(opt_path, iters=int(spd.get('iters', 10)), warmup=int(spd.get('warmup', 3)),
                                       batch=int(gan['batch']), gt_size=int(gan['gt_size']),
                                       device=self.device.type)
        self._save_state('speed', row.key, result)

    # the whole run
    def run(self) -> dict:
        self.logger.info(f"Benchmark '{self.profile['name']}' ({self.profile['_path']}) on {self.data.root}, "
                         f'device {self.device}, out {self.out_dir}')
        for step in TRAIN_STEPS:
            self.train(step)
        dataset = self.val_dataset()
        judge = build_judge({'network': self.options['judge']['network_task'], 'path': self.judge_path,
                             'param_key': 'params'}, self.device, 'judge')
        keep = grid_indices(len(dataset), int((self.profile.get('eval') or {}).get('grid_images', 3)))
        for row in ROWS:
            self.evaluate(row, dataset, judge, keep)
        for row in ROWS:
            self.speed(row)
        return self.write_outputs(dataset, keep)

    # 4. outputs
    def collect(self) -> List[dict]:
        """One record per row from the state files."""
        records = []
        for row in ROWS:
            ev = self._load_state('eval', row.key)
            train = self._load_state('train', row.step) if row.step else None
            records.append(dict(key=row.key, label=row.label, step=row.step, summary=ev['summary'],
                                pictures=ev['pictures'], train=train, speed=self._load_state('speed', row.key)))
        base = next(r['speed'] for r in records if r['key'] == SPEED_BASE)
        for r in records:
            if r['speed']:
                r['speed']['x_esrgan_time'] = r['speed']['sec_per_iter'] / base['sec_per_iter']
                r['speed']['x_esrgan_mem'] = r['speed']['peak_mb'] / base['peak_mb']
        return records

    def write_outputs(self, dataset, keep: List[int]) -> dict:
        records = self.collect()
        meta = self.metadata(len(dataset))
        table = markdown_table(records)
        with open(osp.join(self.out_dir, 'results.md'), 'w') as f:
            f.write(header_text(meta) + '\n' + table + '\n' + FOOTNOTES)
        payload = dict(meta=meta, rows=[{k: v for k, v in r.items() if k != 'pictures'} for r in records])
        with open(osp.join(self.out_dir, 'results.json'), 'w') as f:
            json.dump(_finite_or_none(payload), f, indent=2, default=_json_default, allow_nan=False)
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
        return dict(
            title=f"{p['name']}: x{self.builder.scale} {self.data.name}, {num_images} val images",
            profile=p['_path'], dataset=self.data.root, num_val_images=num_images, device=str(self.device),
            machine=f'{machine}, {platform.machine()}, torch {torch.__version__}', amp=p.get('amp', False),
            date=time.strftime('%Y-%m-%d'), command=shlex.join([osp.relpath(sys.argv[0])] + sys.argv[1:]),
            seed=self.builder.seed, judge=self.judge_path,
            schedule=dict(judge=_stage(p['judge']), prior=_stage(p['prior']), l1=_stage(p['l1']),
                          gan=_stage(p['gan'])))


def _stage(stage: dict) -> str:
    return f"{stage['iters']} it, batch {stage['batch']} x {stage['gt_size']}, lr {stage['lr']}"


FOOTNOTES = """\
judge mIoU / pixel acc: the frozen judge (H->T task network) on each method's SR output of the val images.
own mIoU: the method's own task network on its SR output (SR4IR: its task net; SegAwareGAN and the combination:
the discriminator's segmentation head). PSNR/SSIM: Y channel, scale-pixel border; NIQE: lower is better.
s / iter and peak memory: one training step on a fixed random batch (the GAN batch and crop for every row), median,
in a fresh process (CPU: peak resident set size of the process, interpreter included; CUDA: peak allocated);
x ESRGAN: ratio to the stock ESRGAN step with the same generator. infer s / img: the generator alone on one val
image. train min: wall time of the row's training run.
"""


def header_text(meta: dict) -> str:
    lines = [f"# {meta['title']}", '',
             f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}; device {meta['device']}, "
             f"amp {meta['amp']}  ", f"Date: {meta['date']}; seed {meta['seed']}  ",
             'Schedule: ' + '; '.join(f'{k} {v}' for k, v in meta['schedule'].items()), '']
    return '\n'.join(lines)


def markdown_table(records: List[dict]) -> str:
    header = ['method', 'judge mIoU', 'own mIoU', 'pixel acc', 'PSNR', 'SSIM', 'NIQE', 's / iter', 'x ESRGAN',
              'peak MB', 'x ESRGAN', 'infer s / img', 'train min']
    lines = ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * (len(header) - 1)]
    for r in records:
        s, spd, train = r['summary'], r['speed'] or {}, r['train'] or {}
        cells = [r['label'], _fmt(s.get('judge_miou'), 2), _fmt(s.get('own_miou'), 2), _fmt(s.get('judge_pixacc'), 2),
                 _fmt(s.get('psnr'), 2), _fmt(s.get('ssim'), 4), _fmt(s.get('niqe'), 2),
                 _fmt(spd.get('sec_per_iter'), 3), _fmt(spd.get('x_esrgan_time'), 2), _fmt(spd.get('peak_mb'), 0),
                 _fmt(spd.get('x_esrgan_mem'), 2), _fmt(s.get('sec_per_img') if r['step'] != 'judge' else None, 4),
                 _fmt(train.get('seconds') / 60 if train.get('seconds') is not None else None, 1)]
        lines.append('| ' + ' | '.join(c.replace('n/a', '—') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


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
    parser.add_argument('--judge', default=None, help='Reuse this trained judge checkpoint instead of training one.')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    apply_basicsr_fixes()
    Benchmark(load_profile(args.profile), args.out, args.data, args.device, args.judge, args.source).run()


if __name__ == '__main__':
    main()
