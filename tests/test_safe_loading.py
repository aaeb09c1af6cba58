"""Loading you can trust: checkpoints never run code and failures name the option and the file; images keep their
bit depth; datasets refuse sizes the scale does not divide when they are built."""
import ast
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.models import build_model

from conftest import REPO, NUM_CLASSES, seg_dataset_opt, write_yaml
from helpers.models import Payload
from helpers.options import seg_sr_opt
from helpers.models import runtime_opt
from helpers.options import TINY_RRDB, TINY_UNET, seg_task_opt, stock_esrgan_opt

from segsr.data.lmdb_util import make_lmdb
from segsr.data.paired_image_seg_dataset import PairedImageSegDataset
from segsr.utils.model_io import load_generator, load_segmenter

NOT_READABLE = r"is not a readable checkpoint \(read with weights_only=True"


# ---------------------------------------------------------------------------------------------------- files
def plant(path: Path) -> Path:
    """Write a checkpoint whose unpickling would create ``<path>.ran``; return that marker path."""
    marker = Path(f'{path}.ran')
    torch.save({'params': {'w': torch.zeros(1)}, 'extra': Payload(str(marker))}, path)
    return marker


def save_params(path: Path, block: dict, **extra) -> dict:
    """Save ``{'params': state}`` of a fresh ``block`` network (plus ``extra`` keys); return the state."""
    state = build_network(copy.deepcopy(block)).state_dict()
    torch.save(dict({'params': state}, **extra), path)
    return state


def stock_sr_opt(tiny_data, tmp_path, load_path, is_train=False, **path_opt) -> dict:
    """BasicSR's stock ``SRModel`` with ``path.pretrain_network_g`` = ``load_path``."""
    opt = stock_esrgan_opt(tiny_data, 2)
    opt.update(model_type='SRModel', datasets={})
    opt['path'].update(pretrain_network_g=str(load_path), **path_opt)
    return runtime_opt(opt, tmp_path, is_train=is_train)


def option_error(option: str, path: Path) -> str:
    """Regex of an error naming ``option`` and the file ``path``."""
    return rf"(?s)Option '{re.escape(option)}'.*'{re.escape(str(path))}'"


# ------------------------------------------------------------------------------------- planted pickles
def test_planted_pickle_is_live(tmp_path):
    """The payload used below does run under a plain unpickler: a refusal that leaves no marker is meaningful."""
    marker = plant(tmp_path / 'evil.pth')
    torch.load(tmp_path / 'evil.pth', weights_only=False)
    assert marker.exists()


def _build_seg_sr(tiny_data, tmp_path, evil):
    opt = seg_sr_opt(tiny_data, None)
    opt['path'] = {'pretrain_network_g': str(evil)}
    build_model(runtime_opt(opt, tmp_path, is_train=False))


def _build_stock_sr(tiny_data, tmp_path, evil):
    build_model(stock_sr_opt(tiny_data, tmp_path, evil))


def _build_seg_task(tiny_data, tmp_path, evil):
    build_model(runtime_opt(seg_task_opt(tiny_data, 2, path={'pretrain_network_task': str(evil)}), tmp_path))


def _build_frozen_task(tiny_data, tmp_path, evil):
    from helpers.options import sr4ir_opt

    opt = sr4ir_opt(tiny_data, tmp_path, judge=False)
    opt['path'] = {'pretrain_network_task': str(evil)}
    build_model(runtime_opt(opt, tmp_path, is_train=False))  # SR4IR testing: the frozen task network


def _build_judge(tiny_data, tmp_path, evil):
    build_model(runtime_opt(seg_sr_opt(tiny_data, {'network': dict(TINY_UNET), 'path': str(evil)}), tmp_path))


def _evaluate_method(tiny_data, tmp_path, evil):
    from segsr.evaluate import build_method

    build_method({'name': 'm', 'type': 'generator', 'path': str(evil)}, torch.device('cpu'))


def _lpips_backbone(tiny_data, tmp_path, evil):
    from segsr.sr_bench import freeze_lpips

    freeze_lpips(None, str(evil), 'alex')  # the backbone file is read before the LPIPS model is touched


@pytest.mark.parametrize('load, option', [
    (_build_seg_sr, 'path.pretrain_network_g'),
    (_build_stock_sr, 'path.pretrain_network_g'),
    (_build_seg_task, 'path.pretrain_network_task'),
    (_build_frozen_task, 'path.pretrain_network_task'),
    (_build_judge, 'val.judge.path'),
    (lambda d, t, evil: load_generator(str(evil), option_name='--model'), '--model'),
    (lambda d, t, evil: load_segmenter(str(evil)), '--seg'),
    (_evaluate_method, "methods['m'].path"),
    (_lpips_backbone, 'lpips.backbone_path'),
], ids=['seg_sr_g', 'stock_sr_g', 'seg_task_task', 'sr4ir_frozen_task', 'judge', 'load_generator', 'load_segmenter', 'evaluate',
        'lpips_backbone'])
def test_planted_pickle_is_refused_naming_option_and_file(tiny_data, tmp_path, load, option):
    evil = tmp_path / 'evil.pth'
    marker = plant(evil)
    with pytest.raises(ValueError, match=option_error(option, evil) + ' ' + NOT_READABLE):
        load(tiny_data, tmp_path, evil)
    assert not marker.exists()


def test_stock_esrgan_training_refuses_planted_pretrain_file(tiny_data, tmp_path):
    """Through ``segsr/train.py`` as a user runs it: BasicSR's ``ESRGANModel`` gets segsr's ``load_network``."""
    evil = tmp_path / 'evil.pth'
    marker = plant(evil)
    opt = stock_esrgan_opt(tiny_data, 2)
    opt['path']['pretrain_network_g'] = str(evil)
    cmd = [sys.executable, os.path.join(REPO, 'segsr', 'train.py'), '-opt', write_yaml(tmp_path / 'o.yml', opt)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert re.search(option_error('path.pretrain_network_g', evil) + ' ' + NOT_READABLE, proc.stderr), proc.stderr
    assert not marker.exists()


# ---------------------------------------------------------------------------------- broken pretrain files
def _truncated(path: Path) -> None:
    save_params(path, TINY_RRDB)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize('write, message', [
    (lambda p: p.write_bytes(b''), r"is empty \(0 bytes\)"),
    (_truncated, NOT_READABLE),
    (lambda p: p.write_text('not a checkpoint at all\n'), NOT_READABLE),
    (lambda p: save_params(p, dict(TINY_RRDB, num_feat=16)), r"does not fit RRDBNet: .*size mismatch"),
    (lambda p: torch.save({'weights': build_network(dict(TINY_RRDB)).state_dict()}, p), r"has no key 'params'"),
    (lambda p: save_params(p, dict(TINY_RRDB, num_block=2)), r"does not fit RRDBNet: .*Unexpected key"),
], ids=['empty', 'truncated', 'text', 'shape', 'no_param_key', 'unexpected_keys'])
@pytest.mark.parametrize('stock', [False, True], ids=['segsr', 'basicsr'])
def test_broken_pretrain_file_names_option_and_file(tiny_data, tmp_path, write, message, stock):
    path = tmp_path / 'net_g.pth'
    write(path)
    with pytest.raises(ValueError, match=option_error('path.pretrain_network_g', path) + '.*' + message):
        (_build_stock_sr if stock else _build_seg_sr)(tiny_data, tmp_path, path)


def test_missing_pretrain_file_names_option_and_file(tiny_data, tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError, match=option_error('path.pretrain_network_g', path) + ' does not exist'):
        _build_stock_sr(tiny_data, tmp_path, path)


def test_missing_keys_with_strict_load_name_the_file(tiny_data, tmp_path):
    path = tmp_path / 'net_g.pth'
    state = build_network(dict(TINY_RRDB)).state_dict()
    state.pop('conv_last.bias')
    torch.save({'params': state}, path)
    with pytest.raises(ValueError, match=option_error('path.pretrain_network_g', path) + r".*Missing key.*conv_last"):
        _build_stock_sr(tiny_data, tmp_path, path)


# ------------------------------------------------------------------------------ BasicSR's loading semantics
def test_load_network_keeps_basicsr_semantics(tiny_data, tmp_path):
    """``module.`` prefixes go, ``params_ema`` falls back to ``params`` (EMA init), and with ``strict_load_g:
    false`` tensors of another shape are skipped while the others load."""
    path = tmp_path / 'net_g.pth'
    state = build_network(dict(TINY_RRDB)).state_dict()
    state['conv_first.weight'] = torch.randn(8, 3, 3, 3)
    torch.save({'params': {f'module.{k}': v for k, v in state.items()}}, path)
    model = build_model(stock_sr_opt(tiny_data, tmp_path, path, is_train=True, strict_load_g=True))
    for net in (model.net_g, model.net_g_ema):  # net_g_ema: param key params_ema, absent, so params
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())

    wide = dict(state, **{'conv_last.weight': torch.zeros(3, 16, 3, 3)})
    torch.save({'params': wide}, path)
    net = build_model(stock_sr_opt(tiny_data, tmp_path, path, strict_load_g=False)).net_g
    assert torch.equal(net.state_dict()['conv_first.weight'], state['conv_first.weight'])
    assert net.state_dict()['conv_last.weight'].shape == (3, 8, 3, 3)


def test_ema_key_missing_without_params_names_option_file_and_key(tiny_data, tmp_path):
    path = tmp_path / 'net_g.pth'
    torch.save({'weights': build_network(dict(TINY_RRDB)).state_dict()}, path)
    with pytest.raises(ValueError, match=option_error('path.pretrain_network_g', path) + r".*no key 'params_ema'"):
        build_model(stock_sr_opt(tiny_data, tmp_path, path, param_key_g='weights', is_train=True))


def test_load_network_outside_pretrain_options_names_the_model(tiny_data, tmp_path):
    model = build_model(runtime_opt(seg_task_opt(tiny_data, 2), tmp_path))
    path = tmp_path / 'other.pth'
    path.write_bytes(b'')
    with pytest.raises(ValueError, match=option_error('SegTaskModel.load_network(load_path)', path)):
        model.load_network(model.net_task, str(path))


# -------------------------------------------------------------------------------------- torch.load audit
def _unsafe_torch_loads(source: str):
    """``(line, call)`` of each ``torch.load(...)`` call without ``weights_only=True`` (and of hub loads, whose
    ``weights_only`` defaults to False) outside ``_load_resume_state`` (training states, rewritten elsewhere)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        torch_load = func.attr == 'load' and isinstance(func.value, ast.Name) and func.value.id == 'torch'
        if not (torch_load or func.attr in ('load_state_dict_from_url', 'get_state_dict')):
            continue
        if any(k.arg == 'weights_only' and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in node.keywords):
            continue
        scope = node
        while scope in parents and not isinstance(scope, ast.FunctionDef):
            scope = parents[scope]
        if getattr(scope, 'name', None) != '_load_resume_state':
            yield node.lineno, ast.unparse(node)


def test_every_torch_load_is_weights_only():
    files = [p for d in ('segsr', 'scripts') for p in sorted(Path(REPO, d).rglob('*.py'))]
    assert len(files) > 20
    unsafe = [f'{p.relative_to(REPO)}:{line}: {call}' for p in files
              for line, call in _unsafe_torch_loads(p.read_text(encoding='utf-8'))]
    assert not unsafe, 'torch.load without weights_only=True:\n' + '\n'.join(unsafe)


def test_the_audit_sees_calls_over_lines_and_keyword_values():
    source = '''
import torch
def f(p):
    a = torch.load(p,
                   map_location='cpu')
    b = torch.load(p, weights_only=False)
    c = torch.load(p, map_location='cpu',
                   weights_only=True)
    d = weights.get_state_dict(progress=False)
def _load_resume_state(opt):
    return torch.load(opt, weights_only=False)
'''
    assert [line for line, _ in _unsafe_torch_loads(source)] == [4, 6, 9]


# ---------------------------------------------------------------------------------------- image depth
def write_image_set(root: Path, images: dict) -> dict:
    """Write ``hr/<name>.<ext>`` and an all-zero label map per image; return dataset options for ``root``."""
    (root / 'hr').mkdir(parents=True)
    (root / 'seg').mkdir()
    for name, img in images.items():
        assert cv2.imwrite(str(root / 'hr' / name), img)
        cv2.imwrite(str(root / 'seg' / f'{os.path.splitext(name)[0]}.png'), np.zeros(img.shape[:2], np.uint8))
    return dict(name='depth', type='PairedImageSegDataset', phase='val', scale=4, dataroot_gt=str(root / 'hr'),
                dataroot_seg=str(root / 'seg'), io_backend={'type': 'disk'}, num_classes=NUM_CLASSES)


def gt_of(opt: dict, name: str) -> np.ndarray:
    """The dataset's ``gt`` of image ``name`` as ``H x W x 3`` RGB."""
    dataset = PairedImageSegDataset(opt)
    index = [os.path.basename(p['gt_path']) for p in dataset.paths].index(name)
    return dataset[index]['gt'].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_16bit_images_keep_their_depth(tmp_path, backend):
    deep = np.random.default_rng(0).integers(0, 65536, (16, 12, 3), dtype=np.uint16)
    opt = write_image_set(tmp_path / 'data', {'deep.png': deep})
    if backend == 'lmdb':
        for kind, label in (('hr', False), ('seg', True)):
            make_lmdb(str(tmp_path / 'data' / kind), str(tmp_path / f'{kind}.lmdb'), label=label)
        opt.update(dataroot_gt=str(tmp_path / 'hr.lmdb'), dataroot_seg=str(tmp_path / 'seg.lmdb'),
                   io_backend={'type': 'lmdb'})
        name = 'deep'
    else:
        name = 'deep.png'
    gt = gt_of(opt, name)
    expected = deep[:, :, ::-1].astype(np.float64) / 65535
    assert np.abs(gt - expected).max() <= 1 / 65535
    assert np.abs(gt * 255 - np.round(gt * 255)).max() > 0.1  # not 8-bit values in disguise


def test_gray_and_rgba_images(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    bgra = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    opt = write_image_set(tmp_path / 'data', {'gray.png': gray, 'rgba.png': bgra})
    np.testing.assert_allclose(gt_of(opt, 'gray.png'), np.repeat(gray[:, :, None], 3, 2) / 255., atol=1e-7)
    np.testing.assert_allclose(gt_of(opt, 'rgba.png'), bgra[:, :, 2::-1] / 255., atol=1e-7)  # alpha dropped


def test_float_image_is_refused_naming_the_file(tmp_path):
    opt = write_image_set(tmp_path / 'data', {'float.tiff': np.full((8, 8, 3), 0.5, np.float32)})
    path = tmp_path / 'data' / 'hr' / 'float.tiff'
    with pytest.raises(ValueError, match=rf"Dataset 'depth': Image '{re.escape(str(path))}' has float32 pixels"):
        PairedImageSegDataset(opt)[0]


def test_sr_bench_reads_16bit_hr(tmp_path):
    from segsr.sr_bench import load_bench_set

    deep = np.random.default_rng(2).integers(0, 65536, (16, 12, 3), dtype=np.uint16)
    (tmp_path / 'S' / 'HR').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'S' / 'HR' / 'a.png'), deep)
    (_, _, gt), = load_bench_set(str(tmp_path), 'S', 4)
    expected = deep[:, :, ::-1].transpose(2, 0, 1).astype(np.float64) / 65535
    assert np.abs(gt.numpy() - expected).max() <= 1 / 65535


# ------------------------------------------------------------------------------------ crop_to_scale at build
def test_crop_to_scale_false_fails_at_build_naming_the_file(tmp_path):
    img = np.zeros((130, 130, 3), np.uint8)
    opt = write_image_set(tmp_path / 'data', {'a_ok.png': np.zeros((128, 128, 3), np.uint8), 'b_odd.png': img})
    path = tmp_path / 'data' / 'hr' / 'b_odd.png'
    with pytest.raises(ValueError, match=rf"Dataset 'depth': image '{re.escape(str(path))}' of size \(130, 130\) "
                                         r'is not a multiple of scale 4 \(crop_to_scale is False\)'):
        PairedImageSegDataset(dict(opt, crop_to_scale=False))
    assert len(PairedImageSegDataset(opt)) == 2  # crop_to_scale: true (default) crops instead
    train = dict(opt, phase='train', gt_size=64, crop_to_scale=False)
    assert len(PairedImageSegDataset(train)) == 2  # training crops make the LQ: nothing to refuse


def test_crop_to_scale_check_reads_headers_only(tmp_path, monkeypatch):
    opt = write_image_set(tmp_path / 'data', {f'{i}.png': np.zeros((128, 128, 3), np.uint8) for i in range(3)})
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: pytest.fail('pixels decoded at build'))
    monkeypatch.setattr(cv2, 'imread', lambda *a: pytest.fail('pixels decoded at build'))
    assert len(PairedImageSegDataset(dict(opt, crop_to_scale=False))) == 3


def test_seg_dataset_opt_still_builds(tiny_data):
    assert len(PairedImageSegDataset(dict(seg_dataset_opt(tiny_data, 'val'), phase='val', scale=4,
                                          crop_to_scale=False))) == 2
