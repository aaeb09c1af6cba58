"""Every segsr model trains to the same weights as before the parts redesign (issue 22).

Each case builds a model from tiny options, trains 4 steps in-process from a fixed seed and fingerprints every network
it owns (every optimizer replaced by plain SGD, whose step is linear in the gradient, so that the float noise of
another thread count or CPU stays noise): per tensor, the norm and two fixed random projections (a projection moves by about the size of any change, so
a changed loss, weight or step order shows; float noise between CPUs stays far below the tolerance). The fingerprints in
``tests/data/weights_pin.json`` were made with ``SEGSR_WRITE_PIN=1 pytest tests/test_weights_pin.py`` on the code
before the redesign (commit f02d000); re-pin only for a change that is meant to change training.
"""
import contextlib
import copy
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.options import (SEM_DIM, TDP, TINY_SEM, TINY_TASK, ce, gan_opt, load_sed_option, save_tiny,
                             sed_opt, seg_sr_opt, seg_task_opt, sr4ir_opt, tiny_run_opt)
from helpers.models import runtime_opt

PIN = Path(__file__).with_name('data') / 'weights_pin.json'
STEPS = 4
NETS = ('net_g', 'net_g_ema', 'net_d', 'net_task', 'net_sem')


def _seg_esrgan(root, tmp):
    opt = gan_opt(root, tmp, judge=False)
    for key in ('task_adv_opt', 'd_task_opt', 'task_warmup_iter'):
        opt['train'].pop(key)
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 8}
    return dict(opt, name='seg_esrgan', model_type='SegESRGANModel')


def _combo(root, tmp):
    opt = gan_opt(root, tmp, judge=False)
    opt['network_d'].update(semantic_dim=SEM_DIM, fusion_head_dim=8)
    opt['network_sem'] = copy.deepcopy(TINY_SEM)
    opt['network_task'] = dict(TINY_TASK)
    opt['path']['pretrain_network_task'] = save_tiny(os.path.join(tmp, 'task.pth'), TINY_TASK)
    opt['train'].update(tdp_opt=dict(TDP), relativistic=True)
    return opt


def _sfms(root, tmp):
    opt = sr4ir_opt(root, tmp, judge=False, update_task=False, task_sr_opt=None, task_hr_opt=None,
                    task_cqmix_opt=None, sr_ce_opt=ce(1.0))
    opt['path']['pretrain_network_task'] = save_tiny(os.path.join(tmp, 'task.pth'), TINY_TASK)
    return opt


CASES = {
    'SegTaskModel': lambda root, tmp: seg_task_opt(root, total_iter=STEPS),
    'SegSRModel': lambda root, tmp: seg_sr_opt(root, judge_opt=None),
    'SegESRGANModel': _seg_esrgan,
    'SegAwareGANModel': lambda root, tmp: gan_opt(root, tmp, judge=False),
    'SegAwareGANModel+sed+tdp': _combo,
    'SR4IRModel': lambda root, tmp: sr4ir_opt(root, tmp, judge=False),
    'SR4IRModel-frozen': _sfms,
    'SeDModel': lambda root, tmp: sed_opt(root),
    'SeDRealESRGANModel': lambda root, tmp: tiny_run_opt(load_sed_option('train_SeD_U_realesrgan_x4plus.yml'),
                                                         root, True),
}


# Real-ESRGAN's degradations (USM kernel, DiffJPEG tables) are float32 by construction in basicsr
FLOAT32 = {'SeDRealESRGANModel'}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}


def case_dtype(case: str) -> torch.dtype:
    return torch.float32 if case in FLOAT32 else torch.float64


def _projection(key: str, n: int, which: int) -> np.ndarray:
    return np.random.default_rng([zlib.crc32(key.encode()), n, which]).standard_normal(n)


def fingerprint(net: torch.nn.Module) -> dict:
    out = {}
    for key, value in net.state_dict().items():
        w = value.detach().double().flatten().cpu().numpy()
        out[key] = [float(np.linalg.norm(w))] + [float(w @ _projection(key, w.size, i)) for i in range(2)]
    return out


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """New tensors in ``dtype`` (float64: what differs between two runs is then the code, not the rounding), on one
    thread (the order of a sum does not depend on the machine's cores)."""
    default, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(dtype)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_default_dtype(default)
        torch.set_num_threads(threads)


def train_and_fingerprint(case: str, root: str, tmp: str) -> dict:
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    opt = runtime_opt(CASES[case](root, tmp), Path(tmp))
    for key in [k for k in opt['train'] if k.startswith('optim_')]:  # SGD: float noise stays noise (Adam's
        opt['train'][key] = {'type': 'SGD', 'lr': 0.05}             # normalised step blows up tiny gradients)
    set_random_seed(0)
    dtype = case_dtype(case)
    with default_dtype(dtype):
        model = build_model(opt)
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    step = 0
    while step < STEPS:
        for batch in loader:  # the data as it comes (float32), the model in its case's dtype
            step += 1
            with default_dtype(dtype):
                model.update_learning_rate(step, warmup_iter=-1)
                model.feed_data({k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                                 for k, v in batch.items()})
                model.optimize_parameters(step)
            if step == STEPS:
                break
    return {name: fingerprint(getattr(model, name)) for name in NETS if getattr(model, name, None) is not None}


def _close(got: float, pinned: float, norm: float, tol: float) -> bool:
    return abs(got - pinned) <= tol * (1.0 + norm)


@pytest.mark.parametrize('case', sorted(CASES))
def test_weights_after_four_steps_match_the_pin(tiny_data, tmp_path, case):
    got = train_and_fingerprint(case, tiny_data, str(tmp_path))
    if os.environ.get('SEGSR_WRITE_PIN') == '1':  # SEGSR_WRITE_PIN=1 pytest tests/test_weights_pin.py: re-pin
        pins = json.loads(PIN.read_text()) if PIN.is_file() else {}
        pins[case] = got
        PIN.parent.mkdir(exist_ok=True)
        PIN.write_text(json.dumps(pins, indent=1, sort_keys=True) + '\n')
    pinned = json.loads(PIN.read_text())[case]
    tol = TOLERANCE[case_dtype(case)]
    assert sorted(got) == sorted(pinned), f'{case}: networks {sorted(got)} != pinned {sorted(pinned)}'
    for net, tensors in pinned.items():
        assert sorted(got[net]) == sorted(tensors), f'{case}.{net}: other state-dict keys'
        for key, values in tensors.items():
            norm = values[0]
            for i, (g, p) in enumerate(zip(got[net][key], values)):
                assert _close(g, p, norm, tol), f'{case}.{net}.{key}[{i}]: {g!r} != pinned {p!r} (0: norm, 1-2: projections)'
