"""Models built directly from option dicts (as basicsr.train does): steps, validation, build-time errors."""
import copy

import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model

from conftest import NUM_CLASSES, seg_dataset_opt
from test_train_pipeline import TINY_RRDB, TINY_UNET, seg_task_opt


DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])  # the GPU path runs where CUDA exists


def runtime_opt(opt, tmp_path, is_train=True, device='cpu'):
    opt = copy.deepcopy(opt)
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, num_gpu=int(device == 'cuda'), auto_resume=False)
    for phase, d in opt['datasets'].items():
        d.update(phase=phase.split('_')[0], scale=opt['scale'])
    root = tmp_path / 'exp'
    opt['path'].update(experiments_root=str(root), models=str(root / 'models'), log=str(root),
                       training_states=str(root / 'training_states'), visualization=str(root / 'visualization'))
    for p in ('models', 'training_states', 'visualization'):
        (root / p).mkdir(parents=True, exist_ok=True)
    return opt


def first_batch(opt):
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0)
    return next(iter(loader))


def val_loader(opt):
    val_opt = opt['datasets']['val']
    return build_dataloader(build_dataset(val_opt), val_opt, num_gpu=0, dist=False, sampler=None, seed=0)


@pytest.mark.parametrize('device', DEVICES)
def test_seg_task_model_step_changes_weights_and_logs(tiny_data, tmp_path, device):
    opt = runtime_opt(seg_task_opt(tiny_data, total_iter=10), tmp_path, device=device)
    before = copy.deepcopy(opt)
    model = build_model(opt)
    assert opt == before  # the caller's options are not mutated
    assert next(model.net_task.parameters()).device.type == device
    weights = {k: v.clone() for k, v in model.net_task.state_dict().items()}
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_seg'}
    assert any(not torch.equal(weights[k], v) for k, v in model.net_task.state_dict().items())
    model.validation(val_loader(opt), 1, None, save_img=False)
    assert model.net_task.training  # validation restores training mode
    assert set(model.metric_results) == {'miou', 'pixacc', 'macc'}
    assert 0.0 <= model.metric_results['miou'] <= 100.0


def test_seg_task_model_aux_head_loss(tiny_data, tmp_path):
    opt = seg_task_opt(tiny_data, total_iter=10, network_task=dict(TINY_UNET, aux_head=True))
    opt['train']['aux_weight'] = 0.4
    model = build_model(runtime_opt(opt, tmp_path))
    model.feed_data(first_batch(runtime_opt(opt, tmp_path)))
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_seg', 'l_seg_aux'}


@pytest.mark.parametrize('change, error, match', [
    (lambda o: o['network_task'].update(num_classes=NUM_CLASSES + 1), ValueError,
     r"'network_task.num_classes' = 7 does not match 'datasets.train.num_classes' = 6"),
    (lambda o: o['train'].pop('seg_opt'), ValueError, r"train.seg_opt"),
    (lambda o: o.update(task_input='lr'), ValueError, r"task_input"),
    (lambda o: o['train'].update(optim_task={'type': 'Adamm', 'lr': 1}), ValueError, r"train.optim_task.*'Adamm'"),
])
def test_seg_task_model_build_errors(tiny_data, tmp_path, change, error, match):
    opt = seg_task_opt(tiny_data, total_iter=2)
    change(opt)
    with pytest.raises(error, match=match):
        build_model(runtime_opt(opt, tmp_path))


def _seg_sr_opt(tiny_data, judge_opt):
    return {
        'name': 'seg_sr', 'model_type': 'SegSRModel', 'scale': 4, 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
        'network_g': dict(TINY_RRDB), 'path': {},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 2e-4}, 'scheduler': {'type': 'OneCycleLR'},
                  'total_iter': 5, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 1, 'save_img': True, 'judge': judge_opt,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
    }


def _judge_file(tmp_path, **kwargs):
    from segsr.archs.seg_unet_arch import SegUNet

    args = dict({k: v for k, v in TINY_UNET.items() if k != 'type'}, **kwargs)
    path = tmp_path / 'judge.pth'
    torch.save({'params': SegUNet(**args).state_dict()}, path)
    return {'network': dict(TINY_UNET, **kwargs), 'path': str(path)}


@pytest.mark.parametrize('device', DEVICES)
def test_seg_sr_model_judge_is_frozen_and_validation_restores_training(tiny_data, tmp_path, device):
    opt = runtime_opt(_seg_sr_opt(tiny_data, _judge_file(tmp_path)), tmp_path, device=device)
    model = build_model(opt)
    judge_before = {k: v.clone() for k, v in model.judge.state_dict().items()}
    assert not model.judge.training and not any(p.requires_grad for p in model.judge.parameters())
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    model.validation(val_loader(opt), 1, None, save_img=True)
    assert model.net_g.training
    assert {'psnr', 'judge_miou', 'judge_pixacc'} <= set(model.metric_results)
    assert all(torch.equal(judge_before[k], v) for k, v in model.judge.state_dict().items())
    pictures = list((tmp_path / 'exp' / 'visualization').rglob('*_judge_seg.png'))
    assert len(pictures) == 2


def test_seg_sr_model_judge_errors(tiny_data, tmp_path):
    missing = {'network': dict(TINY_UNET), 'path': str(tmp_path / 'nope.pth')}
    with pytest.raises(FileNotFoundError, match=r"val.judge.path.*nope.pth"):
        build_model(runtime_opt(_seg_sr_opt(tiny_data, missing), tmp_path))
    wrong = _judge_file(tmp_path, num_classes=NUM_CLASSES + 2)
    with pytest.raises(ValueError, match=r"val.judge.network.num_classes"):
        build_model(runtime_opt(_seg_sr_opt(tiny_data, wrong), tmp_path))
    with pytest.raises(ValueError, match=r"val.judge.path"):
        build_model(runtime_opt(_seg_sr_opt(tiny_data, {'network': dict(TINY_UNET)}), tmp_path))
