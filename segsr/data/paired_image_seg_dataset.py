"""Paired LQ / GT / label-map dataset for task-aware super-resolution."""
import os
import random
from copy import deepcopy
from os import path as osp
from typing import Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.utils import FileClient, get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data as data

from segsr.data.data_util import header_size, index_by_stem, load_dataset_info, read_meta_info, scan_images
from segsr.data.lmdb_util import shared_lmdb_client
from segsr.data.seg_transforms import (LQ_DOWNSAMPLE_METHODS, augment_seg, build_label_lut, crop_size,
                                       describe_invalid_labels, downsample, invalid_label_values, mod_crop,
                                       paired_random_crop_seg, remap_labels)
from segsr.utils.image_io import check_image, split_image

_IO_BACKENDS = ('disk', 'lmdb')
_LISTED = 5  # images named in a build-time error before the scan stops
Size = Tuple[int, int]


def _stem(name: str) -> str:
    return osp.splitext(osp.basename(name))[0]


@DATASET_REGISTRY.register()
class PairedImageSegDataset(data.Dataset):
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

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = deepcopy(opt)
        self._clients: Dict[str, FileClient] = {}
        self._clients_pid: Optional[int] = None
        self._parse_options()
        if self.backend == 'lmdb':
            self.paths = self._paths_from_lmdb()
        else:
            self.paths = self._paths_from_folders()
            self._check_scale_multiples(self.paths, (header_size(p['gt_path']) for p in self.paths))

    # ----------------------------------------------------------------------------------------------- options
    def _fail(self, message: str) -> ValueError:
        return ValueError(f"Dataset '{self.name}': {message}")

    def _require(self, key: str):
        if self.opt.get(key) is None:
            raise self._fail(f"option '{key}' is missing.")
        return self.opt[key]

    def _parse_options(self) -> None:
        opt = self.opt
        self.name = opt.get('name', type(self).__name__)
        self.phase = self._require('phase')
        self.scale = int(self._require('scale'))
        if self.scale < 1:
            raise self._fail(f'option scale must be a positive integer, got {opt["scale"]}.')
        self.gt_root = self._require('dataroot_gt')
        self.seg_root = self._require('dataroot_seg')
        self.lq_root = opt.get('dataroot_lq')
        self.filename_tmpl = opt.get('filename_tmpl', '{}')
        self.filename_tmpl_seg = opt.get('filename_tmpl_seg', '{}')
        self.crop_to_scale = bool(opt.get('crop_to_scale', True))
        self.io_backend_opt = deepcopy(self._require('io_backend'))
        if not isinstance(self.io_backend_opt, dict):
            raise self._fail(f"option io_backend must be a block like {{type: disk}}, got {self.io_backend_opt!r}.")
        self.backend = self.io_backend_opt.get('type')
        if self.backend not in _IO_BACKENDS:
            raise self._fail(f"option io_backend.type '{self.backend}' is not supported; use one of "
                             f'{list(_IO_BACKENDS)}.')
        self.lq_downsample = self._parse_lq_downsample(opt.get('lq_downsample', 'matlab'))
        self._parse_label_options()
        self._load_dataset_info()
        if self.phase == 'train':
            self.gt_size = self._require('gt_size')
            try:
                crop_h, crop_w = crop_size(self.gt_size)
            except (TypeError, ValueError) as err:
                raise self._fail(f'option gt_size: {err}') from err
            if crop_h % self.scale or crop_w % self.scale:
                raise self._fail(f'option gt_size {self.gt_size} is not divisible by scale {self.scale}.')
            if crop_h != crop_w and self.opt.get('use_rot', False):
                raise self._fail(f'option gt_size {self.gt_size} is not square, so use_rot must be false '
                                 '(rotated crops would change shape).')
            self.crop_hw = (crop_h, crop_w)
        else:
            self.gt_size = None

    def _parse_lq_downsample(self, value) -> Tuple[str, ...]:
        """``lq_downsample``: one method, or (training only) a list of methods each sample draws one of."""
        methods = tuple(value) if isinstance(value, (list, tuple)) else (value, )
        if not methods:
            raise self._fail('option lq_downsample is an empty list; give a method or a list of methods.')
        unknown = [m for m in methods if m not in LQ_DOWNSAMPLE_METHODS]
        if unknown:
            raise self._fail(f"option lq_downsample {', '.join(repr(m) for m in unknown)} is not supported; use one "
                             f'of {list(LQ_DOWNSAMPLE_METHODS)} (or a list of them for training).')
        if len(methods) > 1 and self.phase != 'train':
            raise self._fail(f'option lq_downsample {list(methods)}: a mix of methods is for training; phase '
                             f"'{self.phase}' scores with one method.")
        if self.lq_root and isinstance(value, (list, tuple)):
            raise self._fail('option lq_downsample is a list but dataroot_lq is set: LQ images are read, not made.')
        return methods

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

    # ------------------------------------------------------------------------------------------------ paths
    def _check_dir(self, key: str, folder: str) -> None:
        if not osp.isdir(folder):
            raise FileNotFoundError(f"Dataset '{self.name}': {key} '{folder}' is not a folder.")
        if self.backend == 'lmdb' and not osp.isfile(osp.join(folder, 'data.mdb')):
            raise FileNotFoundError(f"Dataset '{self.name}': {key} '{folder}' is not an LMDB (no data.mdb); make "
                                    'one with scripts/create_lmdb.py.')

    def _gt_names_from_folder(self) -> List[str]:
        meta_info_file = self.opt.get('meta_info_file')
        if not meta_info_file:
            names = scan_images(self.gt_root)
            if not names:
                raise FileNotFoundError(f"Dataset '{self.name}': dataroot_gt '{self.gt_root}' holds no images.")
            return names
        gt_index = None
        names = []
        for name, _ in read_meta_info(meta_info_file):
            if not osp.isfile(osp.join(self.gt_root, name)) and not osp.splitext(name)[1]:
                gt_index = index_by_stem(self.gt_root) if gt_index is None else gt_index
                name = gt_index.get(name, name)
            if not osp.isfile(osp.join(self.gt_root, name)):
                raise FileNotFoundError(f"Dataset '{self.name}': '{name}' listed in meta_info_file "
                                        f"'{meta_info_file}' is missing: no file '{osp.join(self.gt_root, name)}'.")
            names.append(name)
        if not names:
            raise ValueError(f"Dataset '{self.name}': meta_info_file '{meta_info_file}' lists no images.")
        return names

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

    # -------------------------------------------------------------------------------------------- reading
    def _where(self, path: str, client_key: str) -> str:
        if self.backend == 'lmdb':
            root = dict(gt=self.gt_root, seg=self.seg_root, lq=self.lq_root)[client_key]
            return f"key '{path}' of LMDB '{root}'"
        return f"'{path}'"

    def _client(self, client_key: str) -> FileClient:
        """The file client of ``client_key`` for this process (opened lazily, as BasicSR does)."""
        if self._clients_pid != os.getpid():
            self._clients, self._clients_pid = {}, os.getpid()
        if client_key not in self._clients:
            backend_opt = deepcopy(self.io_backend_opt)
            backend_opt.pop('type')
            if self.backend == 'lmdb':
                roots = dict(zip(backend_opt.pop('client_keys'), backend_opt.pop('db_paths')))
                self._clients[client_key] = shared_lmdb_client(roots[client_key], **backend_opt)
            else:
                self._clients[client_key] = FileClient('disk', **backend_opt)
        return self._clients[client_key]

    def _get_bytes(self, path: str, client_key: str) -> bytes:
        try:
            buf = self._client(client_key).get(path, 'default')
        except OSError as err:
            raise FileNotFoundError(f"Dataset '{self.name}': cannot read '{path}': {err}") from err
        if buf is None:
            raise KeyError(f"Dataset '{self.name}': {self._where(path, client_key)} is missing (listed in its "
                           'meta_info.txt but not stored).')
        return buf

    def _decode(self, path: str, client_key: str, flag: int) -> np.ndarray:
        buf = self._get_bytes(path, client_key)
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flag) if len(buf) else None
        if img is None:
            raise ValueError(f"Dataset '{self.name}': cannot decode {self._where(path, client_key)}: corrupt or not "
                             'an image.')
        return img

    def _read_image(self, path: str, client_key: str) -> np.ndarray:
        """HWC RGB float32 image in [0, 1], from 8 or 16 bits as stored (gray repeated, alpha dropped)."""
        img = self._decode(path, client_key, cv2.IMREAD_UNCHANGED)
        try:
            img = check_image(img, self._where(path, client_key))
        except ValueError as err:
            raise self._fail(str(err)) from err
        return split_image(img)[0]

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

    # ------------------------------------------------------------------------------------------- geometry
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

    def _check_scale_multiples(self, paths: Iterable[dict], sizes: Iterable[Optional[Size]]) -> None:
        """With ``crop_to_scale: false``, raise naming the first GT images whose size ``scale`` does not divide.

        Nothing to check with ``crop_to_scale: true`` (images are cropped) or in training without ``dataroot_lq``
        (random crops of a multiple of ``scale`` make the LQ). The scan stops at the :data:`_LISTED`-th offender.

        Args:
            paths: Entries of :attr:`paths`.
            sizes: Their GT ``(h, w)`` in the same order, None where unknown; read lazily (image headers).
        """
        if self.crop_to_scale or (self.phase == 'train' and not self.lq_root):
            return
        s, bad = self.scale, []
        for entry, hw in zip(paths, sizes):
            if hw is not None and (hw[0] % s or hw[1] % s):
                bad.append(f"{self._where(entry['gt_path'], 'gt')} of size {tuple(hw)}")
                if len(bad) == _LISTED:
                    break
        if bad:
            more = f"; so are {', '.join(bad[1:])}" if len(bad) > 1 else ''
            more += ' (the scan stopped there)' if len(bad) == _LISTED else ''
            raise self._fail(f'image {bad[0]} is not a multiple of scale {s} (crop_to_scale is False){more}. Set '
                             'crop_to_scale: true to crop images to a multiple of scale, or resize them.')

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
            method = self.lq_downsample[0] if len(self.lq_downsample) == 1 else random.choice(self.lq_downsample)
            img_lq = downsample(img_gt, self.scale, method)
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

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        """Drop the open file clients (LMDB environments cannot be pickled into DataLoader workers)."""
        state = self.__dict__.copy()
        state['_clients'], state['_clients_pid'] = {}, None
        return state
