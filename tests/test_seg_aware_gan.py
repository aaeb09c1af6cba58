"""SegAwareDiscriminator, the task losses and SegAwareGANModel (CPU, tiny)."""
import math

import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import build_model

from conftest import NUM_CLASSES, read_log, run_entry, write_yaml
from helpers.models import changed, first_batch, hand_ce, params_of, runtime_opt, val_loader
from helpers.options import gan_opt, tiny_disc


@pytest.mark.parametrize('trunk, rf_head, rf_shape', [
    ('unet', None, lambda h, w: (2, 1, h, w)),
    ('patch', None, lambda h, w: (2, 1, h // 8, w // 8)),  # 4x4 stride-2 convs floor the size
    ('unet', 'global', lambda h, w: (2, 1)),
    ('patch', 'pixel', lambda h, w: (2, 1, h // 2, w // 2)),
])
@pytest.mark.parametrize('hw', [(32, 32), (37, 45), (24, 64)])
def test_discriminator_shapes(trunk, rf_head, rf_shape, hw):
    net = build_network(tiny_disc(trunk, rf_head=rf_head))
    out = net(torch.rand(2, 3, *hw))
    assert tuple(out['rf'].shape) == rf_shape(*hw)
    assert tuple(out['seg'].shape) == (2, NUM_CLASSES, *hw)
    assert set(net(torch.rand(2, 3, *hw), return_seg=False)) == {'rf'}


def test_discriminator_bad_options():
    with pytest.raises(ValueError, match="trunk 'resnet'"):
        build_network(tiny_disc('resnet'))
    with pytest.raises(ValueError, match="rf_head 'cls'"):
        build_network(tiny_disc(rf_head='cls'))
    with pytest.raises(ValueError, match="norm 'layer'"):
        build_network(tiny_disc(norm='layer'))


def test_segment_restores_mode():
    net = build_network(tiny_disc('patch', norm='batch'))
    net.train()
    logits = net.segment(torch.rand(1, 3, 16, 16))
    assert net.training and logits.shape == (1, NUM_CLASSES, 16, 16) and not logits.requires_grad


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_task_losses_against_hand_computation(reduction):
    torch.manual_seed(1)
    hr_logits, sr_logits = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 4)
    target = torch.randint(0, 3, (2, 3, 4))
    target[1, 2] = 255

    def reduce(values):
        return {'mean': sum(values) / len(values), 'sum': sum(values)}.get(reduction, sum(values))

    g_loss = build_loss({'type': 'TaskAdversarialLoss', 'loss_weight': 0.1, 'reduction': reduction})
    out = g_loss(sr_logits, target)
    assert float(out.sum()) == pytest.approx(0.1 * reduce(hand_ce(sr_logits, target, 255)), rel=1e-5)

    d_loss = build_loss({'type': 'DiscriminatorTaskLoss', 'loss_weight': 1.0, 'sr_weight': 0.5,
                         'reduction': reduction})
    l_hr, l_sr = d_loss(hr_logits, target, sr_logits)
    assert float(l_hr.sum()) == pytest.approx(reduce(hand_ce(hr_logits, target, 255)), rel=1e-5)
    assert float(l_sr.sum()) == pytest.approx(0.5 * reduce(hand_ce(sr_logits, target, 255)), rel=1e-5)
    assert build_loss({'type': 'DiscriminatorTaskLoss'})(hr_logits, target, sr_logits)[1] is None
    with pytest.raises(ValueError, match='reduction'):
        build_loss({'type': 'TaskAdversarialLoss', 'reduction': 'avg'})


@pytest.mark.parametrize('relativistic, gan_type', [(False, 'vanilla'), (True, 'vanilla'), (False, 'hinge'),
                                                    (False, 'lsgan'), (False, 'wgan_softplus')])
def test_one_step_updates_g_and_d_not_judge(tiny_data, tmp_path, relativistic, gan_type):
    raw = gan_opt(tiny_data, tmp_path, relativistic=relativistic,
                  gan_opt={'type': 'GANLoss', 'gan_type': gan_type, 'loss_weight': 5e-3})
    opt = runtime_opt(raw, tmp_path)
    model = build_model(opt)
    g0, d0, j0 = params_of(model.net_g), params_of(model.net_d), params_of(model.task_validator.judge)
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    assert changed(g0, model.net_g) and changed(d0, model.net_d) and not changed(j0, model.task_validator.judge)
    assert set(model.get_current_log()) == {'l_g_pix', 'l_g_gan', 'l_g_task', 'l_d_real', 'out_d_real', 'l_d_fake',
                                            'out_d_fake', 'l_d_task'}
    assert all(math.isfinite(v) for v in model.get_current_log().values())


def test_warmup_and_sr_task_term(tiny_data, tmp_path):
    raw = gan_opt(tiny_data, tmp_path, judge=False, task_warmup_iter=5,
                  d_task_opt={'type': 'DiscriminatorTaskLoss', 'loss_weight': 1.0, 'sr_weight': 0.5})
    opt = runtime_opt(raw, tmp_path)
    model = build_model(opt)
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert 'l_g_task' not in log and 'l_d_task' in log and 'l_d_task_sr' in log  # head trains during warm-up
    model.optimize_parameters(6)
    assert 'l_g_task' in model.get_current_log()


def test_validation_reports_judge_and_disc_miou(tiny_data, tmp_path):
    opt = runtime_opt(gan_opt(tiny_data, tmp_path), tmp_path)
    model = build_model(opt)
    model.validation(val_loader(opt), 1, None, save_img=True)
    assert {'psnr', 'judge_miou', 'judge_pixacc', 'disc_miou', 'disc_pixacc'} <= set(model.metric_results)
    assert model.net_g.training and model.net_d.training
    assert list((tmp_path / 'exp' / 'visualization').rglob('*_disc_seg.png'))


@pytest.mark.parametrize('change, match', [
    (lambda o: o['network_d'].update(num_classes=NUM_CLASSES + 1), r"'network_d.num_classes' = 7 does not match"),
    (lambda o: o['val']['judge']['network'].update(num_classes=NUM_CLASSES + 1), r'val.judge.network.num_classes'),
    (lambda o: o['datasets']['train'].pop('num_classes') and o['datasets']['train'].update(type='PairedImageDataset'),
     r"labelled training data: 'datasets.train'"),
    (lambda o: o['train'].pop('d_task_opt'), r'train.d_task_opt'),
    (lambda o: o.update(network_d={'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 8}),
     r'no segmentation head'),
])
def test_build_time_errors(tiny_data, tmp_path, change, match):
    opt = gan_opt(tiny_data, tmp_path)
    change(opt)
    with pytest.raises(ValueError, match=match):
        build_model(runtime_opt(opt, tmp_path))


def test_task_head_learns_on_hr(tiny_data, tmp_path):
    """The discriminator's task head alone reaches well above chance mIoU on the training scenes."""
    from segsr.metrics import ConfusionMatrix

    from basicsr.utils import set_random_seed

    set_random_seed(0)  # python, numpy (crops) and torch
    opt = runtime_opt(gan_opt(tiny_data, tmp_path, judge=False, task_adv_opt=None), tmp_path)
    opt['datasets']['train'].update(gt_size=64, batch_size_per_gpu=4)
    opt['network_d'] = tiny_disc(num_feat=16, seg_hidden=16)
    opt['train']['optim_d'] = {'type': 'Adam', 'lr': 2e-3}
    opt['train']['d_task_opt'] = {'type': 'DiscriminatorTaskLoss', 'loss_weight': 5.0}
    model = build_model(opt)
    from basicsr.data import build_dataloader, build_dataset
    train_opt = opt['datasets']['train']
    loader = build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0)

    def head_miou():
        cm = ConfusionMatrix(NUM_CLASSES)
        for batch in val_loader(dict(opt, datasets={'val': dict(opt['datasets']['train'], phase='val')})):
            cm.update(model.get_bare_model(model.net_d).segment(batch['gt']), batch['seg'])
        return cm.compute().miou

    start = head_miou()
    it = 0
    while it < 150:
        for batch in loader:
            it += 1
            model.feed_data(batch)
            model.optimize_parameters(it)
            if it >= 150:
                break
    end = head_miou()
    assert end > max(25.0, start + 15), (start, end)  # about 4x the untrained head's mIoU (~6)


def test_train_resume_and_log_keys_through_entry_point(tiny_data, tmp_path):
    opt = gan_opt(tiny_data, tmp_path)
    opt['train']['total_iter'] = 2
    run_entry('train.py', write_yaml(tmp_path / 'g.yml', opt), tmp_path)
    opt['train']['total_iter'] = 4
    run_entry('train.py', write_yaml(tmp_path / 'g2.yml', opt), tmp_path, '--auto_resume')
    exp = tmp_path / 'experiments' / 'segsr_gan'
    log = read_log(exp)
    assert 'Resuming training from epoch' in log
    for key in ('l_g_pix', 'l_g_gan', 'l_g_task', 'l_d_real', 'l_d_fake', 'l_d_task', '# judge_miou', '# disc_miou'):
        assert key in log, key
    for name in ('net_g_4.pth', 'net_d_4.pth', 'net_g_latest.pth', 'net_d_latest.pth'):
        assert (exp / 'models' / name).is_file()
    g2 = torch.load(exp / 'models' / 'net_g_2.pth')['params']
    g4 = torch.load(exp / 'models' / 'net_g_4.pth')['params']
    assert any(not torch.equal(g2[k], g4[k]) for k in g2)  # iterations 3-4 trained on from the resumed state
    state = torch.load(exp / 'training_states' / '4.state', weights_only=False)
    assert state['iter'] == 4 and len(state['optimizers']) == 2
