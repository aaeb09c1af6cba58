"""Build LMDBs of images and label maps that BasicSR's ``FileClient('lmdb')`` reads.

Each LMDB is a folder ``<name>.lmdb`` with ``data.mdb``, ``lock.mdb`` and ``meta_info.txt``. Keys are the file
stems; values are lossless PNG bytes (``cv2.imencode``) of the image as read with ``cv2.IMREAD_UNCHANGED``, so
grayscale label maps stay single-channel and keep their exact values. ``meta_info.txt`` has one line per image,
``<stem>.png (h,w,c) <compress_level>``, as written by BasicSR's ``scripts/data_preparation/create_lmdb.py``.

Unlike BasicSR's ``make_lmdb_from_imgs``, the LMDB is built in a hidden temporary folder next to the target
and renamed into place at the end, so a crash never leaves a half-written LMDB; an existing LMDB is only
replaced with ``overwrite=True``.

Reading: py-lmdb (>= 1.5) refuses to open one environment twice in a process, which BasicSR's habit of one
``FileClient`` per dataset breaks as soon as two datasets (or two instances of one) read the same LMDB.
:func:`shared_lmdb_client` hands out one BasicSR ``FileClient`` per LMDB and process instead.
"""
import os
import shutil
import uuid
from os import path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import lmdb
import numpy as np
from basicsr.utils import FileClient

from segsr.data.data_util import LAYOUT_SPLITS, index_by_stem


def encode_png(img: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG bytes of an image or label map.

    Args:
        img: Array of shape ``(H, W)`` or ``(H, W, C)``, uint8 or uint16.
        compress_level: zlib level 0..9. Default: 1 (fast, as BasicSR).
    """
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise ValueError(f'cv2.imencode failed for an array of shape {img.shape} and dtype {img.dtype}.')
    return buf.tobytes()


def _read_for_lmdb(path: str, label: bool) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"Cannot read image '{path}' (missing, corrupt or not an image).")
    if label:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim != 2:
            raise ValueError(f"Label map '{path}' has {img.shape[2]} channels; label maps must be single-channel "
                             'class-id images (a palette PNG must first be converted to an index PNG).')
        if img.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Label map '{path}' has dtype {img.dtype}; use uint8 or uint16 PNGs.")
    return img


def _check_key(stem: str, path: str) -> None:
    if any(c.isspace() for c in stem) or not stem.isascii():
        raise ValueError(f"File '{path}': LMDB keys are file stems and must be ASCII without spaces "
                         '(BasicSR encodes keys as ASCII and splits meta_info.txt lines on spaces).')


def _commit(env: lmdb.Environment, items: List[Tuple[bytes, bytes]]) -> None:
    """Write ``items`` in one transaction, doubling the map size until they fit."""
    while items:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()['map_size'] * 2)


def _write_lmdb(folder: str, tmp_path: str, stems: List[Tuple[str, str]], label: bool, compress_level: int,
                map_size: int, batch_bytes: int = 256 << 20) -> None:
    env = lmdb.open(tmp_path, map_size=map_size, sync=False)
    try:
        pending, pending_bytes = [], 0
        with open(osp.join(tmp_path, 'meta_info.txt'), 'w', encoding='utf-8') as meta:
            for stem, name in stems:
                img = _read_for_lmdb(osp.join(folder, name), label)
                h, w = img.shape[:2]
                c = 1 if img.ndim == 2 else img.shape[2]
                value = encode_png(img, compress_level)
                pending.append((stem.encode('ascii'), value))
                pending_bytes += len(value)
                if pending_bytes >= batch_bytes:
                    _commit(env, pending)
                    pending, pending_bytes = [], 0
                meta.write(f'{stem}.png ({h},{w},{c}) {compress_level}\n')
            _commit(env, pending)
            meta.flush()
            os.fsync(meta.fileno())
        env.sync(True)
    finally:
        env.close()


def _replace_dir(tmp_path: str, lmdb_path: str) -> None:
    """Move ``tmp_path`` to ``lmdb_path``; an existing ``lmdb_path`` is removed only after the move."""
    if not osp.exists(lmdb_path):
        os.rename(tmp_path, lmdb_path)
        return
    old = osp.join(osp.dirname(lmdb_path), f'.{osp.basename(lmdb_path)}.old-{uuid.uuid4().hex[:12]}')
    os.rename(lmdb_path, old)
    os.rename(tmp_path, lmdb_path)
    shutil.rmtree(old)


def make_lmdb(folder: str,
              lmdb_path: str,
              label: bool = False,
              compress_level: int = 1,
              overwrite: bool = False,
              names: Optional[Sequence[str]] = None,
              map_size: Optional[int] = None) -> int:
    """Store the images (or label maps) of a folder in an LMDB keyed by file stem.

    Args:
        folder: Folder of images; not recursive.
        lmdb_path: Output folder; must end with ``.lmdb``.
        label: The folder holds label maps: each must be single-channel uint8/uint16 (a 3-channel file, e.g. a
            palette PNG, raises). Default: False.
        compress_level: PNG compression level 0..9. Default: 1.
        overwrite: Replace an existing ``lmdb_path``. Default: False.
        names: File names inside ``folder`` to store, in this order. Default: every image file, sorted.
        map_size: Initial LMDB map size in bytes; grown automatically. Default: from the files' sizes.

    Returns:
        Number of entries written.

    Raises:
        FileExistsError: ``lmdb_path`` exists and ``overwrite`` is False.
        ValueError: a bad path, an unreadable image, a 3-channel label map, duplicate or non-ASCII stems.
    """
    from basicsr.utils import get_root_logger

    lmdb_path = osp.abspath(lmdb_path.rstrip('/\\'))
    stems = _entries_to_write(folder, lmdb_path, names, overwrite)
    if map_size is None:
        map_size = 4 * sum(osp.getsize(osp.join(folder, n)) for _, n in stems) + (64 << 20)

    os.makedirs(osp.dirname(lmdb_path), exist_ok=True)
    tmp_path = osp.join(osp.dirname(lmdb_path), f'.{osp.basename(lmdb_path)}.tmp-{uuid.uuid4().hex[:12]}')
    os.makedirs(tmp_path)  # unlike mkdtemp, honours the umask
    try:
        _write_lmdb(folder, tmp_path, stems, label, compress_level, map_size)
        _replace_dir(tmp_path, lmdb_path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise
    get_root_logger().info(f"Wrote {len(stems)} {'label maps' if label else 'images'} from '{folder}' to "
                           f"'{lmdb_path}'.")
    return len(stems)


def _entries_to_write(folder: str, lmdb_path: str, names: Optional[Sequence[str]],
                      overwrite: bool) -> List[Tuple[str, str]]:
    """``(stem, file name)`` of each image of ``folder`` to store in ``lmdb_path``, after checking paths and keys."""
    if not lmdb_path.endswith('.lmdb'):
        raise ValueError(f"LMDB path '{lmdb_path}' must end with '.lmdb'.")
    if osp.exists(lmdb_path) and not overwrite:
        raise FileExistsError(f"LMDB '{lmdb_path}' already exists; pass overwrite=True (--overwrite) to replace it.")
    stems = list(index_by_stem(folder, names).items())
    if not stems:
        raise ValueError(f"Folder '{folder}' holds no images.")
    for stem, name in stems:
        _check_key(stem, osp.join(folder, name))
    return stems


def make_layout_lmdbs(root: str,
                      splits: Optional[Sequence[str]] = None,
                      compress_level: int = 1,
                      overwrite: bool = False) -> List[str]:
    """Build ``<root>/lmdb/<split>_hr.lmdb`` and ``<split>_seg.lmdb`` for every split of our layout.

    Args:
        root: Dataset root with ``<split>/hr`` and ``<split>/seg`` folders.
        splits: Splits to convert. Default: those of ``train``, ``val``, ``test`` present under ``root``.
        compress_level: PNG compression level. Default: 1.
        overwrite: Replace existing LMDBs. Default: False.

    Returns:
        The paths of the LMDBs written.
    """
    if splits is None:
        splits = [s for s in LAYOUT_SPLITS if osp.isdir(osp.join(root, s, 'hr'))]
    written = []
    for split in splits:
        for kind in ('hr', 'seg'):
            out = osp.join(root, 'lmdb', f'{split}_{kind}.lmdb')
            make_lmdb(osp.join(root, split, kind), out, label=kind == 'seg', compress_level=compress_level,
                      overwrite=overwrite)
            written.append(out)
    return written


# (realpath, st_dev, st_ino of data.mdb) -> (pid that opened it, client)
_SHARED_CLIENTS: Dict[Tuple[str, int, int], Tuple[int, FileClient]] = {}


def _close_client(client: FileClient) -> None:
    for env in client.client._client.values():
        env.close()


def shared_lmdb_client(db_path: str, **kwargs) -> FileClient:
    """A BasicSR ``FileClient('lmdb')`` for one LMDB, shared by every reader of this process.

    Read with ``client.get(key, 'default')``. The client is keyed by the LMDB's data file (so an LMDB rebuilt
    at the same path gets a new client) and by process: in a DataLoader worker forked after the parent opened
    the LMDB, the inherited environment is closed and the LMDB reopened (LMDB environments must not be used
    across ``fork``).

    Args:
        db_path: LMDB folder.
        **kwargs: Further ``LmdbBackend`` arguments (``readonly``, ``lock``, ``readahead``...); the first
            caller's values are used for a shared client.
    """
    stat = os.stat(osp.join(db_path, 'data.mdb'))
    key = (osp.realpath(db_path), stat.st_dev, stat.st_ino)
    cached = _SHARED_CLIENTS.get(key)
    if cached is not None and cached[0] == os.getpid():
        return cached[1]
    if cached is not None:  # opened by the parent process before a fork
        _close_client(cached[1])
    client = FileClient('lmdb', db_paths=[db_path], client_keys=['default'], **kwargs)
    _SHARED_CLIENTS[key] = (os.getpid(), client)
    return client
