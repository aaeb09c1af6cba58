"""Segmentation task networks (TorchvisionSegNet, SegUNet): contract, features, weight loading. CPU, offline."""
import copy

import segsr  # noqa: F401  isort:skip  (must be imported before basicsr)
import pytest
import torch
import torchvision
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torchvision.models import mobilenet_v3_large, resnet50

from segsr.archs.seg_unet_arch import SegUNet
from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD, SegTaskNet
from segsr.archs.torchvision_seg_arch import TorchvisionSegNet
from segsr.weights import extract_state_dict, load_hub_state_dict

TV_ARCHS = ('deeplabv3_resnet50', 'deeplabv3_mobilenet_v3_large', 'lraspp_mobilenet_v3_large', 'fcn_resnet50')
LIGHT_ARCHS = ('deeplabv3_mobilenet_v3_large', 'lraspp_mobilenet_v3_large')


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt to download weights fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f'attempted download: {args} {kwargs}')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torchvision.models._api, 'load_state_dict_from_url', refuse)


def _tv(arch, num_classes=5, **kwargs):
    torch.manual_seed(0)
    return build_network({'type': 'TorchvisionSegNet', 'arch': arch, 'num_classes': num_classes, **kwargs}).eval()


def _unet(num_classes=4, **kwargs):
    torch.manual_seed(0)
    return build_network({'type': 'SegUNet', 'num_classes': num_classes, 'base_channels': 4, 'num_levels': 3,
                          **kwargs}).eval()


def _randomize_bn(net):
    """Non-trivial BN statistics so that a round trip that forgot buffers would be caught."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return net


def test_registered_and_buildable():
    names = [name for name, _ in ARCH_REGISTRY]
    assert 'TorchvisionSegNet' in names and 'SegUNet' in names
    opt = {'type': 'SegUNet', 'num_classes': 3}
    frozen = copy.deepcopy(opt)
    net = build_network(opt)
    assert opt == frozen
    assert isinstance(net, SegTaskNet) and net.num_classes == 3 and not net.has_aux


@pytest.mark.parametrize('arch', TV_ARCHS)
def test_torchvision_shapes_aux_and_c5(arch):
    net = _tv(arch)
    assert net.has_aux == (arch != 'lraspp_mobilenet_v3_large')
    assert 'C5' in net.feature_names
    sizes = [(64, 64)] if 'resnet' in arch else [(64, 64), (33, 47), (1, 1), (70, 19)]
    for h, w in sizes:
        with torch.no_grad():
            res = net(torch.rand(1, 3, h, w), feature_names=['C5'])
        assert res['out'].shape == (1, 5, h, w)
        assert ('aux' in res) == net.has_aux
        if net.has_aux:
            assert res['aux'].shape == (1, 5, h, w)
        stride, channels = (8, 2048) if 'resnet' in arch else (16, 960)
        assert res['features']['C5'].shape == (1, channels, -(-h // stride), -(-w // stride))
    with torch.no_grad():
        assert 'features' not in net(torch.rand(1, 3, 32, 32))


def test_resnet_c4_without_aux_head():
    net = _tv('deeplabv3_resnet50', aux_loss=False)
    assert not net.has_aux and net.feature_names == ('C2', 'C3', 'C4', 'C5')
    with torch.no_grad():
        res = net(torch.rand(1, 3, 64, 64), feature_names=('C4', 'C2'))
    assert set(res) == {'out', 'features'}
    assert res['features']['C4'].shape == (1, 1024, 8, 8)
    assert res['features']['C2'].shape == (1, 256, 16, 16)


@pytest.mark.parametrize('arch', LIGHT_ARCHS)
def test_matches_torchvision_forward(arch):
    net = _randomize_bn(_tv(arch))
    x = torch.rand(2, 3, 45, 61)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = net(x, feature_names=['low', 'high'])
        theirs = net.model((x - mean) / std)
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key])
    assert ours['features']['low'].shape[1] == 40 and ours['features']['high'].shape[1] == 960


def test_input_norm_off_and_train_mode():
    net = _tv('lraspp_mobilenet_v3_large', input_norm=False).train()
    res = net(torch.randn(2, 3, 40, 40))
    assert res['out'].shape == (2, 5, 40, 40)


@pytest.mark.parametrize('kwargs', [{}, {'aux_head': True}, {'bilinear': False, 'aux_head': True}])
def test_segunet_shapes_and_features(kwargs):
    net = _unet(**kwargs)
    assert net.feature_names == ('enc1', 'enc2', 'enc3', 'C5', 'bottleneck', 'dec3', 'dec2', 'dec1')
    for h, w in [(32, 32), (37, 53), (1, 1), (9, 130)]:
        with torch.no_grad():
            res = net(torch.rand(2, 3, h, w), feature_names=net.feature_names)
        assert res['out'].shape == (2, 4, h, w)
        assert ('aux' in res) == net.has_aux == bool(kwargs.get('aux_head'))
        if net.has_aux:
            assert res['aux'].shape == (2, 4, h, w)
        feats = res['features']
        assert feats['C5'].shape == (2, 16 if kwargs.get('bilinear', True) else 32, -(-h // 8), -(-w // 8))
        for i, stride in ((1, 1), (2, 2), (3, 4)):
            assert feats[f'enc{i}'].shape[-2:] == (-(-h // stride), -(-w // stride))
            assert feats[f'dec{i}'].shape[-2:] == feats[f'enc{i}'].shape[-2:]
    net.train()(torch.rand(2, 3, 17, 23))['out'].mean().backward()


def test_segunet_default_size():
    net = SegUNet(num_classes=11)
    n_params = sum(p.numel() for p in net.parameters())
    assert 1.0e6 < n_params < 1.2e6
    with pytest.raises(ValueError, match='in_channels'):
        SegUNet(num_classes=2, in_channels=1)
    gray = SegUNet(num_classes=2, in_channels=1, input_norm=False, base_channels=4).eval()
    assert gray(torch.rand(1, 1, 8, 8))['out'].shape == (1, 2, 8, 8)


def test_errors_for_unknown_names():
    net = _unet()
    with pytest.raises(ValueError, match=r"unknown feature name.*'C9'.*enc1"):
        net(torch.rand(1, 3, 16, 16), feature_names=['C5', 'C9'])
    with pytest.raises(ValueError, match='3 x H x W'):
        net(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"unknown arch 'deeplabv3_resnet18'.*lraspp_mobilenet_v3_large"):
        TorchvisionSegNet('deeplabv3_resnet18', num_classes=3)
    with pytest.raises(ValueError, match='no aux head'):
        TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=3, aux_loss=True)
    with pytest.raises(ValueError, match='hub'):
        SegUNet(num_classes=3, pretrained='hub')


@pytest.mark.parametrize('builder', [_unet, lambda: _tv('lraspp_mobilenet_v3_large')])
def test_norm_buffers_not_in_state_dict(builder):
    net = builder()
    assert 'mean' in dict(net.named_buffers()) and 'std' in dict(net.named_buffers())
    assert 'mean' not in net.state_dict() and 'std' not in net.state_dict()


@pytest.mark.parametrize('fmt', ['plain', 'params', 'params_ema', 'ddp'])
def test_segunet_round_trip(fmt, tmp_path):
    src = _randomize_bn(_unet(aux_head=True))
    state = src.state_dict()
    obj = {
        'plain': state,
        'params': {'params': state},
        'params_ema': {'params': {k: torch.zeros_like(v) for k, v in state.items()}, 'params_ema': state},
        'ddp': {'params': {'module.' + k: v for k, v in state.items()}},
    }[fmt]
    path = str(tmp_path / f'unet_{fmt}.pth')
    torch.save(obj, path)
    torch.manual_seed(5)
    dst = build_network({'type': 'SegUNet', 'num_classes': 4, 'base_channels': 4, 'num_levels': 3,
                         'aux_head': True, 'pretrained': path}).eval()
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        a, b = src(x), dst(x)
    torch.testing.assert_close(a['out'], b['out'], rtol=0, atol=0)
    torch.testing.assert_close(a['aux'], b['aux'], rtol=0, atol=0)
    no_aux = SegUNet(4, base_channels=4, num_levels=3, pretrained=path).eval()  # aux weights are ignored
    with torch.no_grad():
        torch.testing.assert_close(no_aux(x)['out'], a['out'], rtol=0, atol=0)
    if fmt == 'params_ema':  # explicit param_key picks the other copy
        other = SegUNet(4, base_channels=4, num_levels=3, aux_head=True, pretrained=path, param_key='params')
        assert all(float(p.detach().abs().sum()) == 0 for p in other.parameters())


@pytest.mark.parametrize('fmt', ['plain', 'params', 'torchvision'])
def test_torchvision_round_trip(fmt, tmp_path):
    arch = 'deeplabv3_mobilenet_v3_large'
    src = _randomize_bn(_tv(arch))
    obj = {
        'plain': src.state_dict(),
        'params': {'params': src.state_dict()},
        'torchvision': src.model.state_dict(),
    }[fmt]
    path = str(tmp_path / f'tv_{fmt}.pth')
    torch.save(obj, path)
    torch.manual_seed(5)
    dst = TorchvisionSegNet(arch, num_classes=5, pretrained=path).eval()
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        a, b = src(x, ['C5']), dst(x, ['C5'])
    for key in ('out', 'aux'):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    torch.testing.assert_close(a['features']['C5'], b['features']['C5'], rtol=0, atol=0)
    # a net without aux head takes the same file, ignoring the aux weights
    no_aux = TorchvisionSegNet(arch, num_classes=5, aux_loss=False, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(no_aux(x)['out'], a['out'], rtol=0, atol=0)


def test_bad_files_name_the_file(tmp_path):
    missing = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        SegUNet(num_classes=4, pretrained=missing)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=4, pretrained_backbone=missing)

    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='corrupt.pth'):  # one error type for bad files (segsr.weights)
        SegUNet(num_classes=4, pretrained=str(corrupt))

    wrong = str(tmp_path / 'wrong_keys.pth')
    torch.save({'params': _unet().state_dict()}, wrong)
    with pytest.raises(ValueError, match=r"wrong_keys.pth.*missing keys.*unexpected keys"):
        TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=4, pretrained=wrong)
    with pytest.raises(ValueError, match=r"wrong_keys.pth.*shape mismatch"):  # other num_classes
        SegUNet(num_classes=7, base_channels=4, num_levels=3, pretrained=wrong)
    with pytest.raises(ValueError, match=r"wrong_keys.pth.*no key 'params_x'"):
        SegUNet(num_classes=4, base_channels=4, num_levels=3, pretrained=wrong, param_key='params_x')

    ours = str(tmp_path / 'lraspp5.pth')
    torch.save(_tv('lraspp_mobilenet_v3_large', num_classes=5).state_dict(), ours)
    with pytest.raises(ValueError, match=r'lraspp5.pth.*shape mismatch'):  # our own layout stays strict
        TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=3, pretrained=ours)


def test_extract_state_dict_does_not_mutate():
    ckpt = {'params': {'module.a': torch.zeros(1)}, 'iter': 3}
    frozen = copy.deepcopy(ckpt)
    assert list(extract_state_dict(ckpt, 'x.pth')) == ['a']
    assert ckpt.keys() == frozen.keys() and list(ckpt['params']) == ['module.a']


def test_hub_weights_with_other_class_count(monkeypatch):
    from torchvision.models import segmentation

    torch.manual_seed(3)
    hub_model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    requested = []

    def fake_hub(weights):
        requested.append(weights)
        return hub_model.state_dict()

    monkeypatch.setattr('segsr.archs.torchvision_seg_arch.load_hub_state_dict', fake_hub)
    net = TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=6, pretrained='hub')
    assert requested == [segmentation.LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1]
    ours = net.model.state_dict()
    for key, value in hub_model.state_dict().items():
        if key.startswith(('classifier.low_classifier.', 'classifier.high_classifier.')):
            assert ours[key].shape[0] == 6
        else:
            assert torch.equal(ours[key], value), key
    same = TorchvisionSegNet('lraspp_mobilenet_v3_large', num_classes=21, pretrained='hub')
    assert all(torch.equal(v, hub_model.state_dict()[k]) for k, v in same.model.state_dict().items())


def test_hub_download_failure_is_explained():
    from torchvision.models import MobileNet_V3_Large_Weights

    with pytest.raises(RuntimeError, match='local path'):
        load_hub_state_dict(MobileNet_V3_Large_Weights.IMAGENET1K_V1)


def test_pretrained_backbone_from_torchvision_files(tmp_path):
    torch.manual_seed(7)
    mbv3 = mobilenet_v3_large(weights=None)
    path = str(tmp_path / 'mobilenet_v3_large-local.pth')
    torch.save(mbv3.state_dict(), path)
    net = _tv('lraspp_mobilenet_v3_large', pretrained_backbone=path)
    for key, value in net.model.backbone.state_dict().items():
        assert torch.equal(value, mbv3.features.state_dict()[key]), key

    rn = resnet50(weights=None)
    rn_path = str(tmp_path / 'resnet50-local.pth')
    torch.save(rn.state_dict(), rn_path)
    net = _tv('fcn_resnet50', pretrained_backbone=rn_path)
    torch.testing.assert_close(net.model.backbone.layer4[2].conv3.weight, rn.layer4[2].conv3.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match='mobilenet_v3_large-local.pth'):
        _tv('deeplabv3_resnet50', pretrained_backbone=path)


@pytest.mark.parametrize('builder', [_unet, lambda: _tv('lraspp_mobilenet_v3_large')])
def test_gradient_flows_to_input_of_frozen_net(builder):
    net = builder()
    net.requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    res = net(x, feature_names=['C5'])
    (res['out'].logsumexp(1).mean() + res['features']['C5'].abs().mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
