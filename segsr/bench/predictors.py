"""A fine-tuned row's own task network, loaded from its saved run (a recipe's ``own`` predictor kind).

``'task'``: the run's trained task network (SR4IR's ``net_task``); ``'disc'``: its discriminator's task head
(SegAwareGAN, the combination), given the deployed network's semantics when the run has a semantic extractor
(``network_sem``): what the model's own validation scores (``own_predictors``), from the files of a finished run.
"""
import os.path as osp
from typing import Callable, Dict

import torch
from basicsr.archs import build_network
from torch import nn

from segsr.models.task_eval import Predictor, build_judge, discriminator_predictor, network_predictor
from segsr.weights import freeze


def _saved_net(network: dict, models_dir: str, net: str, device: torch.device, name: str) -> nn.Module:
    """The frozen network ``net`` (``net_<net>_latest.pth``, ``params``) of the run ``name``."""
    ckpt = {'network': network, 'path': osp.join(models_dir, f'net_{net}_latest.pth'), 'param_key': 'params'}
    return build_judge(ckpt, device, f'{name} net_{net}')


def _task_net(opt: dict, models_dir: str, device: torch.device, name: str) -> Predictor:
    return network_predictor(_saved_net(opt['network_task'], models_dir, 'task', device, name))


def _disc_head(opt: dict, models_dir: str, device: torch.device, name: str) -> Predictor:
    net_d = _saved_net(opt['network_d'], models_dir, 'd', device, name)
    sem = freeze(build_network(opt['network_sem']).to(device)) if opt.get('network_sem') else None
    return discriminator_predictor(net_d, sem)


OWN_PREDICTORS: Dict[str, Callable[[dict, str, torch.device, str], Predictor]] = {'task': _task_net,
                                                                                  'disc': _disc_head}


def own_predictor(kind: str, opt: dict, run_dir: str, device: torch.device, name: str) -> Predictor:
    """The method's own task network on its SR output, from a finished run.

    Args:
        kind: ``'task'`` (the run's ``net_task``) or ``'disc'`` (the task head of its ``net_d``).
        opt: The run's BasicSR options (``network_task`` / ``network_d``, ``network_sem``).
        run_dir: The run's folder (checkpoints in ``models/``).
        device: Where the network runs.
        name: The run (step id), for messages.
    """
    if kind not in OWN_PREDICTORS:
        raise ValueError(f'{name}: own predictor {kind!r}; expected one of {list(OWN_PREDICTORS)}.')
    return OWN_PREDICTORS[kind](opt, osp.join(run_dir, 'models'), device, name)
