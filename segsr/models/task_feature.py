"""The task-driven perceptual (TDP) term: a part of every model that uses one (SR4IRModel, SegAwareGANModel)."""
from typing import Dict, Mapping, Optional

import torch
from basicsr.losses import build_loss
from torch import Tensor, nn

from segsr.losses.tdp_loss import TDPLoss


class TDPTerm:
    """SR4IR's TDP loss of the SR image against HR through a task network, after a warm-up.

    Options (``train``): ``tdp_opt`` (a :class:`TDPLoss` block; absent: no term, :meth:`from_opt` gives None) and
    ``tdp_warmup_iter`` (iterations without it; default 0). The task network is used through its bare module (never
    through DDP) in eval mode, and gets no gradient from this term.

    Args:
        criterion: The TDP loss.
        net: The bare task network whose features it compares.
        warmup_iter: The term is off up to and including this iteration.
    """

    OPTION_KEYS = {'train': ('tdp_opt', 'tdp_warmup_iter')}

    def __init__(self, criterion: TDPLoss, net: nn.Module, warmup_iter: int = 0) -> None:
        self.criterion = criterion
        self.net = net
        self.warmup_iter = int(warmup_iter)

    @classmethod
    def from_opt(cls, train_opt: Mapping, task_net: Optional[nn.Module], device: torch.device,
                 option_name: str = 'train.tdp_opt') -> Optional['TDPTerm']:
        """The term of ``train.tdp_opt`` (None without the block), its layers checked against ``task_net``.

        Args:
            train_opt: The ``train`` block.
            task_net: The bare task network (None: the model has none, an error when the block is set).
            device: Where the loss runs.
            option_name: The block's name in errors.
        """
        tdp_opt = train_opt.get('tdp_opt')
        if not tdp_opt:
            return None
        if task_net is None:
            raise ValueError(f"Option '{option_name}' needs a task network: add a 'network_task' block "
                             "(and its weights in 'path.pretrain_network_task').")
        criterion = build_loss(tdp_opt).to(device)
        if not isinstance(criterion, TDPLoss):
            raise ValueError(f"Option '{option_name}.type' = '{tdp_opt.get('type')}' is not a TDPLoss.")
        criterion.check_network(task_net, option_name)
        return cls(criterion, task_net, int(train_opt.get('tdp_warmup_iter', 0)))

    def active(self, current_iter: int) -> bool:
        """Whether the warm-up is over."""
        return current_iter > self.warmup_iter

    def loss(self, output: Tensor, gt: Tensor, current_iter: int, loss_dict: Dict[str, Tensor]) -> Optional[Tensor]:
        """TDP between ``output`` and ``gt`` (logged as ``l_tdp``); None during the warm-up."""
        if not self.active(current_iter):
            return None
        loss_dict['l_tdp'] = self.criterion(output, gt, self.net)
        return loss_dict['l_tdp']
