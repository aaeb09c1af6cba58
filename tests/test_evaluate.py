"""The evaluation command on a tiny labelled set: table, JSON and picture grid."""
import json
import math

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

from conftest import NUM_CLASSES, run_entry, seg_dataset_opt, write_yaml
from helpers.options import TINY_RRDB, TINY_UNET


def _eval_config(tiny_data, tmp_path):
    from segsr.archs.seg_unet_arch import SegUNet

    torch.manual_seed(0)
    judge = SegUNet(**{k: v for k, v in TINY_UNET.items() if k != 'type'})
    torch.save({'params': judge.state_dict()}, tmp_path / 'judge.pth')
    gen = RRDBNet(**{k: v for k, v in TINY_RRDB.items() if k != 'type'}, scale=4)
    torch.save({'params': gen.state_dict()}, tmp_path / 'stock_net_g.pth')  # stock BasicSR format, no params_ema
    return {
        'name': 'tiny_eval', 'scale': 4, 'num_gpu': 0,
        'dataset': seg_dataset_opt(tiny_data, 'val'),
        'judge': {'network': dict(TINY_UNET), 'path': str(tmp_path / 'judge.pth')},
        'methods': [{'name': 'bicubic', 'type': 'bicubic'},
                    {'name': 'RRDB', 'type': 'generator', 'network_g': dict(TINY_RRDB, scale=4),
                     'path': str(tmp_path / 'stock_net_g.pth')},
                    {'name': 'HR', 'type': 'hr'}],
        'grid': {'num_images': 2},
    }


def test_evaluate_command_writes_table_json_and_grid(tiny_data, tmp_path):
    cfg = dict(_eval_config(tiny_data, tmp_path), reference='bicubic', bootstrap={'block': 1, 'samples': 200})
    run_entry('evaluate.py', write_yaml(tmp_path / 'eval.yml', cfg), tmp_path)
    out = tmp_path / 'results' / 'tiny_eval'
    table = (out / 'results.md').read_text()
    for name in ('bicubic', 'RRDB', 'HR'):
        assert f'| {name} |' in table
    data = json.loads((out / 'results.json').read_text())
    assert data['num_images'] == 2 and list(data['methods']) == ['bicubic', 'RRDB', 'HR']
    for name, res in data['methods'].items():
        for key in ('psnr', 'ssim', 'judge_miou', 'judge_pixacc', 'sec_per_img'):
            if (name, key) != ('HR', 'psnr'):
                assert math.isfinite(res[key]), (name, key)
        assert len(res['judge_iou']) == NUM_CLASSES
    assert data['methods']['HR']['psnr'] is None  # infinite PSNR of HR against itself is written as null
    assert data['methods']['HR']['ssim'] == pytest.approx(1.0)
    # paired intervals against the reference row: none for the reference itself, the point difference inside
    assert data['reference'] == 'bicubic' and data['methods']['bicubic']['judge_miou_vs_reference'] == {}
    for name in ('RRDB', 'HR'):
        ci = data['methods'][name]['judge_miou_vs_reference']
        assert ci['diff'] == pytest.approx(data['methods'][name]['judge_miou'] - data['methods']['bicubic']['judge_miou'])
        assert ci['low'] <= ci['high'] and (ci['block'], ci['num_blocks'], ci['samples']) == (1, 2, 200)
    assert '| judge mIoU - bicubic [95% CI] |' in table and '| — |' in table
    saved = np.load(out / 'judge_confusion.npz')
    assert list(saved['methods']) == ['bicubic', 'RRDB', 'HR'] and saved['matrices'].shape == (3, 2, NUM_CLASSES, NUM_CLASSES)
    assert len(saved['images']) == 2 and saved['matrices'][2].sum() > 0
    grid = cv2.imread(str(out / 'grid.png'))
    assert grid is not None and grid.shape[0] > 2 * 128 and grid.shape[1] > 4 * 128


def test_evaluation_matches_direct_computation(tiny_data, tmp_path):
    """The judge mIoU of the HR row equals a confusion matrix computed by hand over the same set."""
    from basicsr.data import build_dataset
    from segsr.archs.seg_unet_arch import SegUNet
    from segsr.evaluate import run_evaluation
    from segsr.metrics import ConfusionMatrix

    cfg = _eval_config(tiny_data, tmp_path)
    cfg['methods'] = [{'name': 'HR', 'type': 'hr'}]
    res = run_evaluation(cfg, str(tmp_path / 'out'))
    judge = SegUNet(**{k: v for k, v in TINY_UNET.items() if k != 'type'})
    judge.load_state_dict(torch.load(tmp_path / 'judge.pth')['params'])
    judge.eval()
    cm = ConfusionMatrix(NUM_CLASSES)
    ds = build_dataset(dict(cfg['dataset'], phase='val', scale=4))
    with torch.no_grad():
        for i in range(len(ds)):
            cm.update(judge(ds[i]['gt'][None])['out'], ds[i]['seg'][None])
    assert res['HR']['judge_miou'] == pytest.approx(cm.compute().miou)


def test_evaluate_config_errors(tiny_data, tmp_path):
    from segsr.evaluate import load_config, run_evaluation

    cfg = _eval_config(tiny_data, tmp_path)
    bad = dict(cfg, methods=[{'name': 'x', 'type': 'generator', 'network_g': {'type': 'NoNet'}, 'path': 'a.pth'}])
    with pytest.raises(ValueError, match="'network_g_0.type' = 'NoNet'"):
        load_config(write_yaml(tmp_path / 'bad.yml', bad))
    with pytest.raises(ValueError, match=r"'reference' = 'S->T' is not a method name"):
        load_config(write_yaml(tmp_path / 'bad3.yml', dict(cfg, reference='S->T')))
    with pytest.raises(ValueError, match=r"'bootstrap' has unknown keys \['blocks'\]"):
        load_config(write_yaml(tmp_path / 'bad4.yml', dict(cfg, bootstrap={'blocks': 5})))
    with pytest.raises(ValueError, match="key 'judge' is required"):
        load_config(write_yaml(tmp_path / 'bad2.yml', {k: v for k, v in cfg.items() if k != 'judge'}))
    missing = dict(cfg, judge=dict(cfg['judge'], path=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match=r"'judge.path'.*nope.pth"):
        run_evaluation(missing, str(tmp_path / 'o'))
    mismatch = dict(cfg, dataset=seg_dataset_opt(tiny_data, 'val', num_classes=NUM_CLASSES + 1))
    with pytest.raises(ValueError, match='num_classes'):
        run_evaluation(mismatch, str(tmp_path / 'o2'))
