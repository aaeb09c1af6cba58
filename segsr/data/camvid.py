"""Convert a SegNet-layout CamVid folder into segsr's layout, with LMDBs and dataset_info.yml.

Input (the SegNet tutorial's CamVid copy): ``<src>/{train,val[,test]}/*.png`` (480x360 RGB) and
``<src>/{train,val[,test]}annot/*.png`` (8-bit class ids 0..11, 11 = Unlabelled).

Output (default ``datasets/camvid``)::

    <out>/{train,val[,test]}/hr/*.png     images, copied byte for byte
    <out>/{train,val[,test]}/seg/*.png    class ids 0..10, Unlabelled (11) -> 255
    <out>/seq_train/{hr,seg}/*.png        the sequence-disjoint split (hard links where the file system allows):
    <out>/seq_dev/{hr,seg}/*.png            seq_dev = the frames of the held-out video sequences (default 0006R0,
                                            101 frames of train/), seq_train = every other frame of train/ and val/
    <out>/lmdb/<split>_{hr,seg}.lmdb      unless --no-lmdb
    <out>/dataset_info.yml                classes, palette and ``sequence_split`` (which sequences went where)

Why the extra split: all 101 frames of the SegNet ``val/`` come from sequence 0016E5, which also gives 204 of the 367
training frames (near-duplicates), so ``val/`` measures memorisation as much as generalisation. Use ``seq_train`` /
``seq_dev`` for development and reported numbers, ``train`` / ``val`` to compare with older tables. A frame's
sequence is its file-name prefix (``0006R0_f02400`` -> ``0006R0``); frames sort in time order by name.

Command line (the same three ways): ``segsr-prepare-camvid``, ``python -m segsr.data.camvid`` or
``python scripts/prepare_camvid.py``::

    segsr-prepare-camvid --src /path/to/CamVid --out datasets/camvid

From Python: :func:`prepare_camvid` (the benchmark calls it when its dataset is not prepared yet).
"""
import argparse
import os
import os.path as osp
import shutil
import sys
from typing import Dict, List, Optional, Sequence

import cv2

from segsr.data.data_util import index_by_stem, write_dataset_info
from segsr.data.lmdb_util import make_layout_lmdbs
from segsr.data.seg_transforms import remap_labels, validate_labels

CAMVID_CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence', 'Car', 'Pedestrian',
                  'Bicyclist')
# Colours of the CamVid label definitions (Brostow et al.), in class order.
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
UNLABELLED = 11
IGNORE_INDEX = 255
DEV_SEQUENCES = ('0006R0', )
SEQ_TRAIN, SEQ_DEV = 'seq_train', 'seq_dev'


def sequence_of(stem: str) -> str:
    """The video sequence of a CamVid frame: its file-name prefix (``0006R0_f02400`` -> ``0006R0``)."""
    return stem.split('_')[0]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--src', required=True, help='SegNet-layout CamVid folder (train/, trainannot/, ...).')
    parser.add_argument('--out', default='datasets/camvid', help='Output root (default datasets/camvid).')
    parser.add_argument('--splits', nargs='+', default=None, help='Splits (default: train, val, test if present).')
    parser.add_argument('--dev-sequences', nargs='*', default=list(DEV_SEQUENCES),
                        help='Video sequences held out as seq_dev (default: 0006R0); none: no sequence split.')
    parser.add_argument('--no-lmdb', action='store_true', help='Do not build LMDBs.')
    parser.add_argument('--overwrite', action='store_true', help='Replace existing output splits and LMDBs.')
    return parser.parse_args(argv)


def convert_split(src: str, out: str, split: str, overwrite: bool) -> int:
    """Copy one split's images and write its remapped label maps; returns the number of pairs."""
    img_dir, ann_dir = osp.join(src, split), osp.join(src, f'{split}annot')
    images, labels = index_by_stem(img_dir), index_by_stem(ann_dir)
    missing = sorted(set(images) - set(labels))
    if missing:
        raise FileNotFoundError(f"CamVid image '{osp.join(img_dir, images[missing[0]])}' has no label in "
                                f"'{ann_dir}' ({len(missing)} images without labels).")
    hr_dir, seg_dir = osp.join(out, split, 'hr'), osp.join(out, split, 'seg')
    for folder in (hr_dir, seg_dir):
        if osp.exists(folder) and os.listdir(folder):
            if not overwrite:
                raise FileExistsError(f"'{folder}' is not empty; pass --overwrite to replace it.")
            shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)
    for stem, name in sorted(images.items()):
        write_image(osp.join(img_dir, name), osp.join(hr_dir, f'{stem}.png'))
        write_label(osp.join(ann_dir, labels[stem]), osp.join(seg_dir, f'{stem}.png'))
    return len(images)


def write_image(src: str, dst: str) -> None:
    if src.lower().endswith('.png'):
        shutil.copyfile(src, dst)
        return
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None or not cv2.imwrite(dst, img):
        raise ValueError(f"Cannot convert image '{src}' to '{dst}'.")


def write_label(src: str, dst: str) -> None:
    label = cv2.imread(src, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"Cannot read label map '{src}'.")
    if label.ndim != 2:
        raise ValueError(f"Label map '{src}' has {label.shape[2]} channels; expected SegNet's single-channel ids.")
    label = remap_labels(label, {UNLABELLED: IGNORE_INDEX})
    validate_labels(label, len(CAMVID_CLASSES), IGNORE_INDEX, path=src)
    if not cv2.imwrite(dst, label.astype('uint8')):
        raise OSError(f"Cannot write '{dst}'.")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or no hard links here
        shutil.copyfile(src, dst)


def write_sequence_split(out: str, dev_sequences: Sequence[str] = DEV_SEQUENCES,
                         sources: Sequence[str] = ('train', 'val'), overwrite: bool = False) -> Dict[str, List[str]]:
    """Split the frames of ``sources`` (already in ``out``) by video sequence into ``seq_dev`` and ``seq_train``.

    Args:
        out: Dataset root in segsr's layout holding ``<source>/{hr,seg}``.
        dev_sequences: Sequences whose frames form ``seq_dev``; every other frame goes to ``seq_train``.
        sources: Splits to draw frames from. Default: train and val.
        overwrite: Replace existing ``seq_*`` folders. Default: False.

    Returns:
        The sequences of each new split, e.g. ``{'seq_train': ['0001TP', '0016E5'], 'seq_dev': ['0006R0']}``.

    Raises:
        ValueError: a dev sequence has no frame in ``sources``, or every frame is a dev frame.
    """
    frames = [(split, stem) for split in sources for stem in sorted(index_by_stem(osp.join(out, split, 'hr')))]
    found = {sequence_of(stem) for _, stem in frames}
    unknown = sorted(set(dev_sequences) - found)
    if unknown:
        raise ValueError(f'dev sequences {unknown} have no frames in {list(sources)} of {out}; sequences there: '
                         f'{sorted(found)}.')
    parts = {SEQ_DEV: [f for f in frames if sequence_of(f[1]) in dev_sequences],
             SEQ_TRAIN: [f for f in frames if sequence_of(f[1]) not in dev_sequences]}
    if not parts[SEQ_TRAIN]:
        raise ValueError(f'every frame of {list(sources)} is in a dev sequence {list(dev_sequences)}: nothing to train on.')
    for new_split, members in parts.items():
        for kind in ('hr', 'seg'):
            folder = osp.join(out, new_split, kind)
            if osp.exists(folder) and os.listdir(folder):
                if not overwrite:
                    raise FileExistsError(f"'{folder}' is not empty; pass --overwrite to replace it.")
                shutil.rmtree(folder)
            os.makedirs(folder, exist_ok=True)
            for split, stem in members:
                _link_or_copy(osp.join(out, split, kind, f'{stem}.png'), osp.join(folder, f'{stem}.png'))
    return {k: sorted({sequence_of(stem) for _, stem in v}) for k, v in parts.items()}


def prepare_camvid(src: str, out: str, splits: Optional[Sequence[str]] = None, lmdb: bool = True,
                   overwrite: bool = False, dev_sequences: Sequence[str] = DEV_SEQUENCES) -> Dict[str, int]:
    """Convert a SegNet-layout CamVid folder into segsr's layout (see the module docstring).

    Args:
        src: SegNet-layout CamVid folder (``train/``, ``trainannot/``, ...).
        out: Output root.
        splits: Splits to convert. Default: ``train``, ``val``, ``test`` where present.
        lmdb: Also build ``<out>/lmdb/<split>_{hr,seg}.lmdb``. Default: True.
        overwrite: Replace existing output splits and LMDBs. Default: False.
        dev_sequences: Video sequences held out as ``seq_dev`` (see :func:`write_sequence_split`); empty: no
            sequence split. Needs ``train`` among the splits. Default: ``('0006R0',)``.

    Returns:
        The number of image/label pairs per split (``seq_train`` / ``seq_dev`` included).

    Raises:
        FileNotFoundError: ``src`` has no split folders, or an image has no label.
        FileExistsError: an output folder is not empty and ``overwrite`` is False.
    """
    if not osp.isdir(src):
        raise FileNotFoundError(f"CamVid source folder '{src}' does not exist.")
    splits = list(splits or [s for s in ('train', 'val', 'test') if osp.isdir(osp.join(src, s))])
    if not splits:
        raise FileNotFoundError(f"no train/val/test folders in the CamVid source folder '{src}'.")
    counts = {split: convert_split(src, out, split, overwrite) for split in splits}
    extra = dict(source=osp.abspath(src), source_label_map={UNLABELLED: IGNORE_INDEX})  # already applied
    if dev_sequences and 'train' in splits:
        sources = [s for s in ('train', 'val') if s in splits]
        extra['sequence_split'] = write_sequence_split(out, dev_sequences, sources, overwrite)
        extra['sequence_split']['sources'] = sources
        splits = splits + [SEQ_TRAIN, SEQ_DEV]
        counts.update({s: len(index_by_stem(osp.join(out, s, 'hr'))) for s in (SEQ_TRAIN, SEQ_DEV)})
    write_dataset_info(osp.join(out, 'dataset_info.yml'), CAMVID_CLASSES, CAMVID_PALETTE, ignore_index=IGNORE_INDEX,
                       name='CamVid', extra=extra)
    if lmdb:
        make_layout_lmdbs(out, splits, overwrite=overwrite)
    return counts


def main(argv: Optional[List[str]] = None) -> None:
    """``segsr-prepare-camvid``: the command line of :func:`prepare_camvid`."""
    args = parse_args(argv)
    try:
        counts = prepare_camvid(args.src, args.out, args.splits, lmdb=not args.no_lmdb, overwrite=args.overwrite,
                                dev_sequences=args.dev_sequences)
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        sys.exit(f'prepare_camvid: {err}')
    for split, count in counts.items():
        sys.stdout.write(f'{split}: {count} image/label pairs -> {osp.join(args.out, split)}\n')  # the CLI's report


if __name__ == '__main__':
    main()
