"""Fault injection on training: kill -9 at random iterations, damaged and planted files, changed options on resume.

The bar: on the CPU a run killed anywhere and resumed with ``--auto_resume`` ends with the same weights, bit for bit,
as the run that was never interrupted (``max |diff| == 0``), with ``num_worker_per_gpu`` 0 or > 0.
"""
import copy
import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter, deque

import pytest
import torch

from conftest import REPO, logger_opt, run_entry, write_yaml
from helpers.options import load_sed_option as load_sed_options
from helpers.options import tiny_run_opt as tiny_sed_run_opt
from helpers.options import gan_opt
from helpers.options import ce, sr4ir_opt
from helpers.task_data import task_sr4ir_opt, write_cls_data, write_det_data

TOTAL = 12
SAVE_EVERY = 3
TRAIN = os.path.join(REPO, 'segsr', 'train.py')


# ------------------------------------------------------------------------------------------------ helpers
def realesrgan_opt(tiny_data, tmp_path):
    """Stock RealESRGANModel (BasicSR's config, shrunk): on-the-fly degradations and the training-pair pool."""
    return tiny_sed_run_opt(load_sed_options('train_realesrgan_x4plus.yml'), tiny_data, sed=False)


def sfms_views_opt(tiny_data, tmp_path):
    """SR for my segmenter with the transfer terms: random views for the frozen net's CE (drawn from torch's global
    generator, which the training state saves) and the focal frequency loss."""
    opt = sr4ir_opt(tiny_data, tmp_path)
    for key in ('task_sr_opt', 'task_hr_opt', 'task_cqmix_opt', 'optim_task', 'scheduler_task', 'cqmix'):
        opt['train'].pop(key)
    opt['train'].update(update_task=False, sr_ce_opt=ce(0.1),
                        sr_ce_views={'scale': [0.75, 1.25], 'hflip': True, 'shift': 4},
                        frequency_opt={'type': 'FocalFrequencyLoss', 'loss_weight': 10.0})
    return opt


def sr4ir_det_opt(tiny_data, tmp_path):
    """SR4IR with a detector (issue 21): its task phase samples proposals from torch's global generator, and TDP
    reads two FPN levels; the data is written afresh (the same files) for every run."""
    root = write_det_data(str(tmp_path / 'det_data'))
    return task_sr4ir_opt('det', root, tdp_opt={'type': 'TDPLoss', 'layer_weights': {'fpn0': 0.5, 'fpn1': 0.5}})


def sfmc_opt(tiny_data, tmp_path):
    """*SR for my classifier*: the frozen classifier's cross-entropy through the SR image (issue 21)."""
    return task_sr4ir_opt('cls', write_cls_data(str(tmp_path / 'cls_data')), frozen=True)


BUILDERS = {'segaware': gan_opt, 'sr4ir': sr4ir_opt, 'realesrgan': realesrgan_opt, 'sfms_views': sfms_views_opt,
            'sr4ir_det': sr4ir_det_opt, 'sfmc': sfmc_opt}


def run_opt(method, tiny_data, tmp_path, name, workers=0):
    opt = copy.deepcopy(BUILDERS[method](tiny_data, tmp_path))
    opt['name'] = name
    opt['manual_seed'] = 0
    opt['train']['total_iter'] = TOTAL
    opt['logger'] = logger_opt(freq=SAVE_EVERY)
    opt['val'].update(val_freq=5, save_img=False)  # validation between saves: it must not shift training's RNG
    opt['datasets']['train']['num_worker_per_gpu'] = workers
    if 'scheduler_task' in opt['train']:
        opt['train']['scheduler_task']['periods'] = [TOTAL]
    return opt


def experiment(cwd, name):
    return os.path.join(str(cwd), 'experiments', name)


def newest_log(exp):
    """The newest ``train_*.log`` of a finished run (nothing else writes to ``exp`` then)."""
    logs = sorted(glob.glob(os.path.join(exp, 'train_*.log')), key=os.path.getmtime)
    return open(logs[-1]).read() if logs else ''


def train_killed_at(opt_path, cwd, iteration, *args):
    """Start a training run and ``kill -9`` it as soon as it logs ``iteration`` (mid-save or mid-step).

    The run's own stderr stream (BasicSR's logger writes every record there as well as to the log file) is read line
    by line: a run killed before its first save starts afresh on resume and moves the experiment folder aside, so a
    poll of ``train_*.log`` files could list a log that is gone when it is opened. The kill takes the run's whole
    process group (its DataLoader workers too): orphaned workers would keep the pipe open, and a reader waiting for
    its end would hang.
    """
    proc = subprocess.Popen([sys.executable, TRAIN, '-opt', str(opt_path), *args], cwd=str(cwd),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def kill_all() -> None:  # the trainer and its DataLoader workers (they hold the stderr pipe open)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    pattern = re.compile(rf'iter:\s+{iteration},')
    watchdog = threading.Timer(300, kill_all)  # a run that never logs the iteration ends the test, not CI
    watchdog.start()
    tail = deque(maxlen=60)
    try:
        for line in proc.stderr:
            tail.append(line)
            if pattern.search(line):
                kill_all()
                break
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        kill_all()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, \
        f'the run was not killed at iteration {iteration}:\n{"".join(tail)[-3000:]}'


def train_fails(opt_path, cwd, *args):
    proc = subprocess.run([sys.executable, TRAIN, '-opt', str(opt_path), *args], cwd=str(cwd), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0, 'the run should have failed'
    return proc.stdout + proc.stderr


def final_weights(exp):
    """Every tensor of every ``*_latest.pth`` network file (params and params_ema)."""
    weights = {}
    for path in sorted(glob.glob(os.path.join(exp, 'models', '*_latest.pth'))):
        for key, block in torch.load(path, map_location='cpu', weights_only=True).items():
            if key != 'network':
                weights.update({f'{os.path.basename(path)}:{key}:{k}': v for k, v in block.items()})
    return weights


def max_abs_diff(a, b):
    assert a.keys() == b.keys() and a
    return max((x.double() - b[k].double()).abs().max().item() for k, x in a.items() if x.numel())


@pytest.fixture(scope='module')
def reference(tiny_data, tmp_path_factory):
    """Uninterrupted runs (``num_worker_per_gpu: 0``), trained once per method for the whole module."""
    cache = {}

    def get(method):
        if method not in cache:
            cwd = tmp_path_factory.mktemp(f'ref_{method}')
            opt = run_opt(method, tiny_data, cwd, 'ref')
            run_entry('train.py', write_yaml(cwd / 'ref.yml', opt), cwd)
            cache[method] = (cwd, experiment(cwd, 'ref'), final_weights(experiment(cwd, 'ref')))
        return cache[method]

    return get


def planted_pickle(path, marker):
    """A file that runs ``touch marker`` when unpickled by a plain ``torch.load``."""
    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {marker}', )

    torch.save({'iter': 6, 'epoch': 0, 'optimizers': [], 'schedulers': [], 'x': Payload()}, path)


# ------------------------------------------------------------------------------------------ exact resume
@pytest.mark.parametrize('method, workers, seed', [('segaware', 0, 1), ('sr4ir', 2, 2), ('realesrgan', 0, 3),
                                                   ('sfms_views', 0, 4), ('sr4ir_det', 0, 5), ('sfmc', 0, 6)])
def test_killed_twice_at_random_iterations_resumes_bit_exact(tiny_data, tmp_path, reference, method, workers, seed):
    """kill -9 at two random iterations, resume each time; the final weights equal the uninterrupted run's.

    The reference ran with ``num_worker_per_gpu: 0``; ``sr4ir`` here runs with 2 workers: samples are seeded by
    their position in the run, so the worker count does not change the data either.
    """
    rng = random.Random(seed)
    first = rng.randint(2, 6)
    second = rng.randint(first + 2, TOTAL - 1)
    opt_path = write_yaml(tmp_path / 'run.yml', run_opt(method, tiny_data, tmp_path, 'run', workers))
    exp = experiment(tmp_path, 'run')
    train_killed_at(opt_path, tmp_path, first)
    train_killed_at(opt_path, tmp_path, second, '--auto_resume')
    run_entry('train.py', opt_path, tmp_path, '--auto_resume')
    diff = max_abs_diff(reference(method)[2], final_weights(exp))
    assert diff == 0, f'{method}: killed at {first} and {second}: max |weight diff| {diff}'
    assert not glob.glob(os.path.join(exp, '*', '.*.tmp'))


# ---------------------------------------------------------------------------------------- damaged files
def _copy_reference(reference, tmp_path, method='segaware'):
    cwd, exp, weights = reference(method)
    target = experiment(tmp_path, 'ref')
    shutil.copytree(exp, target)
    for name in glob.glob(os.path.join(target, 'models', '*_latest.pth')):
        os.remove(name)
    return target, weights, os.path.join(str(cwd), 'ref.yml')


def test_damaged_states_are_skipped_and_the_newest_intact_one_resumes_exactly(tiny_data, tmp_path, reference):
    exp, weights, opt_path = _copy_reference(reference, tmp_path)
    states, models, marker = os.path.join(exp, 'training_states'), os.path.join(exp, 'models'), tmp_path / 'pwned'
    open(os.path.join(states, '12.state'), 'wb').close()  # zero-byte state
    with open(os.path.join(models, 'net_g_9.pth'), 'r+b') as f:  # intact 9.state, truncated network file
        f.truncate(os.path.getsize(f.name) // 2)
    planted_pickle(os.path.join(states, '6.state'), marker)  # a state that would run code
    leftovers = [os.path.join(states, '.12.state.k3j4.tmp'), os.path.join(models, '.net_d_12.pth.a8b2.tmp')]
    for path in leftovers:
        with open(path, 'wb') as f:
            f.write(b'half a checkpoint')
    run_entry('train.py', opt_path, tmp_path, '--auto_resume')
    log = newest_log(exp)
    assert 'Resuming training from epoch' in log and 'iter: 3.' in log
    for damaged in ('12.state', 'net_g_9.pth', '6.state'):
        assert re.search(rf'Skipped a damaged training state: .*{re.escape(damaged)}', log), damaged
    for path in leftovers:
        assert not os.path.exists(path) and f'Removed {path}' in log
    assert not marker.exists()
    assert max_abs_diff(weights, final_weights(exp)) == 0


def test_nothing_intact_stops_naming_every_file(tiny_data, tmp_path, reference):
    """Each kind of damage once: planted pickle, truncated state, zero-byte network file, a file of text."""
    exp, _, opt_path = _copy_reference(reference, tmp_path)
    states, models, marker = os.path.join(exp, 'training_states'), os.path.join(exp, 'models'), tmp_path / 'pwned'
    planted_pickle(os.path.join(states, '3.state'), marker)
    with open(os.path.join(states, '6.state'), 'r+b') as f:
        f.truncate(os.path.getsize(f.name) - 100)
    open(os.path.join(models, 'net_d_9.pth'), 'wb').close()
    with open(os.path.join(states, '12.state'), 'w') as f:
        f.write('not a checkpoint')
    out = train_fails(opt_path, tmp_path, '--auto_resume')
    assert 'no intact training state is left' in out
    for path in ('training_states/3.state', 'training_states/6.state', 'models/net_d_9.pth',
                 'training_states/12.state'):
        assert os.path.join(exp, path) in out, path
    assert not marker.exists()


def test_explicit_resume_state_is_read_without_running_code(tiny_data, tmp_path):
    marker = tmp_path / 'pwned'
    planted = tmp_path / '99.state'
    planted_pickle(planted, marker)
    opt = run_opt('segaware', tiny_data, tmp_path, 'planted')
    opt['path']['resume_state'] = str(planted)
    out = train_fails(write_yaml(tmp_path / 'p.yml', opt), tmp_path)
    assert str(planted) in out and 'path.resume_state' in out and 'weights_only' in out
    assert not marker.exists()


# ------------------------------------------------------------------------------------- changed options
def test_resume_refuses_changes_it_cannot_apply_and_applies_the_others(tiny_data, tmp_path, reference):
    exp, _, _ = _copy_reference(reference, tmp_path)
    for name in ('9.state', '12.state'):
        os.remove(os.path.join(exp, 'training_states', name))
    original_copy = open(os.path.join(exp, 'ref.yml')).read()
    opt = run_opt('segaware', tiny_data, tmp_path, 'ref')
    opt['train']['optim_g']['lr'] = 2e-4
    opt['network_d']['num_feat'] = 16
    out = train_fails(write_yaml(tmp_path / 'ref.yml', opt), tmp_path, '--auto_resume')
    assert 'train.optim_g.lr: 0.0001 -> 0.0002' in out and 'network_d.num_feat' in out
    opt = run_opt('segaware', tiny_data, tmp_path, 'ref')
    opt['val']['val_freq'] = 4
    opt['train']['total_iter'] = 8
    run_entry('train.py', write_yaml(tmp_path / 'ref.yml', opt), tmp_path, '--auto_resume')
    log = newest_log(exp)
    assert 'Resumed with a changed option (applied): val.val_freq: 5 -> 4' in log
    assert 'train.total_iter: 12 -> 8' in log and re.search(r'iter:\s+8,', log)
    assert open(os.path.join(exp, 'ref.yml')).read() == original_copy  # the options that trained 1..6 stay
    assert 'val_freq: 4' in open(os.path.join(exp, 'ref_resumed_at_6.yml')).read()


def test_older_state_without_loop_state_resumes_with_a_warning(tiny_data, tmp_path, reference):
    """States written before exact resume (BasicSR's keys only) still resume; the log says it is not exact."""
    exp, _, opt_path = _copy_reference(reference, tmp_path)
    states = os.path.join(exp, 'training_states')
    for name in ('9.state', '12.state'):
        os.remove(os.path.join(states, name))
    state = torch.load(os.path.join(states, '6.state'), weights_only=True)
    torch.save({k: state[k] for k in ('epoch', 'iter', 'optimizers', 'schedulers')}, os.path.join(states, '6.state'))
    run_entry('train.py', opt_path, tmp_path, '--auto_resume')
    log = newest_log(exp)
    assert 'records no options (older format)' in log and 'does not repeat the uninterrupted one exactly' in log
    assert re.search(r'iter:\s+12,', log)


# ------------------------------------------------------------------------------------------ unit level
def test_training_state_is_plain_data_and_restores_counters(tmp_path):
    from basicsr.models.lr_scheduler import MultiStepRestartLR

    from segsr.utils.checkpoint import to_plain
    from segsr.utils.resume import load_scheduler_state

    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedulers = [MultiStepRestartLR(optimizer, milestones=[2, 4], gamma=0.5),
                  torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 5])]
    for _ in range(3):
        optimizer.step()
        for s in schedulers:
            s.step()
    path = tmp_path / 's.state'
    torch.save(to_plain({'schedulers': [s.state_dict() for s in schedulers]}), path)
    loaded = torch.load(path, weights_only=True)['schedulers']
    fresh = [MultiStepRestartLR(optimizer, milestones=[2, 4], gamma=0.5),
             torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[3, 5])]
    for s, state in zip(fresh, loaded):
        load_scheduler_state(s, state)
        assert isinstance(s.milestones, Counter) and s.last_epoch == 3
    with pytest.raises(TypeError, match=r"state\['x'\]: a set cannot be stored"):
        to_plain({'x': {1, 2}})


def test_rng_state_round_trip_and_isolation():
    import random as py_random

    import numpy as np

    from segsr.utils.rng import get_rng_state, isolated_rng, set_rng_state

    state = get_rng_state()
    first = (py_random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (py_random.random(), np.random.rand(), torch.rand(1).item()) == first
    set_rng_state(state)
    with isolated_rng():
        torch.rand(100), np.random.rand(100), py_random.random()
    assert (py_random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_sampler_starts_mid_epoch_and_samples_do_not_depend_on_the_reader():
    from segsr.data.resumable import ResumableSampler, SeededDataset

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return i, torch.rand(1).item()

    sampler = ResumableSampler(Noisy(), num_replicas=1, rank=0, ratio=2, seed=7)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, start=4)
    assert list(sampler) == whole[4:] and len(sampler) == 6
    assert sorted(i for i, _ in whole) == sorted(list(range(5)) * 2)
    sampler.set_epoch(4)
    assert [i for i, _ in sampler] != [i for i, _ in whole]  # reshuffled per epoch
    data = SeededDataset(Noisy())
    torch.manual_seed(0)
    a = [data[item] for item in whole]
    torch.rand(50)  # whatever the reader drew before does not matter
    assert [data[item] for item in reversed(whole)] == a[::-1]
    before = torch.get_rng_state()
    data[whole[0]]
    assert torch.equal(torch.get_rng_state(), before)  # reading does not move the caller's generator
