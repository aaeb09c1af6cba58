"""The one-command benchmark (segsr/benchmark.py): profiles, generated options, the smoke run and its resume."""
import json
import math
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, write_yaml
from segsr.benchmark import ROWS, TRAIN_STEPS, DataInfo, OptionBuilder, deep_merge, load_profile
from segsr.models.task_eval import TaskScorer
from segsr.utils.amp import amp_dtype

DATA = DataInfo('/data/camvid', 'camvid', 11, 255, 'lmdb')
GENERATOR_ROWS = [r for r in ROWS if r.kind == 'generator']


def _builder(profile='quick', **changes):
    return OptionBuilder(deep_merge(load_profile(profile), changes), DATA, '/out', 'cpu')


def _values(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _values(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _values(v)
    else:
        yield tree


def test_every_step_is_the_method_it_claims_on_one_schedule():
    b = _builder()
    opts = b.all()
    assert list(opts) == list(TRAIN_STEPS)
    types = {k: (o['model_type'], (o.get('network_d') or {}).get('type')) for k, o in opts.items()}
    assert types == {'judge': ('SegTaskModel', None), 'prior': ('SegTaskModel', None), 'l1': ('SRModel', None),
                     'esrgan': ('ESRGANModel', 'VGGStyleDiscriminator'),
                     'segaware': ('SegAwareGANModel', 'SegAwareDiscriminator'), 'sr4ir': ('SR4IRModel', None),
                     'sed': ('SeDModel', 'SeDPatchDiscriminator'), 'combo': ('SegAwareGANModel', 'SegAwareDiscriminator')}
    sr_steps = ['esrgan', 'segaware', 'sr4ir', 'sed', 'combo']
    # one generator, one start (the L1 RRDB at l1.iters), one schedule, one seed
    assert all(opts[s]['network_g'] == opts['l1']['network_g'] for s in sr_steps)
    assert {opts[s]['path']['pretrain_network_g'] for s in sr_steps} == {'/out/runs/l1/models/net_g_1000.pth'}
    assert opts['l1']['train']['total_iter'] == 1000 + 400 and 1000 % opts['l1']['logger']['save_checkpoint_freq'] == 0
    for key in ('total_iter', 'optim_g', 'pixel_opt', 'ema_decay'):
        assert len({json.dumps(opts[s]['train'][key]) for s in sr_steps}) == 1, key
    assert len({json.dumps(opts[s]['train']['gan_opt']) for s in sr_steps if s != 'sr4ir'}) == 1
    assert {o['manual_seed'] for k, o in opts.items() if k != 'prior'} == {0} and opts['prior']['manual_seed'] == 1
    assert all(opts[s]['train']['relativistic'] for s in ('segaware', 'sed', 'combo'))  # as ESRGANModel
    # the judge scores every row, so no SR step may see it; SeD, TDP and SR4IR use the prior
    judge_ckpt = b.checkpoint('judge', 'task')
    assert all(judge_ckpt not in list(_values(opts[s])) for s in ['l1'] + sr_steps)
    prior_ckpt = b.checkpoint('prior', 'task')
    assert opts['sed']['network_sem']['pretrained'] == prior_ckpt == opts['combo']['network_sem']['pretrained']
    assert opts['combo']['path']['pretrain_network_task'] == prior_ckpt == opts['sr4ir']['path']['pretrain_network_task']
    assert 'tdp_opt' in opts['combo']['train'] and 'task_adv_opt' in opts['combo']['train']
    assert opts['sed']['network_d']['semantic_dim'] == opts['combo']['network_d']['semantic_dim'] == 128
    assert all(o['num_gpu'] == 0 for o in opts.values()) and all(o['train']['amp'] is False for o in opts.values())


def test_full_profile_uses_cuda_bf16_and_paper_sizes():
    p = load_profile('full')
    assert p['device'] == 'auto' and p['amp'] == 'auto' and p['gan']['perceptual_weight'] > 0
    opts = OptionBuilder(p, DATA, '/out', 'auto').all()
    assert all(o['num_gpu'] == 'auto' and o['train']['amp'] == 'auto' for o in opts.values())
    assert opts['esrgan']['train']['perceptual_opt']['layer_weights'] == {'conv5_4': 1}
    assert opts['l1']['network_g']['num_block'] == 23


def test_overrides_merge_into_one_step_without_touching_the_profile():
    profile = load_profile('quick')
    profile['overrides'] = {'sed': {'network_d': {'num_feat': 48}}}
    before = json.dumps(profile, sort_keys=True, default=str)
    opts = OptionBuilder(profile, DATA, '/out', 'cpu').all()
    assert opts['sed']['network_d']['num_feat'] == 48 and opts['esrgan']['network_d']['num_feat'] == 32
    assert json.dumps(profile, sort_keys=True, default=str) == before


@pytest.mark.parametrize('change, match', [
    (lambda p: p.pop('gan'), "key 'gan' is required"),
    (lambda p: p['judge'].pop('iters'), r"'judge' needs keys \['iters'\]"),
    (lambda p: p['gan'].update(gt_size=96), "gan.gt_size' = 96"),
    (lambda p: p.update(device='tpu'), "'device' = 'tpu'"),
    (lambda p: p.update(overrides={'srgan': {}}), "unknown steps"),
])
def test_bad_profile_is_refused_with_file_and_key(tmp_path, change, match):
    profile = load_profile('quick')
    change(profile)
    path = write_yaml(tmp_path / 'bad.yml', profile)
    with pytest.raises(ValueError, match=match) as err:
        load_profile(path)
    assert 'bad.yml' in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"shipped profiles: \['full', 'quick', 'smoke'\]"):
        load_profile('medium')
    with pytest.raises(FileNotFoundError, match="'nowhere/medium.yml' does not exist"):
        load_profile('nowhere/medium.yml')


def test_amp_option():
    cpu = torch.device('cpu')
    assert amp_dtype({'train': {}}, cpu) is None and amp_dtype({'train': {'amp': False}}, cpu) is None
    assert amp_dtype({'train': {'amp': 'auto'}}, cpu) is None  # auto: bf16 on a CUDA GPU only
    assert amp_dtype({'train': {'amp': 'bf16'}}, cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="'train.amp' = 'fp16'.*loss scaling"):
        amp_dtype({'train': {'amp': 'fp16'}}, cpu)
    with pytest.raises(ValueError, match="'train.amp' = 'yes'"):
        amp_dtype({'train': {'amp': 'yes'}}, cpu)


def test_bf16_training_through_the_entry_point(tiny_data, tmp_path):
    """``train.amp: bf16`` runs a stock BasicSR model's steps under autocast; weights and checkpoints stay fp32."""
    from conftest import logger_opt, read_log, run_entry, seg_dataset_opt
    from test_train_pipeline import TINY_RRDB

    opt = {'name': 'amp', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'train': seg_dataset_opt(tiny_data, 'train')}, 'network_g': dict(TINY_RRDB),
           'path': {'resume_state': None},
           'train': {'amp': 'bf16', 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 2, 'warmup_iter': -1,
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10]},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
           'logger': logger_opt()}
    run_entry('train.py', write_yaml(tmp_path / 'amp.yml', opt), tmp_path)
    log = read_log(tmp_path / 'experiments' / 'amp')
    assert 'autocast(cpu, torch.bfloat16)' in log
    assert math.isfinite(float(re.findall(r'l_pix: ([0-9.e+-]+)', log)[-1]))
    state = torch.load(tmp_path / 'experiments' / 'amp' / 'models' / 'net_g_latest.pth', map_location='cpu')
    assert all(v.dtype == torch.float32 for v in state['params'].values())


def test_scorer_averages_niqe_over_images_where_it_is_defined(monkeypatch):
    import segsr.models.task_eval as task_eval

    calls = iter([np.linalg.LinAlgError('SVD did not converge'), 4.0])

    def fake_metric(data, opt):
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(task_eval, 'calculate_metric', fake_metric)
    scorer = TaskScorer({'niqe': {'type': 'calculate_niqe'}}, {}, None)
    img = torch.rand(1, 3, 8, 8)
    assert math.isnan(scorer.add(img)['niqe']) and scorer.add(img)['niqe'] == 4.0
    assert scorer.summary()['niqe'] == 4.0
    monkeypatch.setattr(task_eval, 'calculate_metric', lambda data, opt: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a failing PSNR is still an error
        TaskScorer({'psnr': {'type': 'calculate_psnr'}}, {}, None).add(img, img)


def _run_smoke(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--profile', 'smoke', '--out',
           str(tmp_path / 'out'), '--data', str(tmp_path / 'data')]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def _mtimes(out):
    """Modification time of each training step's final checkpoint."""
    return {s: os.path.getmtime(os.path.join(out, 'runs', s, 'models',
                                             f'net_{"task" if s in ("judge", "prior") else "g"}_latest.pth'))
            for s in TRAIN_STEPS}


def test_smoke_benchmark_every_row_finite_then_resume_skips_finished_work(tmp_path):
    log = _run_smoke(tmp_path)
    out = tmp_path / 'out'
    table = (out / 'results.md').read_text()
    for row in ROWS:
        assert f'| {row.label} |' in table
    assert 'Command: `' in table and 'Machine: ' in table and 'Date: ' in table
    rows = {r['key']: r for r in json.loads((out / 'results.json').read_text())['rows']}
    assert list(rows) == [r.key for r in ROWS]
    for row in ROWS:
        s = rows[row.key]['summary']
        for key in ('judge_miou', 'judge_pixacc', 'ssim', 'niqe') + (('psnr', ) if row.kind != 'hr' else ()):
            assert s[key] is not None and math.isfinite(s[key]), (row.key, key, s[key])
        if row.own:
            assert 0 <= s['own_miou'] <= 100
        if row.kind == 'generator':
            spd = rows[row.key]['speed']
            assert spd['sec_per_iter'] > 0 and spd['peak_mb'] > 0 and spd['x_esrgan_time'] > 0
            assert s['sec_per_img'] > 0 and rows[row.key]['train']['seconds'] > 0
    assert rows['esrgan']['speed']['x_esrgan_time'] == 1.0
    assert rows['hr']['summary']['ssim'] == pytest.approx(1.0)
    grid = cv2.imread(str(out / 'grid.png'))
    plot = cv2.imread(str(out / 'miou_vs_psnr.png'))
    assert grid is not None and plot is not None and plot.shape[0] > 100
    assert grid.shape[1] > (len(ROWS) + 1) * 288  # LR | 7 methods | HR, 288 px wide each
    for step in TRAIN_STEPS:  # every generated option file is a plain BasicSR option file
        assert yaml.safe_load((out / 'options' / f'{step}.yml').read_text())['name'] == f'benchmark_smoke_{step}'
    assert 'niqe is undefined' not in log

    # a rerun redoes nothing
    before = _mtimes(out)
    log = _run_smoke(tmp_path)
    assert log.count('trained already') == len(TRAIN_STEPS) and log.count('evaluated already') == len(ROWS)
    assert 'timing training steps' not in log and _mtimes(out) == before

    # an interrupted benchmark: one training step died after its last saved state, one row was not evaluated
    os.remove(out / 'state' / 'train_combo.json')
    os.remove(out / 'runs' / 'combo' / 'models' / 'net_g_latest.pth')
    os.remove(out / 'state' / 'eval_sed.json')
    log = _run_smoke(tmp_path)
    assert log.count('trained already') == len(TRAIN_STEPS) - 1 and 'combo: training' in log
    assert log.count('evaluated already') == len(ROWS) - 1 and 'SeD (P+SeD): judge mIoU' in log
    combo_log = (out / 'logs' / 'train_combo.txt').read_text()
    assert 'Resuming training from epoch' in combo_log  # BasicSR's auto-resume from the saved state
    after = _mtimes(out)
    assert all(after[k] == before[k] for k in before if k != 'combo')
    assert json.loads((out / 'results.json').read_text())['rows'][-1]['summary']['judge_miou'] is not None


def test_changed_options_are_not_resumed_into_a_finished_run(tmp_path):
    from segsr.benchmark import Benchmark

    profile = load_profile('smoke')
    bench = Benchmark(profile, str(tmp_path / 'out'), str(tmp_path / 'data'))
    bench.write_options('l1')
    os.makedirs(bench.builder.run_dir('l1'))
    changed = deep_merge(profile, {'l1': {'lr': 1e-3}})
    with pytest.raises(ValueError, match=r'options of step l1 changed'):
        Benchmark(changed, str(tmp_path / 'out'), str(tmp_path / 'data')).write_options('l1')


def _fake_segnet_camvid(src):
    """A SegNet-layout CamVid folder in miniature: two splits, 2 frames each, class ids 0..11 (11 = Unlabelled)."""
    rng = np.random.default_rng(0)
    for split, count in (('train', 2), ('val', 2)):
        os.makedirs(src / split)
        os.makedirs(src / f'{split}annot')
        for i in range(count):
            cv2.imwrite(str(src / split / f'0001TP_{i:06d}.png'), rng.integers(0, 256, (36, 48, 3), dtype=np.uint8))
            cv2.imwrite(str(src / f'{split}annot' / f'0001TP_{i:06d}.png'), rng.integers(0, 12, (36, 48), dtype=np.uint8))


def test_camvid_profile_prepares_from_source_or_names_the_flag(tmp_path):
    from segsr.benchmark import prepare_data

    data_opt = load_profile('quick')['data']
    with pytest.raises(FileNotFoundError, match='pass --source'):
        prepare_data(data_opt, str(tmp_path / 'camvid'))
    with pytest.raises(FileNotFoundError, match="'.*nowhere' does not exist"):
        prepare_data(data_opt, str(tmp_path / 'camvid'), str(tmp_path / 'nowhere'))
    _fake_segnet_camvid(tmp_path / 'src')
    info = prepare_data(data_opt, str(tmp_path / 'camvid'), str(tmp_path / 'src'))
    assert (info.name, info.num_classes, info.ignore_index, info.backend) == ('camvid', 11, 255, 'lmdb')
    src = cv2.imread(str(tmp_path / 'src' / 'valannot' / '0001TP_000001.png'), cv2.IMREAD_UNCHANGED)
    seg = cv2.imread(str(tmp_path / 'camvid' / 'val' / 'seg' / '0001TP_000001.png'), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(seg, np.where(src == 11, 255, src))  # Unlabelled -> ignore_index, the rest unchanged
