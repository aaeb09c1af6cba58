"""``segsr-export``: a tiny generator to ONNX with dynamic batch/height/width, checked against PyTorch."""
import numpy as np
import pytest
import torch

from helpers.options import TINY_COMPACT
from helpers.models import training_checkpoint
from helpers.options import TINY_RRDB
from segsr.export import main

onnx = pytest.importorskip('onnx', reason='onnx is part of the dev extra (pip install -e .[dev])')
ort = pytest.importorskip('onnxruntime', reason='onnxruntime is part of the dev extra (pip install -e .[dev])')


@pytest.mark.parametrize('block, network', [(TINY_COMPACT, None), (dict(TINY_RRDB, scale=4), 'block')],
                         ids=['compact-detected', 'rrdb-network-block'])
def test_onnx_model_matches_pytorch_on_any_size(block, network, tmp_path, capsys):
    net = training_checkpoint(block, tmp_path / 'g.pth')
    args = ['-m', str(tmp_path / 'g.pth'), '-o', str(tmp_path / 'g.onnx')]
    if network:
        args += ['--network', str(block)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count('max |onnxruntime - torch|') == 2 and 'input 1x3x32x48' in printed and '2x3x40x24' in printed
    proto = onnx.load(str(tmp_path / 'g.onnx'))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    assert {p.key: p.value for p in proto.metadata_props}['scale'] == '4'
    session = ort.InferenceSession(str(tmp_path / 'g.onnx'), providers=['CPUExecutionProvider'])
    x = torch.rand(3, 3, 17, 9)  # a third size and batch, neither seen by the export nor its check
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    out = session.run(['output'], {'input': x.numpy()})[0]
    assert out.shape == (3, 3, 68, 36) and np.abs(out - expected).max() < 1e-4


def test_export_fails_above_tolerance(tmp_path, capsys):
    training_checkpoint(TINY_COMPACT, tmp_path / 'g.pth')
    assert main(['-m', str(tmp_path / 'g.pth'), '-o', str(tmp_path / 'g.onnx'), '--tolerance', '-1',
                 '--check-shapes', '1x3x8x8']) == 1
    assert 'ABOVE tolerance' in capsys.readouterr().out
