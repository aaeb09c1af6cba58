"""SR-bench evaluation (Set5 / Set14 / BSD100 layout) on a tiny self-made bench."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.utils.matlab_functions import imresize

from conftest import run_entry, write_yaml
from helpers.options import TINY_RRDB

from segsr.sr_bench import check_niqe_sizes, load_bench_set, load_config, run_sr_bench


@pytest.fixture(scope='module')
def tiny_bench(tmp_path_factory):
    """SetA: HR + LRbicx4 given; SetB: HR only, odd sizes and one grayscale image (NIQE needs two 96 x 96 blocks)."""
    root = tmp_path_factory.mktemp('bench')
    from segsr.data.synthetic import make_scene

    def scene(h, w, seed=[0]):
        seed[0] += 1
        return make_scene(seed[0], h, w)[0][..., ::-1].astype(np.float32) / 255.  # BGR for cv2.imwrite

    for d in ('SetA/HR', 'SetA/LRbicx4', 'SetB/HR'):
        os.makedirs(root / d)
    for i, (h, w) in enumerate([(208, 112), (112, 208)]):
        hr = scene(h, w)
        cv2.imwrite(str(root / 'SetA' / 'HR' / f'a{i}.png'), (hr * 255).round().astype(np.uint8))
        lr = np.clip(imresize(hr, 0.25), 0, 1)
        cv2.imwrite(str(root / 'SetA' / 'LRbicx4' / f'a{i}.png'), (lr * 255).round().astype(np.uint8))
    cv2.imwrite(str(root / 'SetB' / 'HR' / 'b0.png'), (scene(211, 117) * 255).astype(np.uint8))
    gray = (scene(205, 110)[..., 0] * 255).astype(np.uint8)
    cv2.imwrite(str(root / 'SetB' / 'HR' / 'b1_gray.png'), gray)
    return root


def test_load_bench_set_lr_from_folder_or_matlab_bicubic(tiny_bench):
    a = load_bench_set(str(tiny_bench), 'SetA', 4)
    assert [n for n, _, _ in a] == ['a0', 'a1'] and a[0][1].shape == (3, 52, 28) and a[0][2].shape == (3, 208, 112)
    b = load_bench_set(str(tiny_bench), 'SetB', 4)
    (_, lq0, gt0), (_, lq1, gt1) = b
    assert gt0.shape == (3, 208, 116) and lq0.shape == (3, 52, 29)  # mod-crop to the scale
    assert gt1.shape == (3, 204, 108) and torch.equal(gt1[0], gt1[1])  # grayscale read as 3 equal channels
    hr = gt0.permute(1, 2, 0).numpy()
    assert np.allclose(lq0.permute(1, 2, 0).numpy(), np.clip(imresize(hr, 0.25), 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match=r"SetB/b0 \(208x116\) is too small for NIQE"):
        check_niqe_sizes({'SetB': b}, {'niqe': {'type': 'calculate_niqe', 'crop_border': 20}})
    with pytest.raises(FileNotFoundError, match='SetC'):
        load_bench_set(str(tiny_bench), 'SetC', 4)


def test_bad_lr_size_names_the_file(tiny_bench, tmp_path):
    bad = tmp_path / 'bad'
    os.makedirs(bad / 'S' / 'HR')
    os.makedirs(bad / 'S' / 'LRbicx4')
    cv2.imwrite(str(bad / 'S' / 'HR' / 'x.png'), np.zeros((40, 40, 3), np.uint8))
    cv2.imwrite(str(bad / 'S' / 'LRbicx4' / 'x.png'), np.zeros((9, 10, 3), np.uint8))
    with pytest.raises(ValueError, match=r'LRbicx4/x.png is 10x9, expected 10x10'):
        load_bench_set(str(bad), 'S', 4)


def _config(tiny_bench, tmp_path, **extra):
    torch.manual_seed(0)
    from basicsr.archs import build_network

    torch.save({'params': build_network(dict(TINY_RRDB)).state_dict()}, tmp_path / 'g.pth')
    cfg = {'name': 'bench', 'scale': 4, 'num_gpu': 0, 'bench_root': str(tiny_bench), 'sets': ['SetA', 'SetB'],
           'methods': [{'name': 'bicubic', 'type': 'bicubic'}, {'name': 'hr', 'type': 'hr'},
                       {'name': 'tiny', 'type': 'generator', 'network_g': dict(TINY_RRDB),
                        'path': str(tmp_path / 'g.pth'), 'param_key': 'params'}],
           'grid': {'crop': 32}}
    cfg.update(extra)
    return cfg


def test_sr_bench_scores_every_method_and_set(tiny_bench, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_hub'))  # no LPIPS backbone here
    out = tmp_path / 'out'
    res = run_sr_bench(_config(tiny_bench, tmp_path, save_img=True), str(out))
    assert set(res) == {'bicubic', 'hr', 'tiny'}
    for method in res.values():
        assert set(method) == {'SetA', 'SetB'}
    bic = res['bicubic']['SetA']
    assert 15 < bic['psnr'] < 60 and 0 < bic['ssim'] <= 1 and np.isfinite(bic['niqe'])
    assert res['hr']['SetB']['psnr'] is None  # identical images: infinite PSNR, written as null
    assert res['hr']['SetB']['ssim'] == pytest.approx(1.0)
    assert res['tiny']['SetA']['lpips'] is None
    table = (out / 'results.md').read_text()
    assert '| tiny |' in table and 'SetB NIQE' in table and 'LPIPS skipped' in table and 'empty_hub' in table
    assert json.loads((out / 'results.json').read_text())['sets'] == {'SetA': 2, 'SetB': 2}
    grid = cv2.imread(str(out / 'grid.png'))
    assert grid is not None and grid.shape[0] > 2 * 32
    assert (out / 'images' / 'tiny' / 'SetB' / 'b1_gray.png').is_file()


def test_sr_bench_lpips_with_local_backbone(tiny_bench, tmp_path):
    pytest.importorskip('lpips')
    import torchvision

    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / 'alex.pth')
    cfg = _config(tiny_bench, tmp_path, lpips={'net': 'alex', 'backbone_path': str(tmp_path / 'alex.pth')},
                  sets=['SetA'])
    res = run_sr_bench(cfg, str(tmp_path / 'out'))
    assert res['hr']['SetA']['lpips'] == pytest.approx(0.0, abs=1e-6)
    assert res['bicubic']['SetA']['lpips'] > 0


def test_sr_bench_entry_point_and_config_errors(tiny_bench, tmp_path):
    cfg = _config(tiny_bench, tmp_path, sets=['SetA'], lpips={'enabled': False})
    run_entry('sr_bench.py', write_yaml(tmp_path / 'bench.yml', cfg), tmp_path)
    assert 'disabled in the config' in (tmp_path / 'results' / 'bench' / 'results.md').read_text()
    broken = dict(cfg, methods=[{'name': 'x', 'type': 'generator'}])
    with pytest.raises(ValueError, match=r"methods\[0\] \('x'\) needs 'path'"):
        load_config(write_yaml(tmp_path / 'broken.yml', broken))
    with open(tmp_path / 'typo.yml', 'w') as f:
        yaml.safe_dump(dict(cfg, methods=[{'name': 'x', 'type': 'generator', 'path': 'g.pth',
                                           'network_g': {'type': 'RRDBNett'}}]), f)
    with pytest.raises(Exception, match='RRDBNett'):
        load_config(str(tmp_path / 'typo.yml'))


def test_bench_root_is_required_and_checked(tmp_path):
    from segsr.sr_bench import load_config, run_sr_bench

    path = tmp_path / 'b.yml'
    path.write_text('name: b\nmethods: [{name: bicubic, type: bicubic}]\n')
    with pytest.raises(ValueError, match=r"b.yml: key 'bench_root' is required \(the folder holding Set5/"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="bench_root '.*nowhere' is not a folder"):
        run_sr_bench({'name': 'b', 'bench_root': str(tmp_path / 'nowhere'), 'methods': []}, str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()
