"""Input checking shared by the task metrics: numbers from tensors, arrays or lists, errors naming the argument."""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def as_finite_tensor(value: ArrayLike, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``value`` (tensor on any device, array, list or number) as a CPU tensor of ``dtype``.

    Args:
        value: The input.
        name: The argument's name, for the error message.
        dtype: Type of the result. Default: float64.

    Returns:
        A detached CPU tensor of the input's shape.

    Raises:
        ValueError: ``value`` is not real numbers (strings, complex, bool, ragged lists) or holds NaN / infinity.
    """
    try:
        tensor = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor) else np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f'{name}: expected a tensor or array of numbers ({err}).') from err
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f'{name}: expected real numbers, got dtype {tensor.dtype}.')
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f'{name}: contains NaN or infinite values.')
    return tensor.to(dtype)


def as_class_indices(value: ArrayLike, name: str, num_classes: int) -> torch.Tensor:
    """Class indices as a flat int64 tensor, each an integer in ``[0, num_classes)``.

    Args:
        value: The indices (any shape; float values must be whole numbers).
        name: The argument's name, for the error message.
        num_classes: Number of classes.

    Returns:
        A 1-D int64 CPU tensor.

    Raises:
        ValueError: not whole numbers, or out of range.
    """
    labels = as_finite_tensor(value, name).reshape(-1)
    if bool((labels != labels.round()).any()):
        raise ValueError(f'{name}: expected integer class indices, got {labels.tolist()}.')
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        raise ValueError(f'{name}: class indices {labels[bad].long().tolist()} are out of range [0, {num_classes}).')
    return labels.long()


def check_classes(num_classes: int, class_names: Optional[Sequence[str]]) -> List[str]:
    """The class names of a metric: ``class_names`` as strings, or ``'0', '1', ...``.

    Args:
        num_classes: Number of classes (>= 1).
        class_names: Given names or ``None``.

    Returns:
        ``num_classes`` distinct names.

    Raises:
        ValueError: ``num_classes < 1`` or ``class_names`` not ``num_classes`` distinct names.
    """
    if int(num_classes) < 1:
        raise ValueError(f'num_classes must be >= 1, got {num_classes}.')
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(int(num_classes))]
    if len(names) != int(num_classes) or len(set(names)) != len(names):
        raise ValueError(f'class_names: expected {num_classes} distinct names, got {names}.')
    return names
