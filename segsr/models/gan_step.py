"""The GAN training step shared by segsr's GAN models, with SeD's semantic conditioning as an option.

One implementation of the ESRGAN / Real-ESRGAN step (generator: pixel + perceptual + adversarial; discriminator:
real + fake; standard or relativistic-average GAN) serves :class:`~segsr.models.sed_model.SeDModel`,
:class:`~segsr.models.sed_model.SeDRealESRGANModel` and
:class:`~segsr.models.seg_aware_gan_model.SegAwareGANModel`. Models add terms through hooks
(:meth:`GANStepModel.extra_generator_loss`, :meth:`GANStepModel.extra_discriminator_loss`) instead of copying it.

Semantic conditioning (SeD) is the same for every model: when the discriminator is semantic-aware (its
``semantic_dim`` is set), a frozen extractor (``network_sem``) maps the HR batch to a semantic map ONCE per
training step, and every discriminator call of that step (generator step, real and fake) is made under those HR
semantics. The extractor is never trained, never wrapped in DistributedDataParallel (its weights are broadcast
from rank 0 once at build time), and is saved with each checkpoint as ``net_sem`` (BasicSR's resume looks for every
``network_*``).
"""
from collections import OrderedDict
from typing import Dict, Optional, Tuple, Union

import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from segsr.archs.semantic_extractor import SemanticExtractor
from segsr.models.base import SegsrModelMixin
from segsr.models.content import content_loss
from segsr.models.validation import TaskValidator

DOutput = Union[Tensor, Dict[str, Tensor]]


def real_fake_scores(out: DOutput) -> Tensor:
    """The real/fake scores of a discriminator output (a tensor, or the ``'rf'`` entry of a dict)."""
    return out['rf'] if isinstance(out, dict) else out


class SemanticConditioner:
    """SeD's semantic conditioning of a discriminator: a frozen extractor's map of the HR batch, once per step.

    Every discriminator call of a step (generator step, real and fake) is made under the semantics of that step's HR
    images. Build it with :meth:`from_model` (None when the discriminator fuses no semantics).

    Args:
        net: The frozen semantic extractor (``network_sem``; saved with each checkpoint as ``net_sem``).
    """

    OPTION_KEYS = {'': ('network_sem', )}

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.semantic: Optional[Tensor] = None  # this step's map

    @classmethod
    def from_model(cls, model, bare_d: nn.Module, default_opt: Optional[dict] = None,
                   required: bool = False) -> Optional['SemanticConditioner']:
        """The conditioner of ``model``'s ``network_sem`` when ``bare_d`` is semantic-aware (its ``semantic_dim`` is
        set), else None; the extractor is checked against ``bare_d`` and, under DDP, broadcast from rank 0.

        Args:
            model: The GAN model (its options, device and :meth:`build_frozen_network`).
            bare_d: The bare discriminator.
            default_opt: Extractor block used when the options have no ``network_sem``.
            required: The discriminator must be semantic-aware (SeD models).
        """
        opt = model.opt
        d_type = opt['network_d'].get('type')
        if not getattr(bare_d, 'semantic_dim', None):
            if required:
                raise ValueError(f"{type(model).__name__}: 'network_d.type' = '{d_type}' is not semantic-aware; use "
                                 'SeDPatchDiscriminator or SeDUNetDiscriminator (with semantic_dim set).')
            if opt.get('network_sem'):
                raise ValueError(f"Option 'network_sem' is set but 'network_d' ({d_type}) fuses no semantics: set "
                                 "'network_d.semantic_dim' (SegAwareDiscriminator, SeD*Discriminator).")
            return None
        net_opt = opt.get('network_sem') or default_opt
        if not net_opt:
            raise ValueError(f"'network_d' ({d_type}) is semantic-aware: add a 'network_sem' block (a semantic "
                             'extractor, e.g. {type: CLIPSemanticExtractor} or TaskNetSemanticExtractor).')
        conditioner = cls(_build_semantic_extractor(model, net_opt))
        conditioner.check_fit(bare_d)
        if opt.get('dist'):  # same conditioning on every rank, even for a randomly initialised extractor
            for tensor in conditioner.net.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
        get_root_logger().info(f'Semantic extractor {type(conditioner.net).__name__}: {conditioner.net.out_channels} '
                               f'channels at stride {conditioner.net.stride} (frozen, computed once per batch).')
        return conditioner

    def check_fit(self, bare_d: nn.Module) -> None:
        """Raise ``ValueError`` naming the option when the extractor's channels or stride differ from ``bare_d``'s."""
        sem = self.net
        if sem.out_channels != bare_d.semantic_dim:
            raise ValueError(f"Option 'network_d.semantic_dim' = {bare_d.semantic_dim} does not match 'network_sem' "
                             f'({type(sem).__name__}), which gives {sem.out_channels} channels.')
        if sem.stride != bare_d.semantic_stride:
            raise ValueError(f"Option 'network_d.semantic_stride' = {bare_d.semantic_stride} does not match "
                             f"'network_sem' ({type(sem).__name__}), whose features have stride {sem.stride}.")

    def compute(self, hr: Tensor) -> None:
        """This step's semantic map, of the HR batch ``hr``."""
        self.semantic = self.net(hr)

    def repeated(self, batch: int) -> Tensor:
        """This step's map for a discriminator input of ``batch`` images (a stack of copies of the step's batch)."""
        repeats = batch // self.semantic.size(0)
        return self.semantic if repeats == 1 else self.semantic.repeat(repeats, 1, 1, 1)


def _build_semantic_extractor(model, net_opt: dict) -> nn.Module:
    """The frozen extractor of block ``net_opt``, with ``path.pretrain_network_sem`` (``param_key_sem``) if set."""
    path_opt = model.opt['path']
    load_path = path_opt.get('pretrain_network_sem')
    net_opt = dict(net_opt)
    cls = ARCH_REGISTRY.get(net_opt['type']) if net_opt.get('type') in ARCH_REGISTRY else None
    if cls is None or not issubclass(cls, SemanticExtractor):
        raise ValueError(f"Option 'network_sem.type' = '{net_opt.get('type')}' is not a semantic extractor "
                         '(CLIPSemanticExtractor, ResNetSemanticExtractor, TaskNetSemanticExtractor or another '
                         'SemanticExtractor subclass).')
    if load_path is not None:
        net_opt['pretrained'] = None  # the checkpoint replaces the weights: no download
    return model.build_frozen_network(net_opt, 'network_sem', load_path, path_opt.get('param_key_sem', 'params'))


class GANStepModel(SegsrModelMixin, SRGANModel):
    """``SRGANModel`` with segsr's alternating generator / discriminator step (not registered: a base class).

    Options (``train``) on top of BasicSR's SRGAN ones (``pixel_opt``, ``perceptual_opt``, ``gan_opt``, ``optim_g``,
    ``optim_d``, ``scheduler`` / ``scheduler_g`` / ``scheduler_d``, ``ema_decay``, ``net_d_iters``,
    ``net_d_init_iters``):
        relativistic: ESRGAN's relativistic-average GAN instead of the standard one. Default: the class's
            :attr:`default_relativistic`.

    Semantic conditioning (:class:`SemanticConditioner`, ``self.semantic_conditioner``; None without):
    ``network_sem`` (an extractor block, e.g. ``{type: CLIPSemanticExtractor}``; default: :attr:`default_network_sem`),
    optional ``path.pretrain_network_sem`` / ``param_key_sem`` for its weights. Validation by the
    :class:`~segsr.models.validation.TaskValidator`.
    """

    OPTION_KEYS = {'train': ('relativistic', 'scheduler_g', 'scheduler_d')}
    PARTS = (TaskValidator, SemanticConditioner)

    default_relativistic = False
    default_network_sem: Optional[dict] = None
    semantic_required = False  # the discriminator must be semantic-aware (SeD models)

    def __init__(self, opt: dict) -> None:
        self.semantic_conditioner: Optional[SemanticConditioner] = None
        super().__init__(opt)
        self.task_validator = TaskValidator(self.opt, self.device)

    @property
    def net_sem(self) -> Optional[nn.Module]:
        """The frozen semantic extractor (None without semantic conditioning)."""
        return self.semantic_conditioner.net if self.semantic_conditioner is not None else None

    def init_gan_step(self) -> None:
        """Check the GAN options, build the semantic conditioner; call at the end of ``init_training_settings``."""
        if not self.opt['train'].get('gan_opt'):  # BasicSR's SRGANModel then sets no cri_gan
            raise ValueError(f"Option 'train.gan_opt' is required by {type(self).__name__}.")
        self.relativistic = bool(self.opt['train'].get('relativistic', self.default_relativistic))
        bare_d = self.get_bare_model(self.net_d)
        self.d_has_seg = hasattr(bare_d, 'seg_head')  # a capability of the network (SegAwareDiscriminator)
        self._check_d_input_size(bare_d)
        self.semantic_conditioner = SemanticConditioner.from_model(self, bare_d, self.default_network_sem,
                                                                   self.semantic_required)

    def setup_optimizers(self) -> None:
        self.optimizer_g = self.build_optimizer('optim_g', self.net_g.parameters())
        self.optimizer_d = self.build_optimizer('optim_d', self.net_d.parameters())

    def saved_networks(self) -> Dict[str, nn.Module]:
        return {'net_sem': self.net_sem} if self.net_sem is not None else {}

    def _check_d_input_size(self, bare_d) -> None:
        gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size', self.opt.get('gt_size'))
        min_size = getattr(bare_d, 'min_input_size', None)
        if gt_size is not None and min_size is not None and int(gt_size) < min_size:
            raise ValueError(f"Option 'datasets.train.gt_size' = {gt_size} is smaller than the minimum input size "
                             f"{min_size} of 'network_d' ({type(bare_d).__name__}).")

    def semantic_source(self) -> Tensor:
        """The HR images whose semantics condition the discriminator."""
        return self.gt

    def run_d(self, x: Tensor, return_seg: bool = False) -> DOutput:
        """``net_d`` on ``x`` (which may stack several copies of the batch) under the batch's semantics."""
        kwargs = {'return_seg': return_seg} if self.d_has_seg else {}
        if self.semantic_conditioner is not None:
            kwargs['semantic'] = self.semantic_conditioner.repeated(x.size(0))
        return self.net_d(x, **kwargs)

    # ------------------------------------------------------------------------------------------ training step
    def loss_targets(self) -> Dict[str, Tensor]:
        """HR targets of the pixel, perceptual and GAN terms (Real-ESRGAN may use sharpened ones)."""
        return {'pix': self.gt, 'percep': self.gt, 'gan': self.gt}

    def before_step(self) -> None:
        """Checks at the start of a training step (e.g. that the batch has labels)."""

    def optimize_parameters(self, current_iter: int) -> None:
        self.before_step()
        if self.semantic_conditioner is not None:
            self.semantic_conditioner.compute(self.semantic_source())
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
        """Content + adversarial (+ :meth:`extra_generator_loss`) terms of ``self.output``."""
        l_total = self.content_loss(loss_dict)
        fake = self.run_d(self.output, return_seg=self.generator_needs_seg(current_iter))
        fake_rf = real_fake_scores(fake)
        if self.relativistic:
            with torch.no_grad():
                real_rf = real_fake_scores(self.run_d(self.loss_targets()['gan']))
            l_g_gan = (self.cri_gan(real_rf - fake_rf.mean(), False, is_disc=False) +
                       self.cri_gan(fake_rf - real_rf.mean(), True, is_disc=False)) / 2
        else:
            l_g_gan = self.cri_gan(fake_rf, True, is_disc=False)
        loss_dict['l_g_gan'] = l_g_gan
        return l_total + l_g_gan + self.extra_generator_loss(current_iter, loss_dict, fake)

    def generator_needs_seg(self, current_iter: int) -> bool:
        """Whether the generator step needs the discriminator's segmentation output."""
        return False

    def content_loss(self, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Pixel and perceptual/style losses of ``self.output`` against :meth:`loss_targets` (those configured)."""
        return content_loss(self.output, self.loss_targets(), loss_dict, self.cri_pix, self.cri_perceptual)

    def extra_generator_loss(self, current_iter: int, loss_dict: Dict[str, Tensor], fake: DOutput) -> Tensor:
        """Further generator terms (none here); ``fake`` is the discriminator's output on ``self.output``."""
        return self.output.new_zeros(())

    def discriminator_loss(self, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Real/fake (+ :meth:`extra_discriminator_loss`) from ONE forward pass over ``[HR; SR.detach()]``.

        One pass (rather than BasicSR's separate real and fake passes) runs every parameter exactly once per
        backward, which keeps DistributedDataParallel happy without ``find_unused_parameters``. Discriminators
        without batch statistics (spectral norm, the default) give the same result as two passes.
        """
        both = self.run_d(torch.cat([self.loss_targets()['gan'], self.output.detach()], dim=0),
                          return_seg=self.d_has_seg)
        real_rf, fake_rf = real_fake_scores(both).chunk(2)
        l_d_real, l_d_fake = self.discriminator_gan_loss(real_rf, fake_rf)
        loss_dict.update(l_d_real=l_d_real, out_d_real=real_rf.detach().mean(), l_d_fake=l_d_fake,
                         out_d_fake=fake_rf.detach().mean())
        return l_d_real + l_d_fake + self.extra_discriminator_loss(both, loss_dict)

    def extra_discriminator_loss(self, both: DOutput, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Further discriminator terms (none here); ``both`` is its output on ``[HR; SR]``."""
        return real_fake_scores(both).new_zeros(())

    def discriminator_gan_loss(self, real_rf: Tensor, fake_rf: Tensor) -> Tuple[Tensor, Tensor]:
        """Standard or relativistic-average (ESRGAN) real and fake terms."""
        if self.relativistic:
            l_real = self.cri_gan(real_rf - fake_rf.detach().mean(), True, is_disc=True) * 0.5
            l_fake = self.cri_gan(fake_rf - real_rf.detach().mean(), False, is_disc=True) * 0.5
            return l_real, l_fake
        return self.cri_gan(real_rf, True, is_disc=True), self.cri_gan(fake_rf, False, is_disc=True)
