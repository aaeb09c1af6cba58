"""Option files are checked at build: misspelled keys, ``train.total_iter``, ``--force_yml`` (segsr's parse_options)."""
import glob
import importlib
import os
import warnings
from copy import deepcopy

import pytest
import yaml

import basicsr.test
import basicsr.train
from conftest import REPO, read_log, run_entry, write_yaml
from segsr.utils import options as segsr_options
from segsr.utils.option_keys import (MAIN_BLOCKS, OptionKeyWarning, check_option_keys, dataset_known_keys,
                                     find_unknown_keys, is_segsr_class, model_known_keys)
from segsr.utils.option_scan import merge_reads, scan_object, scan_source
from segsr.utils.options import apply_force_yml, parse_options
from helpers.options import seg_task_opt, stock_esrgan_opt

SEGSR_GAN_YML = os.path.join(REPO, 'options', 'camvid', 'cpu', 'train_segsr.yml')
TRAINING_FILES = sorted(p for p in glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True)
                        if 'model_type' in yaml.safe_load(open(p)))


def load(path=SEGSR_GAN_YML):
    with open(path) as f:
        return yaml.safe_load(f)


def renamed(opt, dotted, new_key):
    """A copy of ``opt`` with the key at ``dotted`` renamed to ``new_key`` (same value)."""
    opt = deepcopy(opt)
    *parents, key = dotted.split('.')
    block = opt
    for name in parents:
        block = block[name]
    block[new_key] = block.pop(key)
    return opt


# ------------------------------------------------------------------------------------------- misspelled keys
MISSPELLED = [  # (dotted key in the SegAwareGANModel config, misspelling)
    ('train.task_adv_opt', 'task_adv_optt'),
    ('train.pixel_opt', 'pixel_optt'),
    ('train.total_iter', 'total_iters'),
    ('network_g.num_feat', 'num_feats'),
    ('datasets.train.gt_size', 'gt_sise'),
    ('path.pretrain_network_g', 'pretrain_network_gg'),
    ('val.val_freq', 'val_frq'),
    ('logger.print_freq', 'print_frq'),
    ('network_d', 'network_dd'),
    ('val.judge.path', 'pth'),
    ('val.judge.network.num_classes', 'num_clases'),
    ('train.gan_opt.gan_type', 'gan_typ'),
    ('train.optim_g.betas', 'beta'),
    ('train.scheduler.milestones', 'milestone'),
]


@pytest.mark.parametrize('dotted, wrong', MISSPELLED, ids=[m[1] for m in MISSPELLED])
def test_misspelled_key_of_a_segsr_model_fails_naming_file_key_and_suggestion(dotted, wrong):
    opt = renamed(load(), dotted, wrong)
    bad = '.'.join(dotted.split('.')[:-1] + [wrong])
    with pytest.raises(ValueError, match=r'my\.yml: unknown option key') as err:
        check_option_keys(opt, 'my.yml')
    assert f"'{bad}': did you mean '{dotted}'?" in str(err.value)
    assert 'SegAwareGANModel' in str(err.value)


def test_every_unknown_key_is_reported_at_once_and_options_are_untouched():
    opt = renamed(renamed(load(), 'train.pixel_opt', 'pixel_optt'), 'logger.print_freq', 'print_frq')
    before = deepcopy(opt)
    assert [u.key for u in find_unknown_keys(opt)] == ['train.pixel_optt', 'logger.print_frq']
    assert opt == before


def test_unknown_key_without_a_close_match_says_so():
    opt = dict(load(), completely_different=1)
    with pytest.raises(ValueError, match="'completely_different': no similar known key"):
        check_option_keys(opt, 'my.yml')


def test_stock_model_gets_a_warning_naming_the_key(tiny_data):
    opt = stock_esrgan_opt(tiny_data, total_iter=1)
    opt['train']['net_d_iter'] = 2
    with pytest.warns(OptionKeyWarning, match=r"x\.yml: option key\(s\) that ESRGANModel never reads") as record:
        check_option_keys(opt, 'x.yml')
    assert "'train.net_d_iter': did you mean 'train.net_d_iters'?" in str(record[0].message)


def test_reserved_and_pipeline_keys_are_known():
    opt = load()
    opt.update(deterministic=True, find_unused_parameters=False, is_train=True, dist=False, rank=0, world_size=1,
               auto_resume=False, root_path='/x')
    opt['path'].update(ignore_resume_networks=['network_d'], experiments_root='/x/e')
    opt['datasets']['train'].update(use_shuffle=True, pin_memory=True, persistent_workers=True, phase='train')
    opt['train']['amp'] = 'bf16'
    opt['logger']['wandb'] = {'project': None, 'resume_id': None}
    assert find_unknown_keys(opt) == []


# ------------------------------------------------------------------------------------ no false positives
@pytest.mark.parametrize('path', TRAINING_FILES, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_option_files_have_only_known_keys(path):
    assert find_unknown_keys(load(path)) == []


@pytest.mark.parametrize('profile', sorted(glob.glob(os.path.join(REPO, 'segsr', 'benchmark_profiles', '*.yml')) +
                                           glob.glob(os.path.join(REPO, 'options', 'benchmark', '*.yml'))),
                         ids=os.path.basename)
def test_benchmark_generated_options_have_only_known_keys(profile):
    from segsr.bench.data import DataInfo
    from segsr.bench.options import OptionBuilder
    from segsr.bench.profile import load_profile

    data = DataInfo('/data', 'x', 7, 255, 'lmdb')
    for step, opt in OptionBuilder(load_profile(profile), data, '/out', 'cpu').all().items():
        assert find_unknown_keys(opt) == [], step


def test_test_suite_option_builders_have_only_known_keys(tiny_data, tmp_path):
    from helpers.options import sed_opt
    from helpers.options import gan_opt
    from helpers.options import sr4ir_opt

    for opt in (stock_esrgan_opt(tiny_data, 2), seg_task_opt(tiny_data, 2), gan_opt(tiny_data, tmp_path),
                sr4ir_opt(tiny_data, tmp_path), sed_opt(tiny_data), sed_opt(tiny_data, 'SeDRealESRGANModel')):
        assert find_unknown_keys(opt) == [], opt['model_type']


# ------------------------------------------------------------------------------ declarations stay honest
def _segsr_models():
    from basicsr.utils.registry import MODEL_REGISTRY

    return [cls for _, cls in MODEL_REGISTRY if is_segsr_class(cls)]


def _missing(reads, known):
    blocks = MAIN_BLOCKS + tuple(b for b in known if '.' in b)
    missing = {b: sorted(reads.get(b, set()) - known.get(b, set())) for b in blocks}
    return {b: keys for b, keys in missing.items() if keys}


@pytest.mark.parametrize('model', _segsr_models(), ids=lambda c: c.__name__)
def test_keys_a_model_class_reads_are_declared(model):
    assert _missing(scan_object(model), model_known_keys(model)) == {}


MODEL_MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'segsr', 'models', '*.py'))
                       if not p.endswith('__init__.py'))


@pytest.mark.parametrize('name', MODEL_MODULES)
def test_keys_a_model_module_reads_are_known_to_a_model_using_it(name):
    """Mixins and helpers read keys on behalf of the models built on them: every key one reads is declared by (or
    inherited from BasicSR by) a registered model using the module; what it reads from dataset blocks is a dataset
    key."""
    module = importlib.import_module(f'segsr.models.{name}')
    users = [c for c in _segsr_models() if any(k.__module__ == module.__name__ for k in c.__mro__)] or _segsr_models()
    known = merge_reads(*(model_known_keys(c) for c in users))
    with open(module.__file__) as f:
        reads = scan_source(f.read())
    assert _missing(reads, known) == {}
    assert reads.get('dataset', set()) <= dataset_known_keys(importlib.import_module(
        'segsr.data.paired_image_seg_dataset').PairedImageSegDataset)


def test_keys_segsr_datasets_read_are_declared():
    from basicsr.utils.registry import DATASET_REGISTRY

    datasets = [cls for _, cls in DATASET_REGISTRY if is_segsr_class(cls)]
    assert datasets
    for cls in datasets:
        reads = scan_object(importlib.import_module(cls.__module__), 'dataset').get('dataset', set())
        assert reads <= set(cls.OPTION_KEYS), (cls.__name__, reads - set(cls.OPTION_KEYS))


def test_scanner_follows_blocks_through_names_loops_and_getters():
    source = '''
def f(self, opt):
    train_opt = self.opt['train']
    x = train_opt.get('a', 1) + (opt.get('val') or {}).get('b')
    cq = dict(train_opt.get('cqmix') or {})
    if 'c' in self.opt['path'] and cq['grid']:
        pass
    for phase, d in opt['datasets'].items():
        d['phase'] = phase
    name = dataloader.dataset.opt['name']
    opt[f'pretrain_{x}'] = 0
'''
    reads = scan_source(source)
    assert reads['train'] == {'a', 'cqmix'} and reads['val'] == {'b'} and reads['path'] == {'c'}
    assert reads['train.cqmix'] == {'grid'} and reads['dataset'] == {'phase', 'name'}
    assert reads[''] == {'train', 'val', 'path', 'datasets'}


# ---------------------------------------------------------------------------------------- parse_options
def _parse(tmp_path, opt, *args, is_train=True):
    path = write_yaml(tmp_path / 'o.yml', opt)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # num_gpu > 0 without CUDA
        return parse_options(str(tmp_path), is_train=is_train, argv=['-opt', path, *args])


def test_fixes_make_basicsr_pipelines_use_segsr_parse_options():
    assert basicsr.train.parse_options is segsr_options.parse_options
    assert basicsr.test.parse_options is segsr_options.parse_options


@pytest.mark.parametrize('value', [0, -3, None, 'many', 2.5])
def test_total_iter_below_one_or_missing_is_refused(tmp_path, tiny_data, value):
    opt = stock_esrgan_opt(tiny_data, total_iter=value)
    if value is None:
        del opt['train']['total_iter']
    with pytest.raises(ValueError, match=r"o\.yml: option 'train\.total_iter' must be a whole number"):
        _parse(tmp_path, opt)
    _parse(tmp_path, opt, is_train=False)  # testing needs no total_iter


def test_derived_values_match_basicsr(tmp_path, tiny_data):
    opt = stock_esrgan_opt(tiny_data, total_iter=3)
    opt['datasets']['val_2'] = dict(opt['datasets']['val'], dataroot_gt='~/gt')
    del opt['manual_seed']
    parsed, args = _parse(tmp_path, opt, '--auto_resume', '--debug')
    assert args.opt == str(tmp_path / 'o.yml') and args.launcher == 'none'
    assert parsed['is_train'] and parsed['auto_resume'] and not parsed['dist']
    assert (parsed['rank'], parsed['world_size']) == (0, 1) and 1 <= parsed['manual_seed'] <= 10000
    assert parsed['name'] == 'debug_stock_esrgan' and parsed['val']['val_freq'] == 8
    assert parsed['logger']['print_freq'] == 1 and parsed['logger']['save_checkpoint_freq'] == 8
    assert parsed['datasets']['val_2']['phase'] == 'val' and parsed['datasets']['train']['scale'] == 4
    assert parsed['datasets']['val_2']['dataroot_gt'] == os.path.expanduser('~/gt')
    root = str(tmp_path / 'experiments' / 'debug_stock_esrgan')
    assert parsed['path']['experiments_root'] == root and parsed['path']['log'] == root
    assert parsed['path']['models'] == os.path.join(root, 'models')
    assert parsed['path']['training_states'] == os.path.join(root, 'training_states')
    test_opt, _ = _parse(tmp_path, opt, is_train=False)
    assert test_opt['path']['results_root'] == str(tmp_path / 'results' / 'stock_esrgan')
    assert 'models' not in test_opt['path'] and not test_opt['is_train']


def test_force_yml_types_values_and_creates_missing_blocks(tmp_path, tiny_data):
    opt = stock_esrgan_opt(tiny_data, total_iter=3)
    opt['val']['metrics'] = None
    parsed, _ = _parse(tmp_path, opt, '--force_yml', 'train:optim_g:lr=2e-4', 'logger:wandb:project=~',
                       'val:metrics:niqe:type=calculate_niqe', 'val:metrics:niqe:crop_border=4',
                       'train:scheduler:milestones=[10, 20]', 'manual_seed=7', 'logger:use_tb_logger=false')
    assert parsed['train']['optim_g']['lr'] == 2e-4 and isinstance(parsed['train']['optim_g']['lr'], float)
    assert parsed['logger']['wandb'] == {'project': None} and parsed['manual_seed'] == 7
    assert parsed['val']['metrics']['niqe'] == {'type': 'calculate_niqe', 'crop_border': 4}
    assert parsed['train']['scheduler']['milestones'] == [10, 20] and parsed['logger']['use_tb_logger'] is False


def test_force_yml_errors_name_the_entry(tmp_path, tiny_data):
    opt = stock_esrgan_opt(tiny_data, total_iter=3)
    with pytest.raises(ValueError, match="o.yml: --force_yml 'train:total_iter' must look like"):
        _parse(tmp_path, opt, '--force_yml', 'train:total_iter')
    with pytest.raises(ValueError, match="option 'train.total_iter' is 3, not a block"):
        apply_force_yml(deepcopy(opt), ['train:total_iter:x=1'], 'o.yml')
    with pytest.raises(ValueError, match="'train.seg_optt': did you mean 'train.seg_opt'"):
        _parse(tmp_path, seg_task_opt(tiny_data, 2), '--force_yml', 'train:seg_optt:type=SegCrossEntropyLoss')


def test_force_yml_experiments_root_is_honoured(tmp_path, tiny_data):
    opt = seg_task_opt(tiny_data, total_iter=1, name='forced')
    forced = tmp_path / 'forced_root'
    run_entry('train.py', write_yaml(tmp_path / 'f.yml', opt), tmp_path, '--force_yml',
              f'path:experiments_root={forced}', 'train:optim_task:lr=1e-3')
    assert (forced / 'models' / 'net_task_latest.pth').is_file()
    assert not (tmp_path / 'experiments' / 'forced').exists()
    assert 'lr: 0.001' in read_log(forced)


def test_stock_esrgan_config_with_an_unknown_key_runs_and_warns(tiny_data, tmp_path):
    opt = stock_esrgan_opt(tiny_data, total_iter=1)
    opt['datasets']['train']['use_flip'] = True  # BasicSR reads use_hflip
    proc = run_entry('train.py', write_yaml(tmp_path / 'e.yml', opt), tmp_path)
    out = proc.stdout + proc.stderr
    assert 'OptionKeyWarning' in out and "'datasets.train.use_flip': did you mean 'datasets.train.use_hflip'?" in out
    assert (tmp_path / 'experiments' / 'stock_esrgan' / 'models' / 'net_g_latest.pth').is_file()
