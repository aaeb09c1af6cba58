"""Models built directly from option dicts (as basicsr.train does): steps, validation, build-time errors."""
import copy

import pytest
import torch
from basicsr.models import build_model

from conftest import NUM_CLASSES
from helpers.options import seg_sr_opt, seg_task_opt, TINY_UNET
from helpers.models import first_batch, runtime_opt, val_loader


DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])  # the GPU path runs where CUDA exists


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


def _judge_file(tmp_path, **kwargs):
    from segsr.archs.seg_unet_arch import SegUNet

    args = dict({k: v for k, v in TINY_UNET.items() if k != 'type'}, **kwargs)
    path = tmp_path / 'judge.pth'
    torch.save({'params': SegUNet(**args).state_dict()}, path)
    return {'network': dict(TINY_UNET, **kwargs), 'path': str(path)}


@pytest.mark.parametrize('device', DEVICES)
def test_seg_sr_model_judge_is_frozen_and_validation_restores_training(tiny_data, tmp_path, device):
    opt = runtime_opt(seg_sr_opt(tiny_data, _judge_file(tmp_path)), tmp_path, device=device)
    model = build_model(opt)
    judge_before = {k: v.clone() for k, v in model.task_validator.judge.state_dict().items()}
    assert not model.task_validator.judge.training and not any(p.requires_grad for p in model.task_validator.judge.parameters())
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    model.validation(val_loader(opt), 1, None, save_img=True)
    assert model.net_g.training
    assert {'psnr', 'judge_miou', 'judge_pixacc'} <= set(model.metric_results)
    assert all(torch.equal(judge_before[k], v) for k, v in model.task_validator.judge.state_dict().items())
    pictures = list((tmp_path / 'exp' / 'visualization').rglob('*_judge_seg.png'))
    assert len(pictures) == 2


def test_seg_sr_model_judge_errors(tiny_data, tmp_path):
    missing = {'network': dict(TINY_UNET), 'path': str(tmp_path / 'nope.pth')}
    with pytest.raises(FileNotFoundError, match=r"val.judge.path.*nope.pth"):
        build_model(runtime_opt(seg_sr_opt(tiny_data, missing), tmp_path))
    wrong = _judge_file(tmp_path, num_classes=NUM_CLASSES + 2)
    with pytest.raises(ValueError, match=r"val.judge.network.num_classes"):
        build_model(runtime_opt(seg_sr_opt(tiny_data, wrong), tmp_path))
    with pytest.raises(ValueError, match=r"val.judge.path"):
        build_model(runtime_opt(seg_sr_opt(tiny_data, {'network': dict(TINY_UNET)}), tmp_path))
