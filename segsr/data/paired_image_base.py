"""What every paired LQ / GT dataset of segsr shares, whatever its targets (label maps, boxes, classes).

:class:`PairedImageBase` parses the common options (``name``, ``phase``, ``scale``, ``dataroot_gt``, ``dataroot_lq``,
``filename_tmpl``, ``io_backend``, ``lq_downsample``, ``gt_size``, ``crop_to_scale``), opens disk and LMDB file
clients per process, reads images as stored (8 / 16 bit, gray repeated, alpha dropped) with errors naming the file or
LMDB key, and makes the LQ image from the GT on the fly. Subclasses parse and read their targets
(:meth:`_parse_targets`, :meth:`_paths_from_folders`, :meth:`_paths_from_lmdb`, ``__getitem__``).
"""
import os
import random
from copy import deepcopy
from os import path as osp
from typing import Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np
from basicsr.utils import FileClient
from torch.utils import data as data

from segsr.data.data_util import header_size, index_by_stem, read_meta_info, scan_images
from segsr.data.lmdb_util import shared_lmdb_client
from segsr.data.seg_transforms import LQ_DOWNSAMPLE_METHODS, crop_size, downsample
from segsr.utils.image_io import check_image, split_image

_IO_BACKENDS = ('disk', 'lmdb')
_LISTED = 5  # images named in a build-time error before the scan stops
Size = Tuple[int, int]


def stem_of(name: str) -> str:
    """A file name's stem (no folder, no extension)."""
    return osp.splitext(osp.basename(name))[0]


class PairedImageBase(data.Dataset):
    """Base of segsr's paired datasets (see the module docstring); not registered.

    Args:
        opt: BasicSR dataset options (not modified).
    """

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

    def _parse_options(self) -> None:
        opt = self.opt
        self.name = opt.get('name', type(self).__name__)
        self.phase = self._require('phase')
        self.scale = int(self._require('scale'))
        if self.scale < 1:
            raise self._fail(f'option scale must be a positive integer, got {opt["scale"]}.')
        self.gt_root = self._require('dataroot_gt')
        self.lq_root = opt.get('dataroot_lq')
        self.filename_tmpl = opt.get('filename_tmpl', '{}')
        self.crop_to_scale = bool(opt.get('crop_to_scale', True))
        self.io_backend_opt = deepcopy(self._require('io_backend'))
        if not isinstance(self.io_backend_opt, dict):
            raise self._fail(f"option io_backend must be a block like {{type: disk}}, got {self.io_backend_opt!r}.")
        self.backend = self.io_backend_opt.get('type')
        if self.backend not in _IO_BACKENDS:
            raise self._fail(f"option io_backend.type '{self.backend}' is not supported; use one of "
                             f'{list(_IO_BACKENDS)}.')
        self.lq_downsample = self._parse_lq_downsample(opt.get('lq_downsample', 'matlab'))
        self._parse_targets()
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

    def lmdb_roots(self) -> Dict[str, Optional[str]]:
        """The folder (LMDB) of each file client: ``gt``, ``lq`` and the targets' (subclasses add theirs)."""
        return dict(gt=self.gt_root, lq=self.lq_root)

    def _where(self, path: str, client_key: str) -> str:
        if self.backend == 'lmdb':
            return f"key '{path}' of LMDB '{self.lmdb_roots()[client_key]}'"
        return f"'{path}'"

    def _parse_resize(self) -> None:
        """The ``resize`` option of the subclasses that offer it: the HR image's shorter side in pixels."""
        value = self.opt.get('resize')
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise self._fail(f'option resize must be a positive integer (the shorter side in pixels), got {value!r}.')
        self.resize = value
        if self.resize is not None and self.lq_root:
            raise self._fail('option resize changes the GT size, so it cannot be combined with dataroot_lq.')

    def _resize_gt(self, img: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float]]:
        """``img`` resized so that its shorter side is ``resize`` pixels (``cv2.INTER_AREA`` when shrinking, bicubic
        when enlarging, clipped to [0, 1]) and the ``(x, y)`` factors of the change."""
        h, w = img.shape[:2]
        factor = self.resize / min(h, w)
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        out = cv2.resize(img, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
        return np.clip(out, 0, 1), (size[0] / w, size[1] / h)

    def _make_lq(self, img_gt: np.ndarray) -> np.ndarray:
        """The LQ image made from ``img_gt`` by ``lq_downsample`` (one method, or one drawn per sample)."""
        method = self.lq_downsample[0] if len(self.lq_downsample) == 1 else random.choice(self.lq_downsample)
        return downsample(img_gt, self.scale, method)

    def _parse_targets(self) -> None:
        """Parse the options of the targets (label maps, boxes, classes); called by :meth:`_parse_options`."""
        raise NotImplementedError

    def _paths_from_folders(self) -> List[Dict[str, Optional[str]]]:
        raise NotImplementedError

    def _paths_from_lmdb(self) -> List[Dict[str, Optional[str]]]:
        raise NotImplementedError

    def _fail(self, message: str) -> ValueError:
        return ValueError(f"Dataset '{self.name}': {message}")

    def _require(self, key: str):
        if self.opt.get(key) is None:
            raise self._fail(f"option '{key}' is missing.")
        return self.opt[key]

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

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:
        """Drop the open file clients (LMDB environments cannot be pickled into DataLoader workers)."""
        state = self.__dict__.copy()
        state['_clients'], state['_clients_pid'] = {}, None
        return state
