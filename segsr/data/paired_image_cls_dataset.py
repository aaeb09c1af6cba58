"""Paired LQ / GT images with an image class (ImageFolder layout) for SR trained or judged by a classifier."""
from os import path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from segsr.data.data_util import IMG_EXTENSIONS, index_by_stem, read_meta_info
from segsr.data.det_annotations import scan_image_folder
from segsr.data.paired_image_base import PairedImageBase, stem_of
from segsr.data.paired_image_det_dataset import BASE_KEYS
from segsr.data.box_transforms import paired_random_crop_boxes
from segsr.data.seg_transforms import augment_seg, crop_size, mod_crop

NO_BOXES, NO_LABELS = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)  # a crop of the image alone


@DATASET_REGISTRY.register()
class PairedImageClsDataset(PairedImageBase):
    """LQ / GT image pairs with the image's class, for SR trained or judged by an image classifier.

    Each sample is a dict with ``lq`` (3 x h x w float RGB in [0, 1]), ``gt`` (3 x H x W), ``label`` (int64 0-d: the
    class index), ``lq_path`` and ``gt_path``.

    Layout: ``dataroot_gt`` is an ImageFolder root, ``<root>/<class>/<image>`` (images anywhere under the class
    folder); the classes are the sorted folder names, or ``class_names`` (then a folder not listed, or a listed class
    without a folder or without images, is an error naming the folder). For the LMDB backend, ``dataroot_gt`` is a
    GT LMDB whose keys are ``<class>/<stem>`` (its ``meta_info.txt`` lists them) and ``class_names`` is required.
    ``dataroot_lq`` (optional) mirrors the GT layout; without it the LQ is made from the GT on the fly.

    Sizes: ``resize`` (optional) resizes the HR image so its shorter side has that many pixels (``cv2.INTER_AREA``
    when shrinking, bicubic when enlarging) before anything else, so photos of any size train at one scale (not with
    ``dataroot_lq``); then the GT is cropped to a multiple of ``scale``. Training takes random ``gt_size`` crops;
    validation a ``center_crop`` when given (equal sizes batch), else the whole image.

    Args:
        opt: BasicSR dataset options (not modified): the keys of :class:`~segsr.data.paired_image_base.
            PairedImageBase` and ``class_names`` (list, optional), ``num_classes`` (optional: must equal the number
            of classes), ``resize`` (int, optional), ``center_crop`` (int or ``[h, w]``, optional).

    Attributes:
        num_classes (int), class_names (list[str]), task (``'cls'``).
    """

    task = 'cls'
    OPTION_KEYS = BASE_KEYS + ('class_names', 'num_classes', 'resize', 'center_crop')

    def _parse_targets(self) -> None:
        opt = self.opt
        names = opt.get('class_names')
        if names is not None and (not isinstance(names, (list, tuple)) or not names):
            raise self._fail(f'option class_names must be a non-empty list of class names, got {names!r}.')
        self.class_names = [str(n) for n in names] if names else None
        self._parse_resize()
        self.center_crop = crop_size(opt['center_crop']) if opt.get('center_crop') else None
        if self.center_crop and (self.center_crop[0] % self.scale or self.center_crop[1] % self.scale):
            raise self._fail(f"option center_crop {opt['center_crop']} is not divisible by scale {self.scale}.")

    def _set_classes(self, found: List[str]) -> None:
        if self.class_names is None:
            self.class_names = list(found)
        self.num_classes = len(self.class_names)
        if self.opt.get('num_classes') is not None and int(self.opt['num_classes']) != self.num_classes:
            raise self._fail(f"option num_classes {self.opt['num_classes']} differs from the {self.num_classes} "
                             f'classes {self.class_names}.')

    def _paths_from_folders(self) -> List[Dict[str, object]]:
        for key, folder in [('dataroot_gt', self.gt_root)] + ([('dataroot_lq', self.lq_root)] if self.lq_root else []):
            self._check_dir(key, folder)
        found, samples = scan_image_folder(self.gt_root, IMG_EXTENSIONS)
        if self.class_names is not None:
            extra = sorted(set(found) - set(self.class_names))
            missing = sorted(set(self.class_names) - set(found))
            if extra or missing:
                raise ValueError(f"Dataset '{self.name}': class folders of '{self.gt_root}' do not match option "
                                 f'class_names: ' + (f'folders not listed {extra}' if extra else '')
                                 + ('; ' if extra and missing else '')
                                 + (f"listed classes without a folder {[osp.join(self.gt_root, m) for m in missing]}"
                                    if missing else '') + '.')
        self._set_classes(found)
        return [dict(gt_path=path, lq_path=self._lq_of(path, found[label]),
                     label=self.class_names.index(found[label])) for path, label in samples]

    def _lq_of(self, gt_path: str, class_name: str) -> Optional[str]:
        if not self.lq_root:
            return None
        folder = osp.join(self.lq_root, class_name)
        stem = self.filename_tmpl.format(stem_of(gt_path))
        index = index_by_stem(folder) if osp.isdir(folder) else {}
        if stem not in index:
            raise FileNotFoundError(f"Dataset '{self.name}': image '{gt_path}' has no LQ image: no file "
                                    f"'{osp.join(folder, stem)}.*' (filename_tmpl '{self.filename_tmpl}').")
        return osp.join(folder, index[stem])

    def _paths_from_lmdb(self) -> List[Dict[str, object]]:
        if not self.class_names:
            raise self._fail('option class_names is required with an LMDB (its keys are <class>/<stem>).')
        roots = [('gt', 'dataroot_gt', self.gt_root)] + ([('lq', 'dataroot_lq', self.lq_root)] if self.lq_root else [])
        for _, key, folder in roots:
            self._check_dir(key, folder)
        self.io_backend_opt['db_paths'] = [folder for _, _, folder in roots]
        self.io_backend_opt['client_keys'] = [client for client, _, _ in roots]
        paths = []
        for name, _ in read_meta_info(self.opt.get('meta_info_file') or osp.join(self.gt_root, 'meta_info.txt')):
            key = osp.splitext(name)[0]
            class_name = key.split('/')[0]
            if '/' not in key or class_name not in self.class_names:
                raise ValueError(f"Dataset '{self.name}': LMDB key '{key}' of '{self.gt_root}' is not "
                                 f'<class>/<stem> with a class of {self.class_names}.')
            paths.append(dict(gt_path=key, lq_path=key if self.lq_root else None,
                              label=self.class_names.index(class_name)))
        if not paths:
            raise ValueError(f"Dataset '{self.name}': the GT LMDB '{self.gt_root}' lists no image.")
        self._set_classes(self.class_names)
        return paths

    def _center(self, img_gt: np.ndarray, img_lq: Optional[np.ndarray], where: str):
        ch, cw = self.center_crop
        h, w = img_gt.shape[:2]
        if h < ch or w < cw:
            raise ValueError(f"Dataset '{self.name}': image {where} of size {(h, w)} is smaller than center_crop "
                             f'{self.center_crop}.')
        top, left = ((h - ch) // 2) // self.scale * self.scale, ((w - cw) // 2) // self.scale * self.scale
        img_gt = img_gt[top:top + ch, left:left + cw]
        if img_lq is not None:
            s = self.scale
            img_lq = img_lq[top // s:(top + ch) // s, left // s:(left + cw) // s]
        return img_gt, img_lq

    def _transform(self, img_gt: np.ndarray, img_lq: Optional[np.ndarray], where: str) -> Tuple[np.ndarray, ...]:
        if self.resize is not None:
            img_gt = self._resize_gt(img_gt)[0]
        img_gt = mod_crop(img_gt, self.scale)
        if self.phase == 'train':
            img_gt, _, _, img_lq = paired_random_crop_boxes(img_gt, NO_BOXES, NO_LABELS, self.gt_size, self.scale,
                                                            img_lq, where)
            arrays = augment_seg([img_gt] + ([img_lq] if img_lq is not None else []),
                                 self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
            img_gt, img_lq = arrays[0], (arrays[1] if img_lq is not None else None)
        elif self.center_crop:
            img_gt, img_lq = self._center(img_gt, img_lq, where)
        return img_gt, (self._make_lq(img_gt) if img_lq is None else img_lq)

    def __getitem__(self, index: int) -> dict:
        paths = self.paths[index]
        img_gt = self._read_image(paths['gt_path'], 'gt')
        img_lq = self._read_image(paths['lq_path'], 'lq') if paths['lq_path'] is not None else None
        where = self._where(paths['gt_path'], 'gt')
        if img_lq is not None:
            h, w = img_gt.shape[0] // self.scale, img_gt.shape[1] // self.scale
            if img_lq.shape[:2] != (h, w):
                raise ValueError(f"Dataset '{self.name}': LQ image {self._where(paths['lq_path'], 'lq')} has size "
                                 f'{img_lq.shape[:2]}; GT {where} needs {(h, w)}.')
        img_gt, img_lq = self._transform(img_gt, img_lq, where)
        img_gt, img_lq = img2tensor([np.ascontiguousarray(img_gt), np.ascontiguousarray(img_lq)], bgr2rgb=False,
                                    float32=True)
        return {'lq': img_lq, 'gt': img_gt, 'label': torch.tensor(paths['label'], dtype=torch.int64),
                'lq_path': paths['lq_path'] or paths['gt_path'], 'gt_path': paths['gt_path']}
