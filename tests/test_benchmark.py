"""The one-command benchmark (segsr/bench, segsr/benchmark.py): profiles, generated options, row recipes, the smoke
run and its resume."""
import glob
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
from segsr.bench.data import DataInfo
from segsr.bench.options import OptionBuilder
from segsr.bench.profile import deep_merge, load_profile
from segsr.bench.recipes import table_rows
from segsr.models.task_eval import TaskScorer
from segsr.utils.amp import amp_dtype

ROWS = table_rows()
DATA = DataInfo('/data/camvid', 'camvid', 11, 255, 'lmdb', 'seq_train', 'seq_dev')
JUDGES = ('judge', 'deployed', 'judge_lraspp', 'judge_deeplab')  # the smoke profile's frozen nets
GENERATOR_ROWS = [r for r in ROWS if r.kind == 'generator']


def _builder(profile='quick', **changes):
    return OptionBuilder(deep_merge(load_profile(profile), changes), DATA, '/out', 'cpu', '/cache')


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
    assert list(opts) == ['judge', 'deployed', 'l1', 'judge_lraspp', 'judge_deeplab', 's2t_s0', 's2t_s1', 's2t_s2',
                          'esrgan_s0', 'segaware_s0', 'sr4ir_s0', 'sed_s0', 'combo_s0', 'sfms_s0', 'sfms_s1', 'sfms_s2']
    types = {k: (o['model_type'], (o.get('network_d') or {}).get('type')) for k, o in opts.items() if not k.endswith('_s1')}
    assert types == {'judge': ('SegTaskModel', None), 'deployed': ('SegTaskModel', None), 'l1': ('SRModel', None),
                     'judge_lraspp': ('SegTaskModel', None), 'judge_deeplab': ('SegTaskModel', None),
                     's2t_s0': ('SRModel', None), 's2t_s2': ('SRModel', None),
                     'esrgan_s0': ('ESRGANModel', 'VGGStyleDiscriminator'),
                     'segaware_s0': ('SegAwareGANModel', 'SegAwareDiscriminator'), 'sr4ir_s0': ('SR4IRModel', None),
                     'sed_s0': ('SeDModel', 'SeDPatchDiscriminator'),
                     'combo_s0': ('SegAwareGANModel', 'SegAwareDiscriminator'),
                     'sfms_s0': ('SR4IRModel', None), 'sfms_s2': ('SR4IRModel', None)}
    tuned = [k for k in opts if not b.is_start(k)]
    # one generator, one start (the cached L1 start), one schedule; seeds only change manual_seed
    l1_ckpt = b.checkpoint('l1', 'g')
    assert l1_ckpt.startswith('/cache/l1-') and l1_ckpt.endswith('/models/net_g_latest.pth')
    assert all(opts[s]['network_g'] == opts['l1']['network_g'] for s in tuned)
    assert {opts[s]['path']['pretrain_network_g'] for s in tuned} == {l1_ckpt}
    for key in ('total_iter', 'optim_g', 'pixel_opt', 'ema_decay'):
        assert len({json.dumps(opts[s]['train'][key]) for s in tuned}) == 1, key
    assert opts['l1']['train']['total_iter'] == 5000 and opts['s2t_s0']['train']['total_iter'] == 600
    assert len({json.dumps(opts[s]['train']['gan_opt']) for s in tuned if 'network_d' in opts[s]}) == 1
    assert [opts[f's2t_s{i}']['manual_seed'] for i in range(3)] == [0, 1, 2]
    assert opts['deployed']['manual_seed'] == 1 and opts['judge']['manual_seed'] == opts['l1']['manual_seed'] == 0
    assert all(opts[s]['train']['relativistic'] for s in ('segaware_s0', 'sed_s0', 'combo_s0'))  # as ESRGANModel
    assert all(o['datasets']['train']['dataroot_gt'] == '/data/camvid/lmdb/seq_train_hr.lmdb' for o in opts.values())
    # the judge scores every row, so no SR step may see it; SeD, TDP, SR4IR and SR for my segmenter use the deployed net
    judge_ckpt = b.checkpoint('judge', 'task')
    assert all(judge_ckpt not in list(_values(opts[s])) for s in ['l1'] + tuned)
    deployed_ckpt = b.checkpoint('deployed', 'task')
    assert opts['sed_s0']['network_sem']['pretrained'] == deployed_ckpt == opts['combo_s0']['network_sem']['pretrained']
    for s in ('combo_s0', 'sr4ir_s0', 'sfms_s0', 'sfms_s1'):
        assert opts[s]['path']['pretrain_network_task'] == deployed_ckpt
        assert opts[s]['network_task'] == dict(opts['deployed']['network_task'])
    assert opts['sfms_s0']['train']['update_task'] is False and opts['sfms_s0']['train']['sr_ce_opt']['loss_weight'] == 0.1
    assert 'tdp_opt' not in opts['sfms_s0']['train'] and 'tdp_opt' in opts['combo_s0']['train']
    assert 'task_adv_opt' in opts['combo_s0']['train']
    assert opts['sed_s0']['network_d']['semantic_dim'] == opts['combo_s0']['network_d']['semantic_dim'] == 192
    assert all(o['num_gpu'] == 0 for o in opts.values()) and all(o['train']['amp'] is False for o in opts.values())


def test_starting_points_are_cached_by_their_options():
    """A starting point's folder is keyed by what it trains: the same for every profile name, seed list and output
    folder, device and number of loader workers; another when its options change; user checkpoints replace it."""
    a, b = _builder(), OptionBuilder(deep_merge(load_profile('quick'), {'name': 'other', 'seeds': [5], 'num_worker': 6}),
                                     DATA, '/elsewhere', 'cuda', '/cache')  # other loader workers, another device
    assert a.start_steps == ['judge', 'deployed', 'l1', 'judge_lraspp', 'judge_deeplab'] and all(a.run_dir(s) == b.run_dir(s) for s in a.start_steps)
    assert a.run_dir('s2t_s0') == '/out/runs/s2t_s0'
    changed = _builder(l1={'iters': 4000})
    assert changed.run_dir('l1') != a.run_dir('l1') and changed.run_dir('judge') == a.run_dir('judge')
    given = OptionBuilder(load_profile('quick'), DATA, '/out', 'cpu', '/cache', {'l1': 'mine.pth', 'judge': None})
    assert given.checkpoint('l1', 'g') == os.path.abspath('mine.pth')
    assert given.all()['s2t_s0']['path']['pretrain_network_g'] == os.path.abspath('mine.pth')
    assert given.checkpoint('judge', 'task') == a.checkpoint('judge', 'task')


@pytest.mark.parametrize('name', ['quick_transfer', 'quick_transfer_views', 'quick_transfer_ffl',
                                  'quick_transfer_sr4ir_guards'])
def test_gpu_profiles_train_what_their_cpu_profiles_train(name):
    """options/benchmark/gpu/<name>.yml changes only how the runs run (device, workers, jobs, scoring extras): the
    same starting points (cache keys) and the same fine-tuning options, less the loader's settings."""
    cpu, gpu = (load_profile(os.path.join(REPO, 'options', 'benchmark', *parts, f'{name}.yml')) for parts in ((), ('gpu',)))
    assert gpu['device'] == 'cuda' and gpu['jobs'] > 1 and gpu['eval']['niqe'] is False
    a, b = (OptionBuilder(p, DATA, '/out', p.get('device', 'cpu'), '/cache') for p in (cpu, gpu))
    assert a.start_steps == b.start_steps and all(a.run_dir(s) == b.run_dir(s) for s in a.start_steps)
    strip = lambda opt: {k: v for k, v in opt.items() if k not in ('name', 'num_gpu', 'datasets')}
    for step in a.step_ids():
        if not a.is_start(step):
            assert strip(a.all()[step]) == strip(b.all()[step]), step


def test_full_profile_uses_cuda_bf16_and_paper_sizes():
    p = load_profile('full')
    assert p['device'] == 'auto' and p['amp'] == 'auto' and p['finetune']['perceptual_weight'] > 0
    opts = OptionBuilder(p, DATA, '/out', 'auto', '/cache').all()
    assert all(o['num_gpu'] == 'auto' and o['train']['amp'] == 'auto' for o in opts.values())
    assert opts['esrgan_s0']['train']['perceptual_opt']['layer_weights'] == {'conv5_4': 1}
    assert opts['l1']['network_g']['num_block'] == 23


def test_overrides_merge_into_one_step_without_touching_the_profile():
    profile = load_profile('quick')
    profile['overrides'] = {'sed': {'network_d': {'num_feat': 48}}, 'l1': {'train': {'ema_decay': 0.99}}}
    before = json.dumps(profile, sort_keys=True, default=str)
    builder = OptionBuilder(profile, DATA, '/out', 'cpu', '/cache')
    opts = builder.all()
    assert opts['sed_s0']['network_d']['num_feat'] == 48 and opts['esrgan_s0']['network_d']['num_feat'] == 32
    assert opts['l1']['train']['ema_decay'] == 0.99 and builder.run_dir('l1') != _builder().run_dir('l1')
    assert json.dumps(profile, sort_keys=True, default=str) == before


def test_profile_with_a_base_states_only_what_it_changes(tmp_path):
    """An ablation profile: ``base`` (a name or a path relative to the file), ``rows`` to run, ``labels``."""
    (tmp_path / 'sub').mkdir()
    write_yaml(tmp_path / 'parent.yml', {'base': 'quick', 'finetune': {'ce_weight': 0.05}})
    child = write_yaml(tmp_path / 'sub' / 'child.yml', {
        'base': '../parent.yml', 'name': 'ablation', 'seeds': [0], 'rows': ['s2t', 'sfms'],
        'labels': {'sfms': 'SfmS, CE 0.05'}, 'overrides': {'sfms': {'train': {'ema_decay': 0.98}}}})
    profile = load_profile(child)
    quick = load_profile('quick')
    assert profile['_path'] == str(child) and 'base' not in profile
    assert profile['finetune'] == dict(quick['finetune'], ce_weight=0.05) and profile['judge'] == quick['judge']
    builder = OptionBuilder(profile, DATA, '/out', 'cpu', '/cache')
    opts = builder.all()
    assert list(opts) == ['judge', 'deployed', 'l1', 'judge_lraspp', 'judge_deeplab', 's2t_s0', 'sfms_s0']
    assert opts['sfms_s0']['train']['sr_ce_opt']['loss_weight'] == 0.05 and opts['sfms_s0']['train']['ema_decay'] == 0.98
    reference = _builder().all()
    for step in builder.start_steps:  # same starting points: the ablation reuses the cached ones
        assert builder.run_dir(step) == _builder().run_dir(step)
    assert {k: v for k, v in opts['s2t_s0'].items() if k not in ('name', 'path')} == \
        {k: v for k, v in reference['s2t_s0'].items() if k not in ('name', 'path')}


def test_difference_column_one_seed_and_several():
    from segsr.bench.report import _delta

    def run(diff, low, high):
        return {'intervals': {'judge_vs_s2t': {'diff': diff, 'low': low, 'high': high}}}

    assert _delta({'key': 'sed', 'runs': [run(1.5, 0.25, 2.5)]}, 'judge') == '+1.50 [+0.25, +2.50]'
    several = {'key': 'sed', 'runs': [run(2.32, 1.76, 2.78), run(0.03, -0.5, 0.6), run(1.63, 1.0, 2.2)]}
    assert _delta(several, 'judge') == '+1.33 (+0.03..+2.32; CI>0 2/3)'
    assert _delta({'key': 's2t', 'runs': []}, 'judge') == '—'


def test_the_recipe_registry_drives_the_rows_and_the_seeded_steps(tmp_path):
    """Adding a method is one recipe: registered, it is a table row and a fine-tuned step per seed (the seed carried
    with the step, not read back from its id), a profile may name it; unregistered, nothing of it is left."""
    from segsr.bench.recipes import REGISTRY, Recipe, Row, Step, finetune_steps

    def toy(b, step):
        opt = b.finetune_opt(step.id, 'SRModel', step.seed)
        opt['train']['pixel_opt']['loss_weight'] = 0.5
        return opt

    before = (table_rows(), finetune_steps(), _builder().step_ids())
    REGISTRY.register(Recipe('toy', 'Toy (half L1)', toy, own='task'))
    try:
        assert table_rows() == ROWS + (Row('toy', 'Toy (half L1)', 'generator', step='toy', own='task'), )
        assert finetune_steps() == before[1] + ('toy', )
        b = _builder(seeded_rows=['s2t', 'toy'])
        opts = b.all()
        assert list(opts)[-3:] == ['toy_s0', 'toy_s1', 'toy_s2'] and b.runs_of('toy')[2] == Step('toy_s2', 'toy', 2)
        assert [opts[f'toy_s{i}']['manual_seed'] for i in range(3)] == [0, 1, 2]
        assert opts['toy_s1']['train']['pixel_opt']['loss_weight'] == 0.5
        assert opts['toy_s1']['path']['experiments_root'] == '/out/runs/toy_s1'
        ablation = load_profile(write_yaml(tmp_path / 'toy.yml', {'base': 'quick', 'rows': ['s2t', 'toy'],
                                                                   'labels': {'toy': 'Toy'}}))
        assert OptionBuilder(ablation, DATA, '/out', 'cpu', '/cache').rows == ['s2t', 'toy']
        with pytest.raises(ValueError, match="recipe 'toy': the name is taken"):
            REGISTRY.register(Recipe('toy', 'again', toy))
    finally:
        REGISTRY.unregister('toy')
    assert (table_rows(), finetune_steps(), _builder().step_ids()) == before
    with pytest.raises(ValueError, match="recipe 'toy_s1': a key is lower-case letters and digits only"):
        REGISTRY.register(Recipe('toy_s1', 'Bad', toy))
    with pytest.raises(ValueError, match="recipe 'bicubic': the name is taken"):
        REGISTRY.register(Recipe('bicubic', 'Bad', toy))
    with pytest.raises(ValueError, match=r"own = 'head'"):
        REGISTRY.register(Recipe('bad', 'Bad', toy, own='head'))
    with pytest.raises(ValueError, match=r"unknown starting points \['sr'\]"):
        REGISTRY.register(Recipe('bad', 'Bad', toy, starts=('l1', 'sr')))
    assert 'bad' not in REGISTRY


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(REPO, 'options', 'benchmark', '*.yml')) +
                                         glob.glob(os.path.join(REPO, 'options', 'benchmark', 'gpu', '*.yml'))),
                         ids=lambda p: os.path.relpath(p, os.path.join(REPO, 'options', 'benchmark')))
def test_shipped_ablation_profiles_build(path):
    profile = load_profile(path)
    opts = OptionBuilder(profile, DATA, '/out', 'cpu', '/cache').all()
    assert all(f'{row}_s{profile.get("seeds", [0])[0]}' in opts for row in profile.get('rows', ['s2t']))
    for row, change in (profile.get('overrides') or {}).items():
        for step_id in (s for s in opts if s.rsplit('_s', 1)[0] == row):
            assert deep_merge(opts[step_id], change) == opts[step_id]


def test_task_branch_discriminator_width_and_warm_start():
    opts = _builder().all()
    assert opts['segaware_s0']['network_d']['num_feat'] == opts['combo_s0']['network_d']['seg_hidden'] == 16
    assert opts['esrgan_s0']['network_d']['num_feat'] == opts['sed_s0']['network_d']['num_feat'] == 32
    assert 'disc' not in opts and 'pretrain_network_d' not in opts['segaware_s0']['path']
    warm = _builder(finetune={'task_d_warm_start': {'iters': 300, 'batch': 8, 'gt_size': 128, 'lr': 2e-3}})
    opts = warm.all()
    assert list(opts)[:4] == ['judge', 'deployed', 'l1', 'disc']
    disc, segaware = opts['disc'], opts['segaware_s0']
    assert disc['model_type'] == 'SegTaskModel' and disc['network_task'] == segaware['network_d']
    assert disc['train']['total_iter'] == 300 and disc['manual_seed'] == 2
    assert segaware['path']['pretrain_network_d'] == warm.checkpoint('disc', 'task') == \
        os.path.join(warm.run_dir('disc'), 'models', 'net_task_latest.pth')
    assert 'pretrain_network_d' not in opts['combo_s0']['path']  # its D is SeD-conditioned: no HR-only warm start
    assert warm.run_dir('judge') == _builder().run_dir('judge')


@pytest.mark.parametrize('change, match', [
    (lambda p: p.pop('finetune'), "key 'finetune' is required"),
    (lambda p: p['judge'].pop('iters'), r"'judge' needs keys \['iters'\]"),
    (lambda p: p['finetune'].update(gt_size=96), "finetune.gt_size' = 96"),
    (lambda p: p.update(device='tpu'), "'device' = 'tpu'"),
    (lambda p: p.update(jobs=0), "'jobs' = 0; expected a positive integer"),
    (lambda p: p.update(overrides={'srgan': {}}), "unknown steps"),
    (lambda p: p.update(seeds=[0, 0]), "'seeds' = \\[0, 0\\]"),
    (lambda p: p.update(seeded_rows=['s2t', 'l1']), r"'seeded_rows' has unknown rows \['l1'\]"),
    (lambda p: p['finetune'].update(ema_decay=0.999), r"'finetune.ema_decay' = 0.999 over 600 iterations keeps 55%"),
    (lambda p: p['l1'].update(ema_decay=1.0), r"'l1.ema_decay' = 1.0"),
    (lambda p: p.update(rows=['sfms']), r"'rows' = \['sfms'\]; .* includes 's2t'"),
    (lambda p: p.update(rows=['s2t', 'srgan']), r"'rows' = \['s2t', 'srgan'\]"),
    (lambda p: p.update(labels={'srgan': 'x'}), r"'labels' has unknown rows \['srgan'\]"),
    (lambda p: p.update(base='bad.yml'), "'base' chain loops"),
    (lambda p: p['finetune'].update(task_d_warm_start={'iters': 10}), r"'finetune.task_d_warm_start' needs keys"),
])
def test_bad_profile_is_refused_with_file_and_key(tmp_path, change, match):
    profile = load_profile('quick')
    change(profile)
    path = write_yaml(tmp_path / 'bad.yml', profile)
    with pytest.raises(ValueError, match=match) as err:
        load_profile(path)
    assert 'bad.yml' in str(err.value)


def test_unknown_profile_lists_the_known_ones(tmp_path):
    shipped = r"\['demo', 'full', 'quick', 'quick_cls', 'quick_det', 'smoke', 'smoke_cls', 'smoke_det'\]"
    with pytest.raises(FileNotFoundError, match=f'shipped profiles: {shipped}'):
        load_profile('medium')
    with pytest.raises(FileNotFoundError, match="'nowhere/medium.yml' does not exist"):
        load_profile('nowhere/medium.yml')
    with pytest.raises(FileNotFoundError, match="child.yml: 'base' = 'medium': benchmark profile 'medium' not found"):
        load_profile(write_yaml(tmp_path / 'child.yml', {'base': 'medium'}))


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
    from helpers.options import TINY_RRDB

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


def _run_smoke(tmp_path, out='out', *extra):
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--profile', 'smoke', '--out',
           str(tmp_path / out), '--data', str(tmp_path / 'data'), '--cache', str(tmp_path / 'cache'), *extra]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def _mtimes(tmp_path, out='out'):
    """Modification time of each training run's final checkpoint (starting points in the cache)."""
    builder = OptionBuilder(load_profile('smoke'), DataInfo(str(tmp_path / 'data'), 'synthetic', 4, 255, 'disk'),
                            str(tmp_path / out), 'cpu', str(tmp_path / 'cache'))
    return {s: os.path.getmtime(builder.checkpoint(s, builder.start_net(s) if builder.is_start(s) else 'g'))
            for s in builder.step_ids()}


def test_smoke_benchmark_every_row_finite_then_resume_skips_finished_work(tmp_path):
    log = _run_smoke(tmp_path)
    out = tmp_path / 'out'
    table = (out / 'results.md').read_text()
    for row in ROWS:
        assert f'| {row.label} |' in table
    assert 'Command: `' in table and 'Machine: ' in table and 'Date: ' in table and 'seeds [0, 1]' in table
    rows = {r['key']: r for r in json.loads((out / 'results.json').read_text())['rows']}
    assert list(rows) == [r.key for r in ROWS]
    for row in ROWS:
        s = rows[row.key]['summary']
        for key in ('judge_miou', 'deployed_miou', 'judge_pixacc', 'ssim', 'niqe', 'grid') + (('psnr', ) if row.kind != 'hr' else ()):
            assert s[key] is not None and math.isfinite(s[key]), (row.key, key, s[key])
        if row.own:
            assert 0 <= s['own_miou'] <= 100
        runs = rows[row.key]['runs']
        assert [r['seed'] for r in runs] == ([0, 1] if row.key in ('s2t', 'sfms') else [0])
        reference = {r['seed']: r for r in rows['s2t']['runs']}
        for run in runs:  # paired intervals against S->T of the same seed, for every frozen net and kernel
            parts = [(run, reference[run['seed']])]
            if row.kind != 'hr':  # scored under the kernel no row trained on too
                assert list(run['kernels']) == ['blur_jpeg']
                parts.append((run['kernels']['blur_jpeg'], reference[run['seed']]['kernels']['blur_jpeg']))
                assert math.isfinite(parts[-1][0]['summary']['psnr'])
            for part, ref in parts:
                for name in JUDGES:
                    ci = part['intervals'][f'{name}_vs_s2t']
                    assert math.isfinite(ci['low']) and ci['low'] <= ci['high']
                    assert math.isclose(ci['diff'], part['summary'][f'{name}_miou'] - ref['summary'][f'{name}_miou'],
                                        abs_tol=1e-9)
                ratio = part['intervals']['transfer_ratio']
                deployed = part['intervals']['deployed_vs_s2t']['diff']
                assert (ratio is None) == (deployed == 0) and (ratio is None or math.isfinite(ratio))
        if row.kind == 'generator' and row.key != 'l1':
            spd = rows[row.key]['speed']
            assert spd['sec_per_iter'] > 0 and spd['peak_mb'] > 0 and spd['x_esrgan_time'] > 0
            assert s['sec_per_img'] > 0 and all(run['train']['seconds'] > 0 for run in runs)
    for run in rows['s2t']['runs']:  # a row against itself: [0, 0], for every net and kernel; no transfer ratio
        for part in (run, run['kernels']['blur_jpeg']):
            for name in JUDGES:
                ci = part['intervals'][f'{name}_vs_s2t']
                assert ci == dict(ci, diff=0.0, low=0.0, high=0.0)
            assert part['intervals']['transfer_ratio'] is None
    assert '## Transfer: LR from `blur_jpeg` (never trained on)' in table and 'judge_lraspp mIoU - S->T' in table
    assert 'judge_miou_sd' in rows['sfms']['summary'] and 'judge_miou_sd' not in rows['esrgan']['summary']
    assert rows['esrgan']['speed']['x_esrgan_time'] == 1.0
    assert rows['hr']['summary']['ssim'] == pytest.approx(1.0) and rows['hr']['summary']['grid'] == 0.0
    assert '| method | PSNR-Y | grid % |' in table
    grid = cv2.imread(str(out / 'grid.png'))
    plot = cv2.imread(str(out / 'miou_vs_psnr.png'))
    assert grid is not None and plot is not None and plot.shape[0] > 100
    assert grid.shape[1] > (len(ROWS) + 1) * 288  # LR | 9 methods | HR, 288 px wide each
    steps = OptionBuilder(load_profile('smoke'), DataInfo('', '', 4, 255, 'disk'), '', 'cpu', '').step_ids()
    for step in steps:  # every generated option file is a plain BasicSR option file
        assert yaml.safe_load((out / 'options' / f'{step}.yml').read_text())['name'] == f'benchmark_smoke_{step}'
    assert sorted(p.split('-')[0] for p in os.listdir(tmp_path / 'cache')) == ['deployed', 'disc', 'judge',
                                                                             'judge_deeplab', 'judge_lraspp', 'l1']
    assert 'niqe is undefined' not in log

    # a rerun redoes nothing
    before = _mtimes(tmp_path)
    log = _run_smoke(tmp_path)
    assert log.count('trained already') == len(steps) and log.count('evaluated already') == 12 + 11  # + blur_jpeg
    assert 'timing training steps' not in log and _mtimes(tmp_path) == before

    # another benchmark (another --out) with the same cache trains no starting point again; its fine-tuned runs
    # train three at a time (--jobs), each to its end
    log = _run_smoke(tmp_path, 'other', '--jobs', '3')
    assert log.count('(cached: ') == 6 and 'judge: training' not in log and 's2t_s0: training' in log
    other = json.loads((tmp_path / 'other' / 'results.json').read_text())['rows']
    assert [r['key'] for r in other] == [r.key for r in ROWS]
    assert all(run['train'] is None or run['train']['seconds'] > 0 for r in other for run in r['runs'])

    # an interrupted benchmark: one training run died after its last saved state, one row was not evaluated
    os.remove(out / 'state' / 'train_combo_s0.json')
    os.remove(out / 'runs' / 'combo_s0' / 'models' / 'net_g_latest.pth')
    os.remove(out / 'state' / 'eval_sed_s0.json')
    log = _run_smoke(tmp_path)
    assert log.count('trained already') == len(steps) - 1 and 'combo_s0: training' in log
    assert log.count('evaluated already') == 11 + 11 and 'SeD (P+SeD) (seed 0): judge mIoU' in log
    combo_log = (out / 'logs' / 'train_combo_s0.txt').read_text()
    assert 'Resuming training from epoch' in combo_log  # BasicSR's auto-resume from the saved state
    after = _mtimes(tmp_path)
    assert all(after[k] == before[k] for k in before if k != 'combo_s0')
    assert json.loads((out / 'results.json').read_text())['rows'][-1]['summary']['judge_miou'] is not None


@pytest.mark.parametrize('profile, metric, judges', [
    ('smoke_det', 'map_50', ('judge', 'deployed', 'judge_frcnn')),
    ('smoke_cls', 'top1', ('judge', 'deployed', 'judge_mnl')),
])
def test_detection_and_classification_smoke_profiles(tmp_path, profile, metric, judges):
    """Every row of a detection / classification profile is scored in the task's metric by every frozen net, with
    paired image-bootstrap intervals against S->T of the same seed; seg-only rows are not in these tables."""
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--profile', profile, '--out',
           str(tmp_path / 'out'), '--data', str(tmp_path / 'data'), '--cache', str(tmp_path / 'cache')]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = tmp_path / 'out'
    results = json.loads((out / 'results.json').read_text())
    assert results['meta']['task'] == profile.split('_')[1]
    rows = {r['key']: r for r in results['rows']}
    assert list(rows) == ['hr', 'bicubic', 'l1', 's2t', 'esrgan', 'sr4ir', 'sfms']
    for key, row in rows.items():
        for run in row['runs']:
            for part in [run] + list(run['kernels'].values()):
                for name in judges:
                    value = part['summary'][f'{name}_{metric}']
                    assert 0 <= value <= 100, (key, name, value)
                    ci = part['intervals'][f'{name}_vs_s2t']
                    assert ci['block'] == 1 and math.isfinite(ci['low']) and ci['low'] <= ci['diff'] <= ci['high']
    assert [r['seed'] for r in rows['sfms']['runs']] == [0, 1] and [r['seed'] for r in rows['esrgan']['runs']] == [0]
    assert 0 <= rows['sr4ir']['summary'][f'own_{metric}'] <= 100
    assert rows['sr4ir']['speed']['sec_per_iter'] > 0 and rows['sfms']['speed']['sec_per_iter'] > 0
    table = (out / 'results.md').read_text()
    label = 'mAP@.5' if metric == 'map_50' else 'top-1'
    assert f'judge {label}' in table and f"each frozen net's {label} on the row's SR output" in table
    assert 'mIoU' not in table and 'block-bootstrap' not in table  # the segmentation wording nowhere
    grid = cv2.imread(str(out / 'grid.png'))
    assert grid is not None and grid.shape[1] > 9 * 288  # LR | 7 rows | HR | HR with its ground truth
    assert cv2.imread(str(out / f'{metric}_vs_psnr.png')) is not None


def test_changed_options_are_not_resumed_into_a_finished_run(tmp_path):
    from segsr.bench.runner import Benchmark

    profile = load_profile('smoke')
    bench = Benchmark(profile, str(tmp_path / 'out'), str(tmp_path / 'data'), cache_dir=str(tmp_path / 'cache'))
    bench.write_options('s2t_s0')
    os.makedirs(bench.builder.run_dir('s2t_s0'))
    changed = deep_merge(profile, {'finetune': {'lr': 1e-3}})
    with pytest.raises(ValueError, match=r'options of step s2t_s0 changed'):
        Benchmark(changed, str(tmp_path / 'out'), str(tmp_path / 'data'),
                  cache_dir=str(tmp_path / 'cache')).write_options('s2t_s0')
    # nor is a finished run reused when what it was trained from changed (here: another deployed segmenter)
    ckpt = bench.builder.checkpoint('sfms_s0', 'g')
    os.makedirs(os.path.dirname(ckpt))
    torch.save({'params': {}}, ckpt)
    bench.write_options('sfms_s0')
    (tmp_path / 'out' / 'state' / 'train_sfms_s0.json').write_text(json.dumps({'seconds': 1.0, 'iters': 2}))
    assert bench.train_record('sfms_s0') is not None
    other = deep_merge(profile, {'deployed': {'iters': 3}})
    with pytest.raises(ValueError, match=r'options of step sfms_s0 changed.*a starting point'):
        Benchmark(other, str(tmp_path / 'out'), str(tmp_path / 'data'), cache_dir=str(tmp_path / 'cache')).train(
            'sfms_s0')
    with pytest.raises(FileNotFoundError, match='--l1-start nope.pth: no such checkpoint'):
        Benchmark(profile, str(tmp_path / 'out'), str(tmp_path / 'data'), l1_start='nope.pth')


def _smoke_bench_with_matrices(tmp_path, profile):
    """A smoke Benchmark in ``tmp_path`` whose row s2t_s0 has saved matrices, and the path of its eval state."""
    from segsr.bench.runner import Benchmark

    bench = Benchmark(profile, str(tmp_path / 'out'), str(tmp_path / 'data'), cache_dir=str(tmp_path / 'cache'))
    np.savez(tmp_path / 'out' / 'state' / 'matrices_s2t_s0.npz',
             **{name: np.eye(4, dtype=np.int64) for name in bench.builder.judge_names})
    return bench, tmp_path / 'out' / 'state' / 'eval_s2t_s0.json'


def test_an_evaluation_by_other_frozen_nets_is_redone(tmp_path):
    """A row's scores are reused only when the same frozen nets (the same checkpoints) made them."""
    from segsr.bench.runner import Benchmark

    profile = load_profile('smoke')
    bench, state = _smoke_bench_with_matrices(tmp_path, profile)
    state.write_text(json.dumps({'summary': {}, 'pictures': {}, 'scored_by': bench.scored_by()}))
    assert bench._evaluated('s2t_s0')
    other = Benchmark(deep_merge(profile, {'judge': {'iters': 3}}), str(tmp_path / 'out'), str(tmp_path / 'data'),
                      cache_dir=str(tmp_path / 'cache'))
    assert other.scored_by()['judge'] != bench.scored_by()['judge']
    assert other.scored_by()['deployed'] == bench.scored_by()['deployed']
    assert not other._evaluated('s2t_s0')
    state.write_text(json.dumps({'summary': {}, 'pictures': {}}))  # a state from before the nets were recorded
    assert not bench._evaluated('s2t_s0')


def test_an_evaluation_by_an_older_scoring_version_is_redone(tmp_path, monkeypatch):
    """A task's scoring_version is part of what scored a row: a state without one counts as version 1."""
    from segsr.bench.runner import SCORING_KEY

    bench, state = _smoke_bench_with_matrices(tmp_path, load_profile('smoke'))
    nets = {k: v for k, v in bench.scored_by().items() if k != SCORING_KEY}
    assert bench.scored_by()[SCORING_KEY] == 'seg v1' and set(nets) == set(bench.builder.judge_names)
    state.write_text(json.dumps({'summary': {}, 'pictures': {}, 'scored_by': nets}))  # before versions were recorded
    assert bench._evaluated('s2t_s0')
    monkeypatch.setattr(type(bench.task), 'scoring_version', 2)
    assert not bench._evaluated('s2t_s0')
    state.write_text(json.dumps({'summary': {}, 'pictures': {}, 'scored_by': bench.scored_by()}))
    assert bench._evaluated('s2t_s0')


def _fake_segnet_camvid(src):
    """A SegNet-layout CamVid folder in miniature: class ids 0..11 (11 = Unlabelled), frames of three sequences."""
    rng = np.random.default_rng(0)
    frames = {'train': ['0001TP_006690', '0001TP_006720', '0006R0_f00930', '0006R0_f00960'],
              'val': ['0016E5_07959', '0016E5_07961']}
    for split, stems in frames.items():
        os.makedirs(src / split)
        os.makedirs(src / f'{split}annot')
        for stem in stems:
            cv2.imwrite(str(src / split / f'{stem}.png'), rng.integers(0, 256, (36, 48, 3), dtype=np.uint8))
            cv2.imwrite(str(src / f'{split}annot' / f'{stem}.png'), rng.integers(0, 12, (36, 48), dtype=np.uint8))


def test_camvid_profile_prepares_from_source_or_names_the_flag(tmp_path):
    from segsr.bench.data import prepare_data

    data_opt = load_profile('quick')['data']
    with pytest.raises(FileNotFoundError, match='pass --source'):
        prepare_data(data_opt, str(tmp_path / 'camvid'))
    with pytest.raises(FileNotFoundError, match="'.*nowhere' does not exist"):
        prepare_data(data_opt, str(tmp_path / 'camvid'), str(tmp_path / 'nowhere'))
    _fake_segnet_camvid(tmp_path / 'src')
    info = prepare_data(data_opt, str(tmp_path / 'camvid'), str(tmp_path / 'src'))
    assert (info.name, info.num_classes, info.ignore_index, info.backend) == ('camvid', 11, 255, 'lmdb')
    src = cv2.imread(str(tmp_path / 'src' / 'valannot' / '0016E5_07961.png'), cv2.IMREAD_UNCHANGED)
    seg = cv2.imread(str(tmp_path / 'camvid' / 'val' / 'seg' / '0016E5_07961.png'), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(seg, np.where(src == 11, 255, src))  # Unlabelled -> ignore_index, the rest unchanged
    # the sequence-disjoint split: seq_dev = the held-out sequence 0006R0, seq_train = every other frame
    root = tmp_path / 'camvid'
    assert sorted(os.listdir(root / 'seq_dev' / 'hr')) == ['0006R0_f00930.png', '0006R0_f00960.png']
    assert sorted(os.listdir(root / 'seq_train' / 'seg')) == ['0001TP_006690.png', '0001TP_006720.png',
                                                             '0016E5_07959.png', '0016E5_07961.png']
    assert os.path.samefile(root / 'seq_train' / 'seg' / '0016E5_07961.png', root / 'val' / 'seg' / '0016E5_07961.png')
    info = yaml.safe_load((root / 'dataset_info.yml').read_text())
    assert info['sequence_split'] == {'seq_dev': ['0006R0'], 'seq_train': ['0001TP', '0016E5'],
                                      'sources': ['train', 'val']}
    assert all((root / 'lmdb' / f'{s}_{k}.lmdb').is_dir() for s in ('seq_train', 'seq_dev') for k in ('hr', 'seg'))


def test_camvid_sequence_split_errors(tmp_path):
    from segsr.data.camvid import prepare_camvid

    _fake_segnet_camvid(tmp_path / 'src')
    with pytest.raises(ValueError, match=r"dev sequences \['0099XX'\] have no frames.*\['0001TP', '0006R0', '0016E5'\]"):
        prepare_camvid(str(tmp_path / 'src'), str(tmp_path / 'a'), lmdb=False, dev_sequences=['0099XX'])
    with pytest.raises(ValueError, match='nothing to train on'):
        prepare_camvid(str(tmp_path / 'src'), str(tmp_path / 'b'), lmdb=False,
                       dev_sequences=['0001TP', '0006R0', '0016E5'])
    counts = prepare_camvid(str(tmp_path / 'src'), str(tmp_path / 'c'), lmdb=False, dev_sequences=[])
    assert counts == {'train': 4, 'val': 2} and not (tmp_path / 'c' / 'seq_dev').exists()


# ------------------------------------------------------------------------------ the user's own segmenter as it is
def _torchscript_segmenter(path, num_classes=4):
    from helpers.segmenters import StridedSegmenter

    torch.manual_seed(0)
    torch.jit.trace(StridedSegmenter(num_classes, stride=2).eval(), torch.rand(1, 3, 32, 32)).save(str(path))
    return str(path)


def test_a_deployed_net_with_its_weights_is_used_as_it_is_never_trained(tmp_path):
    from segsr.bench.data import program_kind

    script = _torchscript_segmenter(tmp_path / 'mine.pt')
    torch.save({'params': {}}, tmp_path / 'weights.pth')
    assert program_kind(script) == 'torchscript' and program_kind(str(tmp_path / 'weights.pth')) is None
    assert program_kind('my.pt2') == 'export'
    imported = {'network': {'type': 'ImportedSegNet', 'path': script}}
    profile = deep_merge(load_profile('quick'), {'deployed': imported, 'rows': ['s2t', 'esrgan', 'sfms']})
    b = OptionBuilder(profile, DATA, '/out', 'cpu', '/cache')
    assert b.given == ['deployed'] and 'deployed' not in b.step_ids() and b.checkpoint('deployed', 'task') is None
    sfms = b.all()['sfms_s0']
    assert sfms['network_task'] == dict(type='ImportedSegNet', path=script, num_classes=11)
    assert sfms['path']['pretrain_network_task'] is None
    with pytest.raises(ValueError, match=r"rows \['sr4ir', 'sed'\] need feature 'C5' \(deployed.feature\)"):
        OptionBuilder(deep_merge(profile, {'rows': ['s2t', 'sr4ir', 'sed']}), DATA, '/out', 'cpu', '/cache')


def test_smoke_sr_for_my_segmenter_through_a_torchscript_file(tmp_path):
    """--deployed takes the user's TorchScript file: SR for my segmenter trains through it, it scores every row."""
    script = _torchscript_segmenter(tmp_path / 'mine.pt')
    profile = write_yaml(tmp_path / 'p.yml', {'base': 'smoke', 'name': 'smoke_mine', 'rows': ['s2t', 'sfms'],
                                                'seeds': [0], 'judges': None, 'kernels': None})
    cmd = [sys.executable, os.path.join(REPO, 'scripts', 'benchmark.py'), '--profile', profile, '--out',
           str(tmp_path / 'out'), '--data', str(tmp_path / 'data'), '--cache', str(tmp_path / 'cache'), '--deployed',
           script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(tmp_path),
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rows = {r['key']: r for r in json.loads((tmp_path / 'out' / 'results.json').read_text())['rows']}
    assert set(rows) == {'hr', 'bicubic', 'l1', 's2t', 'sfms'}
    assert all(math.isfinite(r['summary']['deployed_miou']) for r in rows.values())
    opt = yaml.safe_load((tmp_path / 'out' / 'options' / 'sfms_s0.yml').read_text())
    assert opt['network_task']['type'] == 'ImportedSegNet' and opt['network_task']['path'] == script
    assert not any(p.startswith('deployed') for p in os.listdir(tmp_path / 'cache'))  # never trained


def test_grid_names_a_missing_picture(tmp_path):
    from segsr.bench.report import grid

    record = {'key': 's2t', 'label': 'S->T', 'pictures': {'0': str(tmp_path / 'pictures' / 's2t_s0_0')}}
    with pytest.raises(FileNotFoundError, match=r"s2t_s0_0_sr.png .*row 's2t', image 0.*state/eval_"):
        grid([record], None, [0])
