"""Every shipped option file parses, names only registered types and keeps num_classes consistent."""
import glob
import os

import pytest
import yaml

from conftest import REPO
from segsr.utils.options import check_registered_types

OPTION_FILES = sorted(glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True) +
                      glob.glob(os.path.join(REPO, 'segsr', 'benchmark_profiles', '*.yml')))


def test_option_files_exist():
    names = {os.path.relpath(p, REPO) for p in OPTION_FILES}
    for name in ('options/train_segsr_x4.yml', 'options/test_segsr_x4.yml', 'options/train_esrgan_baseline_x4.yml',
                 'options/sr4ir/camvid/014_sr4ir_x4.yml',
                 'options/sr4ir/camvid/024_sr4ir_x8.yml', 'options/sr4ir/camvid/cpu/sr4ir_x4.yml',
                 'options/sed/train_SeD_P_x4.yml', 'options/sed/train_SeD_U_realesrgan_x4plus.yml',
                 'options/sed/cpu/evaluate_sr_bench.yml', 'segsr/benchmark_profiles/smoke.yml',
                 'segsr/benchmark_profiles/quick.yml', 'segsr/benchmark_profiles/full.yml',
                 'segsr/benchmark_profiles/demo.yml'):
        assert name in names


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: os.path.relpath(p, REPO))
def test_option_file_is_valid(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    if ('generator' in opt and 'finetune' in opt) or 'base' in opt:  # a benchmark profile: check every step it makes
        from segsr.bench.data import DataInfo
        from segsr.bench.options import OptionBuilder
        from segsr.bench.profile import load_profile
        data = DataInfo('/data', 'x', 7, 255, 'lmdb')
        for step, step_opt in OptionBuilder(load_profile(path), data, '/out', 'cpu').all().items():
            check_registered_types(step_opt, f'{path} (step {step})')
        classes = set()
    elif 'methods' in opt and 'bench_root' in opt:  # an SR-bench evaluation config
        from segsr.sr_bench import load_config as load_bench_config
        load_bench_config(path)
        classes = set()
    elif 'methods' in opt:  # a labelled-set evaluation config
        from segsr.evaluate import load_config
        load_config(path)
        classes = {opt['dataset']['num_classes'], opt['judge']['network']['num_classes']}
    else:
        check_registered_types(opt, path)
        classes = {d['num_classes'] for d in opt['datasets'].values() if 'num_classes' in d}
        for key in ('network_d', 'network_task'):
            if 'num_classes' in (opt.get(key) or {}):
                classes.add(opt[key]['num_classes'])
        if (opt.get('val') or {}).get('judge'):
            classes.add(opt['val']['judge']['network']['num_classes'])
    assert len(classes) <= 1, f'{path}: num_classes disagree: {classes}'
