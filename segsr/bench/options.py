"""The benchmark's BasicSR training options: every step's option dict from a profile (pure: nothing is written).

:class:`OptionBuilder` holds what every row shares (the skeleton, the fine-tuning schedule, the GAN block, the task
losses, TDP, the task-branch discriminator, the starting points' options, checkpoints and run folders); each
fine-tuned row's own options come from its recipe (:mod:`segsr.bench.recipes`).
"""
import hashlib
import json
import os
import os.path as osp
from collections import OrderedDict
from copy import deepcopy
from typing import Dict, List, Optional

from basicsr.archs import build_network

from segsr.bench.data import DataInfo
from segsr.bench.profile import EXTRA_JUDGE_PREFIX, OPTIONAL_START, deep_merge, ema_decay
from segsr.bench.recipes import REGISTRY, START_STEPS, Step, finetune_steps
from segsr.tasks import get_task
from segsr.weights import weights_included


LOADER_KEYS = ('num_worker_per_gpu', 'prefetch_mode', 'pin_memory')  # how batches are loaded, not what is trained


def options_key(opt: dict) -> str:
    """12 hex digits identifying a training step by what it trains: its options without ``name``, ``path``,
    ``logger``, ``num_gpu`` and the data loader's settings (:data:`LOADER_KEYS`): a starting point trained on one
    device, with another number of loader workers, is reused on another.

    Args:
        opt: The step's BasicSR options.
    """
    core = {k: v for k, v in opt.items() if k not in ('name', 'path', 'logger', 'num_gpu', 'dist_params')}
    if 'datasets' in core:
        core['datasets'] = {phase: {k: v for k, v in (block or {}).items() if k not in LOADER_KEYS}
                            for phase, block in core['datasets'].items()}
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
        self.task = get_task(data.task, 'data.task')
        for_task = [s for s in finetune_steps() if self.task.name in REGISTRY[s].tasks]  # default: every row it has
        self.rows = [s for s in finetune_steps() if s in profile.get('rows', for_task)]
        self._check_rows_task()
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
        self._steps = [Step(s, s) for s in self.start_steps] + [
            Step(f'{row}_s{seed}', row, seed) for row in self.rows for seed in self.seeds_of(row)]

    # ids, folders and checkpoints
    def seeds_of(self, step: str) -> List[int]:
        """The seeds a fine-tuned row runs with: every seed for ``seeded_rows`` (all rows when absent).

        Args:
            step: A fine-tuned row's key.
        """
        seeded = self.p.get('seeded_rows')
        return self.seeds if seeded is None or step in seeded else self.seeds[:1]

    def steps(self) -> List[Step]:
        """Every training run in run order: the starting points, then each fine-tuned row per seed."""
        return list(self._steps)

    def step_ids(self) -> List[str]:
        """The ids of :meth:`steps`."""
        return [s.id for s in self._steps]

    def step(self, step_id: str) -> Step:
        """The training run ``step_id`` (one of :meth:`step_ids`).

        Args:
            step_id: ``judge``, ``deployed``, ``l1``, ``disc``, ``judge_<name>`` or ``<row>_s<seed>``.
        """
        return next(s for s in self._steps if s.id == step_id)

    def runs_of(self, row: str) -> List[Step]:
        """The runs of a fine-tuned row, one per seed (:meth:`seeds_of`).

        Args:
            row: A fine-tuned row's key.
        """
        return [s for s in self._steps if s.seed is not None and s.base == row]

    def frozen_network(self, name: str) -> dict:
        """The network block of a frozen net with the data's classes.

        Args:
            name: ``judge``, ``deployed`` or ``judge_<name>``.
        """
        if name.startswith(EXTRA_JUDGE_PREFIX):
            stage = self.p['judges'][name[len(EXTRA_JUDGE_PREFIX):]]
        else:
            stage = self.p[name]
        return dict(stage['network'], num_classes=self.num_classes)

    def _check_rows_task(self) -> None:
        """Rows whose method exists for segmentation only (a discriminator with a segmentation head, SeD's semantics
        of a segmenter) cannot run on another task's data."""
        wrong = [r for r in self.rows if self.task.name not in REGISTRY[r].tasks]
        if wrong:
            ok = [r for r in finetune_steps() if self.task.name in REGISTRY[r].tasks]
            raise ValueError(f"profile: rows {wrong} are for {sorted(set().union(*(REGISTRY[r].tasks for r in wrong)))} "
                             f"data only; data.task is '{self.task.name}': set rows to some of {ok}.")

    def _check_deployed_features(self) -> None:
        """TDP (SR4IR, the combination) and SeD's semantics read ``deployed.feature`` from the deployed net: an
        imported network has features only where its block names them (``feature_layers``, factory models)."""
        net, feature = self.frozen_network('deployed'), self.p['deployed'].get('feature', 'C5')
        needs = [r for r in self.rows if REGISTRY[r].needs_feature(self.p)]
        if 'deployed' in self.given and needs and feature not in (net.get('feature_layers') or {}):
            others = ', '.join(r for r in finetune_steps() if not REGISTRY[r].needs_feature(self.p))
            raise ValueError(f"profile: rows {needs} need feature '{feature}' (deployed.feature) of the deployed "
                             f"network, and deployed.network ({net['type']}) has none: name it in its feature_layers "
                             f'(a factory model) or run the other rows (rows: [{others}]).')

    def is_start(self, step_id: str) -> bool:
        """A starting point (trained once, cached): judge, deployed, l1, disc, judge_<name>.

        Args:
            step_id: A step id.
        """
        return step_id in START_STEPS or step_id in self.extra_judges

    @property
    def judge_names(self) -> List[str]:
        """Every frozen network that scores the rows: ``judge``, ``deployed``, then ``judge_<name>`` per other judge."""
        return ['judge', 'deployed'] + self.extra_judges

    def run_dir(self, step_id: str) -> str:
        """A run's folder: ``<cache_dir>/<step>-<options key>`` for a starting point, ``<out_dir>/runs/<step id>``.

        Args:
            step_id: A step id.
        """
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
        """The network label a starting point's checkpoint is saved under (``net_<label>_latest.pth``).

        Args:
            step_id: A starting point.
        """
        return 'g' if step_id == 'l1' else 'task'

    def checkpoint(self, step_id: str, net: str, iteration: Optional[int] = None) -> Optional[str]:
        """A step's checkpoint (None for a frozen net that comes with its weights: :attr:`given`).

        Args:
            step_id: A step id.
            net: The network label (``g``, ``task``, ``d``).
            iteration: A saved iteration (default: the latest; a user-given checkpoint then).
        """
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
        """The ``TaskNetSemanticExtractor`` block: the deployed network's ``deployed.feature`` (SeD's semantics)."""
        return dict(type='TaskNetSemanticExtractor', network=self.frozen_network('deployed'),
                    feature=self.p['deployed'].get('feature', 'C5'), pretrained=self.checkpoint('deployed', 'task'))

    def semantic_shape(self) -> tuple:
        """Channels and stride of the semantic map (built once, untrained, just to measure)."""
        net = build_network(dict(self.semantic_extractor(), pretrained=None))
        return int(net.out_channels), int(net.stride)

    # the common skeleton
    def base(self, step_id: str, model_type: str, stage: dict, total_iter: int, seed: int) -> dict:
        """The skeleton of every step: the training split, model, seed, iterations, logger.

        Args:
            step_id: The step id (option name ``<profile name>_<step id>``).
            model_type: The BasicSR model class.
            stage: The profile's training stage (``batch``, ``gt_size``).
            total_iter: Training iterations.
            seed: ``manual_seed``.
        """
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
        """H->T task network training (``SegTaskModel`` on HR crops): the judge and the deployed network.

        Args:
            stage_name: ``judge`` or ``deployed``.
            seed_offset: Added to the profile's ``seed``.
        """
        return self._seg_training(stage_name, self.p[stage_name], self.frozen_network(stage_name), seed_offset)

    def extra_judge_opt(self, step_id: str, seed_offset: int) -> dict:
        """An other-family judge (``judges.<name>``), trained on HR like the judge; no SR method sees it.

        Args:
            step_id: ``judge_<name>``.
            seed_offset: Added to the profile's ``seed``.
        """
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
                            scheduler=dict(type='OneCycleLR', pct_start=0.15))
        if self.task.name == 'seg':  # the key (and so the cached starting points) of the segmentation benchmark
            opt['train']['seg_opt'] = dict(type='SegCrossEntropyLoss', ignore_index=self.data.ignore_index)
        else:
            opt['train']['task_opt'] = self.task.loss_block()
        return opt

    def task_loss(self, loss_weight: float) -> dict:
        """The task's loss block (cross-entropy with the data's ``ignore_index``, the detector's losses, ...).

        Args:
            loss_weight: Its ``loss_weight``.
        """
        return self.task.loss_block(loss_weight, self.data.ignore_index)

    def adam(self, lr: float) -> dict:
        """The Adam block of every SR optimizer (BasicSR's betas, no weight decay).

        Args:
            lr: Learning rate.
        """
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
        """The schedule every fine-tuned row shares: generator from the L1 start, same lr, batch, crop, iterations.

        Args:
            step_id: The run's id.
            model_type: The BasicSR model class.
            seed: ``manual_seed``.
        """
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
        """A fine-tuned GAN row: the shared schedule plus one discriminator, GAN loss and optimizer for every row.

        Args:
            step_id: The run's id.
            model_type: The BasicSR model class.
            network_d: The discriminator block.
            seed: ``manual_seed``.
        """
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
        """The task-branch discriminator's losses (SegAwareGAN, the combination), warmed up over a sixth of the run."""
        ignore, warmup = self.data.ignore_index, int(self.p['finetune']['iters']) // 6
        return dict(task_adv_opt=dict(type='TaskAdversarialLoss', loss_weight=0.05, ignore_index=ignore),
                    d_task_opt=dict(type='DiscriminatorTaskLoss', loss_weight=5.0, sr_weight=0.0,
                                    ignore_index=ignore),
                    task_warmup_iter=warmup)

    def tdp(self) -> dict:
        """TDP on the deployed network's ``deployed.feature`` (``finetune.tdp_weight``), warmed up over a sixth."""
        return dict(tdp_opt=dict(type='TDPLoss', layer_weights={self.p['deployed'].get('feature', 'C5'): 1.0},
                                 criterion='l1', loss_weight=float(self.p['finetune'].get('tdp_weight', 1.0))),
                    tdp_warmup_iter=int(self.p['finetune']['iters']) // 6)

    def seg_aware_d(self, semantic: bool) -> dict:
        """The task-branch discriminator (``finetune.task_d_feat`` channels; default ``finetune.d_feat``).

        Args:
            semantic: Conditioned on the deployed network's semantics (SeD's input).
        """
        stage = self.p['finetune']
        d_feat = int(stage.get('task_d_feat', stage.get('d_feat', 64)))
        d = dict(type='SegAwareDiscriminator', num_classes=self.num_classes, num_in_ch=3, num_feat=d_feat,
                 trunk='unet', rf_head='pixel', seg_hidden=d_feat, skip_connection=True)
        if semantic:
            d['semantic_dim'], d['semantic_stride'] = self.semantic_shape()
        return d

    def all(self) -> Dict[str, dict]:
        """Options of every training run (by step id), in run order, with the profile's ``overrides`` merged in."""
        overrides = self.p.get('overrides') or {}
        steps = OrderedDict()
        for step in self._steps:
            if step.seed is None:
                steps[step.id] = deepcopy(self._start_opts[step.base])
            else:
                opt = REGISTRY[step.base].build(self, step)
                steps[step.id] = deep_merge(opt, overrides.get(step.base) or {})
        for step_id, opt in steps.items():
            opt['path']['experiments_root'] = self.run_dir(step_id)
        return steps
