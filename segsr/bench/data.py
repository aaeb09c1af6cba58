"""The benchmark's dataset: a prepared labelled dataset in segsr's layout (prepared from the profile's ``data``
block when missing), and what kind of file a user's network is."""
import os
import os.path as osp
import zipfile
from copy import deepcopy
from dataclasses import dataclass
from typing import List, Optional

import yaml
from basicsr.utils import get_root_logger


@dataclass
class DataInfo:
    """A labelled dataset: segmentation in segsr's layout (``dataset_info.yml`` + LMDBs or ``<split>/{hr,seg}``),
    detection in the Pascal VOC layout (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/<split>.txt``: BCCD),
    classification in ImageFolder layout (``<split>/<class>/<image>``: clothing).

    Args:
        root: The dataset's folder.
        name: Its name (dataset option names: ``<name>_<split>``).
        num_classes: Classes.
        ignore_index: The label of unlabelled pixels (segmentation).
        backend: ``lmdb`` or ``disk``.
        train_split: The split every training step reads (CamVid: ``seq_train``).
        eval_split: The split every score is computed on (CamVid: ``seq_dev``).
        task: ``seg``, ``det`` or ``cls`` (the profile's ``data.task``).
        class_names: Class names (detection and classification).
        dataset: Extra dataset options for every split (the profile's ``data.dataset``, e.g. ``max_boxes``,
            ``resize``).
    """
    root: str
    name: str
    num_classes: int
    ignore_index: int
    backend: str
    train_split: str = 'train'
    eval_split: str = 'val'
    task: str = 'seg'
    class_names: Optional[List[str]] = None
    dataset: Optional[dict] = None

    def block(self, split: str) -> dict:
        """The dataset option block of ``split`` (``PairedImageSegDataset``, ``PairedImageDetDataset`` or
        ``PairedImageClsDataset``).

        Args:
            split: The split's name.
        """
        if self.task != 'seg':
            return self._task_block(split)
        if self.backend == 'lmdb':
            roots = {k: osp.join(self.root, 'lmdb', f'{split}_{k}.lmdb') for k in ('hr', 'seg')}
        else:
            roots = {k: osp.join(self.root, split, k) for k in ('hr', 'seg')}
        return dict(name=f'{self.name}_{split}', type='PairedImageSegDataset', dataroot_gt=roots['hr'],
                    dataroot_seg=roots['seg'], io_backend={'type': self.backend}, num_classes=self.num_classes,
                    ignore_index=self.ignore_index)


    def _task_block(self, split: str) -> dict:
        block = dict(name=f'{self.name}_{split}', io_backend={'type': 'disk'}, class_names=list(self.class_names))
        if self.task == 'det':
            block.update(type='PairedImageDetDataset', dataroot_gt=osp.join(self.root, 'JPEGImages'),
                         dataroot_ann=osp.join(self.root, 'Annotations'),
                         split_file=osp.join(self.root, 'ImageSets', 'Main', f'{split}.txt'))
        else:
            block.update(type='PairedImageClsDataset', dataroot_gt=osp.join(self.root, split))
        block.update(deepcopy(self.dataset or {}))
        return block


def prepare_data(data_opt: dict, root: Optional[str] = None, source: Optional[str] = None) -> DataInfo:
    """Return the dataset at ``root`` (default ``data.root``), preparing it first when the profile says how.

    Args:
        data_opt: The profile's ``data`` block (``root``, ``prepare``: camvid | synthetic, ``source``, ``synthetic``).
        root: Dataset root in segsr's layout; overrides ``data.root``.
        source: Raw dataset to prepare ``root`` from (CamVid: the SegNet-layout folder); overrides ``data.source``.
    """
    if data_opt.get('task', 'seg') != 'seg':
        return folder_data(data_opt, root or source)
    root = osp.abspath(root or data_opt['root'])
    info_path = osp.join(root, 'dataset_info.yml')
    if not osp.isfile(info_path):
        _prepare(data_opt, root, source or data_opt.get('source'))
    if not osp.isfile(info_path):
        raise FileNotFoundError(f"dataset {root}: no dataset_info.yml (prepare it with segsr-prepare-camvid or "
                                'segsr-make-synthetic, or set data.prepare in the profile).')
    with open(info_path) as f:
        info = yaml.safe_load(f) or {}
    if 'num_classes' not in info:
        raise ValueError(f"{info_path}: key 'num_classes' is required.")
    splits = (data_opt.get('train_split', 'train'), data_opt.get('eval_split', 'val'))
    backend = 'lmdb' if osp.isdir(osp.join(root, 'lmdb', f'{splits[0]}_hr.lmdb')) else 'disk'
    for split in splits:
        block = DataInfo(root, '', 1, 255, backend).block(split)
        for key in ('dataroot_gt', 'dataroot_seg'):
            if not osp.exists(block[key]):
                raise FileNotFoundError(f'dataset {root}: {block[key]} is missing (split {split}; data.train_split / '
                                        'data.eval_split name the splits).')
    return DataInfo(root, str(info.get('name', osp.basename(root))).lower(), int(info['num_classes']),
                    int(info.get('ignore_index', 255)), backend, *splits)


def folder_data(data_opt: dict, root: Optional[str] = None) -> DataInfo:
    """A detection (VOC layout) or classification (ImageFolder) dataset used where it lies: nothing is prepared.

    Args:
        data_opt: The profile's ``data`` block: ``task`` (det | cls), ``root`` (or ``--data`` / ``--source``),
            ``class_names`` (required for VOC: the class order), ``train_split`` / ``eval_split``, ``dataset``
            (extra dataset options).
        root: The dataset folder; overrides ``data.root``.
    """
    task = data_opt['task']
    if task not in ('det', 'cls'):
        raise ValueError(f"data.task = {task!r}: expected seg, det or cls.")
    root = osp.abspath(root or data_opt.get('root') or '')
    if data_opt.get('prepare') == 'synthetic' and not osp.isdir(root):
        from segsr.data.synthetic_tasks import make_synthetic_cls, make_synthetic_det

        get_root_logger().info(f"Making synthetic {task} data in {root}: {data_opt.get('synthetic') or {}}.")
        (make_synthetic_det if task == 'det' else make_synthetic_cls)(root, **(data_opt.get('synthetic') or {}))
    elif data_opt.get('prepare') not in (None, 'synthetic'):
        raise ValueError(f"data.prepare = {data_opt['prepare']!r}: a {task} set is used in place (or synthetic).")
    splits = (data_opt.get('train_split', 'train'), data_opt.get('eval_split', 'val'))
    if task == 'det':
        needed = [osp.join(root, 'JPEGImages'), osp.join(root, 'Annotations')]
        needed += [osp.join(root, 'ImageSets', 'Main', f'{split}.txt') for split in splits]
        names = list(data_opt.get('class_names') or [])
        if not names:
            raise ValueError("data.class_names is required for a VOC detection set (the class order).")
    else:
        needed = [osp.join(root, split) for split in splits]
        names = list(data_opt.get('class_names') or [])
    missing = [p for p in needed if not osp.exists(p)]
    if missing:
        raise FileNotFoundError(f"dataset {root}: {missing[0]} is missing (data.task {task}: pass the dataset folder "
                                'with --data or --source, or set data.root).')
    if not names:  # ImageFolder: the training split's class folders
        train = osp.join(root, splits[0])
        names = sorted(d for d in os.listdir(train) if osp.isdir(osp.join(train, d)))
    return DataInfo(root, str(data_opt.get('name', osp.basename(root))).lower(), len(names), 255, 'disk', *splits,
                    task=task, class_names=names, dataset=dict(data_opt.get('dataset') or {}))


def _prepare(data_opt: dict, root: str, source: Optional[str]) -> None:
    kind = data_opt.get('prepare')
    if kind == 'camvid':
        from segsr.data.camvid import prepare_camvid

        if not source:
            raise FileNotFoundError(f"dataset {root} is not prepared and no CamVid source is given: pass --source "
                                    '<SegNet-layout CamVid folder> (train/, trainannot/, val/, valannot/; see '
                                    'docs/datasets.md), or --data <a prepared dataset root>.')
        if not osp.isdir(source):
            raise FileNotFoundError(f"--source / data.source: CamVid folder '{source}' does not exist.")
        get_root_logger().info(f'Preparing CamVid from {source} into {root}.')
        prepare_camvid(source, root)
    elif kind == 'synthetic':
        from segsr.data.synthetic import make_synthetic_dataset

        syn = dict(data_opt.get('synthetic') or {})
        get_root_logger().info(f'Making synthetic data in {root}: {syn}.')
        try:
            make_synthetic_dataset(root, **syn)
        except TypeError as err:
            raise ValueError(f'data.synthetic = {syn}: {err}') from err
    elif kind:
        raise ValueError(f"data.prepare = {kind!r}: expected camvid, synthetic or none.")


def program_kind(path: str) -> Optional[str]:
    """``'export'`` for a ``torch.export`` file (``.pt2``), ``'torchscript'`` for a TorchScript archive (a zip with
    ``code/``), None for a weights file.

    Args:
        path: The file a user gave for a network.
    """
    if path.endswith('.pt2'):
        return 'export'
    if osp.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.split('/')[1:2] == ['code'] for name in archive.namelist()):
                return 'torchscript'
    return None

