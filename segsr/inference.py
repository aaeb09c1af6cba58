"""Upscale images with any SR checkpoint, optionally with what a segmenter, a detector or a classifier makes of them
(``segsr-infer``).

``python -m segsr.inference -i INPUT -o OUTPUT_DIR -m MODEL`` upscales a file, every image of a folder (sorted), or
the files a glob matches, and writes ``<stem>_<suffix>.<ext>`` per image. MODEL is a checkpoint (``.pth``, ``.pt``,
``.ckpt``, ``.safetensors``: architecture detected by spandrel, or built from ``--network``) or a segsr/BasicSR
options file (``network_g`` + ``path.pretrain_network_g``); see :mod:`segsr.utils.model_io`. Full guide:
``docs/inference.md``.
"""
import argparse
import glob
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from segsr.report import write_json  # noqa: E402
from segsr.tasks import predictor_output, task_of_network  # noqa: E402
from segsr.utils.image_io import ALPHA_EXTS, IMAGE_EXTS, read_image, split_image, write_image  # noqa: E402
from segsr.utils.model_io import LoadedNetwork, load_generator, load_segmenter  # noqa: E402
from segsr.utils.upsampler import Upsampler, tile_process  # noqa: E402
from segsr.utils.visual import make_panel, overlay, save_palette_png, save_rgb  # noqa: E402

SEG_FILES = ('seg', 'seg_index', 'overlay')
RECOGNITION_TASKS = ('det', 'cls')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='segsr-infer', description=__doc__.split('\n\n')[0],
        epilog='Exit status: 0 when every image was written or skipped; 1 when some image of a folder or glob '
        'failed (each failure is logged naming the file and the run goes on). A single bad input file, an unknown '
        'checkpoint or bad options stop the run with an error naming the file or option.')
    parser.add_argument('-i', '--input', required=True, help='Image file, folder of images, or glob pattern.')
    parser.add_argument('-o', '--output', required=True, help='Output folder (created).')
    parser.add_argument('-m', '--model', required=True,
                        help='Generator checkpoint (.pth/.pt/.ckpt/.safetensors) or options file (.yml).')
    parser.add_argument('--network', default=None,
                        help="Network block of MODEL (YAML/JSON file or inline, e.g. '{type: RRDBNet, num_feat: 64, "
                        "num_block: 23, scale: 4}') when spandrel cannot detect it.")
    parser.add_argument('--outscale', type=float, default=None,
                        help="Final scale (any float); the network's output is resized after it. Default: its scale.")
    parser.add_argument('--tile', type=int, default=0, help='Tile size in input pixels; 0 (default): whole image.')
    parser.add_argument('--tile-pad', type=int, default=10, help='Context pixels around each tile (default 10).')
    parser.add_argument('--pre-pad', type=int, default=0,
                        help='Reflect padding at the bottom/right of each image, cropped after (default 0).')
    parser.add_argument('--device', default='auto', help='auto (CUDA when present), cpu, cuda or cuda:N.')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'),
                        help='Network precision; fp16/bf16 output that is not finite is redone in fp32 (warning).')
    parser.add_argument('--suffix', default='out', help="Output name <stem>_<suffix>.<ext>; '' gives <stem>.<ext>.")
    parser.add_argument('--ext', default='auto',
                        help='Output format: auto (as the input; PNG for alpha images in formats without alpha), '
                        'png, jpg, webp, tif, ...')
    parser.add_argument('--overwrite', action='store_true', help='Redo images whose outputs exist (default: skip).')
    parser.add_argument('--seg', default=None,
                        help='Segmentation checkpoint: also write <stem>_seg.png (palette), <stem>_seg_index.png '
                        '(class ids) and <stem>_overlay.png for the SR image.')
    parser.add_argument('--seg-network', default=None,
                        help="Network block of --seg (e.g. '{type: SegUNet, num_classes: 11}' or the training "
                        'options file); not needed for net_task_*.pth written by segsr, which records it.')
    parser.add_argument('--seg-palette', default=None,
                        help='dataset_info.yml (or dataset folder) whose palette colours the classes; default: a fixed '
                        'palette.')
    parser.add_argument('--seg-compare', action='store_true',
                        help='Also segment the bicubic upscale and write <stem>_seg_compare.png (bicubic | SR).')
    for task, what, files in (('det', 'Detector', '<stem>_det.png (SR with the boxes scoring >= 0.5 drawn) and '
                               '<stem>_det.json (every box: box, score, class)'),
                              ('cls', 'Classifier', '<stem>_cls.png (SR captioned with the predicted class) and '
                               '<stem>_cls.json (class, probability, top 5)')):
        parser.add_argument(f'--{task}', default=None, help=f'{what} checkpoint: also write {files}.')
        parser.add_argument(f'--{task}-network', default=None,
                            help=f"Network block of --{task} (e.g. '{{type: Torchvision{task.capitalize()}Net, ...}}' "
                            'or the training options file); not needed for net_task_*.pth written by segsr.')
    parser.add_argument('--class-names', default=None,
                        help='Class names of --det / --cls: a comma-separated list or a text file with one name per '
                        "line (default: '0', '1', ...).")
    return parser.parse_args(argv)


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; anything else is passed to ``torch.device``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def iter_inputs(spec: str) -> List[str]:
    """Image paths of ``spec``: the file itself, a folder's image files (sorted), or a glob's files (sorted).

    Raises:
        FileNotFoundError: nothing matches, naming ``spec``.
    """
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        paths = [os.path.join(spec, n) for n in sorted(os.listdir(spec)) if n.lower().endswith(IMAGE_EXTS)]
    else:
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    if not paths:
        raise FileNotFoundError(f"--input '{spec}': no such file, no image in that folder, or no file matches it.")
    return paths


def output_path(in_path: str, out_dir: str, suffix: str = 'out', ext: str = 'auto', alpha: bool = False) -> str:
    """``<out_dir>/<stem>_<suffix>.<ext>`` (``<stem>.<ext>`` for an empty suffix).

    ``ext='auto'`` keeps the input's extension. An image with alpha is written as PNG when the extension's format
    has no alpha channel (JPEG, BMP), as Real-ESRGAN does.
    """
    stem, in_ext = os.path.splitext(os.path.basename(in_path))
    ext = in_ext if ext == 'auto' else '.' + ext.lstrip('.')
    if alpha and ext.lower() not in ALPHA_EXTS:
        ext = '.png'
    return os.path.join(out_dir, f'{stem}_{suffix}{ext}' if suffix else f'{stem}{ext}')


def seg_paths(in_path: str, out_dir: str, compare: bool) -> Dict[str, str]:
    """Segmentation outputs of one image: ``<stem>_seg.png``, ``_seg_index.png``, ``_overlay.png`` (+ compare)."""
    stem = os.path.splitext(os.path.basename(in_path))[0]
    names = SEG_FILES + (('seg_compare', ) if compare else ())
    return {name: os.path.join(out_dir, f'{stem}_{name}.png') for name in names}


def outputs_exist(in_path: str, args: argparse.Namespace) -> bool:
    """Whether every output of this image is already there (the SR image in either alpha variant)."""
    sr_done = any(os.path.exists(output_path(in_path, args.output, args.suffix, args.ext, alpha))
                  for alpha in (False, True))
    seg_done = not args.seg or all(os.path.exists(p) for p in seg_paths(in_path, args.output,
                                                                        args.seg_compare).values())
    tasks_done = all(os.path.exists(p) for task in RECOGNITION_TASKS if getattr(args, task)
                     for p in task_paths(in_path, args.output, task).values())
    return sr_done and seg_done and tasks_done


class SegWriter:
    """Segments images at output size and writes the class map (palette and index PNG) and overlays.

    Args:
        seg: The segmentation network (:func:`segsr.utils.model_io.load_segmenter`).
        tile: Tile size in pixels of the segmented image (0: whole image on the device).
        tile_pad: Context pixels around each tile.
        palette: RGB colour per class; default: :func:`segsr.utils.visual.default_palette`.
    """

    def __init__(self, seg: LoadedNetwork, tile: int = 0, tile_pad: int = 0,
                 palette: Optional[Sequence[Sequence[int]]] = None) -> None:
        self.seg, self.tile, self.tile_pad, self.palette = seg, tile, tile_pad, palette
        self.num_classes = int(seg.net.num_classes)

    @torch.no_grad()
    def classes(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3`` float RGB in [0, 1] -> ``H x W`` uint8 class ids."""
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
        ids = tile_process(tensor, lambda x: self.seg(x).argmax(dim=1, keepdim=True).float(), 1, self.tile,
                           self.tile_pad, self.seg.device)
        return ids[0, 0].numpy().astype(np.uint8)

    def write(self, paths: Dict[str, str], sr: np.ndarray, lr: Optional[np.ndarray] = None) -> None:
        """Write the outputs of one image; ``lr`` (the input array) is needed for ``seg_compare``."""
        rgb = split_image(sr)[0]
        ids = self.classes(rgb)
        save_palette_png(paths['seg'], ids, self.palette, self.num_classes)
        write_image(paths['seg_index'], ids)
        sr_overlay = overlay(_to_uint8(rgb), ids, self.palette, self.num_classes)
        save_rgb(paths['overlay'], sr_overlay)
        if 'seg_compare' in paths:
            bicubic = cv2.resize(split_image(lr)[0], (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_CUBIC)
            bicubic = np.clip(bicubic, 0, 1)
            bic_overlay = overlay(_to_uint8(bicubic), self.classes(bicubic), self.palette, self.num_classes)
            save_rgb(paths['seg_compare'], make_panel([bic_overlay, sr_overlay], ['bicubic + seg', 'SR + seg']))


def task_paths(in_path: str, out_dir: str, task: str) -> Dict[str, str]:
    """Outputs of a detector / classifier for one image: ``<stem>_<task>.png`` and ``<stem>_<task>.json``."""
    stem = os.path.splitext(os.path.basename(in_path))[0]
    return {'png': os.path.join(out_dir, f'{stem}_{task}.png'), 'json': os.path.join(out_dir, f'{stem}_{task}.json')}


def read_class_names(value: Optional[str], num_classes: int, option_name: str = '--class-names') -> List[str]:
    """Class names from a comma-separated list or a file with one per line; ``'0', '1', ...`` without one.

    Raises:
        ValueError: not ``num_classes`` names, naming the option.
    """
    if not value:
        return [str(i) for i in range(num_classes)]
    if os.path.isfile(value):
        with open(value, 'r', encoding='utf-8') as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = [name.strip() for name in value.split(',') if name.strip()]
    if len(names) != num_classes:
        raise ValueError(f"Option '{option_name}' gives {len(names)} names but the network has {num_classes} classes.")
    return names


class RecognitionWriter:
    """Runs a detector or a classifier on the SR image and writes its picture and a JSON file of its prediction.

    Args:
        loaded: The task network (:func:`segsr.utils.model_io.load_segmenter` loads any task network).
        task_name: ``det`` or ``cls``: the network must solve this task.
        class_names: Names of its classes.
        option_name: The option that named the checkpoint, for errors.
    """

    def __init__(self, loaded: LoadedNetwork, task_name: str, class_names: Sequence[str], option_name: str) -> None:
        self.task = task_of_network(loaded.net)
        if self.task.name != task_name:
            raise ValueError(f"Option '{option_name}': {type(loaded.net).__name__} solves '{self.task.name}', not "
                             f"'{task_name}'.")
        self.loaded, self.class_names = loaded, list(class_names)
        self.num_classes = int(loaded.net.num_classes)

    @torch.no_grad()
    def write(self, paths: Dict[str, str], sr: np.ndarray) -> None:
        """Write ``paths['png']`` and ``paths['json']`` for the SR image ``sr`` (as read / written by segsr)."""
        rgb = split_image(sr)[0]
        tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()
        raw = predictor_output(self.loaded.net(tensor.to(self.loaded.device)))
        prediction = self.task.meter(self.num_classes, class_names=self.class_names).add(raw, None)
        save_rgb(paths['png'], self.task.picture(tensor, prediction, None, self.num_classes, None, self.class_names,
                                                 self.task.name, 'SR'))
        write_json(paths['json'], self.task.to_json(prediction, self.class_names))


def build_task_writers(args: argparse.Namespace, device: torch.device) -> Dict[str, RecognitionWriter]:
    """The :class:`RecognitionWriter` of ``--det`` and ``--cls`` (those given)."""
    writers = {}
    for task in RECOGNITION_TASKS:
        if getattr(args, task):
            loaded = load_segmenter(getattr(args, task), getattr(args, f'{task}_network'), device,
                                    option_name=f'--{task}', network_option=f'--{task}-network')
            names = read_class_names(args.class_names, int(loaded.net.num_classes))
            writers[task] = RecognitionWriter(loaded, task, names, f'--{task}')
    return writers


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def process_image(path: str, args: argparse.Namespace, upsampler: Upsampler, seg_writer: Optional[SegWriter],
                  task_writers: Optional[Dict[str, RecognitionWriter]] = None) -> None:
    """Upscale one image and write its outputs.

    Raises:
        ValueError: unreadable image, or an output that would overwrite the input, naming the file.
        OSError: an output cannot be written.
    """
    img = read_image(path)
    out_path = output_path(path, args.output, args.suffix, args.ext, alpha=img.ndim == 3 and img.shape[2] == 4)
    if os.path.exists(out_path) and os.path.samefile(out_path, path):
        raise ValueError(f"Output '{out_path}' would overwrite the input; choose another --output or --suffix.")
    sr = upsampler.enhance(img)
    write_image(out_path, sr)
    if seg_writer is not None:
        seg_writer.write(seg_paths(path, args.output, args.seg_compare), sr, img)
    for task, writer in (task_writers or {}).items():
        writer.write(task_paths(path, args.output, task), sr)


def build_seg_writer(args: argparse.Namespace, device: torch.device, outscale: float) -> Optional[SegWriter]:
    """The :class:`SegWriter` of ``--seg`` (tiled like the SR network, in output pixels), or None."""
    if not args.seg:
        return None
    seg = load_segmenter(args.seg, args.seg_network, device)
    palette = None
    if args.seg_palette:
        from segsr.data.data_util import load_dataset_info

        palette = load_dataset_info(args.seg_palette)['palette']
    tile = int(round(args.tile * outscale))
    return SegWriter(seg, tile, int(round(args.tile_pad * outscale)) if tile else 0, palette)


def run(args: argparse.Namespace) -> int:
    """Run ``segsr-infer`` with parsed arguments; returns the exit status (see the ``--help`` epilog)."""
    from basicsr.utils import get_root_logger
    from tqdm import tqdm

    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO)
    device = pick_device(args.device)
    model = load_generator(args.model, args.network, device, option_name='--model', network_option='--network')
    upsampler = Upsampler(model, args.tile, args.tile_pad, args.pre_pad, args.precision, args.outscale)
    seg_writer = build_seg_writer(args, device, upsampler.outscale)
    task_writers = build_task_writers(args, device)
    inputs = iter_inputs(args.input)
    single = os.path.isfile(args.input)
    logger.info(f'{model.source}: x{model.scale}, output x{upsampler.outscale:g}, tile {args.tile}, {args.precision}, '
                f'{device}; {len(inputs)} image(s) -> {args.output}')
    skipped, failed = 0, []
    for path in tqdm(inputs, desc='segsr-infer', unit='img', disable=len(inputs) < 2):
        if not args.overwrite and outputs_exist(path, args):
            skipped += 1
            continue
        try:
            process_image(path, args, upsampler, seg_writer, task_writers)
        except (ValueError, OSError) as err:
            if single:
                raise
            logger.error(f'{path}: {err}')
            failed.append(path)
    logger.info(f'{len(inputs) - skipped - len(failed)} written, {skipped} skipped (outputs exist; --overwrite redoes '
                f'them), {len(failed)} failed' + (f': {failed}' if failed else '') + '.')
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    import segsr

    segsr.apply_basicsr_fixes()
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
