"""Hold out part of an ImageFolder training split, for choosing settings on images the reported split never sees.

Writes ``OUT/train/<class>/`` and ``OUT/val/<class>/`` of symbolic links to the images of ``ROOT/SPLIT/<class>/``
(nothing is copied): of each class's images, sorted by name, every ``EVERY``-th (the ``EVERY``-th, ``2 x EVERY``-th,
...) goes to ``val``, the rest to ``train``. The split depends on the file names only.

Example (the schedule study of options/benchmark/quick_cls_select.yml: 700 train / 100 held-out photos):
    python scripts/holdout_split.py --root ../shared/data/clothing --out experiments/clothing_select --every 8
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from segsr.data.det_annotations import scan_image_folder  # noqa: E402


def holdout_split(root: str, out: str, every: int, split: str = 'train') -> dict:
    """Link every ``every``-th image of each class of ``root/split`` into ``out/val``, the others into ``out/train``.

    Args:
        root: An ImageFolder dataset (``root/<split>/<class>/<image>``).
        out: Output folder; must not exist yet, or hold exactly this split already (then it is left as it is).
        every: Every how many images one is held out (>= 2).
        split: The split of ``root`` to divide. Default: ``train``.

    Returns:
        ``{'train': n, 'val': m}``, the image counts.
    """
    if int(every) < 2:
        raise ValueError(f'--every must be >= 2, got {every}.')
    source = osp.join(root, split)
    classes, samples = scan_image_folder(source)
    counts, seen = {'train': 0, 'val': 0}, {}
    for path, label in samples:
        seen[label] = seen.get(label, 0) + 1
        side = 'val' if seen[label] % int(every) == 0 else 'train'
        link = osp.join(out, side, osp.relpath(path, source))
        target = osp.abspath(path)
        if osp.lexists(link):
            if osp.realpath(link) != osp.realpath(target):
                raise FileExistsError(f"{link} exists and is not a link to {target}: use another --out.")
        else:
            os.makedirs(osp.dirname(link), exist_ok=True)
            os.symlink(target, link)
        counts[side] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', required=True, help='ImageFolder dataset root (holds SPLIT/<class>/).')
    parser.add_argument('--out', required=True, help='Output folder (train/ and val/ of links).')
    parser.add_argument('--every', type=int, default=8, help='Hold out every EVERY-th image of each class.')
    parser.add_argument('--split', default='train', help='Split of ROOT to divide (default: train).')
    args = parser.parse_args()
    counts = holdout_split(args.root, args.out, args.every, args.split)
    sys.stdout.write(f"{args.out}: {counts['train']} train / {counts['val']} held-out images\n")


if __name__ == '__main__':
    main()
