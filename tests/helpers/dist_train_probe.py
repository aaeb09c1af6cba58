"""Run segsr's training pipeline (as ``segsr/train.py`` does) and dump this rank's final trainable weights.

Used by tests/test_distributed.py under ``torchrun --nproc_per_node=2 ... --launcher pytorch``; the nets to dump are
named in ``PROBE_NETS`` (comma-separated model attribute paths, e.g. ``task_validator.judge``) and written to ``rank<RANK>.pth`` in the working folder.
"""
import operator
import os
import sys

import torch

sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import segsr  # noqa: E402
import segsr.train  # noqa: E402

segsr.apply_basicsr_fixes()  # as segsr/train.py does

_built = {}
_build_model = segsr.train.build_model


def _capture(opt):
    _built['model'] = _build_model(opt)
    return _built['model']


segsr.train.build_model = _capture
segsr.train.train_pipeline(os.getcwd())
model = _built['model']
dump = {}
for name in os.environ['PROBE_NETS'].split(','):  # attribute paths: net_g, task_validator.judge, ...
    wrapped = operator.attrgetter(name)(model)
    net = model.get_bare_model(wrapped)
    dump[name] = {k: v.detach().cpu().clone() for k, v in net.named_parameters()}
    dump[name + '.wrapped'] = type(wrapped).__name__
torch.save(dump, f"rank{os.environ['RANK']}.pth")
