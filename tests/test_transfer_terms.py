"""Issue 23's transfer terms: random views for the frozen segmenter's cross-entropy (TaskViews) and the focal
frequency loss, alone and inside SR4IRModel (the *SR for my segmenter* configuration)."""
import copy
import math

import numpy as np
import pytest
import torch
from basicsr.losses import build_loss
from basicsr.models import build_model

from segsr.data.task_views import TaskViews
from segsr.losses.frequency_loss import focal_frequency_loss
from helpers.models import first_batch, runtime_opt
from helpers.options import ce, sr4ir_opt

IGNORE = 255


def _coded_batch(b=3, h=20, w=24, classes=5):
    """Images whose pixel value encodes the label there: after any shift / flip, label == round(value * 10)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (b, h, w), generator=g)
    images = (labels.float() / 10)[:, None].repeat(1, 3, 1, 1)
    return images, labels


@pytest.mark.parametrize('opt', [{'shift': 5}, {'hflip': True}, {'hflip': True, 'shift': 7}])
def test_views_move_labels_with_pixels(opt):
    images, labels = _coded_batch()
    torch.manual_seed(1)
    views, view_labels = TaskViews(ignore_index=IGNORE, **opt)(images, labels)
    assert views.shape == images.shape and view_labels.shape == labels.shape
    scored = view_labels != IGNORE
    assert torch.equal(torch.round(views[:, 0] * 10).long()[scored], view_labels[scored])
    assert not torch.equal(view_labels, labels)  # something moved (seeded draw)
    if 'shift' not in opt:
        assert bool(scored.all())
    else:  # the pixels a shift brings in are ignored, at most `shift` rows / columns of them
        assert (~scored).sum() <= 3 * (2 * opt['shift'] * (20 + 24))


def test_views_shift_is_a_translation_and_flip_a_mirror():
    images, labels = _coded_batch(b=1)
    torch.manual_seed(3)
    views, _ = TaskViews(shift=4)(images, labels)
    # find the offset by matching: the view equals the image translated by some (dy, dx) in [-4, 4]
    found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
             if torch.equal(views[0, :, 4:-4, 4:-4], images[0, :, 4 + dy:20 - 4 + dy, 4 + dx:24 - 4 + dx])]
    assert len(found) == 1 and found[0] != (0, 0)
    flipped, flipped_labels = TaskViews(hflip=True)(images.repeat(64, 1, 1, 1), labels.repeat(64, 1, 1))
    mirrored = torch.tensor([torch.equal(f, images[0].flip(-1)) for f in flipped])
    same = torch.tensor([torch.equal(f, images[0]) for f in flipped])
    assert bool((mirrored | same).all()) and 10 < int(mirrored.sum()) < 54  # p = 0.5 per sample


def test_views_rescale_sizes_labels_and_gradient():
    images, labels = _coded_batch()
    images.requires_grad_(True)
    torch.manual_seed(0)
    views, view_labels = TaskViews(scale=[0.5, 0.5])(images, labels)
    assert views.shape[-2:] == (10, 12) and view_labels.shape == (3, 10, 12)
    assert view_labels.dtype == labels.dtype and set(view_labels.unique().tolist()) <= set(labels.unique().tolist())
    views.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    up, _ = TaskViews(scale=[1.5, 2.0], hflip=True, shift=3)(images.detach(), labels)
    assert 30 <= up.shape[-2] <= 40 and abs(up.shape[-1] - 1.2 * up.shape[-2]) <= 1  # one factor for both sides


def test_views_same_draw_after_restoring_the_generator():
    images, labels = _coded_batch()
    views = TaskViews(scale=[0.8, 1.2], hflip=True, shift=6)
    state = torch.get_rng_state()
    a = views(images, labels)
    torch.set_rng_state(state)
    b = views(images, labels)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize('opt, match', [
    ({'scale': [1.2, 0.8]}, r"'train.sr_ce_views.scale'"),
    ({'scale': 1.0}, r"'train.sr_ce_views.scale'"),
    ({'hflip': 'yes'}, r"'train.sr_ce_views.hflip'"),
    ({'shift': -1}, r"'train.sr_ce_views.shift'"),
    ({'shift': 2.5}, r"'train.sr_ce_views.shift'"),
    ({'rotate': 90}, r"unknown keys \['rotate'\]"),
])
def test_views_bad_options(opt, match):
    with pytest.raises(ValueError, match=match):
        TaskViews.from_opt(opt, IGNORE, 'train.sr_ce_views')


def _hand_ffl(pred, target, alpha):
    """The focal frequency loss with numpy's FFT and explicit loops over images and channels."""
    total = []
    for p, t in zip(pred.double().numpy(), target.double().numpy()):
        for pc, tc in zip(p, t):
            d = np.fft.fft2(pc, norm='ortho') - np.fft.fft2(tc, norm='ortho')
            dist = np.abs(d)**2
            w = np.abs(d)**alpha
            w = w / w.max()
            total.append(w * dist)
    return float(np.mean(total))


@pytest.mark.parametrize('alpha', [1.0, 2.0])
def test_focal_frequency_loss_against_hand_computation(alpha):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 10, generator=g), torch.rand(2, 3, 8, 10, generator=g)
    assert float(focal_frequency_loss(pred, target, alpha)) == pytest.approx(_hand_ffl(pred, target, alpha), rel=1e-5)
    loss = build_loss({'type': 'FocalFrequencyLoss', 'loss_weight': 3.0, 'alpha': alpha})
    assert float(loss(pred, target)) == pytest.approx(3 * _hand_ffl(pred, target, alpha), rel=1e-5)
    assert float(focal_frequency_loss(pred, pred)) == 0.0
    assert focal_frequency_loss(pred, target, reduction='none').shape == pred.shape


def test_focal_frequency_loss_weights_a_periodic_error_above_noise_of_the_same_energy():
    """A stride-8 grid concentrates its energy in a few frequencies; the focal weights make it cost more than white
    noise of the same L2 energy (plain MSE cannot tell them apart)."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 64, 64, generator=g)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing='ij')
    grid = (((yy % 8) == 0) | ((xx % 8) == 0)).float()[None, None]
    grid = grid - grid.mean()
    noise = torch.randn(1, 1, 64, 64, generator=g)
    noise = noise * grid.norm() / noise.norm()
    mse = [float(((e) ** 2).mean()) for e in (grid, noise)]
    assert mse[0] == pytest.approx(mse[1], rel=1e-5)
    assert float(focal_frequency_loss(target + grid, target)) > 1.5 * float(focal_frequency_loss(target + noise, target))


def test_focal_frequency_loss_bad_input():
    with pytest.raises(ValueError, match='differ in shape'):
        focal_frequency_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match='Unsupported reduction'):
        build_loss({'type': 'FocalFrequencyLoss', 'reduction': 'max'})


def _sfms(tiny_data, tmp_path, **extra):
    train = dict(update_task=False, task_sr_opt=None, task_hr_opt=None, task_cqmix_opt=None, tdp_opt=None,
                 sr_ce_opt=ce(0.1), **extra)
    opt = sr4ir_opt(tiny_data, tmp_path, judge=False)
    opt['train'].update(train)
    opt['train'] = {k: v for k, v in opt['train'].items() if v is not None}
    return runtime_opt(opt, tmp_path)


def test_sfms_with_views_and_frequency_loss_trains_and_logs(tiny_data, tmp_path):
    opt = _sfms(tiny_data, tmp_path, sr_ce_views={'scale': [0.75, 1.25], 'hflip': True, 'shift': 4},
                frequency_opt={'type': 'FocalFrequencyLoss', 'loss_weight': 10.0})
    before = copy.deepcopy(opt)
    model = build_model(opt)
    assert opt == before
    model.feed_data(first_batch(opt))
    g0 = [p.detach().clone() for p in model.net_g.parameters()]
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert set(log) == {'l_g_pix', 'l_g_freq', 'l_sr_ce'} and all(math.isfinite(v) for v in log.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.net_g.parameters()))
    seg = model.seg.clone()
    model.optimize_parameters(2)
    assert torch.equal(model.seg, seg)  # the views never touch the batch's own labels


def test_sfms_views_change_the_step_and_are_reproducible(tiny_data, tmp_path):
    """Same seed, same draw: two models with views take the same step; without views the step differs."""
    batch = first_batch(_sfms(tiny_data, tmp_path))

    def step(**extra):
        torch.manual_seed(0)
        model = build_model(_sfms(tiny_data, tmp_path, **extra))
        model.feed_data(batch)
        torch.manual_seed(5)
        model.optimize_parameters(1)
        return [p.detach().clone() for p in model.net_g.parameters()]

    views = {'sr_ce_views': {'hflip': True, 'shift': 4}}
    a, b, plain = step(**views), step(**views), step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, plain))


def test_sfms_views_need_the_cross_entropy(tiny_data, tmp_path):
    opt = _sfms(tiny_data, tmp_path, sr_ce_views={'shift': 4})
    opt['train'].pop('sr_ce_opt')
    with pytest.raises(ValueError, match=r"'train.sr_ce_views' needs 'train.sr_ce_opt'"):
        build_model(opt)
    opt = _sfms(tiny_data, tmp_path, sr_ce_views={'shift': 4, 'angle': 3})
    with pytest.raises(ValueError, match=r"unknown keys \['angle'\]"):
        build_model(opt)
