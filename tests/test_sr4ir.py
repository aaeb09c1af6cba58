"""SR4IR: the TDP loss, CQMix, SR4IRModel (phases, ablations, resume) and TDP inside SegAwareGANModel (CPU, tiny)."""
import copy
import glob
import math
import os

import pytest
import torch
import yaml
from basicsr.losses import build_loss
from basicsr.models import build_model
from torch import nn

from conftest import NUM_CLASSES, REPO, read_log, run_entry, seg_dataset_opt, write_yaml
from segsr.data.cqmix import cqmix_mask, cross_quality_mix
from helpers.models import changed, first_batch, params_of, runtime_opt, val_loader
from helpers.options import ce, save_tiny, sr4ir_opt, TINY_EDSR, TINY_TASK, TINY_UNET


# ------------------------------------------------------------------------------------------------------ TDP loss
class ToyTaskNet(nn.Module):
    """Two features: 'a' (conv + BatchNorm) and 'b' (pooled conv of 'a'), with the task-net contract."""

    feature_names = ('a', 'b')

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b = nn.Conv2d(4, 2, 3, padding=1)

    def feats(self, x):
        a = self.bn(self.conv_a(x))
        return {'a': a, 'b': nn.functional.avg_pool2d(self.conv_b(a), 2)}

    def forward(self, x, feature_names=None):
        f = self.feats(x)
        return {'out': f['b'], 'features': {n: f[n] for n in feature_names or ()}}


@pytest.mark.parametrize('criterion, dist', [('l1', lambda d: d.abs()), ('l2', lambda d: d.pow(2)),
                                             ('charbonnier', lambda d: torch.sqrt(d.pow(2) + 1e-12))])
def test_tdp_against_hand_computation(criterion, dist):
    torch.manual_seed(0)
    net = ToyTaskNet().eval().requires_grad_(False)
    sr, hr = torch.rand(2, 3, 16, 12), torch.rand(2, 3, 16, 12)
    loss = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0, 'b': 0.25}, 'criterion': criterion,
                       'loss_weight': 2.0})
    fs, fh = net.feats(sr), net.feats(hr)
    hand = 2.0 * (dist(fs['a'] - fh['a']).mean() + 0.25 * dist(fs['b'] - fh['b']).mean())
    assert float(loss(sr, hr, net)) == pytest.approx(float(hand), rel=1e-5)
    summed = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0}, 'criterion': criterion, 'reduction': 'sum'})
    assert float(summed(sr, hr, net)) == pytest.approx(float(dist(fs['a'] - fh['a']).sum()), rel=1e-5)
    none = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 3.0}, 'criterion': criterion, 'reduction': 'none'})
    assert torch.allclose(none(sr, hr, net), 3.0 * dist(fs['a'] - fh['a']), atol=1e-6)
    zero = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0, 'b': 1.0}, 'criterion': criterion})
    expected_zero = 2 * math.sqrt(1e-12) if criterion == 'charbonnier' else 0.0
    assert float(zero(hr, hr.clone(), net)) == pytest.approx(expected_zero, abs=1e-9)


def test_tdp_gradients_mode_and_flags():
    """Gradient reaches the SR image only; the net's mode, flags and BatchNorm statistics are left as they were."""
    torch.manual_seed(0)
    net = ToyTaskNet().train()
    stats = net.bn.running_mean.clone()
    sr, hr = torch.rand(2, 3, 8, 8, requires_grad=True), torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0, 'b': 1.0}})
    loss(sr, hr, net).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None  # HR features carry no gradient
    assert all(p.grad is None for p in net.parameters())  # the task network gets none
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert torch.equal(net.bn.running_mean, stats)  # ran in eval mode


def test_tdp_bad_options():
    with pytest.raises(ValueError, match='criterion'):
        build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0}, 'criterion': 'l3'})
    with pytest.raises(ValueError, match='layer_weights'):
        build_loss({'type': 'TDPLoss', 'layer_weights': {}})
    with pytest.raises(ValueError, match=r"has no feature\(s\) \['C9'\]"):
        build_loss({'type': 'TDPLoss', 'layer_weights': {'C9': 1.0}}).check_network(ToyTaskNet())
    loss = build_loss({'type': 'TDPLoss', 'layer_weights': {'a': 1.0, 'b': 1.0}, 'reduction': 'none'})
    with pytest.raises(ValueError, match="reduction 'none'"):
        loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), ToyTaskNet())


# --------------------------------------------------------------------------------------------------------- CQMix
@pytest.mark.parametrize('grid, prob, hw', [(8, 0.5, (64, 64)), ((3, 5), 0.3, (37, 45)), (4, 0.8, (30, 17))])
def test_cqmix_mask_statistics(grid, prob, hw):
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    gen = torch.Generator().manual_seed(0)
    masks = cqmix_mask(4000, *hw, grid=grid, prob=prob, generator=gen)
    assert masks.shape == (4000, 1, *hw) and set(masks.unique().tolist()) <= {0.0, 1.0}
    row_of = torch.arange(hw[0]) * rows // hw[0]
    col_of = torch.arange(hw[1]) * cols // hw[1]
    # Every cell is constant: the mask equals its cell grid expanded back to pixels.
    cells = masks[:, :, [int((row_of == r).nonzero()[0]) for r in range(rows)]][
        :, :, :, [int((col_of == c).nonzero()[0]) for c in range(cols)]]
    assert torch.equal(cells[:, :, row_of][:, :, :, col_of], masks)
    # Fraction of SR cells: prob in expectation (4000 x cells draws: standard error < 0.004), for every cell.
    assert float(cells.mean()) == pytest.approx(prob, abs=0.01)
    per_cell = cells.mean(dim=(0, 1))
    assert float((per_cell - prob).abs().max()) < 0.05
    # Pixel fraction = cell fraction weighted by cell areas, within sampling error.
    assert float(masks.mean()) == pytest.approx(prob, abs=0.02)


def test_cross_quality_mix_takes_pixels_from_the_right_image():
    sr, hr = torch.rand(3, 3, 20, 24), torch.rand(3, 3, 20, 24)
    mixed, mask = cross_quality_mix(sr, hr, grid=(4, 6), prob=0.5, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (3, 1, 20, 24)
    assert torch.equal(mixed, torch.where(mask.bool().expand_as(sr), sr, hr))  # same mask for every channel
    assert 0 < float(mask.mean()) < 1
    assert torch.equal(cross_quality_mix(sr, hr, prob=1.0)[0], sr)
    assert torch.equal(cross_quality_mix(sr, hr, prob=0.0)[0], hr)
    with pytest.raises(ValueError, match='differ in shape'):
        cross_quality_mix(sr, hr[:, :, :10])
    with pytest.raises(ValueError, match='prob'):
        cqmix_mask(1, 8, 8, prob=1.5)
    with pytest.raises(ValueError, match='finer than the image'):
        cqmix_mask(1, 4, 4, grid=8)


def _built(tiny_data, tmp_path, **train_extra):
    opt = runtime_opt(sr4ir_opt(tiny_data, tmp_path, **train_extra), tmp_path)
    before = copy.deepcopy(opt)
    model = build_model(opt)
    assert opt == before  # the caller's options are not mutated
    model.feed_data(first_batch(opt))
    return opt, model


def test_phase1_updates_only_sr_and_phase2_only_task(tiny_data, tmp_path):
    _, model = _built(tiny_data, tmp_path)
    g0, t0, j0 = params_of(model.net_g), params_of(model.net_task), params_of(model.task_validator.judge)
    model.sr_step(1, {})
    assert changed(g0, model.net_g) and not changed(t0, model.net_task)  # incl. BatchNorm running statistics
    assert all(p.grad is None or not p.grad.any() for p in model.net_task.parameters())
    assert model.net_task.training and all(p.requires_grad for p in model.net_task.parameters())
    g1 = params_of(model.net_g)
    seg = model.seg.clone()
    model.task_step({})
    assert changed(t0, model.net_task) and not changed(g1, model.net_g)
    assert torch.equal(model.seg, seg)  # labels are shared by all views, never mixed
    assert not changed(j0, model.task_validator.judge)


def test_full_step_logs_each_term_and_tdp_warmup(tiny_data, tmp_path):
    _, model = _built(tiny_data, tmp_path, tdp_warmup_iter=2)
    model.optimize_parameters(1)
    log = model.get_current_log()
    assert set(log) == {'l_g_pix', 'l_task_sr', 'l_task_hr', 'l_task_cqmix'}  # TDP off during the warm-up
    model.optimize_parameters(3)
    assert set(model.get_current_log()) == {'l_g_pix', 'l_tdp', 'l_task_sr', 'l_task_hr', 'l_task_cqmix'}
    assert all(math.isfinite(v) for v in model.get_current_log().values())
    assert model.get_current_learning_rate() == [1e-3, pytest.approx(model.optimizer_task.param_groups[0]['lr'])]


def test_task_views_share_one_forward_and_weights(tiny_data, tmp_path):
    """Each view's loss is its own weighted CE (+ aux), as if the view ran alone (task net in eval: no BN coupling)."""
    from segsr.losses.seg_loss import segmentation_cross_entropy

    _, model = _built(tiny_data, tmp_path, task_cqmix_opt=None, task_sr_opt=ce(0.2), task_hr_opt=ce(0.7))
    model.net_task.eval()
    with torch.no_grad():
        sr = model.net_g(model.lq)
        logs = {}
        model.task_loss(sr, logs)
        for view, img, w in (('sr', sr, 0.2), ('hr', model.gt, 0.7)):
            out = model.net_task(img)
            hand = w * (segmentation_cross_entropy(out['out'], model.seg) +
                        0.5 * segmentation_cross_entropy(out['aux'], model.seg))
            assert float(logs[f'l_task_{view}']) == pytest.approx(float(hand), rel=1e-4)


@pytest.mark.parametrize('extra, trained, frozen', [
    ({'update_sr': False, 'pixel_opt': None, 'tdp_opt': None, 'task_hr_opt': None, 'task_cqmix_opt': None},
     'net_task', 'net_g'),                                                                      # T->S
    ({'update_task': False, 'task_sr_opt': None, 'task_hr_opt': None, 'task_cqmix_opt': None,
      'sr_ce_opt': ce(1.0)}, 'net_g', 'net_task'),                                              # frozen task net
    ({'alternate': False, 'tdp_opt': None, 'task_hr_opt': None, 'task_cqmix_opt': None}, None, None),  # S+T
])
def test_phase_switches(tiny_data, tmp_path, extra, trained, frozen):
    _, model = _built(tiny_data, tmp_path, **extra)
    g0, t0 = params_of(model.net_g), params_of(model.net_task)
    model.optimize_parameters(1)
    moved = {'net_g': changed(g0, model.net_g), 'net_task': changed(t0, model.net_task)}
    if trained is None:  # joint: both change, and the SR network feels the task loss
        assert moved == {'net_g': True, 'net_task': True}
    else:
        assert moved[trained] and not moved[frozen]
        frozen_net = getattr(model, frozen)
        assert not frozen_net.training and not any(p.requires_grad for p in frozen_net.parameters())
        assert len(model.optimizers) == 1


def test_joint_task_loss_reaches_sr_network(tiny_data, tmp_path):
    """S+T without a pixel loss still moves the SR network: the task loss on SR is back-propagated into it."""
    _, model = _built(tiny_data, tmp_path, alternate=False, pixel_opt=None, tdp_opt=None, task_hr_opt=None,
                      task_cqmix_opt=None)
    g0 = params_of(model.net_g)
    model.optimize_parameters(1)
    assert changed(g0, model.net_g) and set(model.get_current_log()) == {'l_task_sr'}


def test_validation_scores_own_task_net_and_judge(tiny_data, tmp_path):
    opt, model = _built(tiny_data, tmp_path)
    model.validation(val_loader(opt), 1, None, save_img=True)
    assert {'psnr', 'task_miou', 'task_pixacc', 'judge_miou', 'judge_pixacc'} <= set(model.metric_results)
    assert model.net_task.training and model.net_g.training  # restored after validation
    pictures = {p.name.split('_1_')[-1] for p in (tmp_path / 'exp' / 'visualization').rglob('*.png')}
    assert {'task_seg.png', 'judge_seg.png'} <= pictures


@pytest.mark.parametrize('change, match', [
    (lambda t: t.update(update_sr=False, update_task=False), 'nothing trains'),
    (lambda t: t.update(update_sr=False), r"'train.update_sr' is false, so \['train.pixel_opt', 'train.tdp_opt'\]"),
    (lambda t: t.update(task_sr_opt=None, task_hr_opt=None, task_cqmix_opt=None), 'no task-phase loss'),
    (lambda t: t.update(pixel_opt=None, tdp_opt=None), 'no SR-phase loss'),
    (lambda t: t.update(alternate=False, update_task=False, task_sr_opt=None, task_hr_opt=None,
                        task_cqmix_opt=None), 'joint training'),
    (lambda t: t.update(tdp_opt={'type': 'TDPLoss', 'layer_weights': {'C9': 1.0}}), r"has no feature\(s\) \['C9'\]"),
    (lambda t: t.update(tdp_opt={'type': 'L1Loss'}), 'is not a TDPLoss'),
    (lambda t: t.update(cqmix={'grid': 4, 'p': 0.5}), "unknown keys \\['p'\\]"),
    (lambda t: t.update(cqmix={'prob': 2}), 'train.cqmix.prob'),
    (lambda t: t.pop('optim_task'), 'train.optim_task'),
])
def test_build_time_errors(tiny_data, tmp_path, change, match):
    opt = sr4ir_opt(tiny_data, tmp_path)
    change(opt['train'])
    opt['train'] = {k: v for k, v in opt['train'].items() if v is not None}
    with pytest.raises(ValueError, match=match):
        build_model(runtime_opt(opt, tmp_path))


@pytest.mark.parametrize('change, match', [
    (lambda o: o.pop('network_task'), "'network_task'"),
    (lambda o: o['network_task'].update(num_classes=NUM_CLASSES + 1), "'network_task.num_classes' = 7 does not match"),
    (lambda o: o['datasets']['train'].pop('num_classes'), 'labelled training data'),
])
def test_build_time_errors_networks_and_data(tiny_data, tmp_path, change, match):
    opt = sr4ir_opt(tiny_data, tmp_path, judge=False)
    change(opt)
    with pytest.raises(ValueError, match=match):
        build_model(runtime_opt(opt, tmp_path))


def _state_tensors(obj):
    """Flatten nested dicts/lists of an optimizer or scheduler state into ``path -> value``."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f'{prefix}.{k}', v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f'{prefix}[{i}]', v)
        else:
            flat[prefix] = value

    walk('', obj)
    return flat


def _assert_same_state(a, b):
    fa, fb = _state_tensors(a), _state_tensors(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], torch.Tensor):
            assert torch.equal(fa[k], fb[k]), k
        else:
            assert fa[k] == fb[k], k


def test_resume_restores_both_networks_optimizers_and_schedulers(tiny_data, tmp_path):
    """Save after 2 steps, build a second model from the checkpoint as basicsr.train does, compare, step both."""
    from basicsr.utils import check_resume

    opt, model = _built(tiny_data, tmp_path, ema_decay=0.9)
    batch = first_batch(opt)
    for it in (1, 2):
        model.feed_data(batch)
        model.optimize_parameters(it)
        model.update_learning_rate(it, warmup_iter=-1)
    model.save(0, 2)
    state_path = tmp_path / 'exp' / 'training_states' / '2.state'
    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(state_path)
    check_resume(resumed_opt, 2)  # points pretrain_network_g/_task at models/net_*_2.pth
    assert resumed_opt['path']['pretrain_network_task'].endswith('net_task_2.pth')
    resumed = build_model(resumed_opt)
    resumed.resume_training(torch.load(state_path, weights_only=False))
    for name in ('net_g', 'net_g_ema', 'net_task'):
        a, b = getattr(model, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert len(resumed.optimizers) == len(resumed.schedulers) == 2
    for o1, o2 in zip(model.optimizers, resumed.optimizers):
        _assert_same_state(o1.state_dict(), o2.state_dict())
    for s1, s2 in zip(model.schedulers, resumed.schedulers):
        _assert_same_state(s1.state_dict(), s2.state_dict())
    # The next step is identical too (same batch; CQMix masks drawn from the same seed).
    for m in (model, resumed):
        torch.manual_seed(5)
        m.feed_data(batch)
        m.optimize_parameters(3)
    for name in ('net_g', 'net_task'):
        a, b = getattr(model, name).state_dict(), getattr(resumed, name).state_dict()
        assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a), name


def test_train_and_auto_resume_through_entry_point(tiny_data, tmp_path):
    opt = sr4ir_opt(tiny_data, tmp_path)
    opt_path = write_yaml(tmp_path / 'sr4ir.yml', opt)
    run_entry('train.py', opt_path, tmp_path)
    exp = tmp_path / 'experiments' / 'sr4ir'
    saved = set(os.listdir(exp / 'models'))
    assert {'net_g_4.pth', 'net_task_4.pth', 'net_g_latest.pth', 'net_task_latest.pth'} <= saved
    log = read_log(exp)
    for key in ('l_g_pix', 'l_tdp', 'l_task_sr', 'l_task_hr', 'l_task_cqmix', 'task_miou', 'judge_miou'):
        assert key in log, key
    opt['train']['total_iter'] = 6
    write_yaml(opt_path, opt)
    run_entry('train.py', opt_path, tmp_path, '--auto_resume')
    log = read_log(exp)
    assert 'Resuming training from epoch' in log and 'iter:   4' not in log.split('Resuming training')[-1]
    assert 'net_task_6.pth' in os.listdir(exp / 'models')


# ------------------------------------------------------------------------------------------ the shipped configs
def _is_training_config(path):
    with open(path) as f:
        return 'model_type' in yaml.safe_load(f)  # not an evaluation file


SR4IR_CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, 'options', 'sr4ir', '**', '*.yml'), recursive=True)
                       if _is_training_config(p))


@pytest.mark.parametrize('path', SR4IR_CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, 'options')))
def test_shipped_configs_build_and_run_two_iterations(tiny_data, tmp_path, path):
    """Each table/ablation config, with tiny networks and data swapped in, builds and trains 2 iterations."""
    with open(path) as f:
        opt = yaml.safe_load(f)
    scale = opt['scale']
    opt['datasets'] = {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')}
    if 'network_g' in opt:
        opt['network_g'] = dict(TINY_EDSR, upscale=scale)
    if 'network_task' in opt:
        opt['network_task'] = dict(TINY_TASK)
    tdp = opt['train'].get('tdp_opt')
    if tdp:
        tdp['layer_weights'] = {'bottleneck': 1.0}  # SegUNet's name for the deepest feature
    path_opt = opt['path']
    for key in ('pretrain_network_g', 'pretrain_network_task'):
        if path_opt.get(key):
            net_opt = opt['network_g' if key.endswith('_g') else 'network_task']
            path_opt[key] = save_tiny(tmp_path / f'{key}.pth', net_opt)
            path_opt[f"param_key_{key.rsplit('_', 1)[-1]}"] = 'params'
    if (opt.get('val') or {}).get('judge'):
        opt['val']['judge'] = {'network': dict(TINY_UNET), 'path': save_tiny(tmp_path / 'judge.pth', TINY_UNET)}
    opt = runtime_opt(opt, tmp_path)
    model = build_model(opt)
    for it in (1, 2):
        model.feed_data(first_batch(opt))
        model.optimize_parameters(it)
        assert all(math.isfinite(v) for v in model.get_current_log().values())
    model.validation(val_loader(opt), 2, None, save_img=False)
    assert model.metric_results


# ---------------------------------------------------------------------------------------- TDP in the GAN model
def test_segaware_gan_with_tdp(tiny_data, tmp_path):
    from helpers.options import gan_opt

    raw = gan_opt(tiny_data, tmp_path, tdp_opt={'type': 'TDPLoss', 'layer_weights': {'bottleneck': 1.0}},
                  tdp_warmup_iter=1)
    raw['network_task'] = dict(TINY_TASK)
    raw['path']['pretrain_network_task'] = save_tiny(tmp_path / 'task.pth', TINY_TASK)
    opt = runtime_opt(raw, tmp_path)
    model = build_model(opt)
    t0 = params_of(model.net_task)
    model.feed_data(first_batch(opt))
    model.optimize_parameters(1)
    assert 'l_tdp' not in model.get_current_log()  # warm-up
    model.optimize_parameters(2)
    assert model.get_current_log()['l_tdp'] > 0 and not changed(t0, model.net_task)
    assert model.net_task is not None and not model.net_task.training
    model.save(0, 2)
    assert 'net_task_2.pth' in os.listdir(tmp_path / 'exp' / 'models')  # found again by --auto_resume
    raw['path'].pop('pretrain_network_task')
    with pytest.raises(ValueError, match='path.pretrain_network_task'):
        build_model(runtime_opt(raw, tmp_path))
    raw['train'].pop('tdp_opt')
    with pytest.raises(ValueError, match="'network_task' is set but 'train.tdp_opt' is not"):
        build_model(runtime_opt(raw, tmp_path))
