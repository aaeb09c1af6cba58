"""Synthetic labelled scenes: determinism, classes, textures that x4 bicubic destroys, dataset_info."""
import hashlib
import os
from os import path as osp
from pathlib import Path

import cv2
import numpy as np
import pytest

import segsr  # noqa: F401  (before basicsr)
from basicsr.utils.matlab_functions import imresize
from segsr.data.data_util import load_dataset_info
from segsr.data.paired_image_seg_dataset import PairedImageSegDataset
from segsr.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, make_scene, write_synthetic_dataset

TEXTURED = ('building', 'road', 'vegetation', 'car', 'pole')


def digest(folder: str) -> dict:
    return {name: hashlib.sha256(Path(folder, name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


def test_make_scene_is_deterministic():
    rgb_a, label_a = make_scene(7, 64, 96)
    rgb_b, label_b = make_scene(7, 64, 96)
    assert rgb_a.shape == (64, 96, 3) and rgb_a.dtype == np.uint8
    assert label_a.shape == (64, 96) and label_a.dtype == np.uint8
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(label_a, label_b)
    rgb_c, _ = make_scene(8, 64, 96)
    assert not np.array_equal(rgb_a, rgb_c)


def test_written_files_are_identical_for_the_same_seed(tmp_path):
    write_synthetic_dataset(str(tmp_path / 'a'), 2, 1, 48, 64, seed=3)
    write_synthetic_dataset(str(tmp_path / 'b'), 2, 1, 48, 64, seed=3)
    write_synthetic_dataset(str(tmp_path / 'c'), 2, 1, 48, 64, seed=4)
    for sub in ('train/hr', 'train/seg', 'val/hr', 'val/seg'):
        assert digest(str(tmp_path / 'a' / sub)) == digest(str(tmp_path / 'b' / sub))
    assert digest(str(tmp_path / 'a' / 'train/hr')) != digest(str(tmp_path / 'c' / 'train/hr'))
    assert (tmp_path / 'a' / 'dataset_info.yml').read_text() == (tmp_path / 'b' / 'dataset_info.yml').read_text()


def test_scenes_hold_several_classes_and_ignore():
    seen = set()
    for seed in range(6):
        _, label = make_scene(seed, 128, 128)
        values = set(np.unique(label).tolist())
        assert values <= set(range(6)) | {255}
        assert len(values - {255}) >= 5, (seed, values)
        seen |= values
    assert seen == set(range(6)) | {255}


@pytest.mark.parametrize('num_classes', [2, 3, 4])
def test_fewer_classes(num_classes):
    _, label = make_scene(1, 64, 64, num_classes=num_classes, with_ignore=False)
    assert set(np.unique(label).tolist()) == set(range(num_classes))


def test_bad_arguments():
    with pytest.raises(ValueError, match='num_classes must be in 2..6'):
        make_scene(0, 64, 64, num_classes=7)
    with pytest.raises(ValueError, match='at least 16x16'):
        make_scene(0, 8, 64)


def high_frequency(gray: np.ndarray) -> np.ndarray:
    return np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))


def test_classes_are_textured_and_x4_bicubic_destroys_the_texture():
    """Every class varies inside (std > 8 grey levels); the fine texture of the textured classes mostly vanishes
    after x4 MATLAB bicubic down- and up-sampling, which is what makes LR segmentation harder."""
    stds = {name: [] for name in SYNTHETIC_CLASSES}
    ratios = {name: [] for name in TEXTURED}
    for seed in range(4):
        rgb, label = make_scene(seed, 128, 128)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        lr = np.clip(imresize(gray[..., None] / 255., 0.25), 0, 1)
        up = cv2.resize(lr, (128, 128), interpolation=cv2.INTER_CUBIC) * 255.
        hf_hr, hf_up = high_frequency(gray), high_frequency(up.astype(np.float32))
        eroded = {c: cv2.erode((label == c).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for c in range(6)}
        for c, name in enumerate(SYNTHETIC_CLASSES):
            if (label == c).sum() > 50:
                stds[name].append(gray[label == c].std())
            if name in TEXTURED and eroded[c].sum() > 30:
                ratios[name].append(hf_up[eroded[c]].mean() / hf_hr[eroded[c]].mean())
    for name, values in stds.items():
        assert values and np.mean(values) > 8, (name, values)
    for name, values in ratios.items():
        assert values and np.mean(values) < 0.25, (name, values)


def test_dataset_info_and_layout_load_in_the_dataset(tmp_path):
    root = str(tmp_path / 'syn')
    info = write_synthetic_dataset(root, num_train=2, num_val=1, height=64, width=80, seed=0, num_classes=6)
    assert load_dataset_info(root) == info
    assert info['num_classes'] == 6 and info['ignore_index'] == 255
    assert info['class_names'] == list(SYNTHETIC_CLASSES)
    assert info['palette'] == [list(c) for c in SYNTHETIC_PALETTE]
    assert sorted(os.listdir(osp.join(root, 'train', 'hr'))) == ['train_0000.png', 'train_0001.png']
    assert sorted(os.listdir(osp.join(root, 'val', 'seg'))) == ['val_0000.png']
    label = cv2.imread(osp.join(root, 'train', 'seg', 'train_0000.png'), cv2.IMREAD_UNCHANGED)
    assert label.ndim == 2 and label.dtype == np.uint8
    dataset = PairedImageSegDataset(
        dict(name='syn', phase='val', scale=4, dataroot_gt=osp.join(root, 'val', 'hr'),
             dataroot_seg=osp.join(root, 'val', 'seg'), io_backend=dict(type='disk'),
             num_classes=info['num_classes']))
    assert dataset.class_names == list(SYNTHETIC_CLASSES)  # found in <dataroot_gt>/../../dataset_info.yml
    assert dataset.palette == [list(c) for c in SYNTHETIC_PALETTE]
    out = dataset[0]
    assert out['gt'].shape == (3, 64, 80) and out['lq'].shape == (3, 16, 20)
    np.testing.assert_array_equal(out['seg'].numpy(), cv2.imread(out['seg_path'], cv2.IMREAD_UNCHANGED))


def test_dataset_info_option(tmp_path):
    root = str(tmp_path / 'syn')
    write_synthetic_dataset(root, num_train=1, num_val=1, height=32, width=32, seed=0, num_classes=4)
    opt = dict(name='syn4', phase='val', scale=4, dataroot_gt=osp.join(root, 'val', 'hr'),
               dataroot_seg=osp.join(root, 'val', 'seg'), io_backend=dict(type='disk'), num_classes=6)
    assert PairedImageSegDataset(opt).class_names is None  # found but num_classes differs: not used
    with pytest.raises(ValueError, match=r"'syn4': option dataset_info: num_classes 6 .* differ from 4 / 255"):
        PairedImageSegDataset(dict(opt, dataset_info=root))
    assert PairedImageSegDataset(dict(opt, num_classes=4, dataset_info=root)).class_names == list(
        SYNTHETIC_CLASSES[:4])
