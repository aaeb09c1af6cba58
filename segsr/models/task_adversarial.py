"""The segmentation-aware GAN's task terms: a part of :class:`~segsr.models.seg_aware_gan_model.SegAwareGANModel`."""
from typing import Dict, Mapping, Optional

from basicsr.losses import build_loss
from torch import Tensor, nn


class TaskAdversarialTerm:
    """The segmentation-aware GAN's task terms: the generator's task-adversarial loss and the discriminator's task loss.

    Options (``train``): ``d_task_opt`` (required: trains the discriminator's task head), ``task_adv_opt`` (absent:
    no task push on the generator, an ablation) and ``task_warmup_iter`` (iterations without it; default 0).

    Args:
        d_task: The discriminator's task loss (:class:`DiscriminatorTaskLoss`).
        task_adv: The generator's task-adversarial loss (None: off).
        warmup_iter: The generator term is off up to and including this iteration.
    """

    OPTION_KEYS = {'train': ('task_adv_opt', 'd_task_opt', 'task_warmup_iter')}

    def __init__(self, d_task: nn.Module, task_adv: Optional[nn.Module] = None, warmup_iter: int = 0) -> None:
        self.d_task = d_task
        self.task_adv = task_adv
        self.warmup_iter = int(warmup_iter)

    @classmethod
    def from_opt(cls, train_opt: Mapping, device) -> 'TaskAdversarialTerm':
        """The terms of the ``train`` block, on ``device``."""
        if not train_opt.get('d_task_opt'):
            raise ValueError("Option 'train.d_task_opt' (e.g. {type: DiscriminatorTaskLoss}) is required by "
                             'SegAwareGANModel: it trains the discriminator\'s task head.')
        task_adv = train_opt.get('task_adv_opt')
        return cls(build_loss(train_opt['d_task_opt']).to(device),
                   build_loss(task_adv).to(device) if task_adv else None, int(train_opt.get('task_warmup_iter', 0)))

    def generator_active(self, current_iter: int) -> bool:
        """Whether the generator gets the task-adversarial term at this iteration."""
        return self.task_adv is not None and current_iter > self.warmup_iter

    def generator_loss(self, fake_seg: Tensor, seg: Tensor, loss_dict: Dict[str, Tensor]) -> Tensor:
        """The task-adversarial term of the discriminator's segmentation of SR images (logged ``l_g_task``)."""
        loss_dict['l_g_task'] = self.task_adv(fake_seg, seg)
        return loss_dict['l_g_task']

    def discriminator_loss(self, both_seg: Tensor, seg: Tensor, loss_dict: Dict[str, Tensor]) -> Tensor:
        """Task loss of the segmentation head on HR (and optionally SR) images, from its output on ``[HR; SR]``."""
        real_seg, fake_seg = both_seg.chunk(2)
        l_d_task, l_d_task_sr = self.d_task(real_seg, seg, fake_seg)
        loss_dict['l_d_task'] = l_d_task
        if l_d_task_sr is None:
            return l_d_task
        loss_dict['l_d_task_sr'] = l_d_task_sr
        return l_d_task + l_d_task_sr
