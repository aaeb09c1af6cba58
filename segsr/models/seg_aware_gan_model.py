"""Segmentation-aware GAN: SR generator + discriminator with a real/fake head and a segmentation task head.

Wang, Jin, Zhou, "Segmentation-aware image super-resolution with generative adversarial networks", Multimedia
Systems 2025. Generator and discriminator train alternately:

- generator step: pixel (+ perceptual) + adversarial + task-adversarial loss (the discriminator's task head must
  segment the SR image correctly), the latter only after ``task_warmup_iter``;
- discriminator step: real/fake + cross-entropy of the task head on HR images (optionally also on SR images), so
  the task branch's capacity grows along with the SR network.

Built on BasicSR's ``SRGANModel`` (networks, EMA, pixel/perceptual/GAN losses, ``net_d_iters`` /
``net_d_init_iters``, saving); only the training step and the task-specific pieces are new.
"""
from collections import OrderedDict
from typing import Dict, Tuple

import torch
from basicsr.losses import build_loss
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from segsr.models.base import SegsrModelMixin, check_num_classes, require_labelled_train_data
from segsr.models.task_eval import Predictor, TaskValidationMixin
from segsr.models.task_feature import TDPMixin


@MODEL_REGISTRY.register()
class SegAwareGANModel(TDPMixin, TaskValidationMixin, SegsrModelMixin, SRGANModel):
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

    The training dataset must provide ``seg`` (e.g. ``PairedImageSegDataset``); its ``num_classes``, the
    discriminator's and the judge's must agree. Validation logs PSNR/SSIM, ``judge_miou`` and ``disc_miou`` (the
    discriminator task head's own mIoU on SR images, a diagnostic).
    """

    def init_training_settings(self) -> None:
        require_labelled_train_data(self.opt, 'SegAwareGANModel')
        super().init_training_settings()
        train_opt = self.opt['train']
        bare_d = self.get_bare_model(self.net_d)
        if not hasattr(bare_d, 'seg_head'):
            raise ValueError(f"Option 'network_d.type' = '{self.opt['network_d']['type']}' has no segmentation "
                             "head; SegAwareGANModel needs a discriminator such as SegAwareDiscriminator.")
        check_num_classes(self.opt, bare_d.num_classes, 'network_d.num_classes')
        if not getattr(self, 'cri_gan', None):
            raise ValueError("Option 'train.gan_opt' is required by SegAwareGANModel.")
        if not train_opt.get('d_task_opt'):
            raise ValueError("Option 'train.d_task_opt' (e.g. {type: DiscriminatorTaskLoss}) is required by "
                             'SegAwareGANModel: it trains the discriminator\'s task head.')
        self.cri_d_task = build_loss(train_opt['d_task_opt']).to(self.device)
        task_adv = train_opt.get('task_adv_opt')
        self.cri_task_adv = build_loss(task_adv).to(self.device) if task_adv else None
        self.task_warmup_iter = int(train_opt.get('task_warmup_iter', 0))
        self.relativistic = bool(train_opt.get('relativistic', False))
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
            if load_path is None:
                raise ValueError("Option 'path.pretrain_network_task' is required with 'train.tdp_opt': the TDP "
                                 'loss needs a trained task network.')
            self.net_task = self.build_frozen_network(net_opt, 'network_task', load_path,
                                                      self.opt['path'].get('param_key_task', 'params'))
            check_num_classes(self.opt, self.net_task.num_classes, 'network_task.num_classes')
        self.init_tdp(self.net_task)

    def setup_optimizers(self) -> None:
        self.optimizer_g = self.build_optimizer('optim_g', self.net_g.parameters())
        self.optimizer_d = self.build_optimizer('optim_d', self.net_d.parameters())

    def feed_data(self, data: Dict[str, Tensor]) -> None:
        super().feed_data(data)
        self.feed_labels(data)

    # ------------------------------------------------------------------------------------------ training step
    def optimize_parameters(self, current_iter: int) -> None:
        self.require_labels()
        loss_dict = OrderedDict()
        self._set_d_requires_grad(False)
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            self.generator_loss(current_iter, loss_dict).backward()
            self.optimizer_g.step()

        self._set_d_requires_grad(True)
        self.optimizer_d.zero_grad()
        self.discriminator_loss(loss_dict).backward()
        self.optimizer_d.step()

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _set_d_requires_grad(self, flag: bool) -> None:
        for p in self.net_d.parameters():
            p.requires_grad = flag

    def generator_loss(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Pixel + perceptual + adversarial + task-adversarial (+ :meth:`extra_generator_loss`) on ``self.output``."""
        l_total = self.content_loss(loss_dict)
        use_task = self.cri_task_adv is not None and current_iter > self.task_warmup_iter
        fake = self.net_d(self.output, return_seg=use_task)
        if self.relativistic:
            real_rf = self.net_d(self.gt, return_seg=False)['rf'].detach()
            l_g_gan = (self.cri_gan(real_rf - fake['rf'].mean(), False, is_disc=False) +
                       self.cri_gan(fake['rf'] - real_rf.mean(), True, is_disc=False)) / 2
        else:
            l_g_gan = self.cri_gan(fake['rf'], True, is_disc=False)
        loss_dict['l_g_gan'] = l_g_gan
        l_total = l_total + l_g_gan
        if use_task:
            l_g_task = self.cri_task_adv(fake['seg'], self.seg)
            loss_dict['l_g_task'] = l_g_task
            l_total = l_total + l_g_task
        return l_total + self.extra_generator_loss(current_iter, loss_dict)

    def content_loss(self, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Pixel and perceptual/style losses of ``self.output`` against ``self.gt`` (those configured)."""
        l_total = self.output.new_zeros(())
        if self.cri_pix:
            loss_dict['l_g_pix'] = self.cri_pix(self.output, self.gt)
            l_total = l_total + loss_dict['l_g_pix']
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            for name, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
                if value is not None:
                    loss_dict[name] = value
                    l_total = l_total + value
        return l_total

    def extra_generator_loss(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Further generator terms: the TDP loss when configured (after ``tdp_warmup_iter``)."""
        l_tdp = self.tdp_loss(current_iter, loss_dict)
        return l_tdp if l_tdp is not None else self.output.new_zeros(())

    def discriminator_loss(self, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Real/fake + task loss of the discriminator, from ONE forward pass over ``[HR; SR.detach()]``.

        One pass (rather than BasicSR's separate real and fake passes) runs every parameter exactly once per
        backward, which keeps DistributedDataParallel happy without ``find_unused_parameters``. The trunk uses no
        batch statistics by default (spectral norm), so the result equals two separate passes.
        """
        both = self.net_d(torch.cat([self.gt, self.output.detach()], dim=0), return_seg=True)
        real_rf, fake_rf = both['rf'].chunk(2)
        real_seg, fake_seg = both['seg'].chunk(2)
        l_d_real, l_d_fake = self.discriminator_gan_loss(real_rf, fake_rf)
        l_d_task, l_d_task_sr = self.cri_d_task(real_seg, self.seg, fake_seg)
        loss_dict.update(l_d_real=l_d_real, out_d_real=real_rf.detach().mean(), l_d_fake=l_d_fake,
                         out_d_fake=fake_rf.detach().mean(), l_d_task=l_d_task)
        l_total = l_d_real + l_d_fake + l_d_task
        if l_d_task_sr is not None:
            loss_dict['l_d_task_sr'] = l_d_task_sr
            l_total = l_total + l_d_task_sr
        return l_total

    def discriminator_gan_loss(self, real_rf: Tensor, fake_rf: Tensor) -> Tuple[Tensor, Tensor]:
        """Standard or relativistic-average (ESRGAN) real and fake terms."""
        if self.relativistic:
            l_real = self.cri_gan(real_rf - fake_rf.detach().mean(), True, is_disc=True) * 0.5
            l_fake = self.cri_gan(fake_rf - real_rf.detach().mean(), False, is_disc=True) * 0.5
            return l_real, l_fake
        return self.cri_gan(real_rf, True, is_disc=True), self.cri_gan(fake_rf, False, is_disc=True)

    def save(self, epoch: int, current_iter: int) -> None:
        if getattr(self, 'net_task', None) is not None:
            self.save_network(self.net_task, 'net_task', current_iter)
        super().save(epoch, current_iter)

    # ------------------------------------------------------------------------------------------- validation
    def task_predictors(self) -> Dict[str, Predictor]:
        predictors = super().task_predictors()
        if hasattr(self, 'net_d'):  # built for training only
            predictors['disc'] = self.get_bare_model(self.net_d).segment
        return predictors
