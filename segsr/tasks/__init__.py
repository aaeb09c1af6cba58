"""Recognition tasks behind one contract (:mod:`segsr.tasks.base`): segmentation, detection, classification.

Imports every module of this folder so that its task registers (:func:`~segsr.tasks.base.register_task`): adding a
task is adding a file here.
"""
import importlib
import pkgutil

from segsr.tasks.base import (LogitsTask, Meter, Predictor, Task, get_task, predictor_output, register_task,
                              task_names, task_of_dataset_opt, task_of_network)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != 'base':
        importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['LogitsTask', 'Meter', 'Predictor', 'Task', 'get_task', 'predictor_output', 'register_task', 'task_names',
           'task_of_dataset_opt', 'task_of_network']
