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


# ------------------------------------------------------------------------------------ paired block bootstrap
def _random_image_matrices(n, c, seed, skip_class=None):
    rng = np.random.default_rng(seed)
    mats = rng.integers(0, 50, size=(n, c, c))
    if skip_class is not None:  # a class absent from GT and predictions: undefined IoU, left out of the mean
        mats[:, skip_class, :] = 0
        mats[:, :, skip_class] = 0
    return mats


def test_miou_of_matches_confusion_matrix():
    from segsr.metrics import miou_of

    for seed, skip in ((0, None), (1, 2)):
        mats = _random_image_matrices(5, 4, seed, skip)
        cm = ConfusionMatrix(4)
        cm.mat = torch.as_tensor(mats.sum(0))
        assert float(miou_of(mats.sum(0))) == pytest.approx(cm.compute().miou)
        assert miou_of(mats).shape == (5,)


def test_paired_bootstrap_against_itself_is_zero():
    from segsr.metrics import paired_block_bootstrap

    mats = _random_image_matrices(23, 5, 0)
    ci = paired_block_bootstrap(mats, mats.copy(), block=10, samples=300)
    assert (ci.diff, ci.low, ci.high, ci.num_blocks) == (0.0, 0.0, 0.0, 3)


def test_paired_bootstrap_hand_enumerated():
    """Two images, blocks of 1: the replicates are {a,a}, {a,b}, {b,b} (probabilities 1/4, 1/2, 1/4), so the
    interval's ends are differences of those sums, and the point difference is that of the whole set."""
    from segsr.metrics import miou_of, paired_block_bootstrap

    ref = np.array([[[8, 2], [2, 8]], [[5, 5], [0, 10]]])
    better = np.array([[[10, 0], [1, 9]], [[9, 1], [1, 9]]])
    ci = paired_block_bootstrap(better, ref, block=1, samples=4000, seed=3)
    possible = {round(float(miou_of(better[list(i)].sum(0)) - miou_of(ref[list(i)].sum(0))), 9)
                for i in ((0, 0), (0, 1), (1, 1))}
    assert ci.diff == pytest.approx(float(miou_of(better.sum(0)) - miou_of(ref.sum(0))))
    assert round(ci.low, 9) in possible and round(ci.high, 9) in possible
    assert ci.low == pytest.approx(min(possible)) and ci.high == pytest.approx(max(possible))  # 2.5% < 1/4
    # one block holding every image: every replicate is the whole set
    whole = paired_block_bootstrap(better, ref, block=2)
    assert whole.low == pytest.approx(whole.diff) and whole.high == pytest.approx(whole.diff)


def test_paired_bootstrap_resamples_blocks_of_consecutive_images():
    """Images that differ only inside one block: the interval reflects how many blocks there are, not images."""
    from segsr.metrics import paired_block_bootstrap

    ref = _random_image_matrices(40, 3, 1)
    method = ref.copy()
    method[:10, 0, 0] += 400  # better on the first block only (10 consecutive images)
    wide = paired_block_bootstrap(method, ref, block=10, samples=2000)
    narrow = paired_block_bootstrap(method, ref, block=1, samples=2000)
    assert wide.diff == narrow.diff > 0 and wide.num_blocks == 4 and narrow.num_blocks == 40
    assert wide.low == pytest.approx(0.0, abs=1e-9)  # a quarter of the replicates miss the block: (3/4)^4 > 2.5%
    assert narrow.low > 0 and (wide.high - wide.low) > (narrow.high - narrow.low)


def test_paired_bootstrap_errors():
    from segsr.metrics import paired_block_bootstrap

    mats = _random_image_matrices(4, 3, 0)
    with pytest.raises(ValueError, match='not the same images'):
        paired_block_bootstrap(mats, mats[:3])
    with pytest.raises(ValueError, match='block >= 1'):
        paired_block_bootstrap(mats, mats, block=0)
    with pytest.raises(ValueError, match=r'\(N, C, C\)'):
        paired_block_bootstrap(mats[:, 0], mats[:, 0])


def test_grid_share_finds_a_pattern_repeated_every_lr_pixel():
    """An error repeated every `scale` pixels has nearly all its energy at the LR grid's harmonics; an error without
    structure about the mask's share of the bins; equal images 0; the metric is reachable through BasicSR's registry."""
    from basicsr.metrics import calculate_metric

    from segsr.metrics import calculate_grid_share, lr_grid_mask

    rng = np.random.default_rng(0)
    hr = rng.uniform(40, 200, (96, 128, 3))
    tile = rng.normal(0, 8, (4, 4, 1))
    gridded = hr + np.tile(tile, (24, 32, 3))
    noisy = hr + rng.normal(0, 8, hr.shape)
    assert calculate_grid_share(gridded, hr, crop_border=0, scale=4) > 99
    mask_share = 100 * lr_grid_mask(96, 128, 4).mean()
    assert 0.3 * mask_share < calculate_grid_share(noisy, hr, crop_border=0, scale=4) < 3 * mask_share
    assert calculate_grid_share(hr, hr, crop_border=4) == 0.0
    opt = dict(type='calculate_grid_share', crop_border=4, scale=4)
    assert calculate_metric(dict(img=gridded, img2=hr), opt) == calculate_grid_share(gridded, hr, 4, scale=4)
    with pytest.raises(ValueError, match='shapes differ'):
        calculate_grid_share(hr, hr[:64], crop_border=0)
