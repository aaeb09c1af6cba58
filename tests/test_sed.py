"""SeD: semantic extractors, the fusion block, semantic-aware discriminators, SeDModel and its drop-in configs."""
import copy
import os
import re
import sys

import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.archs.discriminator_arch import UNetDiscriminatorSN
from basicsr.models import build_model
from torch import nn

from conftest import NUM_CLASSES, REPO, read_log, run_entry, write_yaml
from helpers.models import first_batch, params_of, runtime_opt, val_loader

from segsr.archs.semantic_extractor_arch import (CLIPSemanticExtractor, ResNetSemanticExtractor,
                                                 TaskNetSemanticExtractor)
from segsr.archs.semantic_fusion import SemanticFusionBlock
from helpers.options import load_sed_option, sed_opt, SEM_DIM, tiny_run_opt, tiny_sed_d, TINY_SEM, TINY_SEM_NET


def semantic_map(batch, h, w, dim=SEM_DIM, stride=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, -(-h // stride), -(-w // stride), generator=gen)


def randomize_fusion_outputs(net):
    """Give the zero-initialised ``proj_out`` layers random weights (as after some training)."""
    torch.manual_seed(3)
    for m in net.modules():
        if isinstance(m, SemanticFusionBlock):
            nn.init.normal_(m.proj_out.weight, std=0.1)
    return net


# ----------------------------------------------------------------------------------------------- extractors
@pytest.mark.parametrize('hw, out_hw', [((64, 64), (4, 4)), ((100, 72), (7, 5)), ((224, 224), (14, 14))])
def test_resnet_extractor_shape_frozen_and_eval(hw, out_hw):
    ext = ResNetSemanticExtractor('resnet18', pretrained=None, layer='layer3')
    assert (ext.out_channels, ext.stride) == (256, 16)
    assert all(not p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.training and not any(m.training for m in ext.modules())
    x = torch.rand(2, 3, *hw, requires_grad=True)
    out = ext(x)
    assert out.shape == (2, 256, *out_hw) and not out.requires_grad
    with pytest.raises(ValueError, match='B x 3 x H x W'):
        ext(torch.rand(2, 1, 32, 32))


def test_resnet_extractor_loads_a_torchvision_checkpoint(tmp_path):
    import torchvision

    full = torchvision.models.resnet18(weights=None)
    torch.save(full.state_dict(), tmp_path / 'resnet18.pth')  # with layer4 and fc, which are dropped
    ext = ResNetSemanticExtractor('resnet18', pretrained=str(tmp_path / 'resnet18.pth'), layer='layer2')
    assert torch.equal(ext.layer2[0].conv1.weight, full.layer2[0].conv1.weight)
    assert (ext.out_channels, ext.stride) == (128, 8)
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match='bad.pth'):
        ResNetSemanticExtractor('resnet18', pretrained=str(tmp_path / 'bad.pth'))
    with pytest.raises(ValueError, match="unknown arch 'vgg16'"):
        ResNetSemanticExtractor('vgg16')
    with pytest.raises(ValueError, match="layer 'layer5'"):
        ResNetSemanticExtractor('resnet18', layer='layer5')


def test_clip_extractor_rn50_layer3_and_local_weights(tmp_path):
    pytest.importorskip('open_clip')
    ext = CLIPSemanticExtractor('RN50', pretrained=None)
    assert (ext.out_channels, ext.stride) == (1024, 16)
    assert not hasattr(ext.visual, 'layer4') and not hasattr(ext.visual, 'attnpool')
    assert ext(torch.rand(1, 3, 96, 160)).shape == (1, 1024, 6, 10)  # not only 224
    # A full CLIP state dict (text tower, layer4 and attention pool included) and the image tower alone both load.
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in ext.state_dict().items()}
    full = dict(state, **{'visual.layer4.0.conv1.weight': torch.zeros(1), 'visual.attnpool.c_proj.weight':
                          torch.zeros(1), 'transformer.resblocks.0.attn.in_proj_weight': torch.zeros(1)})
    torch.save(full, tmp_path / 'clip_full.pth')
    torch.save({k[len('visual.'):]: v for k, v in state.items()}, tmp_path / 'clip_visual.pth')
    for name in ('clip_full.pth', 'clip_visual.pth'):
        loaded = CLIPSemanticExtractor('RN50', pretrained=str(tmp_path / name))
        assert torch.equal(loaded.visual.layer3[0].conv1.weight, state['visual.layer3.0.conv1.weight'])
    with pytest.raises(ValueError, match='not a ModifiedResNet'):
        CLIPSemanticExtractor('ViT-B-32', pretrained=None)


def test_clip_extractor_without_open_clip_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, 'open_clip', None)  # import open_clip -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e '\.\[clip\]'"):
        CLIPSemanticExtractor('RN50', pretrained=None)


def test_task_net_extractor(tmp_path):
    ext = build_network(copy.deepcopy(TINY_SEM))
    assert (ext.out_channels, ext.stride) == (SEM_DIM, 16)
    assert ext(torch.rand(1, 3, 70, 50)).shape == (1, SEM_DIM, 5, 4)
    net = build_network(dict(TINY_SEM_NET))
    torch.save({'params': net.state_dict()}, tmp_path / 'task.pth')
    loaded = build_network(dict(TINY_SEM, pretrained=str(tmp_path / 'task.pth')))
    assert all(torch.equal(a, b) for a, b in zip(loaded.net.state_dict().values(), net.state_dict().values()))
    with pytest.raises(ValueError, match="no feature 'C9'"):
        TaskNetSemanticExtractor(TINY_SEM_NET, feature='C9')
    with pytest.raises(ValueError, match='not a segsr task network'):
        TaskNetSemanticExtractor({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3})


# ------------------------------------------------------------------------------------------- fusion block
@pytest.mark.parametrize('sem_hw, feat_hw, up', [((4, 4), (16, 16), 4), ((3, 5), (6, 10), 2), ((4, 4), (15, 15), 4),
                                                  ((2, 3), (2, 3), 1)])
def test_fusion_block_shapes_and_semantic_dependence(sem_hw, feat_hw, up):
    torch.manual_seed(0)
    block = SemanticFusionBlock(SEM_DIM, 12, up, num_heads=2, head_dim=8, zero_init=False)
    feat = torch.randn(2, 12, *feat_hw, requires_grad=True)
    sem_a, sem_b = torch.randn(2, SEM_DIM, *sem_hw), torch.randn(2, SEM_DIM, *sem_hw)
    out_a = block(sem_a, feat)
    assert out_a.shape == (2, max(1, SEM_DIM // up**2), *feat_hw)
    assert not torch.allclose(out_a, block(sem_b, feat), atol=1e-5)
    out_a.sum().backward()
    assert feat.grad.abs().sum() > 0 and block.proj_feat.weight.grad.abs().sum() > 0  # keys/values from features


def test_fusion_block_zero_init_starts_unconditioned():
    block = SemanticFusionBlock(SEM_DIM, 12, 2, head_dim=8)
    feat = torch.randn(1, 12, 8, 8)
    assert torch.equal(block(torch.randn(1, SEM_DIM, 4, 4), feat), block(torch.randn(1, SEM_DIM, 4, 4), feat))
    with pytest.raises(ValueError, match='semantic map'):
        block(torch.randn(1, 7, 4, 4), feat)


@pytest.mark.parametrize('kind, rf_shape', [
    ('SeDPatchDiscriminator', lambda h, w: (2, 1, h // 8 - 1, w // 8 - 1)),
    ('SeDUNetDiscriminator', lambda h, w: (2, 1, h, w)),
])
@pytest.mark.parametrize('hw', [(16, 16), (37, 45), (64, 64), (96, 128)])
def test_sed_discriminators_sizes_and_semantics(kind, rf_shape, hw):
    net = randomize_fusion_outputs(build_network(tiny_sed_d(kind)))
    x = torch.rand(2, 3, *hw)
    out_a = net(x, semantic_map(2, *hw, seed=1))
    assert out_a.shape == rf_shape(*hw)
    assert not torch.allclose(out_a, net(x, semantic_map(2, *hw, seed=2)), atol=1e-6)


def test_sed_discriminator_errors_and_unconditioned_variants():
    with pytest.raises(ValueError, match='semantic_stride 2 cannot be fused'):
        build_network(tiny_sed_d(semantic_stride=2))
    with pytest.raises(ValueError, match='semantic_stride 12'):
        build_network(tiny_sed_d('SeDUNetDiscriminator', semantic_stride=12))
    net = build_network(tiny_sed_d())
    with pytest.raises(ValueError, match='smaller than the minimum 16'):
        net(torch.rand(1, 3, 12, 40), semantic_map(1, 12, 40))
    with pytest.raises(ValueError, match='needs the semantic map'):
        net(torch.rand(1, 3, 32, 32))
    plain = build_network(tiny_sed_d(semantic_dim=None))
    with pytest.raises(ValueError, match='no semantic fusion'):
        plain(torch.rand(1, 3, 32, 32), semantic_map(1, 32, 32))
    # Without semantics the U variant has BasicSR's UNetDiscriminatorSN layers.
    plain_u = build_network(dict(type='SeDUNetDiscriminator', num_feat=16, semantic_dim=None))
    stock = UNetDiscriminatorSN(3, num_feat=16)
    assert sum(p.numel() for p in plain_u.parameters()) == sum(p.numel() for p in stock.parameters())
    assert plain_u(torch.rand(1, 3, 32, 32)).shape == stock(torch.rand(1, 3, 32, 32)).shape


@pytest.mark.parametrize('trunk', ['unet', 'patch', 'patchgan'])
def test_seg_aware_discriminator_with_sed(trunk):
    net = randomize_fusion_outputs(build_network(
        dict(type='SegAwareDiscriminator', num_classes=NUM_CLASSES, num_feat=8, seg_hidden=8, trunk=trunk,
             semantic_dim=SEM_DIM, fusion_head_dim=8)))
    x = torch.rand(2, 3, 48, 64)
    out = net(x, semantic_map(2, 48, 64, seed=1))
    assert out['seg'].shape == (2, NUM_CLASSES, 48, 64)
    assert not torch.allclose(out['seg'], net(x, semantic_map(2, 48, 64, seed=2))['seg'], atol=1e-6)
    assert net.segment(x, semantic_map(2, 48, 64)).shape == (2, NUM_CLASSES, 48, 64)


def _built(tiny_data, tmp_path, **kw):
    opt = runtime_opt(sed_opt(tiny_data, **kw), tmp_path)
    model = build_model(opt)
    model.feed_data(first_batch(opt))
    return model


@pytest.mark.parametrize('relativistic', [True, False])
@pytest.mark.parametrize('kind', ['SeDPatchDiscriminator', 'SeDUNetDiscriminator'])
def test_sed_model_step_trains_g_and_d_not_the_extractor(tiny_data, tmp_path, relativistic, kind):
    model = _built(tiny_data, tmp_path, d=tiny_sed_d(kind), relativistic=relativistic)
    calls = []
    model.net_sem.register_forward_hook(lambda *args: calls.append(1))
    g0, d0, s0 = params_of(model.net_g), params_of(model.net_d), params_of(model.net_sem)
    model.optimize_parameters(1)
    assert len(calls) == 1  # semantics once per batch, shared by the G step and the real and fake D passes
    assert torch.equal(model.semantic_conditioner.semantic, model.net_sem(model.gt))  # the HR image's semantics
    assert set(model.log_dict) >= {'l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake', 'out_d_real', 'out_d_fake'}
    assert any(not torch.equal(v, model.net_g.state_dict()[k]) for k, v in g0.items())
    assert any(not torch.equal(v, model.net_d.state_dict()[k]) for k, v in d0.items())
    assert all(torch.equal(v, model.net_sem.state_dict()[k]) for k, v in s0.items())
    assert all(p.grad is None and not p.requires_grad for p in model.net_sem.parameters())
    assert model.relativistic is relativistic and not model.net_sem.training
    # After training the discriminator's judgement depends on the semantic map (proj_out left zero).
    sr = model.output.detach()
    other = torch.roll(model.semantic_conditioner.semantic, 1, dims=0) + torch.randn_like(model.semantic_conditioner.semantic)
    assert not torch.allclose(model.net_d(sr, model.semantic_conditioner.semantic), model.net_d(sr, other), atol=1e-7)


def test_sed_model_defaults_and_validation(tiny_data, tmp_path):
    model = _built(tiny_data, tmp_path)
    assert model.relativistic is True  # ESRGAN's step
    model.validation(val_loader(model.opt), 1, None, False)
    assert 'psnr' in model.metric_results


@pytest.mark.parametrize('change, match', [
    (lambda o: o.update(network_d={'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 8}),
     'not semantic-aware'),
    (lambda o: o['network_d'].update(semantic_dim=64), "'network_d.semantic_dim' = 64 does not match"),
    (lambda o: o['network_d'].update(semantic_stride=8), "'network_d.semantic_stride' = 8 does not match"),
    (lambda o: o['network_sem'].update(type='RRDBNet'), 'network_sem'),
    (lambda o: o['datasets']['train'].update(gt_size=12), "'datasets.train.gt_size' = 12"),
    (lambda o: o['train'].update(ldl_opt={'type': 'L1Loss'}), 'ldl_opt'),
])
def test_sed_model_build_errors(tiny_data, tmp_path, change, match):
    opt = sed_opt(tiny_data)
    change(opt)
    with pytest.raises((ValueError, TypeError), match=match):
        build_model(runtime_opt(opt, tmp_path))


def test_sed_model_default_extractor_is_clip_rn50(tiny_data, tmp_path, monkeypatch):
    """Without network_sem, SeDModel uses CLIP RN50 layer3 with OpenAI weights (download replaced here)."""
    pytest.importorskip('open_clip')
    import segsr.archs.semantic_extractor_arch as sem_arch

    asked = []

    def fake_download(model_name, tag):
        asked.append((model_name, tag))
        return CLIPSemanticExtractor(model_name, pretrained=None).state_dict()

    monkeypatch.setattr(sem_arch, '_download_clip_visual', fake_download)
    opt = sed_opt(tiny_data, d=tiny_sed_d(semantic_dim=1024))
    del opt['network_sem']
    model = build_model(runtime_opt(opt, tmp_path))
    assert asked == [('RN50', 'openai')] and isinstance(model.net_sem, CLIPSemanticExtractor)


def test_sed_model_train_entry_saves_extractor_and_resumes(tiny_data, tmp_path):
    from helpers.models import train_then_resume

    opt = sed_opt(tiny_data)
    opt['network_sem']['pretrained'] = _save_tiny_sem(tmp_path / 'sem.pth')
    exp, log = train_then_resume(opt, tmp_path)
    saved = torch.load(exp / 'models' / 'net_sem_2.pth')['params']
    assert all(torch.equal(saved[k], v) for k, v in torch.load(exp / 'models' / 'net_sem_4.pth')['params'].items())
    assert 'Model [SeDModel] is created.' in log and (exp / 'models' / 'net_d_4.pth').is_file()


def _save_tiny_sem(path):
    torch.manual_seed(5)
    torch.save({'params': build_network(dict(TINY_SEM_NET)).state_dict()}, path)
    return str(path)


def test_seg_aware_gan_with_sed_and_tdp(tiny_data, tmp_path):
    """Task branch + SeD conditioning + TDP in one SegAwareGANModel run (one conditioning mechanism)."""
    from helpers.options import gan_opt
    from helpers.options import TDP, TINY_TASK, save_tiny

    opt = gan_opt(tiny_data, tmp_path)
    opt['network_d'].update(semantic_dim=SEM_DIM, fusion_head_dim=8)
    opt['network_sem'] = copy.deepcopy(TINY_SEM)
    opt['network_task'] = dict(TINY_TASK)
    opt['path']['pretrain_network_task'] = save_tiny(tmp_path / 'task.pth', TINY_TASK)
    opt['train'].update(tdp_opt=dict(TDP))
    opt = runtime_opt(opt, tmp_path)
    model = build_model(opt)
    model.feed_data(first_batch(opt))
    s0 = params_of(model.net_sem)
    model.optimize_parameters(1)
    assert {'l_g_task', 'l_tdp', 'l_d_task', 'l_g_gan'} <= set(model.log_dict)
    assert model.semantic_conditioner.semantic is not None and model.semantic_conditioner.semantic.shape[1] == SEM_DIM
    assert all(torch.equal(v, model.net_sem.state_dict()[k]) for k, v in s0.items())
    model.validation(val_loader(opt), 1, None, False)
    assert {'judge_miou', 'disc_miou'} <= set(model.metric_results)
    with pytest.raises(ValueError, match='fuses no semantics'):
        plain = gan_opt(tiny_data, tmp_path)
        plain['network_sem'] = copy.deepcopy(TINY_SEM)
        build_model(runtime_opt(plain, tmp_path))


# ------------------------------------------------------------------------------------- drop-in configs
DROP_IN = [('train_ESRGAN_x4.yml', 'train_SeD_P_x4.yml'),
           ('train_realesrgan_x4plus.yml', 'train_SeD_U_realesrgan_x4plus.yml')]


def _flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


@pytest.mark.parametrize('base, sed', DROP_IN)
def test_drop_in_configs_differ_in_model_type_and_network_d_only(base, sed):
    a, b = _flatten(load_sed_option(base)), _flatten(load_sed_option(sed))
    assert a.keys() == b.keys()
    assert {k for k in a if a[k] != b[k]} == {'name', 'model_type', 'network_d.type'}


@pytest.mark.parametrize('base, sed', DROP_IN)
def test_drop_in_configs_run_two_iterations(tiny_data, tmp_path, base, sed):
    for name, is_sed in ((base, False), (sed, True)):
        opt = tiny_run_opt(load_sed_option(name), tiny_data, is_sed)
        run_entry('train.py', write_yaml(tmp_path / name, opt), tmp_path)
        log = read_log(tmp_path / 'experiments' / opt['name'])
        assert f"Model [{opt['model_type']}] is created." in log and re.search(r'iter: +2,', log)
        assert 'l_d_real' in log and 'psnr' in log


def test_gan_step_benchmark_script(tiny_data, tmp_path):
    import subprocess

    plain = sed_opt(tiny_data, model_type='SRGANModel', d=tiny_sed_d(semantic_dim=None))
    del plain['network_sem']
    paths = [write_yaml(tmp_path / 'p.yml', plain), write_yaml(tmp_path / 'p_sed.yml', sed_opt(tiny_data))]
    out = subprocess.run([sys.executable, os.path.join(REPO, 'scripts', 'benchmark_gan_step.py'), *paths, '--iters',
                          '1', '--warmup', '0', '--device', 'cpu', '--json', str(tmp_path / 'b.json')],
                         capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith('| p')]
    assert len(rows) == 2 and 'SeDPatchDiscriminator + sem' in rows[1]
    numbers = yaml.safe_load((tmp_path / 'b.json').read_text())
    assert all(r['sec_per_iter'] > 0 and r['peak_mb'] > 0 for r in numbers) and numbers[1]['semantic']
