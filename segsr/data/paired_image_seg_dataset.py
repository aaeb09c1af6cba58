"""Paired LQ / GT / label-map dataset for task-aware super-resolution."""
from os import path as osp
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from segsr.data.data_util import index_by_stem, load_dataset_info, read_meta_info
from segsr.data.paired_image_base import PairedImageBase, Size
from segsr.data.paired_image_base import stem_of as _stem
from segsr.data.seg_transforms import (augment_seg, build_label_lut, describe_invalid_labels, invalid_label_values,
                                       mod_crop, paired_random_crop_seg, remap_labels)


@DATASET_REGISTRY.register()
class PairedImageSegDataset(PairedImageBase):
    """LQ / GT image pairs with the GT's integer label map, for SR trained or judged by a segmentation task.

    Each sample is a dict with ``lq`` (3 x h x w float RGB in [0, 1]), ``gt`` (3 x H x W), ``seg`` (int64 H x W,
    values in ``[0, num_classes)`` or ``ignore_index``), ``lq_path``, ``gt_path`` and ``seg_path`` (LMDB keys for
    the LMDB backend; ``lq_path`` is ``gt_path`` when the LQ is made on the fly). Labels are only sliced, flipped
    and transposed together with the image, never interpolated.

    Images and label maps are paired by file stem (LMDB key): GT ``X.png`` goes with label
    ``filename_tmpl_seg.format('X')`` of any extension and, if ``dataroot_lq`` is given, LQ
    ``filename_tmpl.format('X')``. Without ``dataroot_lq``, the LQ is the bicubic downsampling of the GT; in
    training, of the GT crop after augmentation.

    GT and LQ images are read as stored (``cv2.IMREAD_UNCHANGED``): 8-bit values are divided by 255, 16-bit ones
    by 65535 (all 16 bits reach the model), grayscale images are repeated to 3 channels and an alpha channel is
    dropped (the colour is used as stored, not composited); other depths (float, 32-bit) raise, naming the file.

    Paths are checked when the dataset is built (missing folders, images without label or LQ, LMDB keys absent
    from the label LMDB and, for LMDBs, sizes from ``meta_info.txt``; with ``crop_to_scale: false``, every GT size
    from the image headers or ``meta_info.txt``); every read is checked again (corrupt bytes, depth, channels, sizes,
    label values), and every error names the file or key.

    Args:
        opt: BasicSR dataset options (not modified). Keys:

            - name (str): Dataset name, used in error messages.
            - phase (str): ``'train'`` for random crops and augmentation; anything else evaluates whole images.
            - scale (int): SR scale factor.
            - dataroot_gt (str): HR image folder, or HR LMDB for the LMDB backend.
            - dataroot_seg (str): Label-map folder or LMDB (8/16-bit single-channel class ids).
            - dataroot_lq (str, optional): LQ folder or LMDB. Default: LQ made from the GT.
            - lq_downsample (str or list): how the LQ image is made from the GT when ``dataroot_lq`` is not set:
              ``'matlab'`` (default), ``'torch'``, ``'pil_lanczos'``, ``'cv2_area'`` or ``'blur_jpeg'`` (see
              :func:`segsr.data.seg_transforms.downsample`). Training only: a list of them, one drawn per sample
              (Python's ``random``, seeded per sample by ``segsr.train``): an SR network that does not depend on
              one bicubic implementation.
            - io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``; other keys go to ``FileClient``.
            - meta_info_file (str, optional): GT names, first token of each line (a name without extension is
              looked up by stem). Default: every image of ``dataroot_gt``, or the GT LMDB's ``meta_info.txt``.
            - filename_tmpl (str): LQ stem template. Default: ``'{}'``.
            - filename_tmpl_seg (str): Label stem template. Default: ``'{}'``.
            - num_classes (int): Number of classes (required).
            - ignore_index (int): Label of unlabelled pixels. Default: 255.
            - label_map (dict, optional): Raw label value -> class id, e.g. ``{11: 255}``, applied before checks.
            - gt_size (int | [int, int]): Training crop size, square or ``[height, width]``; must be divisible
              by ``scale``. A non-square crop cannot be combined with ``use_rot`` (batches would mix shapes).
            - use_hflip (bool): Random horizontal flips in training. Default: False.
            - use_rot (bool): Random vertical flips and 90 degree rotations in training. Default: False.
            - crop_to_scale (bool): Crop GT and label to a multiple of ``scale`` (as BasicSR does when
              evaluating); if False, building the dataset raises when a GT image (read from its header) is not a
              multiple of ``scale``, unless training crops make the LQ (no ``dataroot_lq``). Default: True.
            - dataset_info (str, optional): ``dataset_info.yml`` (or the folder holding it) whose class names
              and palette become ``self.class_names`` / ``self.palette``; its ``num_classes`` and
              ``ignore_index`` must match. Default: ``<dataroot_gt>/../../dataset_info.yml`` if present (our
              layout, disk and LMDB), used only when it matches.

    Attributes:
        num_classes (int): Number of classes.
        ignore_index (int): Label of unlabelled pixels.
        class_names (list[str] | None): Class names from ``dataset_info.yml``.
        palette (list[list[int]] | None): RGB colour per class from ``dataset_info.yml``.
    """

    OPTION_KEYS = ('name', 'phase', 'scale', 'dataroot_gt', 'dataroot_seg', 'dataroot_lq', 'lq_downsample',
                   'io_backend', 'meta_info_file', 'filename_tmpl', 'filename_tmpl_seg', 'num_classes', 'ignore_index',
                   'label_map', 'gt_size', 'use_hflip', 'use_rot', 'crop_to_scale', 'dataset_info')

    def _parse_targets(self) -> None:
        self.seg_root = self._require('dataroot_seg')
        self.filename_tmpl_seg = self.opt.get('filename_tmpl_seg', '{}')
        self._parse_label_options()
        self._load_dataset_info()

    def lmdb_roots(self) -> Dict[str, Optional[str]]:
        return dict(super().lmdb_roots(), seg=self.seg_root)

    def _parse_label_options(self) -> None:
        self.num_classes = int(self._require('num_classes'))
        self.ignore_index = int(self.opt.get('ignore_index', 255))
        if self.num_classes < 1:
            raise self._fail(f'option num_classes must be >= 1, got {self.num_classes}.')
        if 0 <= self.ignore_index < self.num_classes:
            raise self._fail(f'option ignore_index {self.ignore_index} is one of the classes '
                             f'0..{self.num_classes - 1}.')
        label_map = self.opt.get('label_map') or {}
        if not isinstance(label_map, dict):
            raise self._fail(f'option label_map must be a dict like {{11: 255}}, got {label_map!r}.')
        self._label_map = dict(label_map)
        self._luts: Dict[np.dtype, np.ndarray] = {}
        try:
            self._lut(np.dtype(np.uint8))
        except ValueError as err:
            raise self._fail(f'option label_map: {err}') from err
        bad = [v for v in label_map.values()
               if not (0 <= int(v) < self.num_classes or int(v) == self.ignore_index)]
        if bad:
            raise self._fail(f'option label_map maps to {bad}, which are neither classes 0..{self.num_classes - 1} '
                             f'nor ignore_index {self.ignore_index}.')

    def _load_dataset_info(self) -> None:
        """``class_names`` and ``palette`` from ``dataset_info.yml``: the ``dataset_info`` option (a file or
        dataset root), else ``<dataroot_gt>/../../dataset_info.yml`` of our layout when it exists."""
        self.class_names: Optional[List[str]] = None
        self.palette: Optional[List[List[int]]] = None
        path = self.opt.get('dataset_info')
        explicit = path is not None
        if not explicit:
            path = osp.join(osp.dirname(osp.dirname(osp.abspath(self.gt_root))), 'dataset_info.yml')
            if not osp.isfile(path):
                return
        info = load_dataset_info(path)
        if info['num_classes'] != self.num_classes or info['ignore_index'] != self.ignore_index:
            message = (f"num_classes {self.num_classes} / ignore_index {self.ignore_index} differ from "
                       f"{info['num_classes']} / {info['ignore_index']} in '{path}'")
            if explicit:
                raise self._fail(f'option dataset_info: {message}.')
            get_root_logger().warning(f"Dataset '{self.name}': {message}; class names and palette not used.")
            return
        self.class_names, self.palette = list(info['class_names']), [list(c) for c in info['palette']]

    def _lut(self, dtype: np.dtype) -> np.ndarray:
        """``label_map`` as a look-up table for label maps of ``dtype`` (uint8 or uint16), built once."""
        if dtype not in self._luts:
            self._luts[dtype] = build_label_lut(self._label_map, int(np.iinfo(dtype).max) + 1)
        return self._luts[dtype]

    def _paths_from_folders(self) -> List[Dict[str, Optional[str]]]:
        roots = [('dataroot_gt', self.gt_root), ('dataroot_seg', self.seg_root)]
        roots += [('dataroot_lq', self.lq_root)] if self.lq_root else []
        for key, folder in roots:
            self._check_dir(key, folder)
        names = self._gt_names_from_folder()
        seg_index = index_by_stem(self.seg_root)
        lq_index = index_by_stem(self.lq_root) if self.lq_root else None
        paths = []
        for name in names:
            gt_path = osp.join(self.gt_root, name)
            seg_stem = self.filename_tmpl_seg.format(_stem(name))
            if seg_stem not in seg_index:
                raise FileNotFoundError(f"Dataset '{self.name}': image '{gt_path}' has no label map: no file "
                                        f"'{osp.join(self.seg_root, seg_stem)}.*' (filename_tmpl_seg "
                                        f"'{self.filename_tmpl_seg}').")
            lq_path = None
            if lq_index is not None:
                lq_stem = self.filename_tmpl.format(_stem(name))
                if lq_stem not in lq_index:
                    raise FileNotFoundError(f"Dataset '{self.name}': image '{gt_path}' has no LQ image: no file "
                                            f"'{osp.join(self.lq_root, lq_stem)}.*' (filename_tmpl "
                                            f"'{self.filename_tmpl}').")
                lq_path = osp.join(self.lq_root, lq_index[lq_stem])
            paths.append(dict(gt_path=gt_path, seg_path=osp.join(self.seg_root, seg_index[seg_stem]), lq_path=lq_path))
        return paths

    def _lmdb_meta(self, root: str) -> Dict[str, Optional[tuple]]:
        return {_stem(name): shape for name, shape in read_meta_info(osp.join(root, 'meta_info.txt'))}

    def _paths_from_lmdb(self) -> List[Dict[str, Optional[str]]]:
        roots = [('gt', 'dataroot_gt', self.gt_root), ('seg', 'dataroot_seg', self.seg_root)]
        roots += [('lq', 'dataroot_lq', self.lq_root)] if self.lq_root else []
        for _, key, folder in roots:
            self._check_dir(key, folder)
        self.io_backend_opt['db_paths'] = [folder for _, _, folder in roots]
        self.io_backend_opt['client_keys'] = [client for client, _, _ in roots]

        gt_meta_file = self.opt.get('meta_info_file') or osp.join(self.gt_root, 'meta_info.txt')
        gt_entries = read_meta_info(gt_meta_file)
        seg_meta = self._lmdb_meta(self.seg_root)
        lq_meta = self._lmdb_meta(self.lq_root) if self.lq_root else None
        paths, shapes = [], []
        for name, gt_shape in gt_entries:
            key = _stem(name)
            seg_key = self._lmdb_partner(key, self.filename_tmpl_seg, seg_meta, self.seg_root, 'label')
            lq_key = None
            if lq_meta is not None:
                lq_key = self._lmdb_partner(key, self.filename_tmpl, lq_meta, self.lq_root, 'LQ')
            paths.append(dict(gt_path=key, seg_path=seg_key, lq_path=lq_key))
            shapes.append((gt_shape, seg_meta[seg_key], None if lq_key is None else lq_meta[lq_key]))
        if not paths:
            raise ValueError(f"Dataset '{self.name}': no entries in '{gt_meta_file}'.")
        self._check_scale_multiples(paths, (gt[:2] if gt else None for gt, _, _ in shapes))
        for entry, entry_shapes in zip(paths, shapes):
            self._check_meta_shapes(entry, *entry_shapes)
        return paths

    def _lmdb_partner(self, key: str, tmpl: str, meta: Dict[str, Optional[tuple]], root: str, what: str) -> str:
        partner = tmpl.format(key)
        if partner not in meta:
            raise KeyError(f"Dataset '{self.name}': GT key '{key}' has no {what} entry: key '{partner}' is not in "
                           f"'{osp.join(root, 'meta_info.txt')}' of LMDB '{root}'.")
        return partner

    def _check_meta_shapes(self, paths: dict, gt_shape: Optional[tuple], seg_shape: Optional[tuple],
                           lq_shape: Optional[tuple]) -> None:
        """Check sizes known from the LMDBs' ``meta_info.txt`` before any training starts."""
        if seg_shape is not None and len(seg_shape) == 3 and seg_shape[2] != 1:
            raise ValueError(f"Dataset '{self.name}': label map {self._where(paths['seg_path'], 'seg')} has "
                             f'{seg_shape[2]} channels; label maps must be single-channel class ids.')
        if gt_shape is None or seg_shape is None or (self.lq_root and lq_shape is None):
            return
        self._check_sizes(paths, gt_shape[:2], seg_shape[:2], lq_shape[:2] if lq_shape else None)

    def _read_label(self, path: str) -> np.ndarray:
        """2-D int64 label map, remapped by ``label_map`` and checked against the classes."""
        label = self._decode(path, 'seg', cv2.IMREAD_UNCHANGED)
        where = self._where(path, 'seg')
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[:, :, 0]
        if label.ndim != 2:
            raise ValueError(f"Dataset '{self.name}': label map {where} has {label.shape[2]} channels; label maps "
                             'must be single-channel class-id images (convert palette or colour PNGs to index '
                             'PNGs, see docs/datasets.md).')
        if label.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Dataset '{self.name}': label map {where} has dtype {label.dtype}; use uint8/uint16.")
        label = remap_labels(label, lut=self._lut(label.dtype))
        bad = invalid_label_values(label, self.num_classes, self.ignore_index)
        if bad.size:
            raise ValueError(f"Dataset '{self.name}': label map {where} "
                             + describe_invalid_labels(bad, self.num_classes, self.ignore_index))
        return label

    def _check_sizes(self, paths: dict, gt_hw: Size, seg_hw: Size, lq_hw: Optional[Size]) -> None:
        """Raise when the label, the LQ or the GT itself has a size that does not fit."""
        gt_where = self._where(paths['gt_path'], 'gt')
        h, w = tuple(gt_hw)
        if tuple(seg_hw) != (h, w):
            raise ValueError(f"Dataset '{self.name}': label map {self._where(paths['seg_path'], 'seg')} has size "
                             f'{tuple(seg_hw)} (h, w) but its image {gt_where} has size {(h, w)}.')
        s = self.scale
        if self.crop_to_scale:
            h, w = h - h % s, w - w % s
        else:
            self._check_scale_multiples([paths], [(h, w)])
        if lq_hw is not None and (lq_hw[0] * s, lq_hw[1] * s) != (h, w):
            raise ValueError(f"Dataset '{self.name}': LQ image {self._where(paths['lq_path'], 'lq')} has size "
                             f'{tuple(lq_hw)}; times scale {s} it must be {(h, w)}, the size of GT {gt_where}.')
        if self.phase == 'train' and (h < self.crop_hw[0] or w < self.crop_hw[1]):
            raise ValueError(f"Dataset '{self.name}': image {gt_where} of size {(h, w)} is smaller than gt_size "
                             f'{self.gt_size}: remove it or lower gt_size.')

    def _transform(self, img_gt: np.ndarray, seg: np.ndarray,
                   img_lq: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mod-crop, training crop + augmentation, then LQ made from the GT when no LQ was read."""
        if img_lq is not None or self.phase != 'train':
            img_gt, seg = mod_crop(img_gt, self.scale), mod_crop(seg, self.scale)
        if self.phase == 'train':
            img_gt, seg, img_lq = paired_random_crop_seg(img_gt, seg, self.gt_size, self.scale, img_lq)
            arrays = [img_gt, seg] + ([img_lq] if img_lq is not None else [])
            arrays = augment_seg(arrays, self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
            img_gt, seg, img_lq = arrays[0], arrays[1], (arrays[2] if img_lq is not None else None)
        if img_lq is None:
            img_lq = self._make_lq(img_gt)
        return img_gt, seg, img_lq

    def __getitem__(self, index: int) -> dict:
        paths = self.paths[index]
        img_gt = self._read_image(paths['gt_path'], 'gt')
        seg = self._read_label(paths['seg_path'])
        img_lq = self._read_image(paths['lq_path'], 'lq') if paths['lq_path'] is not None else None
        self._check_sizes(paths, img_gt.shape[:2], seg.shape, img_lq.shape[:2] if img_lq is not None else None)
        img_gt, seg, img_lq = self._transform(img_gt, seg, img_lq)
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=False, float32=True)
        return {
            'lq': img_lq,
            'gt': img_gt,
            'seg': torch.from_numpy(np.ascontiguousarray(seg)).long(),
            'lq_path': paths['lq_path'] or paths['gt_path'],
            'gt_path': paths['gt_path'],
            'seg_path': paths['seg_path'],
        }

