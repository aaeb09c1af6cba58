
import pytest
import torch

import segsr  # noqa: F401
from basicsr.losses import build_loss
from segsr.losses.seg_loss import SegCrossEntropyLoss
from helpers.models import hand_ce


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_seg_ce_against_hand_computation(reduction):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0, :3] = 255
    loss = build_loss({'type': 'SegCrossEntropyLoss', 'loss_weight': 0.5, 'reduction': reduction})
    out = loss(logits, target)
    values = hand_ce(logits, target, 255)
    if reduction == 'mean':
        assert float(out) == pytest.approx(0.5 * sum(values) / len(values), rel=1e-5)
    elif reduction == 'sum':
        assert float(out) == pytest.approx(0.5 * sum(values), rel=1e-5)
    else:
        assert out.shape == (2, 4, 5)
        assert float(out[0, 0, :3].abs().sum()) == 0
        assert float(out.sum()) == pytest.approx(0.5 * sum(values), rel=1e-5)


def test_seg_ce_all_ignored_is_zero_with_grad():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    out = SegCrossEntropyLoss()(logits, torch.full((1, 2, 2), 255))
    out.backward()
    assert float(out.detach()) == 0.0 and logits.grad is not None


def test_unknown_reduction():
    with pytest.raises(ValueError, match='reduction'):
        SegCrossEntropyLoss(reduction='avg')
