"""Tiny self-made detection (VOC XML) and classification (ImageFolder) data, and SR4IR options that train on them."""
import os

import cv2
import numpy as np

from helpers.options import TINY_EDSR, logger_opt

DET_CLASSES = ('square', 'bar')
CLS_CLASSES = ('stripes', 'dots', 'plain')
TINY_DET = {'type': 'TorchvisionDetNet', 'arch': 'fasterrcnn_mobilenet_v3_large_fpn', 'num_classes': 2}
TINY_CLS = {'type': 'TorchvisionClsNet', 'arch': 'resnet18', 'num_classes': 3}
DET_LOSS = {'type': 'DetectionLoss', 'loss_weight': 0.34}
CLS_LOSS = {'type': 'ClassCrossEntropyLoss', 'loss_weight': 0.34}

_VOC_OBJECT = ('<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>'
               '<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>')


def voc_xml(filename, width, height, objects):
    """A Pascal VOC annotation (1-based inclusive pixel corners, as VOC writes them)."""
    body = ''.join(_VOC_OBJECT.format(name=name, x1=x1 + 1, y1=y1 + 1, x2=x2, y2=y2) for name, (x1, y1, x2, y2) in objects)
    return (f'<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>'
            f'<depth>3</depth></size>{body}</annotation>')


def write_det_data(root, num_images=4, size=(64, 96), seed=0):
    """``<root>/{images,annotations}``: noisy backgrounds with bright squares and dark bars (VOC boxes)."""
    rng = np.random.default_rng(seed)
    h, w = size
    for sub in ('images', 'annotations'):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(num_images):
        img = (rng.random((h, w, 3)) * 60 + 80).astype(np.uint8)
        objects = []
        for k in range(3):
            name = DET_CLASSES[k % 2]
            bw, bh = (16, 16) if name == 'square' else (24, 8)
            band = w // 3  # one object per vertical band: objects never overlap
            x1, y1 = k * band + int(rng.integers(0, band - bw + 1)), int(rng.integers(0, h - bh))
            img[y1:y1 + bh, x1:x1 + bw] = (230, 230, 40) if name == 'square' else (20, 20, 120)
            objects.append((name, (x1, y1, x1 + bw, y1 + bh)))
        name = f'img{i:03d}'
        cv2.imwrite(os.path.join(root, 'images', f'{name}.png'), img)
        with open(os.path.join(root, 'annotations', f'{name}.xml'), 'w') as f:
            f.write(voc_xml(f'{name}.png', w, h, objects))
    return root


def write_cls_data(root, per_class=3, size=(48, 64), seed=0):
    """``<root>/<class>/<image>.png``: stripes, dots and plain images with noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    for label, name in enumerate(CLS_CLASSES):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            img = (rng.random((h, w, 3)) * 40 + 100).astype(np.uint8)
            if name == 'stripes':
                img[:, ::8] = 240
            elif name == 'dots':
                img[::8, ::8] = 10
            cv2.imwrite(os.path.join(root, name, f'{name}{i}.png'), img)
    return root


def det_dataset_opt(root, phase):
    opt = dict(name=f'tiny_det_{phase}', type='PairedImageDetDataset', phase=phase, scale=4,
               dataroot_gt=os.path.join(root, 'images'), dataroot_ann=os.path.join(root, 'annotations'),
               class_names=list(DET_CLASSES), io_backend={'type': 'disk'}, max_boxes=8)
    if phase == 'train':
        opt.update(gt_size=48, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
    return opt


def cls_dataset_opt(root, phase):
    opt = dict(name=f'tiny_cls_{phase}', type='PairedImageClsDataset', phase=phase, scale=4, dataroot_gt=root,
               io_backend={'type': 'disk'})
    if phase == 'train':
        opt.update(gt_size=32, use_hflip=True, num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1,
                   prefetch_mode=None)
    else:
        opt.update(center_crop=32)
    return opt


def task_sr4ir_opt(task, data_root, frozen=False, **train_extra):
    """SR4IR (or, with ``frozen``, *SR for my detector / classifier*) on the tiny data of ``task`` (det / cls)."""
    dataset_opt, network, loss = ((det_dataset_opt, TINY_DET, DET_LOSS) if task == 'det'
                                  else (cls_dataset_opt, TINY_CLS, CLS_LOSS))
    train = {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 4,
             'scheduler_g': {'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    if frozen:
        train.update(update_task=False, sr_ce_opt=dict(loss, loss_weight=0.1))
    else:
        train.update(optim_task={'type': 'SGD', 'lr': 1e-3, 'momentum': 0.9},
                     scheduler_task={'type': 'CosineAnnealingRestartLR', 'periods': [6], 'eta_min': 1e-4},
                     task_sr_opt=dict(loss), task_hr_opt=dict(loss), task_cqmix_opt=dict(loss),
                     cqmix={'grid': 4, 'prob': 0.5})
    train.update(train_extra)
    return {
        'name': f'sr4ir_{task}', 'model_type': 'SR4IRModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'train': dataset_opt(data_root, 'train'), 'val': dataset_opt(data_root, 'val')},
        'network_g': dict(TINY_EDSR), 'network_task': dict(network), 'path': {}, 'train': train,
        'val': {'val_freq': 2, 'save_img': True, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
        'logger': logger_opt(),
    }
