import numpy as np
import pytest
import torch

import segsr  # noqa: F401
from segsr.metrics import ConfusionMatrix


def brute_force(preds, targets, num_classes, ignore_index):
    """mIoU / pixel accuracy by explicit per-class pixel counting over the whole set."""
    ious, tp_total, n_total = [], 0, 0
    for c in range(num_classes):
        tp = fp = fn = 0
        for p, t in zip(preds, targets):
            valid = (t != ignore_index)
            tp += int(np.sum((p == c) & (t == c) & valid))
            fp += int(np.sum((p == c) & (t != c) & valid))
            fn += int(np.sum((p != c) & (t == c) & valid))
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
    for p, t in zip(preds, targets):
        valid = t != ignore_index
        tp_total += int(np.sum((p == t) & valid))
        n_total += int(valid.sum())
    return 100 * float(np.mean(ious)), 100 * tp_total / n_total


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_confusion_matrix_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_classes, ignore = 5, 255
    preds, targets = [], []
    cm = ConfusionMatrix(num_classes, ignore)
    for _ in range(4):
        h, w = rng.integers(5, 17, size=2)
        t = rng.integers(0, num_classes - 1, size=(h, w))  # class 4 never in GT
        t[rng.random((h, w)) < 0.2] = ignore
        p = rng.integers(0, num_classes, size=(h, w))
        preds.append(p)
        targets.append(t)
        cm.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    miou, acc = brute_force(preds, targets, num_classes, ignore)
    res = cm.compute()
    assert res.miou == pytest.approx(miou)
    assert res.pixel_acc == pytest.approx(acc)
    assert res.num_pixels == sum(int((t != ignore).sum()) for t in targets)


def test_absent_classes_and_logits():
    cm = ConfusionMatrix(4)
    target = torch.tensor([[[0, 0, 1, 255]]])
    logits = torch.zeros(1, 4, 1, 4)
    logits[0, 0, 0, :2] = 1  # predicts 0, 0
    logits[0, 2, 0, 2:] = 1  # predicts 2 where GT is 1 and at the ignored pixel
    cm.update(logits, target)
    res = cm.compute()
    assert res.iou[0] == pytest.approx(100.0)
    assert res.iou[1] == pytest.approx(0.0)  # in GT, never predicted
    assert res.iou[2] == pytest.approx(0.0)  # predicted, never in GT: counts as 0
    assert np.isnan(res.iou[3])  # absent from both: left out of the mean
    assert res.miou == pytest.approx(100 / 3)
    assert res.pixel_acc == pytest.approx(100 * 2 / 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match='shape'):
        ConfusionMatrix(3).update(torch.zeros(2, 3), torch.zeros(3, 2))
