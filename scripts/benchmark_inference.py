#!/usr/bin/env python
"""Throughput and peak memory of segsr-infer's upsampler, tiled and untiled (prints a Markdown table).

    python scripts/benchmark_inference.py                 # Compact 64/32 x4 and RRDBNet 64/23 x4, 512 and 2048 LR
    python scripts/benchmark_inference.py --quick         # Compact only, 256 and 1024 LR, tile 128 (a few minutes)
    python scripts/benchmark_inference.py --model my.pth  # any checkpoint the loader takes

Every measurement runs in a fresh Python process (one model, device, size and tiling), so its peak is its own:
a warm-up on a 64 x 64 input, then one timed ``Upsampler.upscale_tensor`` call on a random LR image (the part of
segsr-infer that runs the network and assembles the float32 output; reading, writing and the 8/16-bit conversion
are not timed).

Columns:
    MP/s: output megapixels per second.
    peak RSS growth (CPU): the process's peak resident memory during the timed call minus its resident memory just
        before it (model, input and warm-up already in). The peak is ``ru_maxrss`` when the call raised it, else the
        largest of RSS samples taken every 5 ms. It includes the float32 output tensor, which is also given on its
        own (``output``), so ``growth - output`` is the working memory of inference (it counts what the CPU
        allocator keeps after freeing, so it is an upper bound).
    peak CUDA (CUDA): ``torch.cuda.max_memory_allocated`` during the call minus what was allocated before (weights);
        the output is on the CPU, so this is the device's working memory.
Random weights: speed and memory do not depend on them.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    'compact': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_conv': 32,
                'upscale': 4},
    'rrdb': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32,
             'scale': 4},
}


def build_model(name: str, device: str):
    """A :class:`LoadedNetwork`: a random-weight ``MODELS`` entry, or a file through ``load_generator``."""
    import torch
    from basicsr.archs import build_network

    from segsr.weights import freeze
    from segsr.utils.model_io import LoadedNetwork, load_generator

    if name not in MODELS:
        return load_generator(name, device=device)
    torch.manual_seed(0)
    block = MODELS[name]
    net = freeze(build_network(dict(block)).to(device))
    scale = block.get('upscale', block.get('scale'))
    return LoadedNetwork(net=net, scale=scale, arch=block['type'], source=f'{name} (random weights)')


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class RSSSampler:
    """Largest resident memory seen by a background thread polling every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.peak, self.interval, self._stop = rss_bytes(), interval, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> 'RSSSampler':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure(model_name: str, device: str, size: int, tile: int, tile_pad: int) -> dict:
    """One timed run (called in a fresh process by :func:`main`)."""
    import torch

    import segsr  # noqa: F401  (registers the archs)
    from segsr.utils.upsampler import Upsampler

    model = build_model(model_name, device)
    upsampler = Upsampler(model, tile=tile, tile_pad=tile_pad)
    upsampler.upscale_tensor(torch.rand(1, 3, 64, 64))
    img = torch.rand(1, 3, size, size)
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    rss_before, max_before = rss_bytes(), max_rss_bytes()
    with RSSSampler() as sampler:
        start = time.perf_counter()
        out = upsampler.upscale_tensor(img)
        seconds = time.perf_counter() - start
    peak_rss = max_rss_bytes() if max_rss_bytes() > max_before else sampler.peak
    result = dict(model=model.source, device=device, size=size, tile=tile, seconds=seconds,
                  mp_per_s=out.shape[-1] * out.shape[-2] / 1e6 / seconds, out_bytes=out.numel() * 4,
                  rss_growth=peak_rss - rss_before)
    if cuda:
        result['cuda_peak'] = torch.cuda.max_memory_allocated() - cuda_before
    return result


def run_in_subprocess(model: str, device: str, size: int, tile: int, tile_pad: int) -> Optional[dict]:
    cmd = [sys.executable, os.path.abspath(__file__), '--one', model, device, str(size), str(tile), str(tile_pad)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    if proc.returncode != 0:
        print(f'{model} {device} {size} tile {tile}: failed ({proc.returncode}): {proc.stderr[-500:]}', file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: List[dict]) -> str:
    from segsr.report import markdown_lines

    mib = 1024 ** 2
    header = ['model', 'device', 'LR input', 'tile', 's', 'output MP/s', 'peak RSS growth', 'output',
              'growth - output', 'peak CUDA']
    cells = [[r['model'], r['device'], f"{r['size']}x{r['size']}", str(r['tile'] or 'none'), f"{r['seconds']:.1f}",
              f"{r['mp_per_s']:.3f}", f"{r['rss_growth'] / mib:.0f} MiB", f"{r['out_bytes'] / mib:.0f} MiB",
              f"{(r['rss_growth'] - r['out_bytes']) / mib:.0f} MiB",
              f"{r['cuda_peak'] / mib:.0f} MiB" if 'cuda_peak' in r else 'n/a'] for r in rows]
    return '\n'.join(markdown_lines(header, cells, numeric=True))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', nargs='+', default=None,
                        help=f'Models: {", ".join(MODELS)} (random weights) or checkpoint/options files.')
    parser.add_argument('--sizes', type=int, nargs='+', default=None, help='LR input sides (default 512 2048).')
    parser.add_argument('--tile', type=int, default=None, help='Tile size (default 256).')
    parser.add_argument('--tile-pad', type=int, default=10)
    parser.add_argument('--untiled-max', type=int, default=512,
                        help='Largest LR side also run untiled (whole image at once; default 512).')
    parser.add_argument('--devices', nargs='+', default=None, help='Default: cpu, and cuda when available.')
    parser.add_argument('--quick', action='store_true', help='Compact only, 256 and 1024, tile 128.')
    parser.add_argument('--one', nargs=5, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.one:
        model, device, size, tile, pad = args.one
        print(json.dumps(measure(model, device, int(size), int(tile), int(pad))))
        return
    import torch

    models = args.model or (['compact'] if args.quick else list(MODELS))
    sizes = args.sizes or ([256, 1024] if args.quick else [512, 2048])
    tile = args.tile or (128 if args.quick else 256)
    devices = args.devices or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    rows = []
    for model in models:
        for device in devices:
            for size in sizes:
                for t in ([0] if size <= args.untiled_max else []) + [tile]:
                    row = run_in_subprocess(model, device, size, t, args.tile_pad)
                    if row:
                        rows.append(row)
                        print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}, '
          f'tile pad {args.tile_pad}\n')
    print(table(rows))


if __name__ == '__main__':
    main()
