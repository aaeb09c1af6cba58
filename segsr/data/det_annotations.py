"""Annotation readers for detection (Pascal VOC XML, COCO JSON) and classification (ImageFolder layout).

Every reader returns boxes in one convention, the one :mod:`segsr.data.box_transforms` works in:

- A box is ``[x1, y1, x2, y2]`` (float32) in pixel-edge coordinates, 0-based: it covers the pixels whose column
  ``c`` satisfies ``x1 <= c < x2`` and whose row ``r`` satisfies ``y1 <= r < y2`` (so ``x2 - x1`` is its width in
  pixels and a box of the whole image is ``[0, 0, W, H]``).
- Pascal VOC stores 1-based inclusive pixel indices (``xmin = 1`` is the first column, ``xmax = W`` the last),
  so a VOC box becomes ``[xmin - 1, ymin - 1, xmax, ymax]``; ``xmin == xmax`` is a box one pixel wide.
- COCO stores ``[x, y, width, height]`` in the same pixel-edge coordinates, so a COCO box becomes
  ``[x, y, x + width, y + height]``.

Border tolerance (:data:`BORDER_TOLERANCE`, 1 px): after conversion a coordinate may lie up to 1 px outside
``[0, W]`` (``[0, H]`` for y); it is then clipped to the image. This accepts VOC files written with 0-based indices
(``xmin = 0``) or with ``xmax = W + 1``. Anything further outside raises. After clipping, a box must have
``x2 > x1`` and ``y2 > y1``.

Class labels are indices into a class list: the given ``class_names``, else the sorted names found (VOC) or the
categories sorted by id (COCO). Errors are ``ValueError`` (``FileNotFoundError`` for missing files) naming the file,
the object and the field.
"""
import json
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from os import path as osp
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from segsr.data.data_util import IMG_EXTENSIONS

BORDER_TOLERANCE = 1.0  # pixels a box coordinate may lie outside the image before it raises (it is clipped)
_VOC_FIELDS = ('bndbox/xmin', 'bndbox/ymin', 'bndbox/xmax', 'bndbox/ymax')
_COCO_FIELDS = ('bbox[0]', 'bbox[1]', 'bbox[0]+bbox[2]', 'bbox[1]+bbox[3]')  # x1, y1, x2, y2 from [x, y, w, h]


@dataclass
class ImageBoxes:
    """The boxes of one image.

    Attributes:
        image: Image file name as the annotation gives it (VOC ``filename``, else the XML's stem; COCO
            ``file_name``).
        width: Image width in pixels.
        height: Image height in pixels.
        boxes: float32 ``(N, 4)`` boxes ``[x1, y1, x2, y2]`` in 0-based pixel-edge coordinates (module docstring).
        labels: int64 ``(N,)`` indices into the class list.
        difficult: bool ``(N,)``: VOC ``difficult`` / COCO ``iscrowd`` (left out of scoring by convention).
    """

    image: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


# ------------------------------------------------------------------------------------------------- shared checks
def _error(path: str, field: str, problem: str, where: str = '') -> ValueError:
    """A ``ValueError`` naming the annotation file, the object (``where``) and the field."""
    place = f'{where} ' if where else ''
    return ValueError(f"Annotation file '{path}': {place}field '{field}' {problem}")


def _number(value, path: str, field: str, where: str = '') -> float:
    """``value`` as a finite float, else a ``ValueError`` naming the field."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise _error(path, field, f'is {value!r}, not a finite number.', where)
    return number


def _image_size(width, height, path: str, fields: Tuple[str, str], where: str = '') -> Tuple[int, int]:
    """``(width, height)`` as positive integers; ``fields`` name the two fields in errors."""
    size = []
    for value, field in zip((width, height), fields):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _error(path, field, 'is missing: the image size is needed to check the boxes.', where)
        number = _number(value, path, field, where)
        if number < 1 or number != int(number):
            raise _error(path, field, f'is {value!r}; the image size must be a positive integer.', where)
        size.append(int(number))
    return size[0], size[1]


def check_box(box: Sequence[float],
              width: int,
              height: int,
              path: str,
              fields: Sequence[str],
              raw: Optional[Sequence] = None,
              where: str = '') -> List[float]:
    """Apply the border tolerance to a converted box and check that it is not empty.

    Args:
        box: ``[x1, y1, x2, y2]`` in 0-based pixel-edge coordinates.
        width: Image width.
        height: Image height.
        path: Annotation file, named in errors.
        fields: Names of the four coordinates' fields in the file, named in errors.
        raw: The four values as the file gives them, quoted in errors. Default: ``box``.
        where: The object, named in errors (e.g. ``"object 3 ('RBC')"``).

    Returns:
        The box clipped to ``[0, width] x [0, height]``.

    Raises:
        ValueError: a coordinate lies more than :data:`BORDER_TOLERANCE` outside the image, or ``x2 <= x1`` or
            ``y2 <= y1`` after clipping.
    """
    raw = box if raw is None else raw
    limits = (('width', width), ('height', height)) * 2
    clipped = []
    for value, (axis, limit), field, shown in zip(box, limits, fields, raw):
        if not -BORDER_TOLERANCE <= value <= limit + BORDER_TOLERANCE:
            raise _error(path, field, f'= {shown} puts the box outside the image ({axis} {limit}) by more than '
                         f'the tolerance of {BORDER_TOLERANCE:g} px.', where)
        clipped.append(min(max(value, 0.0), float(limit)))
    for low, high in ((0, 2), (1, 3)):
        if clipped[high] <= clipped[low]:
            raise _error(path, fields[high], f'= {raw[high]} makes an empty box: it must exceed {fields[low]} = '
                         f'{raw[low]} (after conversion to pixel edges and clipping to the image).', where)
    return clipped


def _as_record(image: str, width: int, height: int, boxes: List[List[float]], labels: List[int],
               difficult: List[bool]) -> ImageBoxes:
    """An :class:`ImageBoxes` with the documented dtypes and shapes (also for zero boxes)."""
    return ImageBoxes(image=image, width=width, height=height,
                      boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                      labels=np.asarray(labels, dtype=np.int64).reshape(-1),
                      difficult=np.asarray(difficult, dtype=bool).reshape(-1))


def _class_index(class_names: Sequence[str], source: str) -> Dict[str, int]:
    """``{name: label}`` for a class list; duplicate names raise."""
    index: Dict[str, int] = {}
    for label, name in enumerate(class_names):
        if name in index:
            raise ValueError(f'{source}: class {name!r} is listed twice.')
        index[name] = label
    return index


# ---------------------------------------------------------------------------------------------------- Pascal VOC
@dataclass
class _VocObjects:
    """One VOC file before its class names become labels."""

    path: str
    image: str
    width: int
    height: int
    names: List[str]
    boxes: List[List[float]]
    difficult: List[bool]


def _read_xml(xml_path: str) -> ET.Element:
    if not osp.isfile(xml_path):
        raise FileNotFoundError(f"Annotation file '{xml_path}' does not exist.")
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"Annotation file '{xml_path}' is not valid XML: {err}.") from err


def _text(node: ET.Element, field: str) -> Optional[str]:
    """Stripped text of ``node/field``, or None when the element is absent or empty."""
    child = node.find(field)
    text = child.text.strip() if child is not None and child.text else ''
    return text or None


def _voc_object(obj: ET.Element, index: int, width: int, height: int,
                xml_path: str) -> Tuple[str, List[float], bool]:
    """``(class name, converted box, difficult)`` of the ``index``-th ``<object>``."""
    name = _text(obj, 'name')
    if name is None:
        raise _error(xml_path, 'name', 'is missing: every object needs a class name.', f'object {index}')
    where = f'object {index} ({name!r})'
    if obj.find('bndbox') is None:
        raise _error(xml_path, 'bndbox', 'is missing.', where)
    raw = [_text(obj, field) for field in _VOC_FIELDS]
    xmin, ymin, xmax, ymax = (_number(value, xml_path, field, where) for value, field in zip(raw, _VOC_FIELDS))
    box = check_box([xmin - 1, ymin - 1, xmax, ymax], width, height, xml_path, _VOC_FIELDS, raw, where)
    difficult = _text(obj, 'difficult')
    return name, box, bool(_number(difficult, xml_path, 'difficult', where)) if difficult else False


def _parse_voc(xml_path: str) -> _VocObjects:
    """Read one VOC XML file: size, image name and every object, checked and converted."""
    root = _read_xml(xml_path)
    width, height = _image_size(_text(root, 'size/width'), _text(root, 'size/height'), xml_path,
                                ('size/width', 'size/height'))
    image = _text(root, 'filename') or osp.splitext(osp.basename(xml_path))[0]
    parsed = _VocObjects(xml_path, image, width, height, [], [], [])
    for index, obj in enumerate(root.findall('object')):
        name, box, difficult = _voc_object(obj, index, width, height, xml_path)
        parsed.names.append(name)
        parsed.boxes.append(box)
        parsed.difficult.append(difficult)
    return parsed


def _voc_record(parsed: _VocObjects, class_index: Dict[str, int], allow_empty: bool) -> ImageBoxes:
    """Turn class names into labels; raise on an unknown class or (unless allowed) on no object."""
    if not parsed.names and not allow_empty:
        raise _error(parsed.path, 'object', 'is missing: the file has no object (pass allow_empty=True to accept '
                     'images without boxes).')
    labels = []
    for index, name in enumerate(parsed.names):
        if name not in class_index:
            raise _error(parsed.path, 'name', f'{name!r} is not one of the classes {list(class_index)}.',
                         f'object {index}')
        labels.append(class_index[name])
    return _as_record(parsed.image, parsed.width, parsed.height, parsed.boxes, labels, parsed.difficult)


def read_voc(xml_path: str,
             class_names: Optional[Sequence[str]] = None,
             allow_empty: bool = False) -> Tuple[ImageBoxes, List[str]]:
    """Read one Pascal VOC annotation file.

    Args:
        xml_path: The XML file.
        class_names: The class list; labels index into it and other names raise. Default: the sorted names of
            this file's objects (labels are then only consistent within the file: for a data set, pass the list
            or use :func:`read_voc_files`).
        allow_empty: Accept a file without ``<object>`` (an image without boxes). Default: False.

    Returns:
        ``(record, class_names)``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not XML, missing or bad ``size``, a missing class name or ``bndbox``, a non-numeric
            coordinate, a box outside the image or empty, an unknown class, or no object.
    """
    parsed = _parse_voc(xml_path)
    names = sorted(set(parsed.names)) if class_names is None else list(class_names)
    return _voc_record(parsed, _class_index(names, f"class_names for '{xml_path}'"), allow_empty), names


def read_voc_files(xml_paths: Iterable[str],
                   class_names: Optional[Sequence[str]] = None,
                   allow_empty: bool = False) -> Tuple[List[ImageBoxes], List[str]]:
    """Read several VOC files with one class list.

    Args:
        xml_paths: The XML files, in the order of the returned records.
        class_names: The class list. Default: the sorted names found in all files.
        allow_empty: Accept files without objects. Default: False.

    Returns:
        ``(records, class_names)``.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_voc`, for the first bad file.
    """
    parsed = [_parse_voc(p) for p in xml_paths]
    names = sorted({n for p in parsed for n in p.names}) if class_names is None else list(class_names)
    class_index = _class_index(names, 'class_names')
    return [_voc_record(p, class_index, allow_empty) for p in parsed], names


def voc_split_files(voc_root: str, split: str) -> List[str]:
    """The annotation files of a VOC split: ``<voc_root>/Annotations/<id>.xml`` per line of
    ``<voc_root>/ImageSets/Main/<split>.txt``.

    Args:
        voc_root: Folder holding ``Annotations/`` and ``ImageSets/``.
        split: Split name (``train``, ``val``, ``trainval``...).

    Returns:
        XML paths in the list's order.

    Raises:
        FileNotFoundError: the split list or one of its annotation files does not exist.
        ValueError: the split list names no image.
    """
    list_file = osp.join(voc_root, 'ImageSets', 'Main', f'{split}.txt')
    if not osp.isfile(list_file):
        raise FileNotFoundError(f"VOC split list '{list_file}' does not exist.")
    with open(list_file, 'r', encoding='utf-8') as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ValueError(f"VOC split list '{list_file}' names no image.")
    paths = [osp.join(voc_root, 'Annotations', f'{image_id}.xml') for image_id in ids]
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(f"VOC split list '{list_file}' names {len(missing)} image(s) without an annotation "
                                f"file, e.g. '{missing[0]}'.")
    return paths


# ---------------------------------------------------------------------------------------------------------- COCO
def _read_json(json_path: str) -> dict:
    if not osp.isfile(json_path):
        raise FileNotFoundError(f"Annotation file '{json_path}' does not exist.")
    try:
        with open(json_path, 'r', encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"Annotation file '{json_path}' is not valid JSON: {err}.") from err
    if not isinstance(data, dict):
        raise ValueError(f"Annotation file '{json_path}' holds a {type(data).__name__}, not a COCO object.")
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise _error(json_path, key, 'is missing or not a list.')
    return data


def _coco_categories(categories: List[dict], json_path: str) -> Tuple[Dict[object, int], List[str]]:
    """``({category id: label}, class names)``: categories sorted by id, labels ``0..K-1``."""
    by_id: Dict[object, str] = {}
    for index, cat in enumerate(categories):
        where = f'categories[{index}]'
        if not isinstance(cat, dict) or cat.get('id') is None or cat.get('name') is None:
            raise _error(json_path, 'id/name', 'is missing: every category needs an id and a name.', where)
        if cat['id'] in by_id:
            raise _error(json_path, 'id', f'{cat["id"]!r} is used by two categories.', where)
        by_id[cat['id']] = str(cat['name'])
    ids = sorted(by_id, key=lambda i: (str(type(i)), i))
    names = [by_id[i] for i in ids]
    _class_index(names, f"Annotation file '{json_path}': categories")
    return {cat_id: label for label, cat_id in enumerate(ids)}, names


def _coco_images(images: List[dict], json_path: str) -> Dict[object, Tuple[str, int, int]]:
    """``{image id: (file_name, width, height)}`` in file order."""
    found: Dict[object, Tuple[str, int, int]] = {}
    for index, image in enumerate(images):
        where = f'images[{index}]'
        if not isinstance(image, dict) or image.get('id') is None:
            raise _error(json_path, 'id', 'is missing.', where)
        if image['id'] in found:
            raise _error(json_path, 'id', f'{image["id"]!r} is used by two images.', where)
        if not image.get('file_name'):
            raise _error(json_path, 'file_name', 'is missing.', where)
        width, height = _image_size(image.get('width'), image.get('height'), json_path, ('width', 'height'), where)
        found[image['id']] = (str(image['file_name']), width, height)
    return found


def _coco_box(ann: dict, width: int, height: int, json_path: str, where: str) -> List[float]:
    """The converted, checked box of one COCO annotation."""
    bbox = ann.get('bbox')
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise _error(json_path, 'bbox', f'is {bbox!r}, not [x, y, width, height].', where)
    x, y, w, h = (_number(v, json_path, f'bbox[{i}]', where) for i, v in enumerate(bbox))
    raw = (bbox[0], bbox[1], x + w, y + h)
    return check_box([x, y, x + w, y + h], width, height, json_path, _COCO_FIELDS, raw, where)


def _lookup(ann: dict, key: str, known: dict, json_path: str, where: str, what: str):
    """``known[ann[key]]``, else an error naming the field and the unknown id."""
    if ann.get(key) not in known:
        raise _error(json_path, key, f'{ann.get(key)!r} is not the id of any {what}.', where)
    return known[ann[key]]


def read_coco(json_path: str, allow_empty: bool = False) -> Tuple[List[ImageBoxes], List[str]]:
    """Read a COCO detection annotation file.

    Categories are sorted by id and labelled ``0..K-1`` in that order (COCO's ids may have gaps); ``iscrowd``
    becomes ``difficult``. Segmentation masks and other fields are ignored.

    Args:
        json_path: The JSON file.
        allow_empty: Accept images without annotations (records without boxes). Default: False.

    Returns:
        ``(records, class_names)``: one record per entry of ``images``, in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not JSON, a missing top-level list, an image without ``file_name`` / ``width`` /
            ``height``, a duplicate id, an annotation whose ``image_id`` or ``category_id`` is unknown, a bad
            ``bbox`` (not four numbers, outside the image, empty), or an image without annotations.
    """
    data = _read_json(json_path)
    category_label, class_names = _coco_categories(data['categories'], json_path)
    images = _coco_images(data['images'], json_path)
    found: Dict[object, Tuple[List[List[float]], List[int], List[bool]]] = {i: ([], [], []) for i in images}
    for index, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            raise _error(json_path, 'annotations', f'entry {index} is not an object.')
        where = f'annotations[{index}] (id {ann.get("id")!r})'
        _, width, height = _lookup(ann, 'image_id', images, json_path, where, 'image')
        label = _lookup(ann, 'category_id', category_label, json_path, where, 'category')
        boxes, labels, crowd = found[ann['image_id']]
        boxes.append(_coco_box(ann, width, height, json_path, where))
        labels.append(label)
        crowd.append(bool(ann.get('iscrowd', 0)))
    records = []
    for image_id, (file_name, width, height) in images.items():
        if not found[image_id][0] and not allow_empty:
            raise _error(json_path, 'annotations', f'has no box for image {image_id!r} ({file_name!r}); pass '
                         'allow_empty=True to accept images without boxes.')
        records.append(_as_record(file_name, width, height, *found[image_id]))
    return records, class_names


# ---------------------------------------------------------------------------------------------- classification
def _class_images(folder: str, extensions: Tuple[str, ...]) -> List[str]:
    """Sorted paths of the images anywhere under ``folder`` (symlinks followed, hidden folders skipped)."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        paths.extend(osp.join(dirpath, n) for n in sorted(filenames) if n.lower().endswith(extensions))
    return paths


def scan_image_folder(root: str,
                      extensions: Sequence[str] = IMG_EXTENSIONS) -> Tuple[List[str], List[Tuple[str, int]]]:
    """Classes and samples of an ImageFolder layout, ``root/<class>/**/<image>`` (as torchvision's ImageFolder).

    Args:
        root: Folder whose sub-folders are the classes (hidden ones, starting with ``.``, are skipped).
        extensions: Image file endings, matched case-insensitively. Default: segsr's image extensions.

    Returns:
        ``(class_names, samples)``: class names sorted, ``samples`` a list of ``(path, label)`` sorted by class,
        then path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``root`` has no class folder, or a class folder holds no image with one of ``extensions``.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f"Image folder root '{root}' does not exist.")
    extensions = tuple(e.lower() for e in extensions)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
    if not classes:
        raise ValueError(f"Image folder root '{root}' has no class folder: expected root/<class>/<image>.")
    samples = []
    for label, name in enumerate(classes):
        paths = _class_images(osp.join(root, name), extensions)
        if not paths:
            raise ValueError(f"Class folder '{osp.join(root, name)}' holds no image with an extension in "
                             f'{list(extensions)}.')
        samples.extend((p, label) for p in paths)
    return classes, samples
