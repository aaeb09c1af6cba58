"""Detection (COCO mAP through torchmetrics), classification (top-k) scores and the paired image bootstrap.

The mAP values are checked against COCO's rule worked out by hand below, not against torchmetrics: a detection is a
true positive at IoU threshold t when it overlaps a not yet matched ground-truth box of its class with IoU >= t
(higher scores match first); AP is the mean over the 101 recall points r = 0, 0.01, ..., 1 of the best precision at
any rank whose recall reaches r (0 where none does); mAP@[.5:.95] averages t = 0.50, 0.55, ..., 0.95 and classes.
"""
import math

import numpy as np
import pytest

from segsr.metrics import ClassificationScores, DetectionScores, paired_image_bootstrap

# ------------------------------------------------------------------------------------------------ detection
# Two classes (cat 0, dog 1), three images:
#   image 0: GT cat A [0,0,10,10], GT dog B [20,20,40,40]
#            cat [0,0,10,10] 0.9 (IoU 1 with A), cat [0,0,10,9] 0.8 (IoU 0.9 with A: a duplicate, so a false positive),
#            dog [20,20,40,34.4] 0.7 (IoU 288/400 = 0.72 with B: true positive for t <= 0.70)
#   image 1: GT cat C [0,0,20,20], GT dog D [30,0,50,20] (missed: no prediction overlaps it)
#            cat [0,0,20,18.4] 0.6 (IoU 368/400 = 0.92 with C: true positive for t <= 0.90),
#            dog [50,50,60,60] 0.95 (overlaps nothing: false positive)
#   image 2: no GT; cat [5,5,15,15] 0.65 (a false positive: COCO counts detections on images without GT)
IMAGES = [
    dict(pred_boxes=[[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 40, 34.4]], pred_scores=[0.9, 0.8, 0.7],
         pred_labels=[0, 0, 1], gt_boxes=[[0, 0, 10, 10], [20, 20, 40, 40]], gt_labels=[0, 1]),
    dict(pred_boxes=[[0, 0, 20, 18.4], [50, 50, 60, 60]], pred_scores=[0.6, 0.95], pred_labels=[0, 1],
         gt_boxes=[[0, 0, 20, 20], [30, 0, 50, 20]], gt_labels=[0, 1]),
    dict(pred_boxes=[[5, 5, 15, 15]], pred_scores=[0.65], pred_labels=[0], gt_boxes=np.zeros((0, 4)),
         gt_labels=[]),
]
R = 101  # recall points
# cat, t <= 0.90, all images: by score TP (.9), FP (.8), FP (.65), TP (.6); 2 GT: recall .5 .5 .5 1,
#   precision 1 .5 .33 .5 -> r in [0, .5] (51 points): 1; r in (.5, 1] (50 points): .5
CAT_LOW = (51 * 1 + 50 * 0.5) / R
CAT_95 = 51 * 1 / R  # t = 0.95: image 1's cat (IoU 0.92) misses too: TP, FP, FP, FP -> recall reaches .5 only
# dog, t <= 0.70: FP (.95), TP (.7); 2 GT: recall 0 .5, precision 0 .5 -> r in [0, .5]: .5; above: 0
DOG_LOW = 51 * 0.5 / R
CAT = (9 * CAT_LOW + CAT_95) / 10  # 9 thresholds .50 .. .90, then .95
DOG = (5 * DOG_LOW + 5 * 0.0) / 10  # .50 .. .70 true positive, .75 .. .95 false positive


def _detections(images=IMAGES):
    det = DetectionScores(2, class_names=['cat', 'dog'])
    for image in images:
        det.add(**image)
    return det


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key]), key


def test_map_matches_hand_computation():
    res = _detections().summary()
    assert res['map_50'] == pytest.approx(100 * (CAT_LOW + DOG_LOW) / 2)
    assert res['map_75'] == pytest.approx(100 * (CAT_LOW + 0.0) / 2)
    assert res['map'] == pytest.approx(100 * (CAT + DOG) / 2)
    assert res['ap50_cat'] == pytest.approx(100 * CAT_LOW)
    assert res['ap50_dog'] == pytest.approx(100 * DOG_LOW)
    assert res['ap_cat'] == pytest.approx(100 * CAT)
    assert res['ap_dog'] == pytest.approx(100 * DOG)
    assert res['num_images'] == 3


def test_images_without_ground_truth_follow_coco():
    # without image 2 its false positive (.65) is gone: TP (.9), FP (.8), TP (.6) -> precision 2/3 at recall 1
    res = _detections().summary([0, 1])
    assert res['ap50_cat'] == pytest.approx(100 * (51 + 50 * 2 / 3) / R)
    # an image with neither GT nor prediction changes nothing
    det = _detections(IMAGES + [dict(pred_boxes=[], pred_scores=[], pred_labels=[], gt_boxes=[], gt_labels=[])])
    _same({k: v for k, v in det.summary().items() if k != 'num_images'},
          {k: v for k, v in _detections().summary().items() if k != 'num_images'})
    # no GT of any class: every AP is undefined (NaN), not 0
    only_fp = _detections().summary([2])
    assert all(math.isnan(only_fp[k]) for k in ('map', 'map_50', 'ap50_cat', 'ap50_dog'))


@pytest.mark.parametrize('indices', [[0, 2], [2, 0, 0, 1]])
def test_summary_of_a_subset_is_that_of_a_fresh_set(indices):
    _same(_detections().summary(indices), _detections([IMAGES[i] for i in indices]).summary())


def test_summary_without_per_class_keys():
    full, fast = _detections().summary(), _detections().summary(per_class=False)
    assert set(fast) == {'map', 'map_50', 'map_75', 'num_images'}
    _same(fast, {k: full[k] for k in fast})


def _random_detections(seed, num_images=40, num_classes=3):
    """Images with 0-4 ground-truth boxes and 0-5 detections, most of them near a ground-truth box of its class."""
    rng = np.random.default_rng(seed)
    det = DetectionScores(num_classes)
    for _ in range(num_images):
        m, n = rng.integers(0, 5), rng.integers(0, 6)
        gt = rng.uniform(0, 50, (m, 2))
        gt = np.concatenate([gt, gt + rng.uniform(5, 30, (m, 2))], 1)
        gt_labels = rng.integers(0, num_classes, m)
        pred = rng.uniform(0, 50, (n, 2))
        pred = np.concatenate([pred, pred + rng.uniform(5, 30, (n, 2))], 1)
        labels = rng.integers(0, num_classes, n)
        k = min(m, n)
        pred[:k] = gt[:k] + rng.normal(0, 1, (k, 4))
        pred[:k, 2:] = np.maximum(pred[:k, 2:], pred[:k, :2] + 1)
        labels[:k] = gt_labels[:k]
        det.add(pred, rng.uniform(0, 1, n), labels, gt, gt_labels)
    return det


def test_fast_map_50_is_coco_on_bootstrap_draws():
    # draws with repeated images: recall counts double, so recalls land on COCO's recall points (k / 100) often; the
    # summary runs torchmetrics with COCO's own float64 points, so both agree on every draw (to torchmetrics' float32
    # result; with torchmetrics' default float32 points they differ by up to 0.2 AP here)
    det = _random_detections(0)
    draws = np.sort(np.random.default_rng(1).integers(0, len(det), (12, len(det))), axis=1)
    for idx in list(draws) + [np.arange(len(det)), [3], [5, 5, 5]]:
        slow = det.summary(idx, per_class=False)['map_50']
        assert (math.isnan(slow) and math.isnan(det.map_50(idx))) or det.map_50(idx) == pytest.approx(slow, abs=1e-4)
    assert det.map_50() == pytest.approx(det.summary(per_class=False)['map_50'], abs=1e-4)
    assert _detections().map_50() == pytest.approx(100 * (CAT_LOW + DOG_LOW) / 2)
    assert math.isnan(_detections().map_50([2])) and math.isnan(_detections().map_50([]))
    with pytest.raises(ValueError, match='indices'):
        det.map_50([len(det)])


def test_fast_map_50_follows_added_images():
    det = _detections()
    before = det.map_50()
    det.add([[0, 0, 10, 10]], [0.99], [1], [[0, 0, 10, 10]], [1])  # a confident true dog: dog AP rises
    assert det.map_50() > before and det.map_50() == pytest.approx(det.summary(per_class=False)['map_50'])
    det.reset()
    assert len(det) == 0 and math.isnan(det.map_50())


def test_detection_inputs_are_checked():
    det = DetectionScores(2)
    good = dict(IMAGES[0])
    det.add(**{k: np.asarray(v) for k, v in good.items()})  # arrays as well as lists / tensors
    cases = [
        ('pred_boxes', dict(pred_boxes=[[0, 0, 10], [0, 0, 10], [0, 0, 1]]), r'\(N, 4\)'),
        ('pred_boxes', dict(pred_boxes=[[10, 0, 0, 10], [0, 0, 10, 9], [0, 0, 1, 1]]), 'x2 < x1'),
        ('gt_boxes', dict(gt_boxes=[[0, 0, 10, 10], [20, 40, 40, 20]]), 'x2 < x1 or y2 < y1'),
        ('pred_scores', dict(pred_scores=[0.9, 0.8]), r'shape \(3,\)'),
        ('pred_scores', dict(pred_scores=[0.9, float('nan'), 0.1]), 'NaN'),
        ('pred_labels', dict(pred_labels=[0, 2, 1]), 'out of range'),
        ('pred_labels', dict(pred_labels=[0, 0.5, 1]), 'integer'),
        ('gt_labels', dict(gt_labels=[0, -1]), 'out of range'),
        ('gt_labels', dict(gt_labels=[0]), r'shape \(2,\)'),
    ]
    for name, change, message in cases:
        with pytest.raises(ValueError, match=f'{name}: .*{message}'):
            det.add(**{**good, **change})
    assert len(det) == 1  # nothing half-added
    with pytest.raises(ValueError, match='indices'):
        det.summary([0, 1])
    with pytest.raises(ValueError, match='class_names'):
        DetectionScores(2, class_names=['cat'])
    with pytest.raises(ValueError, match='num_classes'):
        DetectionScores(0)


# ------------------------------------------------------------------------------------------- classification
# six classes; the true class's rank = other classes scoring at least as high (a tie counts against it)
LOGITS = np.array([
    [0.1, 0.2, 0.9, 0.3, 0.0, 0.5],  # target 2: highest -> rank 0
    [0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # target 0: lowest -> rank 5 (not even top-5)
    [0.5, 0.6, 0.1, 0.4, 0.2, 0.3],  # target 3: two higher -> rank 2
    [0.7, 0.7, 0.1, 0.0, 0.0, 0.0],  # target 1: tied with class 0 -> rank 1
    [0.05, 0.6, 0.1, 0.1, 0.1, 0.05],  # target 1 (probabilities): rank 0
])
TARGETS = [2, 0, 3, 1, 1]


def _classification():
    cls = ClassificationScores(6, topk=(1, 5))
    cls.add(LOGITS[:3], TARGETS[:3])  # a batch
    for logits, target in zip(LOGITS[3:], TARGETS[3:]):
        cls.add(logits, target)  # single images, scalar targets
    return cls


def test_topk_matches_hand_counts():
    cls = _classification()
    assert cls.correct_at(1).tolist() == [True, False, False, False, True]
    assert cls.correct_at(5).tolist() == [True, False, True, True, True]
    res = cls.summary()
    assert res['top1'] == pytest.approx(100 * 2 / 5) and res['top5'] == pytest.approx(100 * 4 / 5)
    assert res['acc_0'] == 0.0 and res['acc_1'] == 50.0 and res['acc_2'] == 100.0 and res['acc_3'] == 0.0
    assert math.isnan(res['acc_4']) and math.isnan(res['acc_5'])  # no image of the class
    sub = cls.summary([0, 0, 1])  # repeats count again
    assert sub['top1'] == pytest.approx(100 * 2 / 3) and sub['num_images'] == 3


def test_classification_inputs_are_checked():
    cls = ClassificationScores(6)
    with pytest.raises(ValueError, match=r'logits_or_probs: expected shape \(6,\)'):
        cls.add(np.zeros((2, 5)), [0, 1])
    with pytest.raises(ValueError, match='logits_or_probs: contains NaN'):
        cls.add([float('nan')] * 6, 0)
    with pytest.raises(ValueError, match='target: .*out of range'):
        cls.add(np.zeros((2, 6)), [0, 6])
    with pytest.raises(ValueError, match='target: expected 2 class indices'):
        cls.add(np.zeros((2, 6)), [0])
    with pytest.raises(ValueError, match='topk'):
        ClassificationScores(3, topk=(1, 5))
    with pytest.raises(ValueError, match='k: '):
        cls.correct_at(7)
    with pytest.raises(ValueError, match='indices'):
        cls.summary([0])


# ----------------------------------------------------------------------------------------- paired bootstrap
def test_bootstrap_of_a_method_against_itself_is_zero():
    a, b = _detections(), _detections()  # two objects: equal only if both see the same draw
    ci = paired_image_bootstrap(lambda idx: a.summary(idx, per_class=False)['map_50'],
                                lambda idx: b.summary(idx, per_class=False)['map_50'], num_images=3, samples=30)
    assert (ci.diff, ci.low, ci.high, ci.block, ci.num_blocks) == (0.0, 0.0, 0.0, 1, 3)


def test_bootstrap_draws_are_paired_and_seeded():
    seen = {'a': [], 'b': []}

    def score(name):
        return lambda idx: seen[name].append(tuple(idx)) or float(np.sum(idx))

    first = paired_image_bootstrap(score('a'), score('b'), num_images=7, samples=20, seed=4)
    assert seen['a'] == seen['b'] and len(seen['a']) == 21  # 20 replicates + the whole set
    assert seen['a'][-1] == tuple(range(7))
    again = paired_image_bootstrap(score('a'), score('b'), num_images=7, samples=20, seed=4)
    assert again == first and seen['a'][:20] == seen['a'][21:41]  # deterministic for a seed
    paired_image_bootstrap(score('a'), score('b'), num_images=7, samples=20, seed=5)
    assert seen['a'][42:62] != seen['a'][:20]


def test_bootstrap_finds_a_clearly_better_method():
    # classification: A is right on every image, B on the first half
    n = 60
    cls_a, cls_b = ClassificationScores(3, topk=(1,)), ClassificationScores(3, topk=(1,))
    targets = np.arange(n) % 3
    cls_a.add(np.eye(3)[targets], targets)
    cls_b.add(np.eye(3)[np.where(np.arange(n) < n // 2, targets, (targets + 1) % 3)], targets)
    ci = paired_image_bootstrap(lambda i: cls_a.summary(i)['top1'], lambda i: cls_b.summary(i)['top1'], n,
                                samples=500)
    assert ci.diff == pytest.approx(50.0) and 0 < ci.low < ci.diff < ci.high

    # detection: A finds each image's box, B finds it on every other image (elsewhere a box beside it)
    box = [[10, 10, 30, 30]]
    det_a, det_b = DetectionScores(1), DetectionScores(1)
    for i in range(12):
        det_a.add(box, [0.9], [0], box, [0])
        det_b.add(box if i % 2 else [[40, 40, 60, 60]], [0.9], [0], box, [0])
    ci = paired_image_bootstrap(lambda i: det_a.summary(i, per_class=False)['map_50'],
                                lambda i: det_b.summary(i, per_class=False)['map_50'], 12, samples=40)
    assert ci.diff > 0 and ci.low > 0


def test_bootstrap_errors():
    with pytest.raises(ValueError, match='score_b'):
        paired_image_bootstrap(lambda idx: 0.0, 1.0, num_images=3)
    with pytest.raises(ValueError, match='samples >= 1'):
        paired_image_bootstrap(lambda idx: 0.0, lambda idx: 0.0, num_images=3, samples=0)
    with pytest.raises(ValueError, match='need images'):
        paired_image_bootstrap(lambda idx: 0.0, lambda idx: 0.0, num_images=0)


# Speed, measured once for paired_image_bootstrap's docstring (not a test: timings are not stable on shared CPUs):
# 87 images (BCCD's val size) x 20 predicted boxes (10 matching the 10 GT boxes, 10 random), 2 classes, torch on one
# thread, 2 shared CPU cores: DetectionScores.summary(idx, per_class=False) 0.35 s per mAP, per_class=True 0.69 s
# (nearly all of it pycocotools' COCOeval.evaluateImg); DetectionScores.map_50 35 ms for the first call of both
# methods, then 1.2 ms per paired replicate. ClassificationScores: 0.4 ms per replicate for 1000 images.
