"""What a new user gets: a side-effect-free ``import segsr``, segsr's models independent of the basicsr fixes, and a
complete wheel whose console scripts run from an empty folder with a non-editable install."""
import copy
import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import REPO
from helpers.models import runtime_opt
from helpers.options import load_sed_option, tiny_run_opt, sed_opt
from helpers.options import gan_opt
from helpers.options import sr4ir_opt
from helpers.options import seg_task_opt


def run_python(code, *args, cwd=None, env=None, timeout=300):
    proc = subprocess.run([sys.executable, '-c', code, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout


# Every function and class reachable from a loaded basicsr module (module attributes and class members) whose
# __module__ is segsr's: what a patch by segsr would leave behind. Then the specific objects named by the issue.
PATCH_REPORT = r'''
import inspect, json, sys
import segsr
if sys.argv[1] == 'fixed':
    segsr.apply_basicsr_fixes()
import basicsr.test, basicsr.train
import basicsr.utils.dist_util as dist_util
import basicsr.utils.img_process_util as img_process_util
import basicsr.models.realesrgan_model as realesrgan_model
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.models.base_model import BaseModel
from basicsr.models.realesrnet_model import RealESRNetModel

def foreign(obj):
    return (inspect.isfunction(obj) or inspect.isclass(obj)) and (obj.__module__ or '').startswith('segsr')

found = set()
for name, mod in list(sys.modules.items()):
    if not name.startswith('basicsr') or mod is None:
        continue
    for attr, value in list(vars(mod).items()):
        if foreign(value) and not attr.endswith('_REGISTRY'):
            found.add(f'{name}.{attr}')
        if inspect.isclass(value) and value.__module__.startswith('basicsr'):
            found.update(f'{value.__module__}.{value.__qualname__}.{k}' for k, v in vars(value).items() if foreign(v))
origin = {
    'BaseModel.save_network': BaseModel.save_network.__module__,
    'BaseModel.model_to_device': BaseModel.model_to_device.__module__,
    'BaseModel.load_network': BaseModel.load_network.__module__,
    'load_resume_state': basicsr.train.load_resume_state.__module__,
    'train.parse_options': basicsr.train.parse_options.__module__,
    'RealESRGANModel.__init__': realesrgan_model.RealESRGANModel.__init__.__module__,
    'RealESRNetModel.__init__': RealESRNetModel.__init__.__module__,
    'PerceptualLoss.__init__': PerceptualLoss.__init__.__module__,
    'filter2D': realesrgan_model.filter2D.__module__,
}
print(json.dumps({'found': sorted(found), 'origin': origin, 'applied': segsr.compat.is_applied()}))
'''


def test_import_segsr_patches_nothing_in_basicsr():
    plain = json.loads(run_python(PATCH_REPORT, 'plain').splitlines()[-1])
    assert plain['found'] == [] and not plain['applied']
    assert all(module.startswith('basicsr.') for module in plain['origin'].values()), plain['origin']
    # The same probe sees the explicit call's patches (it is not blind).
    fixed = json.loads(run_python(PATCH_REPORT, 'fixed').splitlines()[-1])
    assert fixed['applied'] and all(module.startswith('segsr.') for module in fixed['origin'].values()), fixed
    assert {f'basicsr.models.base_model.BaseModel.{m}' for m in ('save_network', 'load_network')} <= set(fixed['found'])


TRAIN_TWO_STEPS = r'''
import json, os, sys
import segsr
if sys.argv[2] == 'fixed':
    segsr.apply_basicsr_fixes()
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils import set_random_seed

with open(sys.argv[1]) as f:
    runs = json.load(f)
for opt in runs:
    set_random_seed(0)
    train_opt = opt['datasets']['train']
    batches = iter(build_dataloader(build_dataset(train_opt), train_opt, num_gpu=0, dist=False, sampler=None, seed=0))
    model = build_model(opt)
    for it in (1, 2):
        model.feed_data(next(batches))
        model.optimize_parameters(it)
    model.save(0, 2)
'''


def test_segsr_models_train_identically_without_the_basicsr_fixes(tiny_data, tmp_path):
    """Each of segsr's model families, two steps on CPU in a fresh process with and without
    ``apply_basicsr_fixes()``: same saved weights, bit for bit (Real-ESRGAN's degradations on CPU included)."""
    realesr = tiny_run_opt(load_sed_option('train_SeD_U_realesrgan_x4plus.yml'), tiny_data, sed=True)
    makers = {'task': lambda p: seg_task_opt(tiny_data, 2),
              'sr4ir': lambda p: sr4ir_opt(tiny_data, p, judge=False),
              'segaware': lambda p: gan_opt(tiny_data, p, judge=False),
              'sed': lambda p: sed_opt(tiny_data),
              'sed_realesrgan': lambda p: copy.deepcopy(realesr)}
    saved = {}
    for variant in ('plain', 'fixed'):
        runs = []
        for key, make in makers.items():
            folder = tmp_path / variant / key
            folder.mkdir(parents=True)
            runs.append(runtime_opt(make(folder), folder))
        path = tmp_path / f'{variant}.json'
        path.write_text(json.dumps(runs))
        run_python(TRAIN_TWO_STEPS, path, variant, timeout=600)
        saved[variant] = {os.path.relpath(f, tmp_path / variant): torch.load(f, weights_only=True)
                          for f in sorted(glob.glob(str(tmp_path / variant / '*' / 'exp' / 'models' / '*.pth')))}
    assert len({name.split(os.sep)[0] for name in saved['plain']}) == len(makers)
    assert saved['plain'].keys() == saved['fixed'].keys()
    for name, plain in saved['plain'].items():
        fixed = saved['fixed'][name]
        for key in plain:
            if key == 'network':  # net_task files record their option block (segsr.utils.checkpoint)
                assert plain[key] == fixed[key], name
                continue
            for param in plain[key]:
                assert torch.equal(plain[key][param], fixed[key][param]), f'{name} {key}.{param}'


# ------------------------------------------------------------------------------------------------------ the wheel
def _build_wheel(tmp_path):
    """Build segsr's wheel from a copy of the files it is made of (nothing written into the checkout)."""
    src = tmp_path / 'src'
    src.mkdir()
    for name in ('setup.py', 'README.md', 'LICENSE'):
        shutil.copy(os.path.join(REPO, name), src / name)
    shutil.copytree(os.path.join(REPO, 'segsr'), src / 'segsr', ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    isolation = [] if importlib.util.find_spec('setuptools') is None else ['--no-build-isolation']
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--disable-pip-version-check', '-q',
                    *isolation, '-w', str(tmp_path / 'dist'), str(src)], check=True, timeout=600)
    return glob.glob(str(tmp_path / 'dist' / 'segsr-*.whl'))[0]


CONSOLE_SCRIPTS = ('segsr-train', 'segsr-test', 'segsr-evaluate', 'segsr-srbench', 'segsr-benchmark',
                   'segsr-prepare-camvid', 'segsr-make-synthetic', 'segsr-infer', 'segsr-export')


@pytest.mark.slow
def test_wheel_is_complete_and_runs_from_an_empty_folder(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for profile in ('smoke', 'quick', 'full', 'demo'):
        assert f'segsr/benchmark_profiles/{profile}.yml' in names
    assert 'segsr/data/camvid.py' in names and not any(n.startswith(('tests/', 'scripts/', 'options/')) for n in names)
    entry_points = next(n for n in names if n.endswith('entry_points.txt'))
    assert all(script in zipfile.ZipFile(wheel).read(entry_points).decode() for script in CONSOLE_SCRIPTS)

    target, empty = tmp_path / 'site', tmp_path / 'empty'
    empty.mkdir()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--disable-pip-version-check', '-q',
                    '--target', str(target), wheel], check=True, timeout=600)
    # Only the installed copy is importable: not the checkout (cwd is an empty folder, PYTHONPATH is the target).
    env = dict(os.environ, PYTHONPATH=str(target))
    where = run_python('import segsr; print(segsr.__file__)', cwd=empty, env=env)
    assert where.strip().startswith(str(target))

    def run(*cmd, timeout=300):
        proc = subprocess.run(list(map(str, cmd)), cwd=empty, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert proc.returncode == 0, f'{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
        return proc.stdout

    for script in CONSOLE_SCRIPTS:
        assert 'usage:' in run(target / 'bin' / script, '-h')
    for module in ('segsr.train', 'segsr.test', 'segsr.evaluate', 'segsr.sr_bench', 'segsr.benchmark',
                   'segsr.step_bench', 'segsr.data.camvid', 'segsr.data.synthetic', 'segsr.inference', 'segsr.export'):
        assert 'usage:' in run(sys.executable, '-m', module, '-h')
    # The benchmark: profile from the package data, data made by the package, training through python -m segsr.train.
    run(target / 'bin' / 'segsr-benchmark', '--profile', 'smoke', '--out', 'bench', '--cache', 'cache', timeout=900)
    table = (empty / 'bench' / 'results.md').read_text()
    assert 'SeD (P+SeD)' in table and (empty / 'datasets' / 'benchmark_smoke' / 'dataset_info.yml').is_file()
    assert sorted(os.listdir(empty)) == ['bench', 'cache', 'datasets']  # nothing written anywhere else under the cwd
