"""Tiny option dicts and networks shared by the tests (the shapes every model test trains)."""
import copy
import os

import torch
import yaml

from conftest import NUM_CLASSES, REPO, logger_opt, seg_dataset_opt

TINY_RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4}


TINY_UNET = {'type': 'SegUNet', 'num_classes': NUM_CLASSES, 'base_channels': 8, 'num_levels': 2}



TINY_COMPACT = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2, 'upscale': 4}


def seg_sr_opt(tiny_data, judge_opt):
    return {
        'name': 'seg_sr', 'model_type': 'SegSRModel', 'scale': 4, 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
        'network_g': dict(TINY_RRDB), 'path': {},
        'train': {'optim_g': {'type': 'AdamW', 'lr': 2e-4}, 'scheduler': {'type': 'OneCycleLR'},
                  'total_iter': 5, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'val': {'val_freq': 1, 'save_img': True, 'judge': judge_opt,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
    }


# A tiny semantic extractor: the bottleneck of a random SegUNet with 4 levels: 32 channels at stride 16.
TINY_SEM_NET = {'type': 'SegUNet', 'num_classes': NUM_CLASSES, 'base_channels': 4, 'num_levels': 4}


TINY_SEM = {'type': 'TaskNetSemanticExtractor', 'network': TINY_SEM_NET, 'feature': 'C5'}


SEM_DIM = 32


def tiny_sed_d(kind='SeDPatchDiscriminator', **kw):
    return dict(dict(type=kind, num_feat=8, semantic_dim=SEM_DIM, fusion_head_dim=8), **kw)


def sed_opt(tiny_data, model_type='SeDModel', d=None, **train_extra):
    train = {'ema_decay': 0.9,
             'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'optim_d': {'type': 'Adam', 'lr': 1e-3},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}, 'total_iter': 2,
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
             'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
             **train_extra}
    return {'name': 'sed', 'model_type': model_type, 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
            'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
            'network_g': dict(TINY_RRDB), 'network_d': d or tiny_sed_d(), 'network_sem': copy.deepcopy(TINY_SEM),
            'path': {}, 'train': train,
            'val': {'val_freq': 2, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
            'logger': logger_opt()}


def load_sed_option(name):
    with open(os.path.join(REPO, 'options', 'sed', name)) as f:
        return yaml.safe_load(f)


def tiny_run_opt(opt, tiny_data, sed):
    """Shrink a shipped GPU-sized config for a 2-iteration CPU run: tiny data and networks, no VGG download,
    and for SeD a tiny random extractor (no CLIP download) with the discriminator's semantic_dim to match."""
    opt = copy.deepcopy(opt)
    opt.update(num_gpu='auto', logger=logger_opt(), network_g=dict(TINY_RRDB))
    opt['network_d']['num_feat'] = 8
    opt['path'] = {'resume_state': None}
    opt['train'].update(total_iter=2)
    opt['train'].pop('perceptual_opt')
    opt['val'].update(val_freq=2, save_img=False)
    opt['datasets']['val'] = {'name': 'tiny_val', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                              'dataroot_gt': os.path.join(tiny_data, 'val', 'hr'),
                              'dataroot_lq': os.path.join(tiny_data, 'val', 'lq_x4')}
    train_set = opt['datasets']['train']
    train_set.update(num_worker_per_gpu=0, batch_size_per_gpu=2, gt_size=64)
    if train_set['type'] == 'PairedImageDataset':  # VGGStyleDiscriminator takes 128 x 128 only
        train_set.update(gt_size=128, dataroot_gt=os.path.join(tiny_data, 'train', 'hr'),
                         dataroot_lq=os.path.join(tiny_data, 'train', 'lq_x4'))
    else:  # RealESRGANDataset: HR folder + meta file; the model crops gt_size after degrading
        meta = os.path.join(tiny_data, 'train', 'meta_info_hr.txt')
        with open(meta, 'w') as f:
            f.write('\n'.join(sorted(os.listdir(os.path.join(tiny_data, 'train', 'hr')))) + '\n')
        train_set.update(dataroot_gt=os.path.join(tiny_data, 'train', 'hr'), meta_info=meta)
        opt.update(gt_size=64, queue_size=4)
    if sed:
        opt['network_d'].update(semantic_dim=SEM_DIM, fusion_head_dim=8)
        opt['network_sem'] = copy.deepcopy(TINY_SEM)
    return opt


def tiny_disc(trunk='unet', **kw):
    return dict(dict(type='SegAwareDiscriminator', num_classes=NUM_CLASSES, num_feat=8, seg_hidden=8, trunk=trunk), **kw)


def gan_opt(tiny_data, tmp_path, judge=True, **train_extra):
    opt = {
        'name': 'segsr_gan', 'model_type': 'SegAwareGANModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
        'network_g': dict(TINY_RRDB), 'network_d': tiny_disc(), 'path': {},
        'train': {'ema_decay': 0.9,
                  'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'optim_d': {'type': 'AdamW', 'lr': 1e-4},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}, 'total_iter': 4,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
                  'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 5e-3},
                  'task_adv_opt': {'type': 'TaskAdversarialLoss', 'loss_weight': 1e-2},
                  'd_task_opt': {'type': 'DiscriminatorTaskLoss', 'loss_weight': 1.0},
                  'task_warmup_iter': 0},
        'val': {'val_freq': 2, 'save_img': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
        'logger': logger_opt(),
    }
    if judge:
        from segsr.archs.seg_unet_arch import SegUNet
        path = tmp_path / 'judge.pth'
        torch.save({'params': SegUNet(**{k: v for k, v in TINY_UNET.items() if k != 'type'}).state_dict()}, path)
        opt['val']['judge'] = {'network': dict(TINY_UNET), 'path': str(path)}
    opt['train'].update(train_extra)
    return opt


TINY_EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}


TINY_TASK = dict(TINY_UNET, aux_head=True)


TDP = {'type': 'TDPLoss', 'layer_weights': {'bottleneck': 1.0, 'enc1': 0.5}, 'criterion': 'l1', 'loss_weight': 1.0}


def ce(weight):
    return {'type': 'SegCrossEntropyLoss', 'loss_weight': weight, 'ignore_index': 255}


def save_tiny(path, arch_opt):
    from basicsr.archs import build_network

    torch.manual_seed(1)
    torch.save({'params': build_network(dict(arch_opt)).state_dict()}, path)
    return str(path)


def sr4ir_opt(tiny_data, tmp_path, judge=True, **train_extra):
    opt = {
        'name': 'sr4ir', 'model_type': 'SR4IRModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(tiny_data, 'train'), 'val': seg_dataset_opt(tiny_data, 'val')},
        'network_g': dict(TINY_EDSR), 'network_task': dict(TINY_TASK), 'path': {},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'optim_task': {'type': 'SGD', 'lr': 1e-2, 'momentum': 0.9},
                  'scheduler_g': {'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0.5},
                  'scheduler_task': {'type': 'CosineAnnealingRestartLR', 'periods': [6], 'eta_min': 1e-4},
                  'total_iter': 4, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, 'tdp_opt': dict(TDP),
                  'tdp_warmup_iter': 0, 'task_sr_opt': ce(0.34), 'task_hr_opt': ce(0.34),
                  'task_cqmix_opt': ce(0.34), 'aux_weight': 0.5, 'cqmix': {'grid': 4, 'prob': 0.5}},
        'val': {'val_freq': 2, 'save_img': True, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
        'logger': logger_opt(),
    }
    if judge:
        opt['val']['judge'] = {'network': dict(TINY_UNET), 'path': save_tiny(tmp_path / 'judge.pth', TINY_UNET)}
    opt['train'].update(train_extra)
    return opt


def stock_esrgan_opt(root, total_iter):
    """BasicSR's train_ESRGAN_x4.yml, shrunk: stock model, arch and dataset names only."""
    return {
        'name': 'stock_esrgan', 'model_type': 'ESRGANModel', 'scale': 4, 'num_gpu': 1, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': f'{root}/train/hr',
                      'dataroot_lq': f'{root}/train/lq_x4', 'io_backend': {'type': 'disk'}, 'gt_size': 128,
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'tiny_val', 'type': 'PairedImageDataset', 'dataroot_gt': f'{root}/val/hr',
                    'dataroot_lq': f'{root}/val/lq_x4', 'io_backend': {'type': 'disk'}}},
        'network_g': dict(TINY_RRDB),
        'network_d': {'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 8},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999,
                  'optim_g': {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'optim_d': {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [50], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1e-2, 'reduction': 'mean'},
                  'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0,
                              'fake_label_val': 0.0, 'loss_weight': 5e-3},
                  'net_d_iters': 1, 'net_d_init_iters': 0},
        'val': {'val_freq': 2, 'save_img': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}},
        'logger': logger_opt(),
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def seg_task_opt(root, total_iter, name='seg_task', **extra):
    opt = {
        'name': name, 'model_type': 'SegTaskModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'train': seg_dataset_opt(root, 'train'), 'val': seg_dataset_opt(root, 'val')},
        'network_task': dict(TINY_UNET),
        'path': {'pretrain_network_task': None, 'resume_state': None},
        'train': {'optim_task': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 1e-4},
                  'scheduler': {'type': 'OneCycleLR', 'pct_start': 0.3, 'total_steps': 10},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'seg_opt': {'type': 'SegCrossEntropyLoss', 'ignore_index': 255}},
        'val': {'val_freq': 2, 'save_img': True},
        'logger': logger_opt(),
    }
    opt.update(extra)
    return opt
