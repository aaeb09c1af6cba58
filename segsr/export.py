"""Export an SR generator to ONNX with dynamic batch, height and width, checked against PyTorch (``segsr-export``).

``python -m segsr.export -m MODEL -o OUT.onnx`` loads MODEL with the loader of ``segsr-infer``
(:func:`segsr.utils.model_io.load_generator`: options file, checkpoint with detected architecture, or
``.safetensors``), exports it with PyTorch's ``torch.export``-based ONNX exporter, then runs the file with
onnxruntime (CPU) on two input sizes and prints the largest absolute difference to PyTorch for each; the exit
status is 1 when one is above ``--tolerance``. The model's input is ``input`` (``B x 3 x H x W``, float32 RGB in
[0, 1]), its output ``output`` (``B x 3 x sH x sW``); ``H`` and ``W`` must be multiples of the ``multiple_of``
metadata entry (1 for most generators). How to run it: ``docs/inference.md``.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ''):  # run as a script: make the repository importable ahead of segsr/ itself
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from segsr.utils.model_io import LoadedNetwork, load_generator  # noqa: E402

DEFAULT_CHECK_SHAPES = ((1, 3, 32, 48), (2, 3, 40, 24))
Shape = Tuple[int, int, int, int]


def export_onnx(model: LoadedNetwork, path: str, opset: int = 18) -> None:
    """Write ``model`` (moved to the CPU, float32) as ONNX with dynamic batch, height and width.

    Args:
        model: A loaded generator.
        path: Output ``.onnx`` file (folders are created).
        opset: ONNX opset version.

    Raises:
        RuntimeError: the exporter cannot trace the network with dynamic sizes (the message names the network).
    """
    from torch.export import Dim

    net = model.net.cpu().float().eval()
    side = 2 * max(model.multiple_of, model.min_size, 8)
    sample = torch.rand(2, 3, side, side)  # not 1: torch.export specialises dimensions of size 0 and 1
    dims = {0: Dim('batch', min=1, max=4096), 2: _size_dim('height', model), 3: _size_dim('width', model)}
    try:
        program = torch.onnx.export(net, (sample, ), dynamo=True, input_names=['input'], output_names=['output'],
                                    dynamic_shapes=(dims, ), opset_version=opset, verbose=False)
    except Exception as err:  # torch.export raises many types (UserError, GuardOnDataDependentSymNode, ...)
        raise RuntimeError(f'{model.source}: ONNX export with dynamic batch/height/width failed: '
                           f'{type(err).__name__}: {str(err)[:1500]}') from err
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    program.save(path)
    _check_dynamic(path, model.source)
    _write_metadata(path, {'scale': str(model.scale), 'arch': model.arch, 'multiple_of': str(model.multiple_of),
                           'min_size': str(model.min_size), 'input_range': '[0, 1] RGB'})


def _size_dim(name: str, model: LoadedNetwork):
    from torch.export import Dim

    if model.multiple_of > 1:  # a multiple of N: N * (a dynamic dimension)
        return model.multiple_of * Dim(f'{name}_blocks', min=1, max=65536 // model.multiple_of)
    return Dim(name, min=max(2, model.min_size), max=65536)


def _check_dynamic(path: str, source: str) -> None:
    """Raise ``RuntimeError`` when the exporter fixed the input's batch, height or width to a number."""
    import onnx

    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    fixed = [name for name, dim in zip(('batch', 'channels', 'height', 'width'), dims)
             if name != 'channels' and not dim.dim_param]
    if fixed:
        raise RuntimeError(f'{source}: the exporter fixed the {", ".join(fixed)} of the input (the network\'s code '
                           'branches on them), so the ONNX model is not dynamic.')


def _write_metadata(path: str, props: Dict[str, str]) -> None:
    import onnx

    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, path)


def check_onnx(model: LoadedNetwork, path: str, shapes: Sequence[Shape] = DEFAULT_CHECK_SHAPES,
               seed: int = 0) -> List[float]:
    """Largest absolute difference between onnxruntime (CPU) and PyTorch outputs for random inputs of ``shapes``.

    Heights and widths are rounded up to the model's ``multiple_of``.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(seed)
    net = model.net.cpu().float().eval()
    diffs = []
    for shape in shapes:
        x = torch.rand(tuple(_round_shape(shape, model.multiple_of)), generator=generator)
        out = session.run(['output'], {'input': x.numpy()})[0]
        with torch.no_grad():
            ref = net(x.clone()).numpy()  # a copy: some networks (spandrel's RCAN) scale their input in place
        if out.shape != ref.shape:
            raise RuntimeError(f'{path}: ONNX output {out.shape} != PyTorch {ref.shape} for input {tuple(x.shape)}.')
        diffs.append(float(np.abs(out - ref).max()))
    return diffs


def _round_shape(shape: Sequence[int], multiple: int) -> List[int]:
    return list(shape[:2]) + [s + (-s) % multiple for s in shape[2:]]


def parse_shape(text: str) -> Shape:
    """``'1x3x32x48'`` -> ``(1, 3, 32, 48)``."""
    parts = [int(p) for p in text.lower().split('x')]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"'{text}' is not BxCxHxW (e.g. 1x3x32x48).")
    return tuple(parts)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='segsr-export', description=__doc__.split('\n\n')[0])
    parser.add_argument('-m', '--model', required=True,
                        help='Generator checkpoint (.pth/.pt/.ckpt/.safetensors) or options file (.yml).')
    parser.add_argument('-o', '--output', required=True, help='Output .onnx file.')
    parser.add_argument('--network', default=None, help='Network block of MODEL when spandrel cannot detect it.')
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset (default 18).')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='Largest allowed |ONNX - PyTorch| on the check inputs (default 1e-4).')
    parser.add_argument('--check-shapes', type=parse_shape, nargs='+', default=list(DEFAULT_CHECK_SHAPES),
                        help='Input shapes of the check (default 1x3x32x48 2x3x40x24).')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import segsr

    segsr.apply_basicsr_fixes()
    args = parse_args(argv)
    model = load_generator(args.model, args.network, 'cpu', option_name='--model', network_option='--network')
    export_onnx(model, args.output, args.opset)
    diffs = check_onnx(model, args.output, args.check_shapes)
    sys.stdout.write(check_report(model, args, diffs))  # the command's result (as segsr.step_bench writes its JSON)
    return 0 if all(d <= args.tolerance for d in diffs) else 1


def check_report(model: LoadedNetwork, args: argparse.Namespace, diffs: Sequence[float]) -> str:
    """The export's summary line and one line per check shape with its max abs difference and verdict."""
    lines = [f'{args.output}: {model.source}, x{model.scale}, opset {args.opset}, dynamic batch/height/width'
             + (f' (multiples of {model.multiple_of})' if model.multiple_of > 1 else '')]
    for shape, diff in zip(args.check_shapes, diffs):
        verdict = 'ok' if diff <= args.tolerance else f'ABOVE tolerance {args.tolerance:g}'
        lines.append(f'  input {"x".join(map(str, _round_shape(shape, model.multiple_of)))}: max |onnxruntime - '
                     f'torch| = {diff:.3g} ({verdict})')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
