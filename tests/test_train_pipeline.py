"""End-to-end runs through ``segsr/train.py`` / ``segsr/test.py`` as a user would call them (CPU, tiny)."""
import os

import pytest
import torch

from conftest import NUM_CLASSES, logger_opt, read_log, run_entry, seg_dataset_opt, write_yaml
from helpers.models import train_then_resume
from helpers.options import TINY_RRDB, TINY_UNET, seg_task_opt, stock_esrgan_opt


def test_stock_esrgan_config_trains_validates_and_resumes_on_cpu(tiny_data, tmp_path):
    exp, log = train_then_resume(stock_esrgan_opt(tiny_data, total_iter=2), tmp_path)
    assert (exp / 'models' / 'net_g_4.pth').is_file() and (exp / 'models' / 'net_d_latest.pth').is_file()
    assert 'Model [ESRGANModel] is created.' in log and '# psnr:' in log
    for key in ('l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake'):
        assert key in log
    assert not os.path.exists(os.path.join(os.path.dirname(__import__('basicsr').__file__), 'experiments'))
    assert not [f for f in os.listdir(exp / 'models') if f.endswith('.tmp')]


def test_seg_task_model_trains_validates_and_resumes(tiny_data, tmp_path):
    exp, log = train_then_resume(seg_task_opt(tiny_data, total_iter=2), tmp_path)
    assert 'Model [SegTaskModel] is created.' in log and 'l_seg' in log
    assert '# miou:' in log and '# pixacc:' in log and 'Per-class IoU' in log
    state = torch.load(exp / 'training_states' / '4.state', weights_only=False)
    assert len(state['optimizers']) == 1 and len(state['schedulers']) == 1
    assert state['schedulers'][0]['last_epoch'] == 3  # OneCycleLR continued from the resumed state
    pictures = [f for _, _, files in os.walk(exp / 'visualization') for f in files if f.endswith('_seg.png')]
    assert pictures


def test_lq_bicubic_input_and_custom_experiments_root(tiny_data, tmp_path):
    opt = seg_task_opt(tiny_data, total_iter=1, name='l_to_t', task_input='lq_bicubic')
    opt['path']['experiments_root'] = str(tmp_path / 'elsewhere')
    opt['val']['val_freq'] = 1
    run_entry('train.py', write_yaml(tmp_path / 'l.yml', opt), tmp_path)
    assert (tmp_path / 'elsewhere' / 'models' / 'net_task_latest.pth').is_file()
    assert 'lq_bicubic input' in read_log(tmp_path / 'elsewhere')
    assert not (tmp_path / 'experiments' / 'l_to_t').exists()


def test_seg_sr_model_reports_judge_miou_and_test_entry(tiny_data, tmp_path):
    from segsr.archs.seg_unet_arch import SegUNet

    judge = SegUNet(**{k: v for k, v in TINY_UNET.items() if k != 'type'})
    torch.save({'params': judge.state_dict()}, tmp_path / 'judge.pth')
    judge_opt = {'network': dict(TINY_UNET), 'path': str(tmp_path / 'judge.pth')}
    opt = {
        'name': 'seg_sr', 'model_type': 'SegSRModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
        'network_g': dict(TINY_RRDB), 'path': {},
        'train': {'optim_g': {'type': 'Adam', 'lr': 2e-4}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [9]},
                  'total_iter': 2, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 2, 'save_img': True, 'judge': judge_opt,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True}}},
        'logger': logger_opt(),
    }
    run_entry('train.py', write_yaml(tmp_path / 'sr.yml', opt), tmp_path)
    exp = tmp_path / 'experiments' / 'seg_sr'
    log = read_log(exp)
    assert '# judge_miou:' in log and '# judge_pixacc:' in log and '# psnr:' in log and '# ssim:' in log
    assert [f for _, _, fs in os.walk(exp / 'visualization') for f in fs if f.endswith('_judge_seg.png')]

    test_opt = {k: opt[k] for k in ('model_type', 'scale', 'num_gpu', 'network_g', 'val')}
    test_opt.update(name='seg_sr_test', datasets={'test_1': seg_dataset_opt(tiny_data, 'val')},
                    path={'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth')})
    test_opt['val'] = dict(opt['val'], suffix=None)
    proc = run_entry('test.py', write_yaml(tmp_path / 't.yml', test_opt), tmp_path)
    assert (tmp_path / 'results' / 'seg_sr_test').is_dir()
    assert 'judge_miou' in proc.stderr + proc.stdout or any(
        'judge_miou' in (tmp_path / 'results' / 'seg_sr_test' / f).read_text()
        for f in os.listdir(tmp_path / 'results' / 'seg_sr_test') if f.endswith('.log'))


def test_seg_task_model_warm_starts_a_task_branch_discriminator(tiny_data, tmp_path):
    """SegTaskModel trains a SegAwareDiscriminator's segmentation head on HR (the task-branch warm start); the saved
    net_task is a strict ``pretrain_network_d`` for the same discriminator. A SeD-conditioned one is refused."""
    from segsr.archs.seg_aware_discriminator_arch import SegAwareDiscriminator
    from segsr.weights import load_checkpoint
    from segsr.models.seg_task_model import SegTaskModel

    d_opt = {'type': 'SegAwareDiscriminator', 'num_classes': NUM_CLASSES, 'num_feat': 8, 'seg_hidden': 8}
    opt = seg_task_opt(tiny_data, total_iter=2, name='disc_warm', network_task=dict(d_opt))
    run_entry('train.py', write_yaml(tmp_path / 'd.yml', opt), tmp_path)
    exp = tmp_path / 'experiments' / 'disc_warm'
    assert '# miou:' in read_log(exp)
    disc = SegAwareDiscriminator(**{k: v for k, v in d_opt.items() if k != 'type'})
    before = {k: v.clone() for k, v in disc.seg_head.state_dict().items()}
    load_checkpoint(disc, str(exp / 'models' / 'net_task_latest.pth'), 'params', 'path.pretrain_network_d')
    assert any(not torch.equal(before[k], v) for k, v in disc.seg_head.state_dict().items())

    bad = dict(opt, network_task=dict(d_opt, semantic_dim=16), is_train=False, dist=False, rank=0, world_size=1)
    bad['num_gpu'] = 0
    with pytest.raises(ValueError, match="'network_task' is a semantic-conditioned discriminator"):
        SegTaskModel(bad)
