"""The task-driven perceptual (TDP) term shared by every model that uses one (SR4IRModel, SegAwareGANModel)."""
from typing import Dict, Optional

from basicsr.losses import build_loss
from torch import Tensor, nn

from segsr.losses.tdp_loss import TDPLoss


class TDPMixin:
    """Adds ``train.tdp_opt`` (a :class:`TDPLoss` block) and ``train.tdp_warmup_iter`` to an SR model.

    The model calls :meth:`init_tdp` with its task network once the network is built, then adds
    :meth:`tdp_loss` to the generator's loss. The task network is used through its bare module (never through
    DDP) in eval mode, and gets no gradient from this term.
    """

    OPTION_KEYS = {'train': ('tdp_opt', 'tdp_warmup_iter')}

    def init_tdp(self, task_net: Optional[nn.Module], option_name: str = 'train.tdp_opt') -> None:
        """Build the TDP criterion (absent block: none) and check its layers against ``task_net``."""
        train_opt = self.opt['train']
        tdp_opt = train_opt.get('tdp_opt')
        self.tdp_warmup_iter = int(train_opt.get('tdp_warmup_iter', 0))
        self.cri_tdp = None
        self.tdp_net = None
        if not tdp_opt:
            return
        if task_net is None:
            raise ValueError(f"Option '{option_name}' needs a task network: add a 'network_task' block "
                             "(and its weights in 'path.pretrain_network_task').")
        self.cri_tdp = build_loss(tdp_opt).to(self.device)
        if not isinstance(self.cri_tdp, TDPLoss):
            raise ValueError(f"Option '{option_name}.type' = '{tdp_opt.get('type')}' is not a TDPLoss.")
        self.tdp_net = self.get_bare_model(task_net)
        self.cri_tdp.check_network(self.tdp_net, option_name)

    def tdp_active(self, current_iter: int) -> bool:
        return self.cri_tdp is not None and current_iter > self.tdp_warmup_iter

    def tdp_loss(self, current_iter: int, loss_dict: Dict[str, Tensor]) -> Optional[Tensor]:
        """TDP between ``self.output`` and ``self.gt`` (logged as ``l_tdp``); None during the warm-up."""
        if not self.tdp_active(current_iter):
            return None
        loss_dict['l_tdp'] = self.cri_tdp(self.output, self.gt, self.tdp_net)
        return loss_dict['l_tdp']
