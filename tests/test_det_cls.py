"""Detection and classification (issue 21): datasets, torchvision task networks, SR4IR / frozen-task models, the
judge's training, evaluation and inference, on tiny self-made data."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from torch.utils.data import DataLoader

import segsr  # noqa: F401
from conftest import run_entry, write_yaml
from helpers.models import first_batch, runtime_opt, val_loader
from helpers.task_data import (CLS_CLASSES, DET_CLASSES, TINY_CLS, TINY_DET, cls_dataset_opt, det_dataset_opt,
                               task_sr4ir_opt, voc_xml, write_cls_data, write_det_data)
from segsr.archs.torchvision_cls_arch import TorchvisionClsNet
from segsr.archs.torchvision_det_arch import TorchvisionDetNet
from segsr.data.lmdb_util import make_lmdb
from segsr.data.seg_transforms import downsample

COLOURS = {'square': (40, 230, 230), 'bar': (120, 20, 20)}  # RGB of the painted objects (write_det_data, BGR there)


@pytest.fixture(scope='module')
def det_root(tmp_path_factory):
    return write_det_data(str(tmp_path_factory.mktemp('det') / 'voc'))


@pytest.fixture(scope='module')
def cls_root(tmp_path_factory):
    return write_cls_data(str(tmp_path_factory.mktemp('cls') / 'folder'))


def build(opt, phase='train'):
    return build_dataset(dict(opt, phase=phase))


def coco_file(det_root, path):
    """The VOC annotations of ``det_root`` as one COCO JSON file."""
    from segsr.data.det_annotations import read_voc

    images, annotations = [], []
    for i, name in enumerate(sorted(os.listdir(os.path.join(det_root, 'Annotations')))):
        record, _ = read_voc(os.path.join(det_root, 'Annotations', name), DET_CLASSES)
        images.append({'id': i, 'file_name': record.image, 'width': record.width, 'height': record.height})
        for box, label in zip(record.boxes, record.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({'id': len(annotations), 'image_id': i, 'category_id': int(label) + 1,
                                'bbox': [x1, y1, x2 - x1, y2 - y1], 'iscrowd': 0})
    categories = [{'id': k + 1, 'name': n} for k, n in enumerate(DET_CLASSES)]
    with open(path, 'w') as f:
        json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)
    return str(path)


# -------------------------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize('source', ['voc', 'coco'])
def test_boxes_stay_on_their_pixels_through_crops_and_flips(det_root, tmp_path, source):
    opt = det_dataset_opt(det_root, 'train')
    opt.update(use_rot=True, gt_size=32)
    if source == 'coco':
        opt.pop('dataroot_ann')
        opt['ann_file'] = coco_file(det_root, tmp_path / 'coco.json')
    dataset = build(opt)
    seen = 0
    for _ in range(12):
        for i in range(len(dataset)):
            sample = dataset[i]
            gt = (sample['gt'].permute(1, 2, 0).numpy() * 255).round().astype(int)
            for box, label in zip(sample['boxes'][:int(sample['num_boxes'])], sample['labels']):
                x1, y1, x2, y2 = (int(v) for v in box.tolist())
                centre = gt[(y1 + y2) // 2, (x1 + x2) // 2]
                assert np.abs(centre - COLOURS[DET_CLASSES[int(label)]]).max() <= 1
                seen += 1
            assert sample['lq'].shape[-2:] == (8, 8) and (sample['labels'][int(sample['num_boxes']):] == -1).all()
    assert seen > 15


def test_validation_sample_lq_coco_equals_voc_and_batches(det_root, tmp_path):
    voc = build(det_dataset_opt(det_root, 'val'), 'val')
    coco_opt = dict(det_dataset_opt(det_root, 'val'), ann_file=coco_file(det_root, tmp_path / 'c.json'))
    coco_opt.pop('dataroot_ann')
    coco = build(coco_opt, 'val')
    a, b = voc[1], coco[1]
    assert torch.equal(a['boxes'], b['boxes']) and torch.equal(a['labels'], b['labels'])
    gt = a['gt'].permute(1, 2, 0).numpy()
    assert np.allclose(a['lq'].permute(1, 2, 0).numpy(), downsample(gt, 4, 'matlab'), atol=1e-6)
    assert voc.num_classes == 2 and voc.class_names == list(DET_CLASSES) and voc.task == 'det'
    batch = next(iter(DataLoader(voc, batch_size=2)))
    assert batch['boxes'].shape == (2, 8, 4) and batch['num_boxes'].shape == (2, )


def test_resize_scales_boxes_with_the_image(det_root):
    plain = build(det_dataset_opt(det_root, 'val'), 'val')
    short = min(plain[0]['gt'].shape[-2:])
    resized = build(dict(det_dataset_opt(det_root, 'val'), resize=2 * short), 'val')
    for i in range(len(plain)):
        a, b = plain[i], resized[i]
        assert b['gt'].shape[-2:] == tuple(2 * n for n in a['gt'].shape[-2:])
        assert b['lq'].shape[-2:] == tuple(n // 4 for n in b['gt'].shape[-2:])
        assert torch.allclose(b['boxes'], 2 * a['boxes']) and torch.equal(a['labels'], b['labels'])
        gt = (b['gt'].permute(1, 2, 0).numpy() * 255).round().astype(int)
        for box, label in zip(b['boxes'][:int(b['num_boxes'])], b['labels']):
            x1, y1, x2, y2 = (int(v) for v in box.tolist())
            assert np.abs(gt[(y1 + y2) // 2, (x1 + x2) // 2] - COLOURS[DET_CLASSES[int(label)]]).max() <= 2
    with pytest.raises(ValueError, match="option resize must be a positive integer"):
        build(dict(det_dataset_opt(det_root, 'val'), resize=0), 'val')


def test_det_lmdb_gives_the_disk_samples(det_root, tmp_path):
    lmdb_path = str(tmp_path / 'gt.lmdb')
    make_lmdb(os.path.join(det_root, 'JPEGImages'), lmdb_path)
    disk = build(det_dataset_opt(det_root, 'val'), 'val')
    from_lmdb = build(dict(det_dataset_opt(det_root, 'val'), dataroot_gt=lmdb_path, io_backend={'type': 'lmdb'}),
                      'val')
    for i in range(len(disk)):
        a, b = disk[i], from_lmdb[i]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['boxes'], b['boxes'])


def _one_image_det(root, objects, width=32, height=32, xml=None):
    os.makedirs(os.path.join(root, 'JPEGImages'), exist_ok=True)
    os.makedirs(os.path.join(root, 'Annotations'), exist_ok=True)
    cv2.imwrite(os.path.join(root, 'JPEGImages', 'a.png'), np.zeros((32, 32, 3), np.uint8))
    with open(os.path.join(root, 'Annotations', 'a.xml'), 'w') as f:
        f.write(xml if xml is not None else voc_xml('a.png', width, height, objects))
    return root


@pytest.mark.parametrize('objects, width, match', [
    ([('square', (0, 0, 40, 8))], 32, r"a\.xml.*bndbox/xmax"),  # a box outside the image
    ([('circle', (0, 0, 8, 8))], 32, r"a\.xml.*'circle'"),  # an unknown class name
    ([], 32, r"a\.xml.*has no box"),  # an empty annotation
    ([('square', (0, 0, 8, 8))], 48, r"a\.xml.*size .*\(32, 48\).*\(32, 32\)"),  # the annotation's size is not the image's
])
def test_bad_annotations_name_the_file_and_field(tmp_path, objects, width, match):
    root = _one_image_det(str(tmp_path / 'd'), objects, width=width)
    with pytest.raises(ValueError, match=match):
        build(det_dataset_opt(root, 'val'), 'val')


def test_missing_annotation_and_missing_options(tmp_path):
    root = _one_image_det(str(tmp_path / 'd'), [('square', (0, 0, 8, 8))])
    os.remove(os.path.join(root, 'Annotations', 'a.xml'))
    with pytest.raises(FileNotFoundError, match=r"a\.png' has no annotation: no file .*a\.xml"):
        build(det_dataset_opt(root, 'val'), 'val')
    opt = det_dataset_opt(root, 'val')
    opt.pop('class_names')
    with pytest.raises(ValueError, match='class_names'):
        build(opt, 'val')


def test_tiny_boxes_are_dropped_when_read(tmp_path):
    root = _one_image_det(str(tmp_path / 'd'), [('square', (0, 0, 8, 8)), ('bar', (20, 20, 21, 21))])
    sample = build(det_dataset_opt(root, 'val'), 'val')[0]
    assert int(sample['num_boxes']) == 1 and sample['labels'][0] == 0


def test_classification_folders_sizes_and_errors(cls_root, tmp_path):
    train, val = build(cls_dataset_opt(cls_root, 'train')), build(cls_dataset_opt(cls_root, 'val'), 'val')
    assert train.class_names == sorted(CLS_CLASSES) and train.task == 'cls' and len(train) == 9 and len(val) == 9
    sample = val[4]
    assert sample['gt'].shape == (3, 32, 32) and sample['lq'].shape == (3, 8, 8)
    assert val.class_names[int(sample['label'])] == os.path.basename(os.path.dirname(sample['gt_path']))
    resized = build(dict(cls_dataset_opt(cls_root, 'val'), resize=24, center_crop=None), 'val')[0]
    assert min(resized['gt'].shape[-2:]) == 24
    with pytest.raises(ValueError, match=r"listed classes without a folder .*val/cats'"):
        build(dict(cls_dataset_opt(cls_root, 'val'), class_names=list(CLS_CLASSES) + ['cats']), 'val')
    empty = tmp_path / 'f'
    write_cls_data(str(empty), per_class=1)
    os.makedirs(empty / 'val' / 'socks')
    with pytest.raises(ValueError, match=r"Class folder '.*socks' holds no image"):
        build(cls_dataset_opt(str(empty), 'val'), 'val')


# ------------------------------------------------------------------------------------------------- networks
def test_detector_losses_when_frozen_reach_the_image_and_keep_statistics():
    torch.manual_seed(0)
    net = TorchvisionDetNet(**{k: v for k, v in TINY_DET.items() if k != 'type'}).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    image = torch.rand(2, 3, 64, 96, requires_grad=True)
    targets = [{'boxes': torch.tensor([[8., 8., 40., 40.]]), 'labels': torch.tensor([1])},
               {'boxes': torch.zeros(0, 4), 'labels': torch.zeros(0, dtype=torch.long)}]
    losses = net(image, targets=targets)['losses']
    sum(losses.values()).backward()
    assert image.grad.abs().sum() > 0 and not net.training
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    out = net(image)['out']
    assert len(out) == 2 and all(set(o) == {'boxes', 'scores', 'labels'} for o in out)
    assert all(((o['labels'] >= 0) & (o['labels'] < 2)).all() for o in out)
    feats = net(image, feature_names=['fpn0', 'fpn1'])['features']
    assert set(feats) == {'fpn0', 'fpn1'} and feats['fpn0'].shape[1] == 256
    with pytest.raises(ValueError, match=r"unknown feature name\(s\) \['C5'\]"):
        net(image, feature_names=['C5'])
    with pytest.raises(ValueError, match="arch = 'yolo'"):
        TorchvisionDetNet('yolo', num_classes=2)


def test_detector_training_lowers_its_loss_and_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TorchvisionDetNet('fcos_resnet18_fpn', num_classes=2)
    image = torch.rand(1, 3, 64, 64)
    image[:, :, 16:40, 16:40] = 1.0
    targets = [{'boxes': torch.tensor([[16., 16., 40., 40.]]), 'labels': torch.tensor([1])}]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = sum(net(image, targets=targets)['losses'].values())
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    torch.save({'params': net.state_dict()}, tmp_path / 'det.pth')
    again = TorchvisionDetNet('fcos_resnet18_fpn', num_classes=2, pretrained=str(tmp_path / 'det.pth'))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    torch.save(net.model.state_dict(), tmp_path / 'torchvision.pth')  # torchvision's layout, another class count
    refit = TorchvisionDetNet('fcos_resnet18_fpn', num_classes=3, pretrained=str(tmp_path / 'torchvision.pth'))
    assert torch.equal(refit.model.backbone.body.conv1.weight, net.model.backbone.body.conv1.weight)


@pytest.mark.parametrize('arch, last', [('resnet18', 'layer4'), ('mobilenet_v3_small', 'stage4')])
def test_classifier_logits_features_training_and_weights(tmp_path, arch, last):
    torch.manual_seed(0)
    net = TorchvisionClsNet(arch, num_classes=3)
    image, labels = torch.rand(4, 3, 32, 48), torch.tensor([0, 1, 2, 1])
    out = net(image, feature_names=[last])
    assert out['out'].shape == (4, 3) and out['features'][last].shape[-1] == 2  # stride 32
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(image)['out'], labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    torch.save({'params': net.state_dict()}, tmp_path / 'cls.pth')
    again = TorchvisionClsNet(arch, num_classes=3, pretrained=str(tmp_path / 'cls.pth'))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


# --------------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize('task', ['det', 'cls'])
@pytest.mark.parametrize('frozen', [False, True])
def test_sr4ir_and_frozen_task_train_and_validate(det_root, cls_root, tmp_path, task, frozen):
    root = det_root if task == 'det' else cls_root
    feature = {'det': {'fpn0': 0.5, 'fpn1': 0.5}, 'cls': {'layer4': 1.0}}[task]
    opt = runtime_opt(task_sr4ir_opt(task, root, frozen=frozen,
                                     tdp_opt={'type': 'TDPLoss', 'layer_weights': feature}), tmp_path)
    torch.manual_seed(0)
    model = build_model(opt)
    assert model.task.name == task
    net = model.get_bare_model(model.net_task)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    model.feed_data(first_batch(opt))
    for it in (1, 2):
        model.optimize_parameters(it)
    log = model.get_current_log()
    expected = {'l_g_pix', 'l_tdp'} | ({'l_sr_ce'} if frozen else {'l_task_sr', 'l_task_hr', 'l_task_cqmix'})
    assert set(log) == expected and all(np.isfinite(v) for v in log.values())
    changed = any(not torch.equal(weights[k], v) for k, v in net.state_dict().items())
    assert changed != frozen  # the frozen task network never changes (BatchNorm statistics included)
    model.validation(val_loader(opt), 2, None, save_img=True)
    main = {'det': 'task_map_50', 'cls': 'task_top1'}[task]
    assert 0.0 <= model.metric_results[main] <= 100.0 and 'psnr' in model.metric_results
    pictures = [f for _, _, files in os.walk(opt['path']['visualization']) for f in files if f.endswith(f'_{task}.png')]
    assert pictures


def test_task_losses_and_views_are_checked_against_the_task(det_root, tmp_path):
    ce = {'type': 'SegCrossEntropyLoss', 'loss_weight': 0.34}
    opt = runtime_opt(task_sr4ir_opt('det', det_root, task_hr_opt=ce), tmp_path)
    with pytest.raises(ValueError, match=r"'train.task_hr_opt.type' = 'SegCrossEntropyLoss' is not a det task loss"):
        build_model(opt)
    views = runtime_opt(task_sr4ir_opt('det', det_root, frozen=True, sr_ce_views={'hflip': True}), tmp_path)
    with pytest.raises(ValueError, match="'train.sr_ce_views'.*'det'"):
        build_model(views)


@pytest.mark.parametrize('task', ['det', 'cls'])
def test_judge_training_evaluation_and_inference(det_root, cls_root, tmp_path, task):
    """SegTaskModel trains a detector / classifier on HR (the judge), evaluate.py scores bicubic and HR with it, and
    segsr-infer writes its picture and JSON next to the SR image."""
    root = det_root if task == 'det' else cls_root
    dataset_opt = det_dataset_opt if task == 'det' else cls_dataset_opt
    network = TINY_DET if task == 'det' else TINY_CLS
    loss = {'det': {'type': 'DetectionLoss'}, 'cls': {'type': 'ClassCrossEntropyLoss'}}[task]
    opt = {'name': f'judge_{task}', 'model_type': 'SegTaskModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'train': dataset_opt(root, 'train'), 'val': dataset_opt(root, 'val')},
           'network_task': dict(network), 'path': {},
           'train': {'optim_task': {'type': 'Adam', 'lr': 1e-4}, 'total_iter': 2, 'warmup_iter': -1, 'task_opt': loss},
           'val': {'val_freq': 2, 'save_img': True},
           'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False}}
    run_entry('train.py', write_yaml(tmp_path / 'judge.yml', opt), tmp_path)
    exp = tmp_path / 'experiments' / f'judge_{task}'
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert f'l_{task}' in log and ('# map_50:' if task == 'det' else '# top1:') in log
    judge = str(exp / 'models' / 'net_task_latest.pth')
    cfg = {'name': f'eval_{task}', 'scale': 4, 'num_gpu': 0, 'dataset': dataset_opt(root, 'val'),
           'judge': {'network': dict(network), 'path': judge},
           'methods': [{'name': 'bicubic', 'type': 'bicubic'}, {'name': 'HR', 'type': 'hr'}], 'reference': 'bicubic',
           'bootstrap': {'samples': 20}}
    run_entry('evaluate.py', write_yaml(tmp_path / 'eval.yml', cfg), tmp_path, '--output_dir', str(tmp_path / 'ev'))
    results = json.loads((tmp_path / 'ev' / 'results.json').read_text())
    main = {'det': 'judge_map_50', 'cls': 'judge_top1'}[task]
    assert results['task'] == task and 0 <= results['methods']['HR'][main] <= 100
    assert 'low' in results['methods']['HR'][f"{main}_vs_reference"]
    assert cv2.imread(str(tmp_path / 'ev' / 'grid.png')) is not None
    lr = tmp_path / 'lr.png'
    cv2.imwrite(str(lr), np.full((12, 16, 3), 128, np.uint8))
    nearest = tmp_path / 'nearest.pth'
    torch.save({'params': {}}, nearest)
    from segsr.inference import main as infer

    generator = tmp_path / 'g.pth'
    from basicsr.archs import build_network
    torch.save({'params': build_network({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8,
                                         'num_block': 1, 'upscale': 4}).state_dict()}, generator)
    names = ','.join(DET_CLASSES if task == 'det' else sorted(CLS_CLASSES))
    status = infer(['-i', str(lr), '-o', str(tmp_path / 'out'), '-m', str(generator), '--network',
                    '{type: EDSR, num_in_ch: 3, num_out_ch: 3, num_feat: 8, num_block: 1, upscale: 4}',
                    f'--{task}', judge, '--class-names', names])
    assert status == 0
    assert cv2.imread(str(tmp_path / 'out' / f'lr_{task}.png')) is not None
    payload = json.loads((tmp_path / 'out' / f'lr_{task}.json').read_text())
    assert isinstance(payload, list) if task == 'det' else payload['class'] in names.split(',')
