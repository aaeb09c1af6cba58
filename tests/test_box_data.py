"""Detection / classification annotation readers and box transforms (segsr.data.det_annotations, box_transforms).

The transform tests paint each box's pixels with its own colour, transform image and boxes together and check that
every transformed box covers exactly the pixels of its colour, with boxes read from tiny VOC and COCO files.
"""
import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from segsr.data import box_transforms as bt
from segsr.data.det_annotations import (BORDER_TOLERANCE, read_coco, read_voc, read_voc_files, scan_image_folder,
                                        voc_split_files)
from segsr.data.seg_transforms import apply_flips, paired_random_crop_seg

HEIGHT, WIDTH = 24, 36  # not square, so a transpose that swaps the wrong axes shows
CLASSES = ['cell', 'dot']
# VOC boxes, 1-based inclusive (xmin, ymin, xmax, ymax): one at the top-left corner, one at the bottom-right
# corner, one inside, one a single pixel; none overlap.
VOC_OBJECTS = [('cell', (1, 1, 5, 4)), ('dot', (30, 20, 36, 24)), ('cell', (10, 5, 18, 15)), ('dot', (25, 3, 25, 3))]
# The same boxes in 0-based pixel edges [x1, y1, x2, y2].
EDGES = np.array([[0, 0, 5, 4], [29, 19, 36, 24], [9, 4, 18, 15], [24, 2, 25, 3]], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ file writers
def voc_xml(objects: Sequence = VOC_OBJECTS, width='36', height='24', filename='img.png') -> str:
    size = ''.join(f'<{k}>{v}</{k}>' for k, v in (('width', width), ('height', height)) if v is not None)
    parts = [f'<annotation><filename>{filename}</filename><size>{size}<depth>3</depth></size>']
    for name, coords in objects:
        box = ''.join(f'<{k}>{v}</{k}>' for k, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), coords))
        parts.append(f'<object><name>{name}</name><difficult>0</difficult><bndbox>{box}</bndbox></object>')
    return ''.join(parts) + '</annotation>'


def write_voc(path: Path, **kwargs) -> Path:
    path.write_text(voc_xml(**kwargs))
    return path


def coco_data() -> dict:
    """COCO of the same image and boxes (xywh), category ids with a gap, plus a second image."""
    anns = [{'id': i + 1, 'image_id': 7, 'category_id': 3 if name == 'cell' else 9, 'iscrowd': 0,
             'bbox': [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            for i, ((name, _), (x1, y1, x2, y2)) in enumerate(zip(VOC_OBJECTS, EDGES))]
    anns.append({'id': 99, 'image_id': 8, 'category_id': 9, 'iscrowd': 1, 'bbox': [1, 2, 3, 4]})
    return {'images': [{'id': 7, 'file_name': 'img.png', 'width': WIDTH, 'height': HEIGHT},
                       {'id': 8, 'file_name': 'other.png', 'width': 10, 'height': 10}],
            'annotations': anns,
            'categories': [{'id': 9, 'name': 'dot'}, {'id': 3, 'name': 'cell'}]}


def write_coco(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(params=['voc', 'coco'])
def read_boxes(request, tmp_path):
    """Boxes and labels of the tiny image, read from a VOC or a COCO file."""
    if request.param == 'voc':
        record, names = read_voc(str(write_voc(tmp_path / 'img.xml')), CLASSES)
    else:
        records, names = read_coco(str(write_coco(tmp_path / 'ann.json', coco_data())))
        record = records[0]
    assert names == CLASSES and (record.width, record.height) == (WIDTH, HEIGHT)
    return record.boxes, record.labels


# ------------------------------------------------------------------------------------------------ painted images
def painted(boxes: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random uint8 image (values < 100) where box k's pixels have the colour ``colour(k)``."""
    img = np.random.default_rng(seed).integers(0, 100, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        img[y1:y2, x1:x2] = colour(k)
    return img


def colour(k: int) -> List[int]:
    return [150 + 10 * k, 120, 200 - 10 * k]


def box_mask(box: np.ndarray, shape) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    x1, y1, x2, y2 = box
    assert np.array_equal(box, np.round(box)), f'box {box} is not on pixel edges'
    mask[int(y1):int(y2), int(x1):int(x2)] = True
    return mask


def assert_boxes_on_paint(img: np.ndarray, boxes: np.ndarray, ids: Sequence[int]) -> None:
    """Box i covers exactly the pixels painted with colour(ids[i]); no other colour is left in the image."""
    for box, k in zip(boxes, ids):
        np.testing.assert_array_equal((img == colour(k)).all(-1), box_mask(box, img.shape), err_msg=f'box {k}')
    for k in set(range(len(EDGES))) - set(int(i) for i in ids):
        assert not (img == colour(k)).all(-1).any(), f'box {k} was dropped but its pixels are in the image'


# ---------------------------------------------------------------------------------------------------- readers
def test_voc_and_coco_give_the_same_boxes_in_pixel_edges(tmp_path):
    record, names = read_voc(str(write_voc(tmp_path / 'a.xml')), CLASSES)
    np.testing.assert_array_equal(record.boxes, EDGES)
    assert record.boxes.dtype == np.float32 and record.labels.dtype == np.int64 and record.difficult.dtype == bool
    assert record.labels.tolist() == [0, 1, 0, 1] and record.image == 'img.png' and len(record) == 4
    records, coco_names = read_coco(str(write_coco(tmp_path / 'a.json', coco_data())))
    assert coco_names == names == CLASSES  # categories sorted by id: 3 'cell', 9 'dot'
    np.testing.assert_array_equal(records[0].boxes, EDGES)
    assert records[0].labels.tolist() == [0, 1, 0, 1] and records[0].image == 'img.png'
    assert records[1].difficult.tolist() == [True]  # iscrowd
    np.testing.assert_array_equal(records[1].boxes, [[1, 2, 4, 6]])  # xywh -> xyxy


def test_voc_class_list_defaults_to_sorted_names_and_files_share_one(tmp_path):
    first = write_voc(tmp_path / 'a.xml', objects=[('zebra', (1, 1, 4, 4)), ('ant', (5, 5, 9, 9))])
    second = write_voc(tmp_path / 'b.xml', objects=[('moth', (1, 1, 4, 4))])
    record, names = read_voc(str(first))
    assert names == ['ant', 'zebra'] and record.labels.tolist() == [1, 0]
    records, names = read_voc_files([str(first), str(second)])
    assert names == ['ant', 'moth', 'zebra'] and [r.labels.tolist() for r in records] == [[2, 0], [1]]


def test_voc_split_files(tmp_path):
    (tmp_path / 'Annotations').mkdir()
    (tmp_path / 'ImageSets' / 'Main').mkdir(parents=True)
    write_voc(tmp_path / 'Annotations' / 'b.xml')
    (tmp_path / 'ImageSets' / 'Main' / 'train.txt').write_text('b\n\n')
    assert voc_split_files(str(tmp_path), 'train') == [str(tmp_path / 'Annotations' / 'b.xml')]
    (tmp_path / 'ImageSets' / 'Main' / 'val.txt').write_text('b\nc\n')
    with pytest.raises(FileNotFoundError, match='c.xml'):
        voc_split_files(str(tmp_path), 'val')
    with pytest.raises(FileNotFoundError, match='test.txt'):
        voc_split_files(str(tmp_path), 'test')


def test_border_tolerance_clips_within_one_pixel(tmp_path):
    assert BORDER_TOLERANCE == 1
    # 0-based xmin / ymin (-> -1) and xmax = W + 1, ymax = H + 1: clipped to the image
    path = write_voc(tmp_path / 'a.xml', objects=[('cell', (0, 0, WIDTH + 1, HEIGHT + 1))])
    record, _ = read_voc(str(path), CLASSES)
    np.testing.assert_array_equal(record.boxes, [[0, 0, WIDTH, HEIGHT]])
    data = coco_data()
    data['annotations'][0]['bbox'] = [-1, -0.5, WIDTH + 2, 5]
    records, _ = read_coco(str(write_coco(tmp_path / 'a.json', data)))
    np.testing.assert_array_equal(records[0].boxes[0], [0, 0, WIDTH, 4.5])


VOC_ERRORS = {
    'beyond the border': (dict(objects=[('cell', (1, 1, WIDTH + 2, 4))]), 'bndbox/xmax', 'tolerance'),
    'before the border': (dict(objects=[('cell', (1, -1, 4, 4))]), 'bndbox/ymin', 'tolerance'),
    'x2 <= x1': (dict(objects=[('cell', (10, 1, 8, 4))]), 'bndbox/xmax', 'empty box'),
    'y2 <= y1': (dict(objects=[('cell', (1, 5, 4, 3))]), 'bndbox/ymax', 'empty box'),
    'unknown class': (dict(objects=[('cat', (1, 1, 4, 4))]), 'name', "'cat' is not one of the classes"),
    'no object': (dict(objects=[]), 'object', 'allow_empty'),
    'missing width': (dict(width=None), 'size/width', 'missing'),
    'missing height': (dict(height=''), 'size/height', 'missing'),
    'zero width': (dict(width='0'), 'size/width', 'positive integer'),
    'non-numeric coordinate': (dict(objects=[('cell', (1, 'abc', 4, 4))]), 'bndbox/ymin', "'abc'"),
    'nan coordinate': (dict(objects=[('cell', (1, 1, 'nan', 4))]), 'bndbox/xmax', 'not a finite number'),
    'missing coordinate': (dict(objects=[('cell', (1, 1, 4))]), 'bndbox/ymax', 'None'),
    'missing name': (dict(objects=[('', (1, 1, 4, 4))]), 'name', 'missing'),
}


@pytest.mark.parametrize('case', VOC_ERRORS, ids=list(VOC_ERRORS))
def test_voc_errors_name_the_file_and_field(tmp_path, case):
    kwargs, field, problem = VOC_ERRORS[case]
    path = write_voc(tmp_path / 'bad.xml', **kwargs)
    with pytest.raises(ValueError) as err:
        read_voc(str(path), CLASSES)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message and problem in message, message


def test_voc_file_errors_and_allow_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.xml'):
        read_voc(str(tmp_path / 'missing.xml'))
    (tmp_path / 'broken.xml').write_text('<annotation><size>')
    with pytest.raises(ValueError, match=r"broken\.xml' is not valid XML"):
        read_voc(str(tmp_path / 'broken.xml'))
    record, names = read_voc(str(write_voc(tmp_path / 'empty.xml', objects=[])), CLASSES, allow_empty=True)
    assert record.boxes.shape == (0, 4) and record.labels.shape == (0, ) and record.difficult.shape == (0, )


def _coco_case(edit):
    data = coco_data()
    edit(data)
    return data


COCO_ERRORS = {
    'unknown image_id': (lambda d: d['annotations'][1].update(image_id=5), 'image_id', '5 is not the id of any image'),
    'unknown category_id': (lambda d: d['annotations'][0].update(category_id=4), 'category_id', 'any category'),
    'beyond the border': (lambda d: d['annotations'][2].update(bbox=[30, 1, 8, 2]), 'bbox[0]+bbox[2]',
                          'tolerance'),
    'zero width': (lambda d: d['annotations'][2].update(bbox=[3, 1, 0, 2]), 'bbox[0]+bbox[2]', 'empty box'),
    'non-numeric bbox': (lambda d: d['annotations'][0].update(bbox=[1, 'x', 2, 2]), 'bbox[1]', "'x'"),
    'bbox of three numbers': (lambda d: d['annotations'][0].update(bbox=[1, 2, 2]), 'bbox', 'not [x, y, width'),
    'image without boxes': (lambda d: d['annotations'].pop(), 'annotations', "image 8 ('other.png')"),
    'missing width': (lambda d: d['images'][1].pop('width'), 'width', 'missing'),
    'missing file_name': (lambda d: d['images'][0].pop('file_name'), 'file_name', 'missing'),
    'duplicate image id': (lambda d: d['images'][1].update(id=7), 'id', 'two images'),
    'no categories': (lambda d: d.pop('categories'), 'categories', 'missing'),
}


@pytest.mark.parametrize('case', COCO_ERRORS, ids=list(COCO_ERRORS))
def test_coco_errors_name_the_file_and_field(tmp_path, case):
    edit, field, problem = COCO_ERRORS[case]
    path = write_coco(tmp_path / 'bad.json', _coco_case(edit))
    with pytest.raises(ValueError) as err:
        read_coco(str(path))
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message and problem in message, message


def test_coco_allow_empty_and_file_errors(tmp_path):
    records, _ = read_coco(str(write_coco(tmp_path / 'a.json', _coco_case(lambda d: d['annotations'].pop()))),
                           allow_empty=True)
    assert [len(r) for r in records] == [4, 0] and records[1].boxes.shape == (0, 4)
    (tmp_path / 'b.json').write_text('{"images": [')
    with pytest.raises(ValueError, match=r"b\.json' is not valid JSON"):
        read_coco(str(tmp_path / 'b.json'))
    with pytest.raises(FileNotFoundError, match='c.json'):
        read_coco(str(tmp_path / 'c.json'))


# ------------------------------------------------------------------------------------------- flips and rotations
@pytest.mark.parametrize('name', ['hflip', 'vflip', 'rot90'])
def test_single_transforms_keep_boxes_on_their_pixels(read_boxes, name):
    boxes, labels = read_boxes
    img = painted(boxes)
    out_img, out_boxes, out_labels = getattr(bt, name)(img, boxes, labels)
    assert out_img.shape == ((WIDTH, HEIGHT, 3) if name == 'rot90' else img.shape)
    np.testing.assert_array_equal(out_labels, labels)
    assert_boxes_on_paint(out_img, out_boxes, range(len(boxes)))


@pytest.mark.parametrize('flags', list(itertools.product([False, True], repeat=3)))
def test_compositions_match_apply_flips_and_move_with_a_label_map(read_boxes, flags):
    boxes, labels = read_boxes
    img = painted(boxes)
    seg = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for k, box in enumerate(boxes):
        seg[box_mask(box, seg.shape)] = k + 1
    out = (img, boxes, labels)
    for flag, step in zip(flags, (bt.hflip, bt.vflip, bt.rot90)):  # apply_flips' order
        out = step(*out) if flag else out
    np.testing.assert_array_equal(out[0], apply_flips(img, *flags))
    np.testing.assert_array_equal(out[1], bt.flip_boxes(boxes, (HEIGHT, WIDTH), *flags))
    assert_boxes_on_paint(out[0], out[1], range(len(boxes)))
    moved_seg = apply_flips(seg, *flags)
    for k, box in enumerate(out[1]):
        np.testing.assert_array_equal(moved_seg == k + 1, box_mask(box, moved_seg.shape))


def test_long_random_chains_keep_boxes_on_their_pixels(read_boxes):
    boxes, _ = read_boxes
    rng = random.Random(0)
    for _ in range(20):
        out = (painted(boxes), boxes, np.arange(len(boxes)))
        for _ in range(6):
            out = rng.choice([bt.hflip, bt.vflip, bt.rot90])(*out)
        assert_boxes_on_paint(*out)


def test_augment_boxes_moves_image_boxes_and_label_maps_with_augment_seg_draws(read_boxes):
    boxes, labels = read_boxes
    img = painted(boxes)
    seg = np.arange(HEIGHT * WIDTH, dtype=np.int64).reshape(HEIGHT, WIDTH)
    seen = set()
    for seed in range(16):
        random.seed(seed)
        out_img, out_boxes, out_labels, (out_seg, ) = bt.augment_boxes(img, boxes, labels, [seg])
        random.seed(seed)
        flags = (random.random() < 0.5, random.random() < 0.5, random.random() < 0.5)  # augment_seg's draws
        seen.add(flags)
        np.testing.assert_array_equal(out_img, apply_flips(img, *flags))
        np.testing.assert_array_equal(out_seg, apply_flips(seg, *flags))
        assert_boxes_on_paint(out_img, out_boxes, range(len(boxes)))
    assert len(seen) > 4


# ----------------------------------------------------------------------------------------------------- crops
def test_crops_keep_visible_boxes_on_their_painted_pixels(read_boxes):
    boxes, labels = read_boxes
    img = painted(boxes)
    ids = np.arange(len(boxes))
    rng = np.random.default_rng(1)
    for _ in range(40):
        h, w = int(rng.integers(1, HEIGHT + 1)), int(rng.integers(1, WIDTH + 1))
        top, left = int(rng.integers(0, HEIGHT - h + 1)), int(rng.integers(0, WIDTH - w + 1))
        patch, out_boxes, out_ids = bt.crop(img, boxes, ids, top, left, h, w, min_visible=0, min_side=0)
        assert patch.shape == (h, w, 3)
        assert_boxes_on_paint(patch, out_boxes, out_ids)
        # a flip after the crop still holds
        flipped = bt.rot90(*bt.hflip(patch, out_boxes, out_ids))
        assert_boxes_on_paint(flipped[0], flipped[1], flipped[2])


def test_crop_drop_and_clip_rule():
    img = np.zeros((40, 40, 3), dtype=np.uint8)
    box = np.array([[0, 0, 10, 10]], dtype=np.float32)
    labels = np.array([3])
    _, kept, kept_labels = bt.crop(img, box, labels, 0, 5, 20, 20)  # half the area left
    np.testing.assert_array_equal(kept, [[0, 0, 5, 10]])
    assert kept_labels.tolist() == [3]
    assert bt.crop(img, box, labels, 0, 5, 20, 20, min_visible=0.51)[1].shape == (0, 4)
    # one column left: 10% of the area, a side of 1 px
    assert bt.crop(img, box, labels, 0, 9, 20, 20, min_visible=0.1)[1].shape == (0, 4)  # min_side 2
    _, kept, _, keep = bt.crop(img, box, labels, 0, 9, 20, 20, min_visible=0.1, min_side=1, return_keep=True)
    np.testing.assert_array_equal(kept, [[0, 0, 1, 10]])
    assert keep.tolist() == [True]
    # not in the window at all: dropped even with no thresholds
    assert bt.crop(img, box, labels, 20, 20, 20, 20, min_visible=0, min_side=0)[1].shape == (0, 4)
    with pytest.raises(ValueError, match='not inside the image'):
        bt.crop(img, box, labels, 30, 0, 20, 20)
    with pytest.raises(ValueError, match='one label per box'):
        bt.crop(img, box, np.array([1, 2]), 0, 0, 20, 20)


def test_paired_random_crop_boxes_matches_the_seg_crop_and_the_lq_grid():
    scale, gt_size = 4, 16
    hr = np.random.default_rng(0).random((48, 64, 3)).astype(np.float32)
    lq = hr[::scale, ::scale]
    seg = np.random.default_rng(1).integers(0, 5, (48, 64)).astype(np.uint8)
    boxes = np.array([[4, 8, 24, 20], [40, 28, 60, 44]], dtype=np.float32)
    for seed in range(10):
        random.seed(seed)
        gt_seg, _, lq_seg = paired_random_crop_seg(hr, seg, gt_size, scale, lq)
        random.seed(seed)
        gt_patch, out_boxes, _, lq_patch = bt.paired_random_crop_boxes(hr, boxes, [0, 1], gt_size, scale, lq,
                                                                       min_visible=0, min_side=0)
        np.testing.assert_array_equal(gt_patch, gt_seg)
        np.testing.assert_array_equal(lq_patch, lq_seg)
        np.testing.assert_array_equal(lq_patch, gt_patch[::scale, ::scale])  # the corner is on the LQ grid
    with pytest.raises(ValueError, match='hr_7.png'):
        bt.paired_random_crop_boxes(hr, boxes, [0, 1], 64, scale, gt_path='hr_7.png')
    with pytest.raises(ValueError, match='times scale'):
        bt.paired_random_crop_boxes(hr, boxes, [0, 1], gt_size, scale, lq[:-1])


def test_lq_boxes_cover_the_painted_lq_pixels(read_boxes):
    scale = 2
    boxes, labels = read_boxes
    hr_boxes = bt.scale_boxes(boxes, scale)  # an HR image twice the tiny one, its boxes on the LQ grid
    hr = np.repeat(np.repeat(painted(boxes), scale, 0), scale, 1)
    random.seed(3)
    gt_patch, out_boxes, out_labels, lq_patch = bt.paired_random_crop_boxes(
        hr, hr_boxes, np.arange(len(boxes)), 24, scale, hr[::scale, ::scale], min_visible=0, min_side=0)
    assert_boxes_on_paint(gt_patch, out_boxes, out_labels)
    assert_boxes_on_paint(lq_patch, bt.scale_boxes(out_boxes, 1 / scale), out_labels)
    np.testing.assert_array_equal(bt.scale_boxes(bt.scale_boxes(boxes, 1 / 4), 4), boxes)
    with pytest.raises(ValueError, match='positive'):
        bt.scale_boxes(boxes, 0)


# --------------------------------------------------------------------------------------------------- batching
def test_pad_unpad_round_trip_and_default_collate(read_boxes):
    boxes, labels = read_boxes
    padded = bt.pad_boxes(boxes, labels, 6)
    assert padded[0].shape == (6, 4) and padded[1].tolist()[4:] == [-1, -1] and padded[2] == 4
    for got, want in zip(bt.unpad_boxes(*padded), (boxes, labels)):
        np.testing.assert_array_equal(got, want)
    none = bt.pad_boxes(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), 6)
    assert none[2] == 0 and (none[1] == -1).all()

    samples = [dict(zip(('boxes', 'labels', 'num_boxes'), bt.pad_boxes(b, l, 6)))
               for b, l in ((boxes, labels), (boxes[1:2], labels[1:2]))]
    batch = default_collate(samples)
    assert batch['boxes'].shape == (2, 6, 4) and batch['labels'].dtype == torch.int64
    assert batch['num_boxes'].tolist() == [4, 1]
    got_boxes, got_labels = bt.unpad_boxes(batch['boxes'][1], batch['labels'][1], batch['num_boxes'][1])
    np.testing.assert_array_equal(got_boxes.numpy(), boxes[1:2])
    assert got_labels.tolist() == labels[1:2].tolist()


def test_pad_boxes_names_the_option_when_there_are_too_many(read_boxes):
    boxes, labels = read_boxes
    with pytest.raises(ValueError, match=r"Image 'a\.png' has 4 boxes, more than the option max_boxes = 3"):
        bt.pad_boxes(boxes, labels, 3, path='a.png')
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        bt.pad_boxes(np.zeros((2, 3)), [0, 1], 3)


# ---------------------------------------------------------------------------------------------- classification
def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'')


def test_scan_image_folder(tmp_path):
    for rel in ('dog/b.jpg', 'dog/sub/c.PNG', 'dog/notes.txt', 'cat/a.png', '.cache/x.png', 'dog/.hid/d.png'):
        _touch(tmp_path / rel)
    (tmp_path / 'readme.md').write_text('not a class')
    classes, samples = scan_image_folder(str(tmp_path))
    assert classes == ['cat', 'dog']
    assert samples == [(str(tmp_path / 'cat/a.png'), 0), (str(tmp_path / 'dog/b.jpg'), 1),
                       (str(tmp_path / 'dog/sub/c.PNG'), 1)]
    _, only_png = scan_image_folder(str(tmp_path), extensions=('.PNG', ))
    assert [label for _, label in only_png] == [0, 1]


def test_scan_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        scan_image_folder(str(tmp_path / 'nowhere'))
    _touch(tmp_path / 'loose.jpg')
    with pytest.raises(ValueError, match=re.escape(f"'{tmp_path}' has no class folder")):
        scan_image_folder(str(tmp_path))
    _touch(tmp_path / 'cat' / 'a.jpg')
    _touch(tmp_path / 'dog' / 'notes.txt')
    with pytest.raises(ValueError, match=re.escape(f"Class folder '{tmp_path / 'dog'}' holds no image")):
        scan_image_folder(str(tmp_path))


def test_holdout_split_script_links_every_kth_image_per_class(tmp_path):
    """scripts/holdout_split.py: each class's every k-th image (sorted) is held out, the rest train; links, no copies;
    a rerun keeps the split, a clash with other files is an error naming the file."""
    repo = Path(__file__).resolve().parents[1]
    names = {'cat': [f'{i:02d}.png' for i in range(7)], 'dog': ['a.jpg', 'sub/b.jpg', 'sub/c.jpg']}
    for cls, files in names.items():
        for name in files:
            _touch(tmp_path / 'data' / 'train' / cls / name)
    out = tmp_path / 'split'
    cmd = [sys.executable, str(repo / 'scripts' / 'holdout_split.py'), '--root', str(tmp_path / 'data'), '--out',
           str(out), '--every', '3']
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        assert '7 train / 3 held-out' in done.stdout
    held = sorted(str(p.relative_to(out / 'val')) for p in (out / 'val').rglob('*.*'))
    assert held == ['cat/02.png', 'cat/05.png', 'dog/sub/c.jpg']
    kept = sorted(p for p in (out / 'train').rglob('*.*'))
    assert len(kept) == 7 and all(p.is_symlink() for p in kept)
    assert (out / 'train' / 'dog' / 'sub' / 'b.jpg').resolve() == tmp_path / 'data' / 'train' / 'dog' / 'sub' / 'b.jpg'
    (out / 'val' / 'cat' / '02.png').unlink()
    _touch(out / 'val' / 'cat' / '02.png')
    clash = subprocess.run(cmd, capture_output=True, text=True)
    assert clash.returncode != 0 and f"{out / 'val' / 'cat' / '02.png'} exists" in clash.stderr
