"""Training entry point: ``python segsr/train.py -opt options/X.yml`` (same flags as ``basicsr/train.py``).

Experiments go to ``./experiments/<name>`` under the current directory, or to ``path.experiments_root``.
Multi-process: ``torchrun --nproc_per_node=N segsr/train.py -opt X.yml --launcher pytorch`` (NCCL on GPUs, gloo on
CPU).
Mixed precision: ``train.amp: bf16`` or ``auto`` (see :mod:`segsr.utils.amp`), for stock BasicSR models too.

The loop is BasicSR's ``train_pipeline`` (same options, logs, checkpoints, validation) with what exact resume needs
(see ``docs/training.md``): a run killed at any point and resumed with ``--auto_resume`` ends, on the CPU, with the
same weights bit for bit as the run that was never interrupted. For that

- training states also hold the position in the epoch, the random generators, Real-ESRGAN's training-pair pool and
  the options (:func:`segsr.utils.checkpoint.training_state`), as plain data read with ``weights_only=True``;
- the training data come from :mod:`segsr.data.resumable` (an epoch can start mid-way; each sample has its own seed);
- validation runs with the random generators saved and restored, so it never shifts training's random stream;
- ``--auto_resume`` skips damaged states (newest intact one wins), removes leftovers of interrupted writes, and
  refuses option changes it cannot apply (:mod:`segsr.utils.resume`).
"""
import datetime
import logging
import os
import shutil
import sys
import time
import warnings
from typing import List, Optional, Tuple

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import segsr  # noqa: E402,F401  (registration before basicsr's pipeline)
import torch  # noqa: E402
from basicsr.data import build_dataloader, build_dataset  # noqa: E402
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import (AvgTimer, MessageLogger, get_env_info, get_root_logger, get_time_str,  # noqa: E402
                           make_exp_dirs, mkdir_and_rename)
from basicsr.utils.options import copy_opt_file, dict2str  # noqa: E402

from segsr.compat import apply_basicsr_fixes  # noqa: E402
from segsr.data.resumable import build_train_loader  # noqa: E402
from segsr.utils.amp import with_amp  # noqa: E402
from segsr.utils.checkpoint import to_plain  # noqa: E402
from segsr.utils.options import parse_options  # noqa: E402
from segsr.utils.resume import (check_option_changes, find_resume_state, load_scheduler_state,  # noqa: E402
                                network_files, remove_temporary_files)
from segsr.utils.rng import get_rng_state, isolated_rng, set_rng_state  # noqa: E402


def main() -> None:
    apply_basicsr_fixes()
    train_pipeline(os.getcwd())


# ---------------------------------------------------------------------------------------------- set-up
def configure_determinism(opt: dict) -> None:
    """Top-level ``deterministic: true`` asks for deterministic CUDA kernels; otherwise BasicSR's cuDNN autotuning.

    CPU training is deterministic either way. On CUDA, cuDNN autotuning and atomics-based kernels make two runs (and
    so a resumed run) differ slightly unless ``deterministic`` is set (slower; some ops then raise).
    """
    if opt.get('deterministic'):
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True


def point_networks_at_state(opt: dict, iteration: int) -> None:
    """Load every network from the state's ``net_<x>_<iter>.pth`` (BasicSR's ``check_resume``, logged not printed)."""
    opt['path'].update(network_files(opt, iteration))
    for key, value in list(opt['path'].items()):
        if key.startswith('param_key') and value == 'params_ema':
            opt['path'][key] = 'params'  # the EMA copy is read from params_ema by the model itself


def keep_options_file(opt_file: str, opt: dict, resume_iter: Optional[int]) -> str:
    """Copy the options file into the experiment folder; a resumed run adds its own copy, never overwriting.

    Returns:
        The copy's path.
    """
    root = opt['path']['experiments_root']
    if resume_iter is None:
        copy_opt_file(opt_file, root)
        return os.path.join(root, os.path.basename(opt_file))
    stem, ext = os.path.splitext(os.path.basename(opt_file))
    target = os.path.join(root, f'{stem}_resumed_at_{resume_iter}{ext}')
    shutil.copyfile(opt_file, target)
    return target


def init_logging(opt: dict):
    log_file = os.path.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    import basicsr.train

    return logger, basicsr.train.init_tb_loggers(opt)


def create_loaders(opt: dict, logger) -> Tuple[object, object, List[object]]:
    """Training loader + sampler (resumable) and BasicSR's validation loaders."""
    train_loader = sampler = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            train_set = build_dataset(dataset_opt)
            train_loader, sampler = build_train_loader(train_set, dataset_opt, opt)
            logger.info('Training statistics:'
                        f'\n\tNumber of train images: {len(train_set)}'
                        f"\n\tDataset enlarge ratio: {dataset_opt.get('dataset_enlarge_ratio', 1)}"
                        f'\n\tBatch size per gpu: {dataset_opt["batch_size_per_gpu"]}'
                        f'\n\tWorld size (gpu number): {opt["world_size"]}'
                        f'\n\tRequire iter number per epoch: {len(train_loader)}'
                        f"\n\tTotal iters: {opt['train']['total_iter']}.")
        elif phase.split('_')[0] == 'val':
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                sampler=None, seed=opt['manual_seed']))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
        else:
            raise ValueError(f"Option 'datasets.{phase}': dataset phase '{phase}' is not recognized (use 'train' "
                             "or 'val*').")
    if train_loader is None:
        raise ValueError("Option 'datasets.train' is required for training.")
    return train_loader, sampler, val_loaders


def make_prefetcher(train_loader, opt: dict):
    mode = opt['datasets']['train'].get('prefetch_mode')
    if mode is None or mode == 'cpu':
        return CPUPrefetcher(train_loader)
    if mode == 'cuda':
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError("Option 'datasets.train.pin_memory' must be true with prefetch_mode: cuda.")
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"Option 'datasets.train.prefetch_mode' = {mode!r}: use ~ (none), 'cpu' or 'cuda'.")


def restore_training_state(model, state: dict, state_path: str) -> None:
    """Optimizers, schedulers and Real-ESRGAN's pool from a state (the networks were loaded at build)."""
    for kind in ('optimizers', 'schedulers'):
        if len(state[kind]) != len(getattr(model, kind)):
            raise ValueError(f"{state_path} holds {len(state[kind])} {kind} but {type(model).__name__} built "
                             f'{len(getattr(model, kind))}: it was written by a different model or options.')
    for optimizer, saved in zip(model.optimizers, state['optimizers']):
        optimizer.load_state_dict(saved)
    for scheduler, saved in zip(model.schedulers, state['schedulers']):
        load_scheduler_state(scheduler, saved)
    if 'pool' in state:
        pool = getattr(model, 'pair_pool', None)
        if pool is None:
            raise ValueError(f'{state_path} holds a Real-ESRGAN training-pair pool but {type(model).__name__} has '
                             'none: it was written by a different model.')
        pool.load_state_dict(state['pool'], model.device)


# ------------------------------------------------------------------------------------------------ loop
class TrainingLoop:
    """BasicSR's iteration loop, tracking the position in the epoch and saving it with each training state."""

    def __init__(self, opt: dict, model, train_loader, sampler, val_loaders, tb_logger, logger):
        self.opt, self.model, self.sampler, self.val_loaders = opt, model, sampler, val_loaders
        self.tb_logger, self.logger = tb_logger, logger
        self.batch_size = train_loader.batch_size
        self.prefetcher = make_prefetcher(train_loader, opt)
        self.total_iter = int(opt['train']['total_iter'])
        self.epoch, self.epoch_batches, self.current_iter = 0, 0, 0
        self.options = to_plain(opt, 'options')
        model.loop_state = self.state

    def state(self) -> dict:
        """What the loop adds to a training state (plain data)."""
        return {'epoch_batches': self.epoch_batches, 'rng': get_rng_state(), 'options': self.options}

    def resume(self, state: dict) -> None:
        self.epoch, self.current_iter = int(state['epoch']), int(state['iter'])
        self.epoch_batches = int(state.get('epoch_batches', 0))
        if 'rng' in state:
            set_rng_state(state['rng'])
        else:
            self.logger.warning('The training state has no random-generator state or epoch position (older format): '
                                'the resumed run continues but does not repeat the uninterrupted one exactly.')

    def run(self) -> None:
        msg_logger = MessageLogger(self.opt, self.current_iter, self.tb_logger)
        data_timer, iter_timer = AvgTimer(), AvgTimer()
        self.logger.info(f'Start training from epoch: {self.epoch}, iter: {self.current_iter}')
        while self.current_iter < self.total_iter:
            self.sampler.set_epoch(self.epoch, start=self.epoch_batches * self.batch_size)
            self.prefetcher.reset()
            batch = self.prefetcher.next()
            while batch is not None and self.current_iter < self.total_iter:
                data_timer.record()
                self.step(batch)
                iter_timer.record()
                if self.current_iter == 1:
                    msg_logger.reset_start_time()  # eta from the first finished step, as in BasicSR
                if self.current_iter % self.opt['logger']['print_freq'] == 0:
                    self.log(msg_logger, iter_timer, data_timer)
                self.save_and_validate()
                data_timer.start()
                iter_timer.start()
                batch = self.prefetcher.next() if self.current_iter < self.total_iter else None
            if self.current_iter < self.total_iter:  # the epoch is used up
                self.epoch, self.epoch_batches = self.epoch + 1, 0

    def step(self, batch: dict) -> None:
        self.current_iter += 1
        self.epoch_batches += 1
        self.model.update_learning_rate(self.current_iter, warmup_iter=self.opt['train'].get('warmup_iter', -1))
        self.model.feed_data(batch)
        self.model.optimize_parameters(self.current_iter)

    def log(self, msg_logger, iter_timer, data_timer) -> None:
        log_vars = {'epoch': self.epoch, 'iter': self.current_iter, 'lrs': self.model.get_current_learning_rate(),
                    'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
        log_vars.update(self.model.get_current_log())
        msg_logger(log_vars)

    def save_and_validate(self) -> None:
        if self.current_iter % self.opt['logger']['save_checkpoint_freq'] == 0:
            self.logger.info('Saving models and training states.')
            self.model.save(self.epoch, self.current_iter)
        if self.opt.get('val') is not None and self.current_iter % self.opt['val']['val_freq'] == 0:
            self.validate()

    def validate(self) -> None:
        """Every validation set; the random generators are restored afterwards (validation never shifts training)."""
        if len(self.val_loaders) > 1:
            self.logger.warning('Multiple validation datasets are *only* supported by SRModel.')
        with isolated_rng(cuda=True):
            for val_loader in self.val_loaders:
                self.model.validation(val_loader, self.current_iter, self.tb_logger, self.opt['val']['save_img'])


def prepare_experiment(opt: dict, opt_file: str):
    """Resume point, experiment folders, options copy and logging, in BasicSR's order. Returns (logger, tb, resume).

    Everything that can refuse to resume (damaged files, changed options) is decided before anything is written.
    """
    resume = find_resume_state(opt)
    state = resume.state
    changes = {} if state is None else check_option_changes(state.get('options'), opt, resume.path)
    if state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(os.path.join(opt['root_path'], 'tb_logger', opt['name']))
    else:
        point_networks_at_state(opt, state['iter'])
    removed = remove_temporary_files(opt['path']['models'], opt['path']['training_states']) \
        if opt['rank'] == 0 else []
    copy = keep_options_file(opt_file, opt, None if state is None else state['iter'])
    logger, tb_logger = init_logging(opt)
    for path in removed:
        logger.warning(f'Removed {path}: left by an interrupted checkpoint write.')
    for problem in resume.skipped:
        logger.warning(f'Skipped a damaged training state: {problem}')
    if state is not None:
        logger.info(f'Resuming from {resume.path}; options of this run: {copy}.')
        if 'options' not in state:
            logger.warning(f'{resume.path} records no options (older format): changes are not checked.')
        for key, (old, new) in changes.items():
            logger.info(f'Resumed with a changed option (applied): {key}: {old!r} -> {new!r}')
    return logger, tb_logger, resume


def train_pipeline(root_path: str) -> None:
    """Parse options, resume if asked, train, save the latest model and validate (``basicsr.train`` semantics)."""
    with warnings.catch_warnings(record=True) as option_warnings:  # repeated in the log once it is open
        warnings.simplefilter('always')
        opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    configure_determinism(opt)
    logger, tb_logger, resume = prepare_experiment(opt, args.opt)
    for warning in option_warnings:
        logger.warning(f'{warning.category.__name__}: {warning.message}')
    train_loader, sampler, val_loaders = create_loaders(opt, logger)
    model = with_amp(build_model)(opt)
    loop = TrainingLoop(opt, model, train_loader, sampler, val_loaders, tb_logger, logger)
    if resume.state is not None:
        restore_training_state(model, resume.state, resume.path)
        logger.info(f"Resuming training from epoch: {resume.state['epoch']}, iter: {resume.state['iter']}.")
        loop.resume(resume.state)
    start_time = time.time()
    loop.run()
    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if opt.get('val') is not None:
        loop.validate()
    if tb_logger:
        tb_logger.close()


if __name__ == '__main__':
    main()
