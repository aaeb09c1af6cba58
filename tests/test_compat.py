"""The basicsr 1.4.2 breakages that segsr.compat fixes (applied by conftest as by the entry points), and registration."""
import ast
import os
from pathlib import Path

import pytest
import torch

import segsr
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY

from segsr.utils.checkpoint import atomic_torch_save
from segsr.utils.options import build_scheduler, check_registered_types

REGISTRIES = {'_arch.py': ARCH_REGISTRY, '_model.py': MODEL_REGISTRY, '_dataset.py': DATASET_REGISTRY,
              '_loss.py': LOSS_REGISTRY}
PACKAGE = Path(segsr.__file__).parent


def _registry_files():
    """Every segsr file that BasicSR's registry scan imports (``*_arch.py``, ``*_model.py``, ...)."""
    return sorted((path, registry) for suffix, registry in REGISTRIES.items()
                  for path in PACKAGE.rglob(f'*{suffix}'))


def test_registry_files_are_found():
    kinds = {registry._name for _, registry in _registry_files()}
    assert kinds == {'arch', 'model', 'dataset', 'loss'}


@pytest.mark.parametrize('path, registry', _registry_files(), ids=lambda v: getattr(v, 'name', None) or v._name)
def test_every_class_in_a_registry_file_is_registered(path, registry):
    """A class in an ``*_arch.py`` / ``*_model.py`` / ``*_dataset.py`` / ``*_loss.py`` file is registered after
    ``import segsr`` (found by scanning the file, not listed by hand); building blocks live in other modules or
    are private (``_Name``)."""
    classes = [node.name for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.ClassDef) and not node.name.startswith('_')]
    assert classes, f'{path} defines no public class'
    module = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    for name in classes:
        assert name in registry, f'{module}.{name} is not registered in the {registry._name} registry'
        assert registry.get(name).__module__ == module, f'{name} is registered from {registry.get(name).__module__}'


def test_basicsr_modules_import():
    import basicsr.data.degradations  # needs torchvision.transforms.functional_tensor
    import basicsr.data.realesrgan_dataset  # noqa: F401
    from torchvision.transforms.functional_tensor import rgb_to_grayscale
    assert rgb_to_grayscale(torch.ones(3, 2, 2)).shape == (1, 2, 2)


@pytest.mark.parametrize('name, cls', [('Adam', torch.optim.Adam), ('AdamW', torch.optim.AdamW),
                                       ('SGD', torch.optim.SGD), ('RMSprop', torch.optim.RMSprop)])
def test_optimizer_factory(name, cls):
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = BaseModel.get_optimizer(None, name, params, lr=0.1, weight_decay=0.0)
    assert isinstance(opt, cls)


def test_unknown_optimizer_names_type():
    with pytest.raises(ValueError, match="'Adamm'"):
        BaseModel.get_optimizer(None, 'Adamm', [torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_schedulers_do_not_mutate_options():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for sched_opt in ({'type': 'OneCycleLR', 'pct_start': 0.3}, {'type': 'MultiStepLR', 'milestones': [2], 'gamma': .5},
                      {'type': 'CosineAnnealingRestartLR', 'periods': [10], 'restart_weights': [1]}):
        before = dict(sched_opt)
        sched = build_scheduler(sched_opt, torch.optim.AdamW(params, lr=1e-3), total_iter=10)
        assert sched_opt == before
        assert sched is not None
    with pytest.raises(ValueError, match='train.scheduler.type'):
        build_scheduler({'type': 'Nope'}, torch.optim.SGD(params, lr=1), 10)


def test_perceptual_loss_l2(monkeypatch):
    import basicsr.losses.basic_loss as basic_loss

    class TinyExtractor(torch.nn.Module):  # no VGG weights reachable here
        def __init__(self, layer_name_list, **kwargs):
            super().__init__()
            self.names = layer_name_list

        def forward(self, x):
            return {n: x for n in self.names}

    monkeypatch.setattr(basic_loss, 'VGGFeatureExtractor', TinyExtractor)
    loss = basic_loss.PerceptualLoss({'conv5_4': 1.0}, criterion='l2')
    x, y = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    percep, _ = loss(x, y)
    assert isinstance(loss.criterion, torch.nn.MSELoss)
    assert float(percep) == pytest.approx(1.0)


def test_unknown_type_names_option_and_file():
    opt = {'model_type': 'SegTaskModel', 'network_task': {'type': 'NoSuchNet'}, 'datasets': {}}
    with pytest.raises(ValueError, match=r"my\.yml: option 'network_task\.type' = 'NoSuchNet' is not a registered"):
        check_registered_types(opt, 'my.yml')
    with pytest.raises(ValueError, match="'model_type' = 'Nope'"):
        check_registered_types({'model_type': 'Nope'}, 'my.yml')
    with pytest.raises(ValueError, match="'train.pixel_opt.type' = 'L3Loss'"):
        check_registered_types({'train': {'pixel_opt': {'type': 'L3Loss'}}}, 'my.yml')


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / 'net_latest.pth')
    atomic_torch_save({'a': torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('crash mid-write')

    with pytest.raises(RuntimeError):
        atomic_torch_save({'a': torch.zeros(2), 'b': Unpicklable()}, path)
    assert torch.equal(torch.load(path)['a'], torch.ones(2))
    assert os.listdir(tmp_path) == ['net_latest.pth']  # no temporary left behind


def test_filter2d_replacement_matches_basicsr_and_takes_non_contiguous_input():
    import basicsr.models.realesrgan_model as realesrgan_model
    import basicsr.utils.img_process_util as img_process_util

    from segsr.models.realesr_util import filter2d as _filter2d

    assert realesrgan_model.filter2D is _filter2d and img_process_util.filter2D is _filter2d
    torch.manual_seed(0)
    img, kernels = torch.rand(2, 3, 20, 17), torch.rand(2, 5, 5)
    expected = torch.stack([  # per image and channel: reflect padding + correlation with its kernel
        torch.nn.functional.conv2d(torch.nn.functional.pad(img[b:b + 1], (2, 2, 2, 2), mode='reflect').transpose(0, 1),
                                   kernels[b].view(1, 1, 5, 5))[:, 0] for b in range(2)])
    assert torch.allclose(_filter2d(img, kernels), expected, atol=1e-6)
    assert torch.allclose(_filter2d(img, kernels[:1]), _filter2d(img, kernels[:1].expand(2, 5, 5)), atol=1e-6)
    channels_last = img.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # not contiguous: .view would fail
    assert torch.allclose(_filter2d(channels_last, kernels), expected, atol=1e-6)


def test_realesrgan_pool_on_cpu():
    """The training-pair pool fills, then swaps batches with random pool entries, all on the batch's device; it saves
    and restores itself."""
    from segsr.models.realesr_util import TrainingPairPool

    pool = TrainingPairPool(4)
    assert pool.state_dict() is None  # nothing to save before the first batch
    batches = [torch.full((2, 3, 4, 4), float(i)) for i in range(3)]
    for i in range(2):
        lq, gt = pool.swap(batches[i], batches[i].repeat(1, 1, 4, 4))
        assert torch.equal(lq, batches[i])  # filling: the batch passes through
    saved = pool.state_dict()
    lq, gt = pool.swap(batches[2], batches[2].repeat(1, 1, 4, 4))
    assert set(lq[:, 0, 0, 0].tolist()) <= {0.0, 1.0}  # two samples from the pool
    assert torch.equal(gt[:, :, :4, :4], lq)  # pairs stay pairs
    assert sorted(pool.state_dict()['queue_lr'][:, 0, 0, 0].tolist()).count(2.0) == 2  # the new batch went in
    restored = TrainingPairPool(4)
    restored.load_state_dict(saved, torch.device('cpu'))
    torch.manual_seed(0)
    again = restored.swap(batches[2], batches[2].repeat(1, 1, 4, 4))
    pool.load_state_dict(saved, torch.device('cpu'))
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(again, pool.swap(batches[2], batches[2].repeat(1, 1, 4, 4))))
    with pytest.raises(ValueError, match="'queue_size' = 3"):
        TrainingPairPool(3).swap(batches[0], batches[0])
    with pytest.raises(ValueError, match="holds 4 pairs but option 'queue_size' is 8"):
        TrainingPairPool(8).load_state_dict(saved, torch.device('cpu'))
    with pytest.raises(ValueError, match="'queue_size' = 0"):
        TrainingPairPool(0)
