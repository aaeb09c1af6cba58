"""The task validator: the part of every segsr SR model that scores its outputs during validation.

:class:`TaskValidator` owns the frozen judge (``val.judge``; None when off), builds the segmentation predictors (the
judge's plus those the model adds through ``own_predictors()``), runs a :class:`~segsr.models.task_eval.TaskScorer`
over the validation set, saves pictures and keeps the best-metric record. Models build it in ``__init__``
(:class:`segsr.models.base.SegsrModelMixin`) and BasicSR's ``nondist_validation`` hands the work to it, so models
that change validation (Real-ESRGAN's paired-data toggle) keep working through ``super()``.
"""
import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from basicsr.utils import get_root_logger

from segsr.models.base import check_num_classes
from segsr.models.task_eval import TaskScorer, build_judge, network_predictor
from segsr.tasks import Predictor, Task, get_task, task_of_network
from segsr.utils.visual import save_rgb, tensor_to_rgb


class TaskValidator:
    """Task-aware validation of an SR model: ``val.metrics`` (PSNR/SSIM...) and each predictor's task metric.

    Logs the ``val.metrics`` next to the judge's task metrics when ``val.judge`` is set (``judge_miou`` /
    ``judge_pixacc``; ``judge_map`` / ``judge_map_50``; ``judge_top1`` / ``judge_top5``), plus any predictors the model
    adds (``model.own_predictors()``: SR4IR's ``task``, the task-branch discriminator's ``disc``). With ``save_img``
    it saves the SR image as BasicSR does and, per predictor, a panel of its prediction (``*_<name>_seg.png``: SR |
    prediction | ground truth; ``_det``: boxes drawn; ``_cls``: the predicted class).

    Args:
        opt: The model's options (read, never changed).
        device: Where the judge runs.
    """

    OPTION_KEYS = {'val': ('judge', 'metrics', 'suffix'), 'val.judge': ('network', 'path', 'param_key')}

    def __init__(self, opt: Mapping, device: torch.device) -> None:
        self.opt = opt
        self.judge = self._build_judge(device)
        self.best_metric_results: Dict[str, Dict[str, dict]] = {}

    def _build_judge(self, device: torch.device) -> Optional[torch.nn.Module]:
        """The frozen judge of ``val.judge`` (None without one), built now so a bad block fails before training."""
        judge_opt = (self.opt.get('val') or {}).get('judge')
        if not judge_opt:
            return None
        declared = (judge_opt.get('network') or {}).get('num_classes') if isinstance(judge_opt, dict) else None
        if declared is not None:  # before loading: a clearer message than a state-dict size mismatch
            check_num_classes(self.opt, declared, 'val.judge.network.num_classes')
        judge = build_judge(judge_opt, device)
        check_num_classes(self.opt, judge.num_classes, 'val.judge.network.num_classes')
        return judge

    def predictors(self, own: Mapping[str, Predictor]) -> Dict[str, Predictor]:
        """The judge's predictor (when there is a judge) followed by the model's own ones."""
        predictors = {'judge': network_predictor(self.judge)} if self.judge is not None else {}
        predictors.update(own)
        return predictors

    def task_for(self, model, dataset) -> Task:
        """The task being scored: the judge's, else the model's (``model.task``), else segmentation; a dataset that
        declares another task (its ``task`` attribute) is an error naming both."""
        task = task_of_network(self.judge) if self.judge is not None else getattr(model, 'task', None) or \
            get_task('seg')
        declared = getattr(dataset, 'task', None)
        if declared is not None and declared != task.name:
            raise ValueError(f"Validation set '{dataset.opt.get('name')}' holds '{declared}' targets but the "
                             f"networks scored ({'val.judge' if self.judge is not None else 'the model'}) solve "
                             f"'{task.name}'.")
        return task

    def validate(self, model, dataloader, current_iter: int, tb_logger, save_img: bool) -> None:
        """Score ``model`` (``feed_data`` + ``test`` per batch) on ``dataloader``; log and record the results."""
        dataset = dataloader.dataset
        task = self.task_for(model, dataset)
        num_classes = getattr(dataset, 'num_classes', None) or dataset.opt.get('num_classes')
        predictors = self.predictors(model.own_predictors())
        scorer = TaskScorer(self.opt['val'].get('metrics'), predictors, num_classes,
                            dataset.opt.get('ignore_index', 255), task, class_names_of(dataset))
        for val_data in dataloader:
            model.feed_data(val_data)
            model.test()
            targets = task.targets(val_data, torch.device('cpu'))
            record = scorer.add(model.output, val_data.get('gt'), targets)
            if save_img:
                img_name = os.path.splitext(os.path.basename(val_data['lq_path'][0]))[0]
                self.save_pictures(model.output, self.picture_base(img_name, current_iter, dataset.opt['name']),
                                   record, predictors, targets, getattr(dataset, 'palette', None), num_classes, task,
                                   class_names_of(dataset))
        self.finish(model, scorer.summary(), current_iter, dataset.opt['name'], tb_logger, class_names_of(dataset))

    def picture_base(self, img_name: str, current_iter: int, dataset_name: str) -> str:
        """Path prefix of an image's pictures: BasicSR's visualization layout for training and testing runs."""
        if self.opt['is_train']:
            return os.path.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}')
        suffix = self.opt['val'].get('suffix') or self.opt['name']
        return os.path.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}')

    @staticmethod
    def save_pictures(output: torch.Tensor, base: str, record: Mapping, predictors: Mapping[str, Predictor],
                      targets, palette, num_classes: Optional[int], task: Optional[Task] = None,
                      class_names: Optional[Sequence[str]] = None) -> None:
        """The SR image (``<base>.png``) and one task panel per predictor (``<base>_<name>_seg.png``; ``_det``,
        ``_cls`` for the other tasks)."""
        task = task or get_task('seg')
        save_rgb(base + '.png', tensor_to_rgb(output))
        for name in predictors:
            save_rgb(f'{base}_{name}{task.picture_suffix()}.png',
                     task.picture(output, record[f'{name}_pred'], targets, num_classes, palette, class_names, name))

    def finish(self, model, summary: Dict[str, object], current_iter: int, dataset_name: str, tb_logger,
               class_names: Optional[Sequence[str]] = None) -> None:
        """Set ``model.metric_results`` (BasicSR's), update the best-metric record and log both."""
        scalars = {k: float(v) for k, v in summary.items() if not isinstance(v, list)}
        model.metric_results = scalars
        record_best_metrics(self.best_metric_results, self.opt['val'].get('metrics'), dataset_name, scalars,
                            current_iter)
        log_validation(f'Validation {dataset_name}', dataset_name, scalars, self.best_metric_results, current_iter,
                       tb_logger)
        log_per_class_iou(summary, dataset_name, class_names)


def record_best_metrics(best: Dict[str, Dict[str, dict]], metrics_opt: Optional[Mapping], dataset_name: str,
                        scalars: Mapping[str, float], current_iter: int) -> None:
    """BasicSR-style best-metric bookkeeping for any set of scalars (``val.metrics.<name>.better`` respected).

    Args:
        best: ``{dataset: {metric: {better, val, iter}}}``, updated in place (BasicSR's ``best_metric_results``).
        metrics_opt: The ``val.metrics`` block (for ``better``); None: every metric is better when higher.
        dataset_name: The validation set.
        scalars: This validation's values.
        current_iter: The iteration they belong to.
    """
    record = best.setdefault(dataset_name, {})
    for name, value in scalars.items():
        better = ((metrics_opt or {}).get(name) or {}).get('better', 'higher')
        entry = record.setdefault(name, dict(better=better, val=float('-inf') if better == 'higher' else float('inf'),
                                             iter=-1))
        improved = value >= entry['val'] if better == 'higher' else value <= entry['val']
        if improved:
            entry['val'], entry['iter'] = value, current_iter


def log_validation(header: str, dataset_name: str, scalars: Mapping[str, float], best: Mapping, current_iter: int,
                   tb_logger) -> None:
    """BasicSR's validation log (``# metric: value  Best: value @ iter``) and tensorboard scalars."""
    lines = [header]
    for metric, value in scalars.items():
        entry = best[dataset_name][metric]
        lines.append(f'\t # {metric}: {value:.4f}\tBest: {entry["val"]:.4f} @ {entry["iter"]} iter')
    get_root_logger().info('\n'.join(lines) + '\n')
    if tb_logger:
        for metric, value in scalars.items():
            tb_logger.add_scalar(f'metrics/{dataset_name}/{metric}', value, current_iter)


def log_per_class_iou(summary: Mapping[str, object], dataset_name: str,
                      class_names: Optional[Sequence[str]] = None) -> None:
    """Log each predictor's per-class IoU on one line."""
    logger = get_root_logger()
    for key, values in summary.items():
        if key.endswith('_iou') and isinstance(values, list):
            names = class_names or [str(i) for i in range(len(values))]
            parts = ', '.join(f'{n}: {v:.1f}' if not np.isnan(v) else f'{n}: n/a' for n, v in zip(names, values))
            logger.info(f'Per-class IoU ({key[:-4]}) on {dataset_name}: {parts}')


def class_names_of(dataset) -> Optional[List[str]]:
    """Class names a dataset declares (``dataset.class_names``), if any."""
    return getattr(dataset, 'class_names', None)
