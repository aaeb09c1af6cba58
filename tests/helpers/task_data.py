"""Tiny self-made detection (VOC layout) and classification (ImageFolder) data, and SR4IR options that train on them."""
import os

from helpers.options import TINY_EDSR, logger_opt
from segsr.data.synthetic_tasks import CLS_CLASSES, DET_CLASSES, make_synthetic_cls, make_synthetic_det, voc_xml  # noqa

TINY_DET = {'type': 'TorchvisionDetNet', 'arch': 'fasterrcnn_mobilenet_v3_large_fpn', 'num_classes': 2}
TINY_CLS = {'type': 'TorchvisionClsNet', 'arch': 'resnet18', 'num_classes': 3}
DET_LOSS = {'type': 'DetectionLoss', 'loss_weight': 0.34}
CLS_LOSS = {'type': 'ClassCrossEntropyLoss', 'loss_weight': 0.34}


def write_det_data(root, num_train=4, num_val=2):
    return make_synthetic_det(root, num_train, num_val)


def write_cls_data(root, per_class=3):
    return make_synthetic_cls(root, per_class, per_class)


def det_dataset_opt(root, phase):
    opt = dict(name=f'tiny_det_{phase}', type='PairedImageDetDataset', phase=phase, scale=4,
               dataroot_gt=os.path.join(root, 'JPEGImages'), dataroot_ann=os.path.join(root, 'Annotations'),
               class_names=list(DET_CLASSES), io_backend={'type': 'disk'}, max_boxes=8)
    split_file = os.path.join(root, 'ImageSets', 'Main', f"{'train' if phase == 'train' else 'val'}.txt")
    if os.path.isfile(split_file):
        opt['split_file'] = split_file
    if phase == 'train':
        opt.update(gt_size=48, use_hflip=True, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=2,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
    return opt


def cls_dataset_opt(root, phase):
    opt = dict(name=f'tiny_cls_{phase}', type='PairedImageClsDataset', phase=phase, scale=4,
               dataroot_gt=os.path.join(root, 'train' if phase == 'train' else 'val'), io_backend={'type': 'disk'})
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
