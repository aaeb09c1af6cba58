"""The task contract (segsr.tasks): targets, losses, meters, intervals and pictures of each task."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segsr  # noqa: F401
from segsr.losses.cls_loss import ClassCrossEntropyLoss
from segsr.losses.det_loss import DetectionLoss
from segsr.losses.seg_loss import SegCrossEntropyLoss
from segsr.metrics import ConfusionMatrix
from segsr.tasks import get_task, task_names, task_of_dataset_opt, task_of_network
from segsr.tasks.detection import draw_boxes, unpad_targets
from segsr.utils.visual import default_palette


class TinyClassifier(nn.Module):
    """A classifier with the task-net contract (BatchNorm so that frozen use can be checked)."""

    task = 'cls'
    feature_names = ('body', )

    def __init__(self, num_classes=4):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x, feature_names=None):
        feat = self.body(x)
        out = {'out': self.head(feat.mean((2, 3)))}
        if feature_names is not None:
            out['features'] = {'body': feat}
        return out


def test_registry_and_lookup():
    assert task_names() == ['cls', 'det', 'seg']
    assert task_of_network(TinyClassifier()).name == 'cls'
    assert task_of_network(nn.Conv2d(3, 3, 1)).name == 'seg'  # networks without a task attribute segment
    assert task_of_dataset_opt({'type': 'PairedImageDetDataset'}).name == 'det'
    assert task_of_dataset_opt({'type': 'PairedImageDataset'}) is None
    with pytest.raises(ValueError, match="'task' = 'pose' is not a task"):
        get_task('pose')


def test_targets_from_batches():
    seg = get_task('seg').targets({'seg': torch.zeros(2, 4, 4, dtype=torch.long)}, torch.device('cpu'))
    assert seg.shape == (2, 4, 4)
    assert get_task('cls').targets({'label': torch.tensor([3, 1])}, torch.device('cpu')).tolist() == [3, 1]
    boxes = torch.zeros(2, 5, 4)
    boxes[0, :2] = torch.tensor([[1., 2., 5., 6.], [0., 0., 3., 3.]])
    labels = torch.full((2, 5), -1, dtype=torch.long)
    labels[0, :2] = torch.tensor([2, 0])
    det = unpad_targets({'boxes': boxes, 'labels': labels, 'num_boxes': torch.tensor([2, 0])}, torch.device('cpu'))
    assert det[0]['boxes'].tolist() == [[1., 2., 5., 6.], [0., 0., 3., 3.]] and det[0]['labels'].tolist() == [2, 0]
    assert det[1]['boxes'].shape == (0, 4) and det[1]['labels'].dtype == torch.int64
    for name in task_names():
        assert get_task(name).targets({}, torch.device('cpu')) is None


def test_random_targets_have_the_dataset_layout():
    """What the step timing feeds a model: each task's keys, in range, boxes inside the image with positive size."""
    generator = torch.Generator().manual_seed(0)
    for name in task_names():
        task = get_task(name)
        data = task.random_targets(3, 40, 60, 5, generator)
        assert set(data) == set(task.target_keys) and task.has_targets(data)
        targets = task.targets(data, torch.device('cpu'))
        if name == 'det':
            assert len(targets) == 3
            for t in targets:
                boxes = t['boxes']
                assert len(boxes) == 4 and (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all()
                assert (boxes[:, [0, 2]] <= 60).all() and (boxes[:, [1, 3]] <= 40).all()
                assert t['labels'].min() >= 0 and t['labels'].max() < 5
        else:
            assert targets.shape == ((3, 40, 60) if name == 'seg' else (3, ))
            assert targets.min() >= 0 and targets.max() < 5


def test_logits_view_losses_match_per_view_criteria():
    torch.manual_seed(0)
    net, task = TinyClassifier(), get_task('cls')
    views = [('sr', torch.rand(2, 3, 8, 8)), ('hr', torch.rand(2, 3, 8, 8))]
    labels = torch.tensor([1, 3])
    criteria = {'sr': ClassCrossEntropyLoss(loss_weight=0.5), 'hr': ClassCrossEntropyLoss(loss_weight=2.0)}
    losses = task.view_losses(net, views, labels, criteria)
    logits = net(torch.cat([img for _, img in views]))['out']  # one forward: BatchNorm over the union of views
    assert torch.allclose(losses['sr'], 0.5 * F.cross_entropy(logits[:2], labels))
    assert torch.allclose(losses['hr'], 2.0 * F.cross_entropy(logits[2:], labels))


def test_frozen_loss_reaches_the_image_only_and_keeps_statistics():
    torch.manual_seed(0)
    net = TinyClassifier()
    net.train()
    for p in net.parameters():
        p.requires_grad_(False)
    stats = net.body[1].running_mean.clone()
    image = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = get_task('cls').frozen_loss(net, image, torch.tensor([0, 1]), ClassCrossEntropyLoss())
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert torch.equal(net.body[1].running_mean, stats) and net.training  # eval inside, mode restored


def test_loss_type_check_names_the_option():
    with pytest.raises(ValueError, match=r"'train.task_sr_opt.type' = 'SegCrossEntropyLoss' is not a det task loss"):
        get_task('det').check_loss(SegCrossEntropyLoss(), 'train.task_sr_opt')
    get_task('seg').check_loss(SegCrossEntropyLoss(), 'train.seg_opt')


def test_detection_loss_weighs_terms_and_names_unknown_ones():
    terms = {'loss_classifier': torch.tensor(1.0), 'loss_box_reg': torch.tensor(2.0)}
    assert float(DetectionLoss(loss_weight=0.5)(terms)) == pytest.approx(1.5)
    assert float(DetectionLoss(term_weights={'loss_box_reg': 0.25})(terms)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match=r"\['loss_mask'\], which the detector does not compute"):
        DetectionLoss(term_weights={'loss_mask': 1.0})(terms)


def test_class_cross_entropy_matches_torch_and_checks_shapes():
    logits, labels = torch.randn(4, 5), torch.tensor([0, 4, 2, 2])
    assert torch.allclose(ClassCrossEntropyLoss(loss_weight=3.0)(logits, labels), 3 * F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match='expected B x C logits and B labels'):
        ClassCrossEntropyLoss()(logits, labels[:3])


def test_seg_meter_equals_the_confusion_matrix():
    torch.manual_seed(0)
    meter, matrix = get_task('seg').meter(3), ConfusionMatrix(3)
    for _ in range(3):
        logits, seg = torch.randn(1, 3, 6, 6), torch.randint(0, 3, (1, 6, 6))
        pred = meter.add(logits, seg)
        matrix.update(logits.argmax(1), seg)
        assert pred.shape == (6, 6)
    res = matrix.compute()
    summary = meter.summary()
    assert summary['miou'] == pytest.approx(res.miou) and summary['macc'] == pytest.approx(res.mean_acc)
    assert len(meter.image_stats()) == 3


def test_cls_meter_top_k_and_interval_by_hand():
    task = get_task('cls')
    meter_a, meter_b = task.meter(3, class_names=['a', 'b', 'c']), task.meter(3)
    truth = [0, 1, 2, 0]
    logits_a = [[3., 1., 0.], [0., 2., 1.], [1., 2., 0.], [0., 1., 2.]]  # right, right, wrong (rank 2), wrong
    logits_b = [[0., 1., 2.], [0., 2., 1.], [0., 1., 2.], [3., 1., 0.]]  # wrong, right, right, right
    for la, lb, t in zip(logits_a, logits_b, truth):
        pred = meter_a.add(torch.tensor([la]), torch.tensor([t]))
        meter_b.add(torch.tensor([lb]), torch.tensor([t]))
    assert pred['label'] == 2 and pred['top'][0][0] == 2
    summary = meter_a.summary()
    assert summary['top1'] == pytest.approx(50.0) and summary['acc_a'] == pytest.approx(50.0)
    interval = task.interval(meter_a.image_stats(), meter_b.image_stats(), samples=200)
    assert interval.diff == pytest.approx(50.0 - 75.0) and interval.low <= interval.diff <= interval.high
    assert task.to_json(pred, ['a', 'b', 'c'])['class'] == 'c'


def test_det_meter_map_and_interval():
    task = get_task('det')
    good, bad = task.meter(2, class_names=['cell', 'dot']), task.meter(2)
    gt = [{'boxes': torch.tensor([[0., 0., 10., 10.]]), 'labels': torch.tensor([1])}]
    right = [{'boxes': torch.tensor([[0., 0., 10., 10.]]), 'scores': torch.tensor([0.9]), 'labels': torch.tensor([1])}]
    wrong = [{'boxes': torch.tensor([[20., 20., 30., 30.]]), 'scores': torch.tensor([0.9]),
              'labels': torch.tensor([1])}]
    for _ in range(4):
        pred = good.add(right, gt)
        bad.add(wrong, gt)
    assert good.summary()['map_50'] == pytest.approx(100.0) and bad.summary()['map_50'] == pytest.approx(0.0)
    assert set(pred) == {'boxes', 'scores', 'labels'} and isinstance(pred['boxes'], np.ndarray)
    interval = task.interval(good.image_stats(), bad.image_stats(), samples=5)
    assert interval.diff == pytest.approx(100.0) and interval.block == 1
    assert task.to_json(pred, ['cell', 'dot']) == [{'box': [0.0, 0.0, 10.0, 10.0], 'score': pytest.approx(0.9),
                                                    'class': 'dot'}]


def test_pictures_of_each_task():
    image = torch.zeros(1, 3, 24, 32)
    det = get_task('det')
    pred = {'boxes': np.array([[2., 3., 12., 15.]]), 'scores': np.array([0.9]), 'labels': np.array([1])}
    targets = [{'boxes': torch.tensor([[2., 3., 12., 15.]]), 'labels': torch.tensor([0])}]
    panel = det.picture(image, pred, targets, 2, class_names=['a', 'b'])
    assert panel.shape[1] == 2 * 32 + 4 and panel.dtype == np.uint8
    drawn = draw_boxes(np.zeros((24, 32, 3), np.uint8), pred['boxes'], pred['labels'], ['a', 'b'])
    assert tuple(drawn[10, 2]) == tuple(default_palette(2)[1])  # the left edge of the box in class 1's colour
    cls = get_task('cls').picture(image, {'label': 1, 'prob': 0.8, 'top': [(1, 0.8)]}, torch.tensor([1]), 2)
    assert cls.shape[1] == 32
    seg = get_task('seg').picture(image, np.zeros((24, 32), np.int64), torch.zeros(1, 24, 32, dtype=torch.long), 2)
    assert seg.shape[1] == 3 * 32 + 2 * 4
    for name in task_names():
        assert get_task(name).picture_suffix() == f'_{name}'
