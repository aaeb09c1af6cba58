"""Paired LQ / GT images with boxes (Pascal VOC XML or COCO JSON) for SR trained or judged by a detector."""
from os import path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from segsr.data.box_transforms import augment_boxes, crop, paired_random_crop_boxes, pad_boxes
from segsr.data.data_util import header_size, index_by_stem, read_meta_info
from segsr.data.det_annotations import ImageBoxes, read_coco, read_voc
from segsr.data.paired_image_base import PairedImageBase, stem_of

BASE_KEYS = ('name', 'phase', 'scale', 'dataroot_gt', 'dataroot_lq', 'lq_downsample', 'io_backend', 'meta_info_file',
             'filename_tmpl', 'gt_size', 'use_hflip', 'use_rot', 'crop_to_scale')


@DATASET_REGISTRY.register()
class PairedImageDetDataset(PairedImageBase):
    """LQ / GT image pairs with the GT's boxes, for SR trained or judged by an object detector.

    Each sample is a dict with ``lq`` (3 x h x w float RGB in [0, 1]), ``gt`` (3 x H x W), ``boxes`` (float32
    ``max_boxes x 4``, HR pixel-edge ``x1, y1, x2, y2``, zero rows after the real ones), ``labels`` (int64
    ``max_boxes``, -1 after the real ones), ``num_boxes`` (int64 0-d), ``lq_path``, ``gt_path`` and ``ann_path``
    (the annotation file). Boxes move with the pixels: crops, flips and 90 degree rotations are those of
    :mod:`segsr.data.box_transforms`.

    The crop rule: a box cut by a crop (the training crop; the mod-crop to a multiple of ``scale``) is clipped to the
    crop and dropped when less than ``crop_min_visible`` of its area or less than ``crop_min_side`` HR pixels of its
    width or height is left.

    Annotations: ``dataroot_ann`` (one Pascal VOC XML per image, same stem as the image) with ``class_names`` (the
    class order; a name not in it is an error naming the file and the object), or ``ann_file`` (a COCO JSON; the
    classes are its categories sorted by id; images are matched by file-name stem). Boxes narrower or lower than
    ``min_box_size`` HR pixels are dropped when read (logged once: BCCD has two 1 x 1 boxes). Checked when the
    dataset is built: every image has an annotation, its size is the image's, every box lies in the image.

    Args:
        opt: BasicSR dataset options (not modified). The keys of :class:`~segsr.data.paired_image_base.
            PairedImageBase` (``name``, ``phase``, ``scale``, ``dataroot_gt``, ``dataroot_lq``, ``lq_downsample``,
            ``io_backend``: disk, or LMDB images keyed by stem with annotations read from files, ``meta_info_file``,
            ``filename_tmpl``, ``gt_size``, ``use_hflip``, ``use_rot``, ``crop_to_scale``) and:

            - dataroot_ann (str): VOC annotation folder; or ann_file (str): COCO JSON.
            - class_names (list[str]): The classes (required with ``dataroot_ann``; with ``ann_file`` it must equal
              the categories).
            - split_file (str, optional): A VOC ``ImageSets/Main/<split>.txt``: the image ids to use.
            - num_classes (int, optional): Must equal the number of classes.
            - max_boxes (int): Rows of the padded ``boxes`` / ``labels``. Default: 100.
            - min_box_size (float): Smallest box side kept when reading (HR pixels). Default: 2.
            - allow_empty (bool): Accept images without boxes. Default: False (an error naming the file).
            - crop_min_visible (float), crop_min_side (float): The crop rule. Defaults: 0.5, 2.
            - resize (int, optional): Resize the HR image (and its boxes) so that its shorter side has this many
              pixels before anything else (``cv2.INTER_AREA`` when shrinking): SR at a scale where the LR loses
              detail (not with ``dataroot_lq``). ``min_box_size`` applies to the boxes as annotated.

    Attributes:
        num_classes (int), class_names (list[str]), task (``'det'``).
    """

    task = 'det'
    OPTION_KEYS = BASE_KEYS + ('dataroot_ann', 'ann_file', 'class_names', 'split_file', 'num_classes', 'max_boxes',
                               'min_box_size', 'allow_empty', 'crop_min_visible', 'crop_min_side', 'resize')

    # ----------------------------------------------------------------------------------------------- options
    def _parse_targets(self) -> None:
        opt = self.opt
        self.ann_root, self.ann_file = opt.get('dataroot_ann'), opt.get('ann_file')
        if bool(self.ann_root) == bool(self.ann_file):
            raise self._fail('set exactly one of the options dataroot_ann (VOC XML folder) and ann_file (COCO JSON).')
        self.max_boxes = int(opt.get('max_boxes', 100))
        self.min_box_size = float(opt.get('min_box_size', 2))
        self.allow_empty = bool(opt.get('allow_empty', False))
        self.crop_min_visible = float(opt.get('crop_min_visible', 0.5))
        self.crop_min_side = float(opt.get('crop_min_side', 2))
        self._parse_resize()
        if self.max_boxes < 1 or not 0 <= self.crop_min_visible <= 1:
            raise self._fail(f'option max_boxes must be >= 1 and crop_min_visible in [0, 1]; got {self.max_boxes}, '
                             f'{self.crop_min_visible}.')
        self._coco: Optional[Dict[str, ImageBoxes]] = None
        names = opt.get('class_names')
        if self.ann_file:
            records, found = read_coco(self.ann_file, allow_empty=True)
            if names is not None and list(names) != found:
                raise self._fail(f"option class_names {list(names)} differs from the categories of '{self.ann_file}' "
                                 f'{found} (sorted by id).')
            self._coco, names = {stem_of(r.image): r for r in records}, found
        elif not names or not isinstance(names, (list, tuple)):
            raise self._fail('option class_names (the list of class names) is required with dataroot_ann.')
        self.class_names = [str(n) for n in names]
        self.num_classes = len(self.class_names)
        if opt.get('num_classes') is not None and int(opt['num_classes']) != self.num_classes:
            raise self._fail(f"option num_classes {opt['num_classes']} differs from the {self.num_classes} classes "
                             f'{self.class_names}.')
        self._dropped = 0

    # ------------------------------------------------------------------------------------------------- paths
    def _annotation(self, key: str, gt_where: str) -> Tuple[ImageBoxes, str]:
        """The boxes of the image ``key`` (a stem) and where they come from; boxes below ``min_box_size`` dropped."""
        if self._coco is not None:
            if key not in self._coco:
                raise FileNotFoundError(f"Dataset '{self.name}': image {gt_where} has no entry in ann_file "
                                        f"'{self.ann_file}'.")
            record, source = self._coco[key], self.ann_file
        else:
            source = osp.join(self.ann_root, f'{key}.xml')
            if not osp.isfile(source):
                raise FileNotFoundError(f"Dataset '{self.name}': image {gt_where} has no annotation: no file "
                                        f"'{source}'.")
            record = read_voc(source, self.class_names, allow_empty=True)[0]
        sides = np.minimum(record.boxes[:, 2] - record.boxes[:, 0], record.boxes[:, 3] - record.boxes[:, 1])
        keep = sides >= self.min_box_size
        self._dropped += int((~keep).sum())
        record = ImageBoxes(record.image, record.width, record.height, record.boxes[keep], record.labels[keep],
                            record.difficult[keep])
        if not len(record) and not self.allow_empty:
            raise ValueError(f"Dataset '{self.name}': annotation '{source}' of image {gt_where} has no box"
                             + (f' of at least min_box_size {self.min_box_size} px' if not keep.all() else '')
                             + '; set allow_empty: true to use images without boxes.')
        return record, source

    def _check_size(self, record: ImageBoxes, source: str, gt_where: str, hw: Optional[Tuple[int, int]]) -> None:
        if hw is not None and (record.height, record.width) != tuple(hw):
            raise ValueError(f"Dataset '{self.name}': annotation '{source}' gives size (h, w) "
                             f'{(record.height, record.width)} but image {gt_where} has size {tuple(hw)}.')

    def _split_ids(self, known) -> List[str]:
        """The image ids of ``split_file`` (a VOC ``ImageSets/Main/<split>.txt``), each one of ``known``."""
        split_file = self.opt['split_file']
        if not osp.isfile(split_file):
            raise FileNotFoundError(f"Dataset '{self.name}': split_file '{split_file}' does not exist.")
        with open(split_file, 'r', encoding='utf-8') as f:
            ids = [line.split()[0] for line in f if line.strip()]
        missing = [i for i in ids if i not in known]
        if missing or not ids:
            raise FileNotFoundError(f"Dataset '{self.name}': split_file '{split_file}' "
                                    + (f"names '{missing[0]}', which has no image in '{self.gt_root}'." if missing
                                       else 'names no image.'))
        return ids

    def _gt_names(self) -> List[str]:
        if not self.opt.get('split_file'):
            return self._gt_names_from_folder()
        index = index_by_stem(self.gt_root)
        return [index[i] for i in self._split_ids(index)]

    def _paths_from_folders(self) -> List[Dict[str, Optional[str]]]:
        for key, folder in [('dataroot_gt', self.gt_root)] + ([('dataroot_lq', self.lq_root)] if self.lq_root else []):
            self._check_dir(key, folder)
        if self.ann_root and not osp.isdir(self.ann_root):
            raise FileNotFoundError(f"Dataset '{self.name}': dataroot_ann '{self.ann_root}' is not a folder.")
        lq_index = index_by_stem(self.lq_root) if self.lq_root else None
        paths, self.records = [], []
        for name in self._gt_names():
            gt_path, key = osp.join(self.gt_root, name), stem_of(name)
            record, source = self._annotation(key, f"'{gt_path}'")
            self._check_size(record, source, f"'{gt_path}'", header_size(gt_path))
            lq_path = None
            if lq_index is not None:
                lq_stem = self.filename_tmpl.format(key)
                if lq_stem not in lq_index:
                    raise FileNotFoundError(f"Dataset '{self.name}': image '{gt_path}' has no LQ image: no file "
                                            f"'{osp.join(self.lq_root, lq_stem)}.*' (filename_tmpl "
                                            f"'{self.filename_tmpl}').")
                lq_path = osp.join(self.lq_root, lq_index[lq_stem])
            paths.append(dict(gt_path=gt_path, lq_path=lq_path, ann_path=source))
            self.records.append(record)
        self._log_dropped()
        return paths

    def _paths_from_lmdb(self) -> List[Dict[str, Optional[str]]]:
        roots = [('gt', 'dataroot_gt', self.gt_root)] + ([('lq', 'dataroot_lq', self.lq_root)] if self.lq_root else [])
        for _, key, folder in roots:
            self._check_dir(key, folder)
        self.io_backend_opt['db_paths'] = [folder for _, _, folder in roots]
        self.io_backend_opt['client_keys'] = [client for client, _, _ in roots]
        entries = read_meta_info(self.opt.get('meta_info_file') or osp.join(self.gt_root, 'meta_info.txt'))
        if self.opt.get('split_file'):  # the listed ids, in the list's order
            shapes = {stem_of(name): shape for name, shape in entries}
            entries = [(key, shapes.get(key)) for key in self._split_ids(shapes)]
        paths, self.records = [], []
        for name, shape in entries:
            key = stem_of(name)
            record, source = self._annotation(key, self._where(key, 'gt'))
            self._check_size(record, source, self._where(key, 'gt'), shape[:2] if shape else None)
            paths.append(dict(gt_path=key, lq_path=self.filename_tmpl.format(key) if self.lq_root else None,
                              ann_path=source))
            self.records.append(record)
        if not paths:
            raise ValueError(f"Dataset '{self.name}': the GT LMDB '{self.gt_root}' lists no image.")
        self._log_dropped()
        return paths

    def _log_dropped(self) -> None:
        if self._dropped:
            get_root_logger().info(f"Dataset '{self.name}': {self._dropped} box(es) smaller than min_box_size "
                                   f'{self.min_box_size} px dropped.')

    # ------------------------------------------------------------------------------------------------ samples
    def _transform(self, img_gt: np.ndarray, boxes: np.ndarray, labels: np.ndarray, img_lq: Optional[np.ndarray],
                   gt_path: str):
        """Mod-crop (boxes clipped by the crop rule), training crop + flips (a read LQ patch turns with the GT), then
        the LQ made from the GT when none was read."""
        rule = dict(min_visible=self.crop_min_visible, min_side=self.crop_min_side)
        if self.resize is not None:
            img_gt, (fx, fy) = self._resize_gt(img_gt)
            boxes = boxes * np.array([fx, fy, fx, fy], dtype=boxes.dtype)
        if img_lq is not None or self.phase != 'train':
            h, w = img_gt.shape[0] - img_gt.shape[0] % self.scale, img_gt.shape[1] - img_gt.shape[1] % self.scale
            img_gt, boxes, labels = crop(img_gt, boxes, labels, 0, 0, h, w, **rule)
        if self.phase == 'train':
            img_gt, boxes, labels, img_lq = paired_random_crop_boxes(img_gt, boxes, labels, self.gt_size, self.scale,
                                                                     img_lq, gt_path, **rule)
            img_gt, boxes, labels, maps = augment_boxes(img_gt, boxes, labels, [] if img_lq is None else [img_lq],
                                                        self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
            img_lq = maps[0] if maps else None
        if img_lq is None:
            img_lq = self._make_lq(img_gt)
        return img_gt, boxes, labels, img_lq

    def __getitem__(self, index: int) -> dict:
        paths, record = self.paths[index], self.records[index]
        img_gt = self._read_image(paths['gt_path'], 'gt')
        img_lq = self._read_image(paths['lq_path'], 'lq') if paths['lq_path'] is not None else None
        self._check_size(record, paths['ann_path'], self._where(paths['gt_path'], 'gt'), img_gt.shape[:2])
        img_gt, boxes, labels, img_lq = self._transform(img_gt, record.boxes, record.labels, img_lq,
                                                        paths['gt_path'])
        boxes, labels, count = pad_boxes(boxes, labels, self.max_boxes, paths['gt_path'])
        img_gt, img_lq = img2tensor([np.ascontiguousarray(img_gt), np.ascontiguousarray(img_lq)], bgr2rgb=False,
                                    float32=True)
        return {
            'lq': img_lq, 'gt': img_gt, 'boxes': torch.from_numpy(boxes), 'labels': torch.from_numpy(labels),
            'num_boxes': torch.tensor(count, dtype=torch.int64), 'lq_path': paths['lq_path'] or paths['gt_path'],
            'gt_path': paths['gt_path'], 'ann_path': paths['ann_path'],
        }
