"""The user's own segmenter as it is (ImportedSegNet): TorchScript, torch.export, factories, torchvision checkpoints.

Each kind gives the same logits through segsr as the model called directly (resized to the input when it works at a
stride); a factory that cannot be imported or that returns the wrong shape gets an error naming the option.
"""
import copy

import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from torch.nn import functional as F
from torchvision.models import segmentation

from conftest import NUM_CLASSES, logger_opt, seg_dataset_opt
from helpers.segmenters import StridedSegmenter
from segsr.archs.task_net_util import IMAGENET_MEAN, IMAGENET_STD
from segsr.models.task_eval import build_judge
from helpers.models import first_batch, runtime_opt

FACTORY = 'helpers.segmenters:strided_segmenter'
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _direct(model, x, mean=None, std=None, scale=1.0):
    """The user's own call: normalise as the model expects, take the logits, resize them to the input."""
    x = x * scale
    if mean is not None:
        x = (x - mean) / std
    out = model(x)
    logits = out['out'] if isinstance(out, dict) else out
    return F.interpolate(logits, size=x.shape[-2:], mode='bilinear', align_corners=False)


@pytest.fixture
def user_model():
    torch.manual_seed(0)
    return StridedSegmenter(NUM_CLASSES, stride=4).eval()


def test_torchscript_file_gives_the_direct_logits(tmp_path, user_model):
    path = tmp_path / 'seg.pt'
    torch.jit.trace(user_model, torch.rand(1, 3, 32, 32)).save(str(path))
    net = build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, path=str(path), mean='imagenet',
                             std='imagenet')).eval()
    x = torch.rand(2, 3, 40, 56)
    assert net.kind == 'torchscript'
    torch.testing.assert_close(net(x)['out'], _direct(user_model, x, MEAN, STD), rtol=0, atol=1e-6)


def test_exported_program_gives_the_direct_logits_at_any_size(tmp_path, user_model):
    dims = {0: torch.export.Dim('b', min=1, max=16), 2: torch.export.Dim('h', min=16, max=1024),
            3: torch.export.Dim('w', min=16, max=1024)}
    program = torch.export.export(user_model, (torch.rand(2, 3, 32, 48), ), dynamic_shapes={'x': dims})
    path = tmp_path / 'seg.pt2'
    torch.export.save(program, str(path))
    net = build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, path=str(path), input_scale=255.0,
                             mean=[120.0, 110.0, 100.0], std=[60.0, 60.0, 60.0]))
    net.eval()  # an exported program keeps its own mode; the wrapper still switches
    x = torch.rand(1, 3, 44, 60, requires_grad=True)
    out = net(x)['out']
    mean, std = torch.tensor([120., 110., 100.]).view(1, 3, 1, 1), torch.tensor([60.] * 3).view(1, 3, 1, 1)
    torch.testing.assert_close(out, _direct(user_model, x, mean, std, scale=255.0), rtol=0, atol=1e-5)
    out.sum().backward()  # gradients reach the SR image: usable as the frozen net of SR for my segmenter
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize('output', ['tensor', 'dict', 'hf', 'tuple'])
def test_factory_outputs_of_every_shape_and_its_weights(tmp_path, user_model, output):
    weights = tmp_path / 'w.pth'
    torch.save({'params': user_model.state_dict()}, weights)
    net = build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, factory=FACTORY,
                             kwargs={'num_classes': NUM_CLASSES, 'output': output}, pretrained=str(weights))).eval()
    x = torch.rand(2, 3, 36, 52)
    torch.testing.assert_close(net(x)['out'], _direct(user_model, x), rtol=0, atol=1e-6)


def test_torchvision_checkpoint_with_its_arch_name_gives_the_direct_logits(tmp_path):
    torch.manual_seed(0)
    model = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    path = tmp_path / 'lraspp.pth'
    torch.save(model.state_dict(), path)  # a torchvision checkpoint: the model's own keys
    net = build_network(dict(type='TorchvisionSegNet', arch='lraspp_mobilenet_v3_large', num_classes=NUM_CLASSES,
                             pretrained=str(path))).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(net(x)['out'], model((x - MEAN) / STD)['out'], rtol=0, atol=1e-5)


def test_factory_features_for_tdp(user_model):
    net = build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, factory=FACTORY,
                             kwargs={'num_classes': NUM_CLASSES}, feature_layers={'C5': 'encoder.2'})).eval()
    out = net(torch.rand(1, 3, 32, 32), feature_names=['C5'])
    assert net.feature_names == ('C5', ) and out['features']['C5'].shape == (1, 8, 8, 8)
    assert 'features' not in net(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize('block, error, match', [
    (dict(factory='no_such_package.models:build'), ValueError, r"'no_such_package.models:build': cannot import"),
    (dict(factory='helpers.segmenters:missing'), ValueError, r"has no attribute 'missing'"),
    (dict(factory='helpers/segmenters.py'), ValueError, r"must be 'package.module:function'"),
    (dict(factory='helpers.segmenters:not_a_module'), ValueError, r'returned a dict, not a torch.nn.Module'),
    (dict(factory=FACTORY, feature_layers={'C5': 'decoder.1'}), ValueError, r"feature_layers.C5 = 'decoder.1'"),
    (dict(path='missing.pt'), FileNotFoundError, r"path 'missing.pt' does not exist"),
    (dict(path='x.pt', factory=FACTORY), ValueError, r'exactly one of path'),
    (dict(factory=FACTORY, mean='coco'), ValueError, r"mean must be 'imagenet' or three numbers"),
])
def test_bad_blocks_name_the_option(block, error, match):
    with pytest.raises(error, match=match):
        build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, **block))


def test_wrong_number_of_classes_is_an_error_naming_num_classes():
    net = build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES + 1, factory=FACTORY,
                             kwargs={'num_classes': NUM_CLASSES}))
    with pytest.raises(ValueError, match=rf'expected B x num_classes \({NUM_CLASSES + 1}\)'):
        net(torch.rand(1, 3, 16, 16))


def test_torchscript_file_takes_no_feature_layers(tmp_path, user_model):
    path = tmp_path / 'seg.pt'
    torch.jit.trace(user_model, torch.rand(1, 3, 32, 32)).save(str(path))
    with pytest.raises(ValueError, match='feature_layers need a factory model'):
        build_network(dict(type='ImportedSegNet', num_classes=NUM_CLASSES, path=str(path),
                           feature_layers={'C5': 'encoder'}))


def test_sr_for_my_segmenter_and_a_judge_from_a_torchscript_file(tiny_data, tmp_path, user_model):
    """SR4IRModel with a frozen ImportedSegNet (no path.pretrain_network_task) trains 2 steps; it judges too."""
    path = tmp_path / 'seg.pt'
    torch.jit.trace(user_model, torch.rand(1, 3, 32, 32)).save(str(path))
    seg_net = dict(type='ImportedSegNet', num_classes=NUM_CLASSES, path=str(path), mean='imagenet', std='imagenet')
    opt = {
        'name': 'sfms_imported', 'model_type': 'SR4IRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train')},
        'network_g': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4},
        'network_task': seg_net, 'path': {}, 'logger': logger_opt(),
        'train': {'update_sr': True, 'update_task': False, 'total_iter': 2, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'sr_ce_opt': {'type': 'SegCrossEntropyLoss', 'loss_weight': 0.1}},
    }
    opt = runtime_opt(opt, tmp_path)
    model = build_model(opt)
    before = copy.deepcopy(model.net_task.state_dict())
    g0 = [p.detach().clone() for p in model.net_g.parameters()]
    for it in (1, 2):
        model.feed_data(first_batch(opt))
        model.optimize_parameters(it)
    assert set(model.get_current_log()) >= {'l_g_pix', 'l_sr_ce'}
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.net_g.parameters()))
    assert all(torch.equal(v, model.net_task.state_dict()[k]) for k, v in before.items())  # frozen
    judge = build_judge({'network': seg_net}, torch.device('cpu'))  # no checkpoint: the file holds the weights
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(judge(x)['out'], _direct(user_model, x, MEAN, STD), rtol=0, atol=1e-6)
