"""PairedImageSegDataset, seg transforms and LMDB creation on tiny self-made data.

The images encode their own labels: the red channel of a pixel is ``class * 20`` (255 for ignore), so after any
crop, flip or rotation ``seg`` must equal the class decoded from ``gt`` at every pixel.
"""
import os
import random
import re
from copy import deepcopy
from os import path as osp

import cv2
import lmdb
import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

import segsr  # noqa: F401  (before basicsr)
from basicsr.data import build_dataset
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from segsr.data.lmdb_util import make_layout_lmdbs, make_lmdb
from segsr.data.paired_image_seg_dataset import PairedImageSegDataset
from segsr.data.seg_transforms import (apply_flips, augment_seg, build_label_lut, downsample, mod_crop,
                                       paired_random_crop_seg, remap_labels, validate_labels)

NUM_CLASSES = 5
SCALE = 4
IGNORE = 255


# ------------------------------------------------------------------------------------------------------ data
def encoded_pair(rng: np.random.Generator, h: int, w: int):
    """BGR uint8 image whose red channel encodes the per-pixel class of the returned label map."""
    label = rng.integers(0, NUM_CLASSES, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.1] = IGNORE
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    img[..., 2] = np.where(label == IGNORE, 255, label.astype(np.int32) * 20)
    return img, label


def decode_class(gt: torch.Tensor) -> torch.Tensor:
    """Class map encoded in the red channel of an RGB [0, 1] tensor."""
    red = torch.round(gt[0] * 255).long()
    return torch.where(red == 255, torch.full_like(red, IGNORE), red // 20)


def quantized_lq(img_bgr: np.ndarray) -> np.ndarray:
    lq = np.clip(imresize(img_bgr.astype(np.float32) / 255., 1 / SCALE), 0, 1)
    return (lq * 255).round().astype(np.uint8)


def write_split(root, split: str, sizes, seed: int = 0, with_lq: bool = True) -> None:
    rng = np.random.default_rng(seed)
    for sub in ('hr', 'seg') + (('lq',) if with_lq else ()):
        os.makedirs(osp.join(root, split, sub), exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        img, label = encoded_pair(rng, h, w)
        cv2.imwrite(osp.join(root, split, 'hr', f'img{i:02d}.png'), img)
        cv2.imwrite(osp.join(root, split, 'seg', f'img{i:02d}.png'), label)
        if with_lq:
            cv2.imwrite(osp.join(root, split, 'lq', f'img{i:02d}.png'), quantized_lq(mod_crop(img, SCALE)))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """train: 3 images (32x40, 40x36, 44x48), val: 2 images of sizes not divisible by 4; with LQ and LMDBs."""
    root = str(tmp_path_factory.mktemp('segdata'))
    write_split(root, 'train', [(32, 40), (40, 36), (44, 48)], seed=1)
    write_split(root, 'val', [(37, 30), (21, 26)], seed=2)
    make_layout_lmdbs(root)
    for split in ('train', 'val'):
        make_lmdb(osp.join(root, split, 'lq'), osp.join(root, 'lmdb', f'{split}_lq.lmdb'))
    return root


def make_opt(root: str, backend: str = 'disk', phase: str = 'train', split: str = None, lq: bool = False,
             **kwargs) -> dict:
    split = split or phase
    folders = dict(gt='hr', seg='seg', lq='lq')
    if backend == 'lmdb':
        roots = {k: osp.join(root, 'lmdb', f'{split}_{d}.lmdb') for k, d in folders.items()}
    else:
        roots = {k: osp.join(root, split, d) for k, d in folders.items()}
    opt = dict(name='tiny', type='PairedImageSegDataset', phase=phase, scale=SCALE, dataroot_gt=roots['gt'],
               dataroot_seg=roots['seg'], io_backend=dict(type=backend), num_classes=NUM_CLASSES, gt_size=16,
               use_hflip=True, use_rot=True)
    if lq:
        opt['dataroot_lq'] = roots['lq']
    opt.update(kwargs)
    return opt


def sample(dataset, index: int, seed: int) -> dict:
    random.seed(seed)
    return dataset[index]


# ------------------------------------------------------------------------------------------------ transforms
@pytest.mark.parametrize('hflip', [False, True])
@pytest.mark.parametrize('vflip', [False, True])
@pytest.mark.parametrize('rot90', [False, True])
def test_apply_flips_moves_labels_with_pixels(hflip, vflip, rot90):
    rng = np.random.default_rng(0)
    img, label = encoded_pair(rng, 6, 9)
    ref = img[:, ::-1] if hflip else img
    ref = ref[::-1] if vflip else ref
    ref = ref.transpose(1, 0, 2) if rot90 else ref
    out_img, out_label = apply_flips(img, hflip, vflip, rot90), apply_flips(label.astype(np.int64), hflip, vflip,
                                                                            rot90)
    np.testing.assert_array_equal(out_img, ref)
    assert out_label.shape == ref.shape[:2] and out_label.flags.c_contiguous
    decoded = np.where(out_img[..., 2] == 255, IGNORE, out_img[..., 2] // 20)
    np.testing.assert_array_equal(out_label, decoded)


def test_augment_seg_reaches_all_eight_states_and_keeps_inputs():
    img = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    label = np.arange(24, dtype=np.int64).reshape(4, 6)
    img0, label0 = img.copy(), label.copy()
    random.seed(0)
    states = set()
    for _ in range(200):
        (a, b), status = augment_seg([img, label], hflip=True, rotation=True, return_status=True)
        np.testing.assert_array_equal(a[..., 0] / 3, b)
        states.add(status)
    assert len(states) == 8
    np.testing.assert_array_equal(img, img0)
    np.testing.assert_array_equal(label, label0)


def test_paired_random_crop_seg_lq_grid():
    rng = np.random.default_rng(0)
    img, label = encoded_pair(rng, 24, 32)
    lq = img[::SCALE, ::SCALE]
    random.seed(3)
    gt_c, seg_c, lq_c = paired_random_crop_seg(img, label, 8, SCALE, lq)
    np.testing.assert_array_equal(gt_c[::SCALE, ::SCALE], lq_c)
    np.testing.assert_array_equal(np.where(gt_c[..., 2] == 255, IGNORE, gt_c[..., 2] // 20), seg_c)
    with pytest.raises(ValueError, match=r"'x\.png'.*smaller than gt_size 40"):
        paired_random_crop_seg(img, label, 40, SCALE, gt_path='x.png')


def test_label_lut_and_validation():
    raw = np.array([[0, 11, 3], [11, 2, 255]], np.uint8)
    out = remap_labels(raw, {11: 255})
    assert out.dtype == np.int64 and out.tolist() == [[0, 255, 3], [255, 2, 255]]
    raw16 = raw.astype(np.uint16) * 100
    assert remap_labels(raw16, {1100: 4})[0, 1] == 4
    assert remap_labels(raw16, lut=build_label_lut({1100: 4}, 65536))[0, 1] == 4
    with pytest.raises(ValueError, match='256 entries cannot map label value 25500'):
        remap_labels(raw16, lut=build_label_lut({1100: 4}, 256))
    validate_labels(out, num_classes=4)
    with pytest.raises(ValueError, match=r"'lab\.png' has values \[3\]"):
        validate_labels(out, num_classes=3, path='lab.png')


@pytest.mark.parametrize('method', ['matlab', 'torch'])
def test_downsample_methods(method):
    img = np.random.default_rng(0).random((16, 12, 3)).astype(np.float32)
    out = downsample(img, SCALE, method)
    assert out.shape == (4, 3, 3) and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    if method == 'torch':
        ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(4, 3), mode='bicubic',
                            antialias=True).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    else:
        ref = np.clip(imresize(img, 1 / SCALE), 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match='not a multiple of scale 4'):
        downsample(img[:15], SCALE, method)
    with pytest.raises(ValueError, match="Unknown downsampling method 'area'"):
        downsample(img, SCALE, 'area')


# -------------------------------------------------------------------------------------------------- dataset
def test_registered_built_by_basicsr_and_options_untouched(data_root):
    assert DATASET_REGISTRY.get('PairedImageSegDataset') is PairedImageSegDataset
    opt = make_opt(data_root, 'lmdb', lq=True)
    original = deepcopy(opt)
    dataset = build_dataset(opt)
    dataset[0]
    PairedImageSegDataset(opt)[1]
    assert opt == original
    assert len(dataset) == 3 and dataset.num_classes == NUM_CLASSES and dataset.ignore_index == IGNORE


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
@pytest.mark.parametrize('lq', [False, True])
def test_labels_follow_pixels_in_training(data_root, backend, lq):
    dataset = PairedImageSegDataset(make_opt(data_root, backend, lq=lq, gt_size=32))
    for seed in range(12):
        index = seed % len(dataset)
        out = sample(dataset, index, seed)
        assert out['gt'].shape == (3, 32, 32) and out['lq'].shape == (3, 8, 8)
        assert out['seg'].shape == (32, 32) and out['seg'].dtype == torch.int64
        assert torch.equal(out['seg'], decode_class(out['gt']))
        gt_hwc = out['gt'].permute(1, 2, 0).numpy()
        ref_lq = torch.from_numpy(downsample(gt_hwc, SCALE, 'matlab')).permute(2, 0, 1)
        if lq:  # read LQ: same window; compare beyond the bicubic kernel's reach of the crop border (2 LQ px)
            assert (out['lq'] - ref_lq)[:, 2:-2, 2:-2].abs().max() < 0.6 / 255
            assert out['lq_path'].endswith(f'img{index:02d}.png') or out['lq_path'] == f'img{index:02d}'
        else:  # LQ made on the fly from the augmented crop
            assert torch.allclose(out['lq'], ref_lq, atol=1e-5)
            assert out['lq_path'] == out['gt_path']


def test_torch_downsample_option(data_root):
    dataset = PairedImageSegDataset(make_opt(data_root, lq_downsample='torch'))
    out = sample(dataset, 1, 0)
    ref = F.interpolate(out['gt'][None], size=(4, 4), mode='bicubic', antialias=True).clamp(0, 1)[0]
    assert torch.allclose(out['lq'], ref, atol=1e-5)


def _smooth_image(h=128, w=192, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.random((h // 16, w // 16, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def test_downsampling_methods_by_hand():
    """Each method against its library called by hand; they are different kernels of about the same image."""
    from PIL import Image

    from segsr.data.seg_transforms import BLUR_JPEG_QUALITY, BLUR_JPEG_SIGMA, LQ_DOWNSAMPLE_METHODS, downsample

    img = _smooth_image()
    out = {m: downsample(img, 4, m) for m in LQ_DOWNSAMPLE_METHODS}
    assert all(o.shape == (32, 48, 3) and o.dtype == np.float32 and 0 <= o.min() and o.max() <= 1
               for o in out.values())
    lanczos = np.stack([np.asarray(Image.fromarray(img[:, :, c], mode='F').resize((48, 32), Image.LANCZOS))
                        for c in range(3)], axis=2)
    np.testing.assert_allclose(out['pil_lanczos'], np.clip(lanczos, 0, 1), atol=1e-6)
    np.testing.assert_allclose(out['cv2_area'], img.reshape(32, 4, 48, 4, 3).mean(axis=(1, 3)), atol=1e-6)
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=BLUR_JPEG_SIGMA, borderType=cv2.BORDER_REFLECT_101)
    lq8 = (np.clip(downsample(blurred, 4, 'matlab'), 0, 1) * 255).round().astype(np.uint8)
    _, buf = cv2.imencode('.jpg', lq8[:, :, ::-1].copy(), [cv2.IMWRITE_JPEG_QUALITY, BLUR_JPEG_QUALITY])
    np.testing.assert_array_equal(out['blur_jpeg'], cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1] / np.float32(255))
    assert np.array_equal(out['blur_jpeg'] * 255, np.round(out['blur_jpeg'] * 255))  # 8-bit
    for m in ('matlab', 'torch'):
        np.testing.assert_array_equal(out[f'{m}_u8'], (out[m] * 255).round() / np.float32(255))
    for m, o in out.items():  # other kernels, same picture
        assert 0 < np.abs(o - out['matlab']).mean() < 0.06 or m == 'matlab', m
    assert downsample(img[:, :, 0], 4, 'blur_jpeg').shape == (32, 48)  # gray stays 2-D


def test_training_mix_draws_each_method_per_sample(data_root):
    from segsr.data.seg_transforms import downsample

    methods = ['matlab', 'pil_lanczos', 'cv2_area']
    dataset = PairedImageSegDataset(make_opt(data_root, lq_downsample=methods))
    seen = set()
    for seed in range(12):
        out = sample(dataset, 0, seed)
        gt = out['gt'].permute(1, 2, 0).numpy()
        match = [m for m in methods if np.allclose(out['lq'].permute(1, 2, 0).numpy(), downsample(gt, 4, m),
                                                   atol=1e-6)]
        assert len(match) == 1
        seen.update(match)
    assert seen == set(methods)
    with pytest.raises(ValueError, match=r"a mix of methods is for training; phase 'val'"):
        PairedImageSegDataset(make_opt(data_root, phase='val', lq_downsample=methods))
    with pytest.raises(ValueError, match=r"option lq_downsample 'bilinear' is not supported"):
        PairedImageSegDataset(make_opt(data_root, lq_downsample=['matlab', 'bilinear']))
    with pytest.raises(ValueError, match='option lq_downsample is an empty list'):
        PairedImageSegDataset(make_opt(data_root, lq_downsample=[]))


@pytest.mark.parametrize('phase,lq', [('train', False), ('train', True), ('val', False), ('val', True)])
def test_disk_and_lmdb_give_identical_samples(data_root, phase, lq):
    disk = PairedImageSegDataset(make_opt(data_root, 'disk', phase, lq=lq))
    lmdb_ds = PairedImageSegDataset(make_opt(data_root, 'lmdb', phase, lq=lq))
    assert len(disk) == len(lmdb_ds)
    for index in range(len(disk)):
        a, b = sample(disk, index, index), sample(lmdb_ds, index, index)
        for key in ('lq', 'gt', 'seg'):
            assert torch.equal(a[key], b[key]), (key, index)
        assert osp.splitext(osp.basename(a['gt_path']))[0] == b['gt_path']


@pytest.mark.parametrize('lq', [False, True])
def test_val_crops_to_multiple_of_scale(data_root, lq):
    dataset = PairedImageSegDataset(make_opt(data_root, phase='val', lq=lq))
    out = dataset[0]  # 37 x 30
    assert out['gt'].shape == (3, 36, 28) and out['seg'].shape == (36, 28) and out['lq'].shape == (3, 9, 7)
    assert torch.equal(out['seg'], decode_class(out['gt']))
    assert dataset[1]['gt'].shape == (3, 20, 24)


@pytest.mark.parametrize('backend, where', [('disk', r"img00\.png'"), ('lmdb', r"key 'img00' of LMDB '.*val_hr\.lmdb'")])
def test_val_without_crop_to_scale_raises_at_build(data_root, backend, where):
    with pytest.raises(ValueError, match=where + r" of size \(37, 30\) is not a multiple of scale 4"):
        PairedImageSegDataset(make_opt(data_root, backend, phase='val', crop_to_scale=False))


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_dataloader_with_two_workers(data_root, backend):
    dataset = PairedImageSegDataset(make_opt(data_root, backend, lq=(backend == 'lmdb')))
    dataset[0]  # an open file client in the main process must not break pickling into workers
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    assert [b['gt'].shape[0] for b in batches] == [2, 1]
    for batch in batches:
        assert batch['seg'].dtype == torch.int64
        for gt, seg in zip(batch['gt'], batch['seg']):
            assert torch.equal(seg, decode_class(gt))


def test_label_map_and_meta_info_by_stem(tmp_path):
    rng = np.random.default_rng(5)
    for sub in ('hr', 'seg'):
        os.makedirs(tmp_path / sub)
    img, label = encoded_pair(rng, 16, 20)
    raw = np.where(label == IGNORE, 11, label).astype(np.uint8)  # 11 = CamVid's Unlabelled
    cv2.imwrite(str(tmp_path / 'hr' / 'a.jpg.png'), img)  # a dot inside the stem
    cv2.imwrite(str(tmp_path / 'hr' / 'b.png'), img)
    cv2.imwrite(str(tmp_path / 'seg' / 'a.jpg_lab.png'), raw)
    cv2.imwrite(str(tmp_path / 'seg' / 'b_lab.png'), raw)
    (tmp_path / 'list.txt').write_text('b\n')  # VOC-style list of stems
    opt = dict(name='voc-like', phase='val', scale=SCALE, dataroot_gt=str(tmp_path / 'hr'),
               dataroot_seg=str(tmp_path / 'seg'), io_backend=dict(type='disk'), num_classes=NUM_CLASSES,
               filename_tmpl_seg='{}_lab', label_map={11: 255})
    dataset = PairedImageSegDataset(opt)
    assert len(dataset) == 2
    assert torch.equal(dataset[0]['seg'], decode_class(dataset[0]['gt']))
    listed = PairedImageSegDataset(dict(opt, meta_info_file=str(tmp_path / 'list.txt')))
    assert len(listed) == 1 and listed[0]['gt_path'].endswith('b.png')
    with pytest.raises(ValueError, match=r"'voc-like'.*values \[11\] outside the classes 0\.\.4"):
        PairedImageSegDataset(dict(opt, label_map=None))[0]


def test_uint16_labels_with_large_label_map_keys(tmp_path):
    rng = np.random.default_rng(6)
    for sub in ('hr', 'seg'):
        os.makedirs(tmp_path / sub)
    img, label = encoded_pair(rng, 16, 20)
    cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), img)
    cv2.imwrite(str(tmp_path / 'seg' / 'a.png'), np.where(label == IGNORE, 1000, label.astype(np.uint16)))
    dataset = PairedImageSegDataset(
        dict(name='u16', phase='val', scale=SCALE, dataroot_gt=str(tmp_path / 'hr'), dataroot_seg=str(tmp_path / 'seg'),
             io_backend=dict(type='disk'), num_classes=NUM_CLASSES, label_map={1000: 255}))
    assert torch.equal(dataset[0]['seg'], decode_class(dataset[0]['gt']))
    with pytest.raises(ValueError, match=r"'u16': label map '.*a\.png' has values \[1000\]"):
        PairedImageSegDataset(dict(dataset.opt, label_map=None))[0]


# ------------------------------------------------------------------------------------ bad input: construction
@pytest.mark.parametrize('key', ['dataroot_gt', 'dataroot_seg', 'num_classes', 'scale', 'phase', 'io_backend'])
def test_missing_option(data_root, key):
    opt = make_opt(data_root)
    del opt[key]
    with pytest.raises(ValueError, match=f"Dataset 'tiny': option '{key}' is missing"):
        PairedImageSegDataset(opt)


@pytest.mark.parametrize('changes,message', [
    (dict(gt_size=30), 'option gt_size 30 is not divisible by scale 4'),
    (dict(io_backend=dict(type='hdf5')), r"option io_backend.type 'hdf5' is not supported"),
    (dict(lq_downsample='area'), r"option lq_downsample 'area' is not supported"),
    (dict(ignore_index=2), 'option ignore_index 2 is one of the classes'),
    (dict(label_map={11: 7}), r'option label_map maps to \[7\]'),
])
def test_bad_option_values(data_root, changes, message):
    with pytest.raises(ValueError, match=message):
        PairedImageSegDataset(make_opt(data_root, **changes))


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_missing_folder(data_root, tmp_path, backend):
    missing = str(tmp_path / ('nope.lmdb' if backend == 'lmdb' else 'nope'))
    with pytest.raises(FileNotFoundError, match=re.escape(f"dataroot_seg '{missing}'")):
        PairedImageSegDataset(make_opt(data_root, backend, dataroot_seg=missing))


def test_folder_that_is_not_an_lmdb(data_root):
    folder = osp.join(data_root, 'train', 'seg')
    with pytest.raises(FileNotFoundError, match=re.escape(f"'{folder}' is not an LMDB")):
        PairedImageSegDataset(make_opt(data_root, 'lmdb', dataroot_seg=folder))


def copy_split(data_root, tmp_path, drop=None):
    """Copy of the train split; ``drop`` = (sub folder, file name) to leave out."""
    import shutil

    root = tmp_path / 'copy'
    shutil.copytree(osp.join(data_root, 'train'), root / 'train')
    if drop:
        os.remove(root / 'train' / drop[0] / drop[1])
    return str(root)


def test_image_without_label(data_root, tmp_path):
    root = copy_split(data_root, tmp_path, ('seg', 'img01.png'))
    gt, seg = osp.join(root, 'train', 'hr', 'img01.png'), osp.join(root, 'train', 'seg', 'img01')
    with pytest.raises(FileNotFoundError, match=re.escape(f"image '{gt}' has no label map: no file '{seg}.*'")):
        PairedImageSegDataset(make_opt(root))


def test_image_without_lq(data_root, tmp_path):
    root = copy_split(data_root, tmp_path, ('lq', 'img02.png'))
    gt, lq = osp.join(root, 'train', 'hr', 'img02.png'), osp.join(root, 'train', 'lq', 'img02')
    with pytest.raises(FileNotFoundError, match=re.escape(f"image '{gt}' has no LQ image: no file '{lq}.*'")):
        PairedImageSegDataset(make_opt(root, lq=True))


def test_meta_info_lists_missing_file(data_root, tmp_path):
    meta = tmp_path / 'meta.txt'
    meta.write_text('img00.png (32,40,3)\nghost.png (8,8,3)\n')
    with pytest.raises(FileNotFoundError, match=r"'ghost\.png' listed in meta_info_file .*meta\.txt"):
        PairedImageSegDataset(make_opt(data_root, meta_info_file=str(meta)))


def test_lmdb_key_missing_from_seg_meta_info(data_root, tmp_path):
    seg_lmdb = tmp_path / 'seg.lmdb'
    make_lmdb(osp.join(data_root, 'train', 'seg'), str(seg_lmdb), label=True, names=['img00.png', 'img02.png'])
    with pytest.raises(KeyError, match=re.escape(f"GT key 'img01' has no label entry: key 'img01' is not in "
                                                 f"'{seg_lmdb}/meta_info.txt'")):
        PairedImageSegDataset(make_opt(data_root, 'lmdb', dataroot_seg=str(seg_lmdb)))


def test_lmdb_meta_info_size_mismatch_is_caught_at_construction(data_root, tmp_path):
    seg_lmdb = tmp_path / 'seg.lmdb'
    make_lmdb(osp.join(data_root, 'train', 'seg'), str(seg_lmdb), label=True)
    lines = (seg_lmdb / 'meta_info.txt').read_text().replace('img01.png (40,36,1)', 'img01.png (40,32,1)')
    (seg_lmdb / 'meta_info.txt').write_text(lines)
    with pytest.raises(ValueError, match=r"key 'img01' of LMDB .*seg\.lmdb' has size \(40, 32\) .* size \(40, 36\)"):
        PairedImageSegDataset(make_opt(data_root, 'lmdb', dataroot_seg=str(seg_lmdb)))


# ------------------------------------------------------------------------------------------ bad input: reading
def test_lmdb_key_missing_at_read(data_root, tmp_path):
    seg_lmdb = tmp_path / 'seg.lmdb'
    make_lmdb(osp.join(data_root, 'train', 'seg'), str(seg_lmdb), label=True)
    env = lmdb.open(str(seg_lmdb))
    with env.begin(write=True) as txn:
        txn.delete(b'img01')
    env.close()
    dataset = PairedImageSegDataset(make_opt(data_root, 'lmdb', dataroot_seg=str(seg_lmdb)))
    dataset[0]
    with pytest.raises(KeyError, match=re.escape(f"key 'img01' of LMDB '{seg_lmdb}' is missing")):
        dataset[1]


@pytest.mark.parametrize('content', [b'not a png at all', b''])
def test_corrupt_image(data_root, tmp_path, content):
    root = copy_split(data_root, tmp_path)
    path = osp.join(root, 'train', 'hr', 'img01.png')
    with open(path, 'wb') as f:
        f.write(content)
    dataset = PairedImageSegDataset(make_opt(root))
    with pytest.raises(ValueError, match=re.escape(f"cannot decode '{path}': corrupt")):
        dataset[1]


def test_three_channel_label(data_root, tmp_path):
    root = copy_split(data_root, tmp_path)
    path = osp.join(root, 'train', 'seg', 'img00.png')
    cv2.imwrite(path, cv2.cvtColor(cv2.imread(path, cv2.IMREAD_UNCHANGED), cv2.COLOR_GRAY2BGR))
    with pytest.raises(ValueError, match=re.escape(f"label map '{path}' has 3 channels")):
        PairedImageSegDataset(make_opt(root))[0]


def test_label_of_other_size(data_root, tmp_path):
    root = copy_split(data_root, tmp_path)
    path = osp.join(root, 'train', 'seg', 'img00.png')
    cv2.imwrite(path, cv2.imread(path, cv2.IMREAD_UNCHANGED)[:, :36])
    with pytest.raises(ValueError, match=re.escape(f"label map '{path}' has size (32, 36) (h, w) but its image '")
                       + r'.*img00\.png' + re.escape("' has size (32, 40)")):
        PairedImageSegDataset(make_opt(root))[0]


def test_lq_of_wrong_size(data_root, tmp_path):
    root = copy_split(data_root, tmp_path)
    path = osp.join(root, 'train', 'lq', 'img00.png')
    cv2.imwrite(path, cv2.imread(path)[:, :9])
    with pytest.raises(ValueError, match=re.escape(f"LQ image '{path}' has size (8, 9); times scale 4 it must be "
                                                   '(32, 40), the size of GT ') + r"'.*img00\.png'"):
        PairedImageSegDataset(make_opt(root, lq=True))[0]


def test_image_smaller_than_gt_size(data_root):
    dataset = PairedImageSegDataset(make_opt(data_root, gt_size=36))
    with pytest.raises(ValueError, match=r"image '.*img00\.png' of size \(32, 40\) is smaller than gt_size 36"):
        dataset[0]


def test_label_values_outside_classes(data_root, tmp_path):
    root = copy_split(data_root, tmp_path)
    path = osp.join(root, 'train', 'seg', 'img02.png')
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    label[0, 0], label[1, 1] = 9, 7
    cv2.imwrite(path, label)
    with pytest.raises(ValueError, match=re.escape(f"label map '{path}' has values [7, 9] outside the classes 0..4")):
        PairedImageSegDataset(make_opt(root))[2]


# ---------------------------------------------------------------------------------------------------- LMDB
def test_make_lmdb_format_and_overwrite(data_root, tmp_path):
    seg_dir = osp.join(data_root, 'train', 'seg')
    out = str(tmp_path / 'seg.lmdb')
    assert make_lmdb(seg_dir, out, label=True) == 3
    meta = (tmp_path / 'seg.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert meta == ['img00.png (32,40,1) 1', 'img01.png (40,36,1) 1', 'img02.png (44,48,1) 1']
    env = lmdb.open(out, readonly=True, lock=False)
    with env.begin() as txn:
        stored = cv2.imdecode(np.frombuffer(txn.get(b'img01'), np.uint8), cv2.IMREAD_UNCHANGED)
    env.close()
    np.testing.assert_array_equal(stored, cv2.imread(osp.join(seg_dir, 'img01.png'), cv2.IMREAD_UNCHANGED))
    paths = paired_paths_from_lmdb([out, osp.join(data_root, 'lmdb', 'train_hr.lmdb')], ['seg', 'gt'])
    assert [p['gt_path'] for p in paths] == ['img00', 'img01', 'img02']

    with pytest.raises(FileExistsError, match=re.escape(f"'{out}' already exists")):
        make_lmdb(seg_dir, out, label=True)
    assert make_lmdb(seg_dir, out, label=True, names=['img02.png'], overwrite=True) == 1
    assert (tmp_path / 'seg.lmdb' / 'meta_info.txt').read_text() == 'img02.png (44,48,1) 1\n'
    assert sorted(os.listdir(tmp_path)) == ['seg.lmdb']  # no temporary or old folders left


def test_make_lmdb_failure_leaves_nothing(data_root, tmp_path):
    folder = tmp_path / 'imgs'
    os.makedirs(folder)
    cv2.imwrite(str(folder / 'a.png'), np.zeros((4, 4, 3), np.uint8))
    (folder / 'b.png').write_bytes(b'broken')
    with pytest.raises(ValueError, match=re.escape(f"Cannot read image '{folder / 'b.png'}'")):
        make_lmdb(str(folder), str(tmp_path / 'x.lmdb'))
    with pytest.raises(ValueError, match=r"'.*a\.png' has 3 channels"):
        make_lmdb(str(folder), str(tmp_path / 'y.lmdb'), label=True, names=['a.png'])
    with pytest.raises(ValueError, match=r"must end with '\.lmdb'"):
        make_lmdb(str(folder), str(tmp_path / 'z'))
    assert sorted(os.listdir(tmp_path)) == ['imgs']


def test_rectangular_training_crop_keeps_labels_aligned(tmp_path):
    """gt_size [h, w] crops a non-square window (CamVid-style 192x256); labels move with pixels."""
    root = tmp_path / 'rect'
    from segsr.data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(str(root), num_train=2, num_val=1, height=96, width=128, seed=3, num_classes=6)
    opt = dict(name='rect', type='PairedImageSegDataset', phase='train', scale=4, num_classes=6,
               dataroot_gt=str(root / 'train' / 'hr'), dataroot_seg=str(root / 'train' / 'seg'),
               io_backend={'type': 'disk'}, gt_size=[48, 64], use_hflip=True, use_rot=False)
    from basicsr.data import build_dataset
    ds = build_dataset(opt)
    sample = ds[0]
    assert sample['gt'].shape == (3, 48, 64) and sample['seg'].shape == (48, 64) and sample['lq'].shape == (3, 12, 16)
    with pytest.raises(ValueError, match='use_rot'):
        build_dataset(dict(opt, use_rot=True))
    with pytest.raises(ValueError, match='not divisible by scale'):
        build_dataset(dict(opt, gt_size=[48, 62]))
