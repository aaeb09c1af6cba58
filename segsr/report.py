"""What segsr's commands write: number formatting, markdown tables, standard JSON, atomic files, shared defaults.

Used by ``segsr-evaluate`` (:mod:`segsr.evaluate`), ``segsr-sr-bench`` (:mod:`segsr.sr_bench`), ``segsr-benchmark``
(:mod:`segsr.bench`) and ``scripts/benchmark_inference.py``, so that no command imports another's internals.
"""
import json
import os
from collections import OrderedDict
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

# The paired block bootstrap of every interval segsr reports: blocks of 10 consecutive frames, 2000 resamples, 95 %.
BOOTSTRAP_DEFAULTS = dict(block=10, samples=2000, level=0.95, seed=0)


def psnr_ssim_metrics(scale: int, niqe: bool = False) -> 'OrderedDict[str, dict]':
    """PSNR-Y and SSIM-Y (border of ``scale`` pixels cropped, BasicSR's metric options); with ``niqe``, NIQE too."""
    metrics = OrderedDict(
        psnr=dict(type='calculate_psnr', crop_border=scale, test_y_channel=True),
        ssim=dict(type='calculate_ssim', crop_border=scale, test_y_channel=True))
    if niqe:
        metrics['niqe'] = dict(type='calculate_niqe', crop_border=scale, better='lower')
    return metrics


def fmt_value(value: Optional[float], digits: int, sign: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` shown with ``sign``); ``n/a`` for None or NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return 'n/a'
    return f'{value:+.{digits}f}' if sign else f'{value:.{digits}f}'


def fmt_interval(ci: Optional[dict]) -> str:
    """``+1.23 [+0.40, +2.10]`` for an interval dict, ``—`` for none (the reference row)."""
    if not ci:
        return '—'
    return f"{ci['diff']:+.2f} [{fmt_value(ci['low'], 2, True)}, {fmt_value(ci['high'], 2, True)}]"


def markdown_lines(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: bool = False) -> List[str]:
    """A markdown table: the header line, the rule, one line per row of cells; with ``numeric``, every column after
    the first is right-aligned and ``n/a`` cells read ``—``."""
    rule = '|---|' + '---:|' * (len(header) - 1) if numeric else '|' + '---|' * len(header)
    lines = ['| ' + ' | '.join(header) + ' |', rule]
    for cells in rows:
        cells = [c.replace('n/a', '—') for c in cells] if numeric else cells
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def finite_or_none(value: Any) -> Any:
    """Replace NaN / inf (an undefined IoU) by None, recursively, so that the JSON is standard."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def json_default(value: Any) -> Any:
    """``json.dump`` hook for numpy scalars."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f'not JSON serialisable: {type(value)}')


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it: a reader never sees half a file)."""
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, payload: Any) -> None:
    """Standard JSON (NaN -> null, numpy scalars as numbers), written atomically."""
    write_text(path, json.dumps(finite_or_none(payload), indent=2, default=json_default, allow_nan=False))
