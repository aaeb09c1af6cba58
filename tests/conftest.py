"""Shared fixtures: a tiny self-made labelled dataset and helpers to run the entry points as a user would."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import segsr
from basicsr.utils.matlab_functions import imresize

# The tests exercise the library as segsr's entry points run it: with the basicsr fixes applied (stock models on CPU,
# atomic saves, ...). tests/test_packaging.py checks in fresh interpreters that ``import segsr`` alone patches nothing
# and that segsr's own models train identically without the fixes.
segsr.apply_basicsr_fixes()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 6


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """Synthetic labelled scenes (128x128; 4 train, 2 val) in segsr's layout, plus x4 LR folders for stock configs."""
    from segsr.data.synthetic import write_synthetic_dataset

    root = str(tmp_path_factory.mktemp('data') / 'synthetic')
    write_synthetic_dataset(root, num_train=4, num_val=2, height=128, width=128, seed=0, num_classes=NUM_CLASSES)
    for split in ('train', 'val'):
        lq_dir = os.path.join(root, split, 'lq_x4')
        os.makedirs(lq_dir, exist_ok=True)
        for name in sorted(os.listdir(os.path.join(root, split, 'hr'))):
            hr = cv2.imread(os.path.join(root, split, 'hr', name)).astype(np.float32) / 255.
            lq = np.clip(imresize(hr, 0.25), 0, 1)
            cv2.imwrite(os.path.join(lq_dir, name), (lq * 255).round().astype(np.uint8))
    return root


def write_yaml(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def run_entry(script, opt_path, cwd, *args, env=None, timeout=600):
    """Run ``segsr/<script>`` like a user; fail the test with the output when it exits non-zero."""
    cmd = [sys.executable, os.path.join(REPO, 'segsr', script), '-opt', str(opt_path), *args]
    proc = subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
                             f'{proc.stderr[-6000:]}')
    return proc


def seg_dataset_opt(root, split, **overrides):
    opt = dict(name=f'tiny_{split}', type='PairedImageSegDataset', dataroot_gt=os.path.join(root, split, 'hr'),
               dataroot_seg=os.path.join(root, split, 'seg'), io_backend={'type': 'disk'}, num_classes=NUM_CLASSES)
    if split == 'train':
        opt.update(gt_size=64, use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=2,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
    opt.update(overrides)
    return opt


def logger_opt(freq=2):
    return {'print_freq': 1, 'save_checkpoint_freq': freq, 'use_tb_logger': False}


def read_log(exp_dir):
    logs = sorted(f for f in os.listdir(exp_dir) if f.startswith('train_') and f.endswith('.log'))
    return ''.join(Path(exp_dir, f).read_text() for f in logs)
