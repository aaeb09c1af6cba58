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
from typing import Dict, Optional

from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn

from segsr.models.base import check_num_classes, require_labelled_train_data
from segsr.models.gan_step import DOutput, GANStepModel
from segsr.models.task_eval import Predictor, discriminator_predictor
from segsr.models.task_adversarial import TaskAdversarialTerm
from segsr.models.task_feature import TDPTerm
from segsr.weights import weights_included


@MODEL_REGISTRY.register()
class SegAwareGANModel(GANStepModel):
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

    OPTION_KEYS = {'': ('network_task', )}
    PARTS = (TaskAdversarialTerm, TDPTerm)

    def __init__(self, opt: dict) -> None:
        self.task_terms: Optional[TaskAdversarialTerm] = None  # built for training
        self.net_task: Optional[nn.Module] = None  # the frozen task network of the TDP term
        self.tdp: Optional[TDPTerm] = None
        super().__init__(opt)

    def init_training_settings(self) -> None:
        require_labelled_train_data(self.opt, 'SegAwareGANModel')
        super().init_training_settings()
        bare_d = self.get_bare_model(self.net_d)
        if not hasattr(bare_d, 'seg_head'):  # a capability of the network
            raise ValueError(f"Option 'network_d.type' = '{self.opt['network_d']['type']}' has no segmentation "
                             "head; SegAwareGANModel needs a discriminator such as SegAwareDiscriminator.")
        check_num_classes(self.opt, bare_d.num_classes, 'network_d.num_classes')
        self.init_gan_step()
        self.task_terms = TaskAdversarialTerm.from_opt(self.opt['train'], self.device)
        self.net_task = self._build_task_network()
        self.tdp = TDPTerm.from_opt(self.opt['train'], self.net_task, self.device)

    def _build_task_network(self) -> Optional[nn.Module]:
        """The frozen task network of the optional TDP loss (``network_task`` + ``train.tdp_opt``)."""
        net_opt = self.opt.get('network_task')
        if net_opt and not self.opt['train'].get('tdp_opt'):
            raise ValueError("Option 'network_task' is set but 'train.tdp_opt' is not: SegAwareGANModel uses a task "
                             'network only for the TDP loss.')
        if not net_opt:
            return None
        load_path = self.opt['path'].get('pretrain_network_task')
        if load_path is None and not weights_included(net_opt):
            raise ValueError("Option 'path.pretrain_network_task' is required with 'train.tdp_opt': the TDP "
                             'loss needs a trained task network.')
        net = self.build_frozen_network(net_opt, 'network_task', load_path,
                                        self.opt['path'].get('param_key_task', 'params'))
        check_num_classes(self.opt, net.num_classes, 'network_task.num_classes')
        return net

    def feed_data(self, data: Dict[str, Tensor]) -> None:
        super().feed_data(data)
        self.feed_labels(data)

    # ------------------------------------------------------------------------------------------ training step
    def before_step(self) -> None:
        self.require_labels()

    def generator_needs_seg(self, current_iter: int) -> bool:
        return self.task_terms.generator_active(current_iter)

    def extra_generator_loss(self, current_iter: int, loss_dict: Dict[str, Tensor], fake: DOutput) -> Tensor:
        """Task-adversarial term (after ``task_warmup_iter``) and the TDP loss (after ``tdp_warmup_iter``)."""
        l_total = self.output.new_zeros(())
        if self.generator_needs_seg(current_iter):
            l_total = l_total + self.task_terms.generator_loss(fake['seg'], self.seg, loss_dict)
        l_tdp = self.tdp.loss(self.output, self.gt, current_iter, loss_dict) if self.tdp is not None else None
        return l_total + l_tdp if l_tdp is not None else l_total

    def extra_discriminator_loss(self, both: DOutput, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Task loss of the discriminator's segmentation head on HR (and optionally SR) images."""
        return self.task_terms.discriminator_loss(both['seg'], self.seg, loss_dict)

    def saved_networks(self) -> Dict[str, nn.Module]:
        nets = {'net_task': self.net_task} if self.net_task is not None else {}
        nets.update(super().saved_networks())
        return nets

    # ------------------------------------------------------------------------------------------- validation
    def own_predictors(self) -> Dict[str, Predictor]:
        """The discriminator's task head (``disc``; training runs only: testing builds no discriminator)."""
        if not self.opt['is_train']:
            return {}
        return {'disc': discriminator_predictor(self.get_bare_model(self.net_d), self.net_sem)}
