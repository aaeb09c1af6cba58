"""The task contract: what a recognition task (segmentation, detection, classification) tells the rest of segsr.

Models, the validator, the evaluation command and the benchmark never test which task they run; they ask the
:class:`Task` of their data and task network:

- :meth:`Task.targets`: the batch's targets on a device (a label map, a list of box dicts, class indices), None
  for an unlabelled batch;
- :meth:`Task.view_losses`: the training loss of a task network on one or more views of the batch (SR4IR's task
  phase; a judge's training on HR);
- :meth:`Task.frozen_loss`: the same loss through a frozen network, with gradients only to the image (*SR for my
  segmenter / detector / classifier*);
- :meth:`Task.meter`: a :class:`Meter` that scores predictions image by image and keeps per-image statistics for
  the intervals (:mod:`segsr.metrics.bootstrap`);
- :meth:`Task.picture`: a picture of a prediction for people.

A task network is any registered network with the task-net contract (:mod:`segsr.archs.task_net_util`): RGB in
[0, 1], an output dict with ``'out'``, named ``'features'`` for TDP; its ``task`` attribute names its task.

Adding a task is one file in this folder with a :class:`Task` subclass decorated with :func:`register_task`.
"""
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from segsr.metrics.bootstrap import PairedInterval
from segsr.weights import frozen_eval

_TASKS: Dict[str, 'Task'] = {}
View = Tuple[str, Tensor]


def register_task(cls):
    """Class decorator: register one instance of a :class:`Task` subclass under its ``name``."""
    if cls.name in _TASKS:
        raise KeyError(f"Task '{cls.name}' is registered twice.")
    _TASKS[cls.name] = cls()
    return cls


def get_task(name: str, option_name: str = 'task') -> 'Task':
    """The registered task called ``name`` (``seg``, ``det``, ``cls``); ``ValueError`` naming ``option_name``."""
    if name not in _TASKS:
        raise ValueError(f"Option '{option_name}' = {name!r} is not a task; known: {sorted(_TASKS)}.")
    return _TASKS[name]


def task_names() -> List[str]:
    return sorted(_TASKS)


def task_of_network(net: nn.Module) -> 'Task':
    """The task of a task network (its ``task`` attribute; networks without one, e.g. discriminators with a
    segmentation head, are segmentation networks)."""
    net = getattr(net, 'module', net)
    return get_task(getattr(net, 'task', 'seg'), f'{type(net).__name__}.task')


def task_of_dataset_opt(dataset_opt: Optional[Mapping]) -> Optional['Task']:
    """The task whose targets a dataset block's type returns (None: a plain SR dataset)."""
    if not dataset_opt:
        return None
    for task in _TASKS.values():
        if dataset_opt.get('type') in task.dataset_types:
            return task
    return None


class Meter:
    """Scores one predictor image by image over a set.

    Subclasses implement :meth:`add` (one image: record its statistics, return the prediction as pictures need it),
    :meth:`summary` (scalars and per-class lists) and :meth:`image_stats` (the per-image statistics the intervals
    resample).
    """

    def add(self, prediction, targets) -> object:
        raise NotImplementedError

    def summary(self) -> Dict[str, object]:
        raise NotImplementedError

    def image_stats(self) -> object:
        raise NotImplementedError


class Task:
    """One recognition task. Subclasses set the class attributes and implement the methods that raise.

    Attributes:
        name: Short name (``seg``, ``det``, ``cls``): the value of a task network's ``task`` attribute.
        target_keys: The batch keys that hold the targets; the first one marks a labelled batch.
        dataset_types: Registered dataset types that return this task's targets.
        main_metric: The summary key that ranks predictors (``miou``, ``map_50``, ``top1``).
        loss_types: Loss types a ``task_<view>_opt`` / ``sr_ce_opt`` block may use, for the error message.
        supports_views: Whether :class:`segsr.data.task_views.TaskViews` can move the targets with the image.
        report_metrics: ``(summary key, column label)`` of the metrics tables show, the main one first.
        scoring_version: Raised whenever the task's scores of the same predictions change (a metric fix); the
            benchmark scores again every row scored by an older version (a record without one counts as 1).
    """

    name = ''
    target_keys: Tuple[str, ...] = ()
    dataset_types: Tuple[str, ...] = ()
    main_metric = ''
    loss_types: Tuple[str, ...] = ()
    supports_views = False
    report_metrics: Tuple[Tuple[str, str], ...] = ()
    scoring_version = 1

    def __repr__(self) -> str:
        return f'<task {self.name}>'

    # ---------------------------------------------------------------------------------------------- data
    def has_targets(self, data: Mapping) -> bool:
        """Whether a batch carries this task's targets."""
        return self.target_keys[0] in data

    def targets(self, data: Mapping, device: torch.device):
        """The batch's targets on ``device``, or None when the batch has none."""
        raise NotImplementedError

    def random_targets(self, batch: int, height: int, width: int, num_classes: int,
                       generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Random targets in the dataset's batch layout (the keys of :attr:`target_keys`) for ``batch`` images of
        ``height`` x ``width``: what timing a training step needs without reading data."""
        raise NotImplementedError

    def check_loss(self, criterion: nn.Module, option_name: str) -> None:
        """Raise ``ValueError`` naming ``option_name`` when ``criterion`` is not a loss of this task."""
        if type(criterion).__name__ not in self.loss_types:
            raise ValueError(f"Option '{option_name}.type' = '{type(criterion).__name__}' is not a {self.name} task "
                             f'loss; use one of {list(self.loss_types)}.')

    # ------------------------------------------------------------------------------------------- losses
    def view_losses(self, net: nn.Module, views: Sequence[View], targets, criteria: Mapping[str, nn.Module],
                    aux_weight: float = 0.0) -> Dict[str, Tensor]:
        """The training loss of ``net`` (trainable) on each view of the batch (every view has the batch's targets).

        Args:
            net: The task network (possibly DDP-wrapped), in its training mode.
            views: ``(view name, images)`` pairs, images ``B x 3 x H x W`` in [0, 1].
            targets: The batch's targets (:meth:`targets`).
            criteria: ``view name -> loss`` (each with its own ``loss_weight``).
            aux_weight: Weight of an aux head's loss relative to the main head (networks that have one).

        Returns:
            ``view name -> loss``.
        """
        raise NotImplementedError

    def loss_terms(self, net: nn.Module, images: Tensor, targets, criterion: nn.Module,
                   aux_weight: float = 0.0) -> Dict[str, Tensor]:
        """The training loss of ``net`` on ``images`` as named terms (``''``: the main one; ``'aux'``: an aux head's,
        already weighted), for models that log them apart (a judge trained on HR)."""
        raise NotImplementedError

    def frozen_loss(self, net: nn.Module, images: Tensor, targets, criterion: nn.Module,
                    aux_weight: float = 0.0) -> Tensor:
        """The task loss of ``images`` through a frozen network (eval mode; gradients reach ``images`` only)."""
        raise NotImplementedError

    def loss_block(self, loss_weight: float = 1.0, ignore_index: int = 255) -> dict:
        """The option block of this task's standard loss (what the benchmark's rows train with)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ scoring
    def meter(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None) -> Meter:
        """A fresh :class:`Meter` for one predictor."""
        raise NotImplementedError

    def save_stats(self, stats) -> Dict[str, np.ndarray]:
        """Per-image statistics (:meth:`Meter.image_stats`) as named arrays for an ``.npz`` file; ``''`` names the
        main array."""
        return {'': np.stack(stats) if isinstance(stats, list) else np.asarray(stats)}

    def load_stats(self, arrays: Mapping[str, np.ndarray], num_classes: int,
                   class_names: Optional[Sequence[str]] = None):
        """The statistics :meth:`save_stats` wrote (``arrays`` holds its keys)."""
        return arrays['']

    def interval(self, stats, reference, block: int = 10, samples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> PairedInterval:
        """Paired bootstrap interval of the main metric of ``stats`` minus ``reference``'s (:meth:`Meter.image_stats`
        of two predictors on the same images, in the same order).

        Args:
            stats: The method's per-image statistics.
            reference: The reference's, on the same images.
            block: Consecutive images per resampled block (tasks on video frames); independent images use 1.
            samples: Bootstrap replicates.
            level: Confidence level.
            seed: Seed of the resampling.
        """
        raise NotImplementedError

    def picture(self, image: Tensor, prediction, targets, num_classes: int, palette=None,
                class_names: Optional[Sequence[str]] = None, caption: str = 'judge',
                image_caption: str = 'SR') -> np.ndarray:
        """RGB uint8 panel of ``image`` with ``prediction`` (what :meth:`Meter.add` returned) and the targets."""
        raise NotImplementedError

    def truth_picture(self, image: Tensor, targets, num_classes: int, palette=None,
                      class_names: Optional[Sequence[str]] = None, image_caption: str = 'HR') -> np.ndarray:
        """RGB uint8 picture of the targets of ``image`` (label map; boxes drawn; the true class)."""
        raise NotImplementedError

    def to_json(self, prediction, class_names: Sequence[str]) -> object:
        """What :meth:`Meter.add` returned, as JSON-ready lists and dicts with class names (inference files)."""
        raise NotImplementedError

    def picture_suffix(self) -> str:
        """File-name suffix of this task's pictures (``_seg``, ``_det``, ``_cls``)."""
        return f'_{self.name}'


class LogitsTask(Task):
    """Tasks whose network returns logits (``out``, optional ``aux``) scored by a criterion against the targets:
    segmentation (``B x C x H x W``) and classification (``B x C``). The views go through the network in one
    forward pass (BatchNorm statistics over their union, as SR4IR does) and the output is split per view."""

    def head_loss(self, criterion: nn.Module, out: Mapping[str, Tensor], targets: Tensor, aux_weight: float) -> Tensor:
        """``criterion`` on the main logits plus ``aux_weight`` times it on the aux logits (when present)."""
        loss = criterion(out['out'], targets)
        if aux_weight > 0 and 'aux' in out:
            loss = loss + aux_weight * criterion(out['aux'], targets)
        return loss

    def loss_terms(self, net, images, targets, criterion, aux_weight=0.0):
        out = net(images)
        terms = {'': criterion(predictor_output(out), targets)}
        if aux_weight > 0 and 'aux' in out:
            terms['aux'] = aux_weight * criterion(out['aux'], targets)
        return terms

    def view_losses(self, net, views, targets, criteria, aux_weight=0.0):
        out = net(torch.cat([img for _, img in views], dim=0))
        chunks = {key: value.chunk(len(views)) for key, value in out.items() if key in ('out', 'aux')}
        return {view: self.head_loss(criteria[view], {key: value[i] for key, value in chunks.items()}, targets,
                                     aux_weight) for i, (view, _) in enumerate(views)}

    def frozen_loss(self, net, images, targets, criterion, aux_weight=0.0):
        with frozen_eval(net):
            out = net(images)
        return self.head_loss(criterion, out, targets, aux_weight)


def predictor_output(out) -> object:
    """A task network's prediction from its output dict: ``out['out']`` (logits, detections), a segmentation-aware
    discriminator's ``out['seg']``, or the output itself when it is not a dict."""
    if not isinstance(out, dict):
        return out
    return out['out'] if 'out' in out else out['seg']


Predictor = Callable[[Tensor], object]
