"""Segmentation-aware GAN: SR generator + discriminator with a real/fake head and a segmentation task head.

Wang, Jin, Zhou, "Segmentation-aware image super-resolution with generative adversarial networks", Multimedia
Systems 2025. Generator and discriminator train alternately:

- generator step: pixel (+ perceptual) + adversarial + task-adversarial loss (the discriminator's task head must
  segment the SR image correctly), the latter only after ``task_warmup_iter``;
- discriminator step: real/fake + cross-entropy of the task head on HR images (optionally also on SR images), so
  the task branch's capacity grows along with the SR network.

Built on BasicSR's ``SRGANModel`` (networks, EMA, pixel/perceptual/GAN losses, ``net_d_iters`` /
``net_d_init_iters``, saving) and segsr's shared GAN step (:mod:`segsr.models.gan_step`); only the task-specific
terms are added here, through the step's hooks.
"""
from typing import Dict

from basicsr.losses import build_loss
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from segsr.models.base import check_num_classes, require_labelled_train_data, weights_included
from segsr.models.gan_step import DOutput, GANStepMixin
from segsr.models.task_eval import Predictor, TaskValidationMixin
from segsr.models.task_feature import TDPMixin


@MODEL_REGISTRY.register()
class SegAwareGANModel(TDPMixin, TaskValidationMixin, GANStepMixin, SRGANModel):
    """SR GAN whose discriminator also segments (``network_d: {type: SegAwareDiscriminator, ...}``).

    Options (``train``) on top of BasicSR's SRGAN/ESRGAN ones (``pixel_opt``, ``perceptual_opt``, ``gan_opt``,
    ``optim_g``, ``optim_d``, ``scheduler``, ``ema_decay``, ``net_d_iters``, ``net_d_init_iters``):
        task_adv_opt: Generator's task-adversarial loss, e.g. ``{type: TaskAdversarialLoss, loss_weight: 0.01}``;
            absent = no task push on the generator (ablation).
        d_task_opt: Discriminator's task loss, e.g. ``{type: DiscriminatorTaskLoss, loss_weight: 1.0}`` (required).
        task_warmup_iter: Iterations during which the task head trains but the generator gets no
            task-adversarial loss. Default: 0.
        relativistic: ESRGAN's relativistic average GAN instead of the standard one. Default: False.
        tdp_opt: Optional SR4IR task-driven perceptual loss on the generator (:class:`TDPLoss` block), computed
            with a frozen task network ``network_task`` loaded from ``path.pretrain_network_task``
            (``param_key_task``); ``tdp_warmup_iter``: iterations without it. The task network is saved as
            ``net_task`` with each checkpoint so that ``--auto_resume`` finds it.

    SeD conditioning: with ``network_d.semantic_dim`` set and a ``network_sem`` extractor block, the
    discriminator's trunk fuses the HR image's semantics (the same mechanism as :class:`SeDModel`, see
    :mod:`segsr.models.gan_step`): task branch, SeD and TDP in one run.

    The training dataset must provide ``seg`` (e.g. ``PairedImageSegDataset``); its ``num_classes``, the
    discriminator's and the judge's must agree. Validation logs PSNR/SSIM, ``judge_miou`` and ``disc_miou`` (the
    discriminator task head's own mIoU on SR images, a diagnostic; with SeD, under the SR image's own semantics).
    """

    OPTION_KEYS = {'': ('network_task', ), 'train': ('task_adv_opt', 'd_task_opt', 'task_warmup_iter')}

    def init_training_settings(self) -> None:
        require_labelled_train_data(self.opt, 'SegAwareGANModel')
        super().init_training_settings()
        train_opt = self.opt['train']
        bare_d = self.get_bare_model(self.net_d)
        if not hasattr(bare_d, 'seg_head'):
            raise ValueError(f"Option 'network_d.type' = '{self.opt['network_d']['type']}' has no segmentation "
                             "head; SegAwareGANModel needs a discriminator such as SegAwareDiscriminator.")
        check_num_classes(self.opt, bare_d.num_classes, 'network_d.num_classes')
        self.init_gan_step()
        if not train_opt.get('d_task_opt'):
            raise ValueError("Option 'train.d_task_opt' (e.g. {type: DiscriminatorTaskLoss}) is required by "
                             'SegAwareGANModel: it trains the discriminator\'s task head.')
        self.cri_d_task = build_loss(train_opt['d_task_opt']).to(self.device)
        task_adv = train_opt.get('task_adv_opt')
        self.cri_task_adv = build_loss(task_adv).to(self.device) if task_adv else None
        self.task_warmup_iter = int(train_opt.get('task_warmup_iter', 0))
        self._init_task_network()

    def _init_task_network(self) -> None:
        """The frozen task network of the optional TDP loss (``network_task`` + ``train.tdp_opt``)."""
        net_opt = self.opt.get('network_task')
        if net_opt and not self.opt['train'].get('tdp_opt'):
            raise ValueError("Option 'network_task' is set but 'train.tdp_opt' is not: SegAwareGANModel uses a task "
                             'network only for the TDP loss.')
        self.net_task = None
        if net_opt:
            load_path = self.opt['path'].get('pretrain_network_task')
            if load_path is None and not weights_included(net_opt):
                raise ValueError("Option 'path.pretrain_network_task' is required with 'train.tdp_opt': the TDP "
                                 'loss needs a trained task network.')
            self.net_task = self.build_frozen_network(net_opt, 'network_task', load_path,
                                                      self.opt['path'].get('param_key_task', 'params'))
            check_num_classes(self.opt, self.net_task.num_classes, 'network_task.num_classes')
        self.init_tdp(self.net_task)

    def feed_data(self, data: Dict[str, Tensor]) -> None:
        super().feed_data(data)
        self.feed_labels(data)

    # ------------------------------------------------------------------------------------------ training step
    def before_step(self) -> None:
        self.require_labels()

    def generator_needs_seg(self, current_iter: int) -> bool:
        return self.cri_task_adv is not None and current_iter > self.task_warmup_iter

    def extra_generator_loss(self, current_iter: int, loss_dict: Dict[str, Tensor], fake: DOutput) -> Tensor:
        """Task-adversarial term (after ``task_warmup_iter``) and the TDP loss (after ``tdp_warmup_iter``)."""
        l_total = self.output.new_zeros(())
        if self.generator_needs_seg(current_iter):
            loss_dict['l_g_task'] = self.cri_task_adv(fake['seg'], self.seg)
            l_total = l_total + loss_dict['l_g_task']
        l_tdp = self.tdp_loss(current_iter, loss_dict)
        return l_total + l_tdp if l_tdp is not None else l_total

    def extra_discriminator_loss(self, both: DOutput, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Task loss of the discriminator's segmentation head on HR (and optionally SR) images."""
        real_seg, fake_seg = both['seg'].chunk(2)
        l_d_task, l_d_task_sr = self.cri_d_task(real_seg, self.seg, fake_seg)
        loss_dict['l_d_task'] = l_d_task
        if l_d_task_sr is None:
            return l_d_task
        loss_dict['l_d_task_sr'] = l_d_task_sr
        return l_d_task + l_d_task_sr

    def save(self, epoch: int, current_iter: int) -> None:
        if getattr(self, 'net_task', None) is not None:
            self.save_task_network(current_iter)
        super().save(epoch, current_iter)

    # ------------------------------------------------------------------------------------------- validation
    def task_predictors(self) -> Dict[str, Predictor]:
        predictors = super().task_predictors()
        if hasattr(self, 'net_d'):  # built for training only
            bare_d = self.get_bare_model(self.net_d)
            sem = getattr(self, 'net_sem', None)
            predictors['disc'] = (bare_d.segment if sem is None else
                                  lambda img: bare_d.segment(img, semantic=sem(img)))
        return predictors
