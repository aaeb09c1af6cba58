"""Two-process CPU (gloo) training through torchrun, as a user would launch multi-GPU training."""
import os
import socket
import subprocess
import sys

import torch

from conftest import REPO, write_yaml
from helpers.options import seg_task_opt


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


JUDGE = 'task_validator.judge'  # the frozen judge, held by the model's validator


def run_torchrun(opt, tmp_path, nets):
    opt_path = write_yaml(tmp_path / 'dist.yml', opt)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
           os.path.join(REPO, 'tests', 'helpers', 'dist_train_probe.py'), '-opt', opt_path, '--launcher', 'pytorch']
    env = dict(os.environ, PROBE_NETS=','.join(nets), OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, f'torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    return [torch.load(tmp_path / f'rank{r}.pth') for r in (0, 1)]


def assert_same_weights(rank0, rank1, name):
    assert rank0[name].keys() == rank1[name].keys()
    for key in rank0[name]:
        assert torch.equal(rank0[name][key], rank1[name][key]), f'{name}.{key} differs between ranks'


def test_seg_task_model_gloo_two_ranks_end_identical(tiny_data, tmp_path):
    opt = seg_task_opt(tiny_data, total_iter=2, name='dist_seg_task')
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['logger']['save_checkpoint_freq'] = 1
    rank0, rank1 = run_torchrun(opt, tmp_path, ['net_task'])
    assert rank0['net_task.wrapped'] == 'DistributedDataParallel'
    assert_same_weights(rank0, rank1, 'net_task')
    log = next((tmp_path / 'experiments' / 'dist_seg_task').glob('train_*.log')).read_text()
    assert 'World size (gpu number): 2' in log
    after_1 = torch.load(tmp_path / 'experiments' / 'dist_seg_task' / 'models' / 'net_task_1.pth')['params']
    assert any(not torch.equal(after_1[k], rank0['net_task'][k]) for k in rank0['net_task'])  # iteration 2 trained


def test_seg_aware_gan_gloo_two_ranks_end_identical(tiny_data, tmp_path):
    """G and D are DDP-wrapped and end identical; the frozen judge is not wrapped."""
    from helpers.options import gan_opt

    opt = gan_opt(tiny_data, tmp_path)
    opt.update(name='dist_segsr_gan', num_gpu='auto')
    opt['train'].update(total_iter=3, relativistic=True, task_warmup_iter=1)  # warm-up step, then the task push
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    rank0, rank1 = run_torchrun(opt, tmp_path, ['net_g', 'net_d', JUDGE])
    assert rank0['net_g.wrapped'] == rank0['net_d.wrapped'] == 'DistributedDataParallel'
    assert rank0[JUDGE + '.wrapped'] != 'DistributedDataParallel'
    for name in ('net_g', 'net_d', JUDGE):
        assert_same_weights(rank0, rank1, name)


def test_sr4ir_gloo_two_ranks_end_identical(tiny_data, tmp_path):
    """SR and task networks are DDP-wrapped and end identical after 2 iterations; the frozen judge is not wrapped."""
    from helpers.options import sr4ir_opt

    opt = sr4ir_opt(tiny_data, tmp_path)
    opt.update(name='dist_sr4ir', num_gpu='auto')
    opt['train'].update(total_iter=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    rank0, rank1 = run_torchrun(opt, tmp_path, ['net_g', 'net_task', JUDGE])
    assert rank0['net_g.wrapped'] == rank0['net_task.wrapped'] == 'DistributedDataParallel'
    assert rank0[JUDGE + '.wrapped'] != 'DistributedDataParallel'
    for name in ('net_g', 'net_task', JUDGE):
        assert_same_weights(rank0, rank1, name)


def test_sr4ir_frozen_sr_gloo_two_ranks_end_identical(tiny_data, tmp_path):
    """T->S: the frozen SR network is used by both ranks without gradients; the task networks end identical."""
    from helpers.options import sr4ir_opt

    opt = sr4ir_opt(tiny_data, tmp_path, judge=False, update_sr=False, pixel_opt=None, tdp_opt=None,
                    task_hr_opt=None, task_cqmix_opt=None)
    opt['train'] = {k: v for k, v in opt['train'].items() if v is not None}
    opt.update(name='dist_t2s', num_gpu='auto')
    opt['train'].update(total_iter=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    rank0, rank1 = run_torchrun(opt, tmp_path, ['net_g', 'net_task'])
    assert rank0['net_task.wrapped'] == 'DistributedDataParallel' and rank0['net_g.wrapped'] == 'EDSR'
    for name in ('net_g', 'net_task'):
        assert_same_weights(rank0, rank1, name)


def test_sed_gloo_two_ranks_end_identical(tiny_data, tmp_path):
    """SeDModel: G and D are DDP-wrapped and end identical; the frozen semantic extractor is not wrapped."""
    from helpers.options import sed_opt

    opt = sed_opt(tiny_data)
    opt.update(name='dist_sed')
    opt['train'].update(total_iter=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    rank0, rank1 = run_torchrun(opt, tmp_path, ['net_g', 'net_d', 'net_sem'])
    assert rank0['net_g.wrapped'] == rank0['net_d.wrapped'] == 'DistributedDataParallel'
    assert rank0['net_sem.wrapped'] != 'DistributedDataParallel'
    for name in ('net_g', 'net_d', 'net_sem'):
        assert_same_weights(rank0, rank1, name)
