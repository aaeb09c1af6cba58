"""Image classification scores: top-k accuracy and per-class accuracy, kept per image for the bootstrap.

Conventions:
    * An image is correct at ``k`` when its true class is among the ``k`` highest scores. A tie counts against the
      prediction: the true class's rank is the number of *other* classes scoring at least as high, and the image is
      correct at ``k`` when that rank is below ``k`` (so a constant output is never right at top-1). Without ties
      this is ``torch.topk``'s answer.
    * Logits and probabilities give the same ranks (softmax keeps the order), so either may be passed.
    * Per-class accuracy is top-1 accuracy over the images of that class (recall); NaN for a class without images.
      All scores are in percent.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from segsr.metrics.inputs import ArrayLike, as_class_indices, as_finite_tensor, check_classes


class ClassificationScores:
    """Per-image ranks of the true class over a set; top-k and per-class accuracy of any subset.

    Args:
        num_classes: Number of classes; targets are ``0 .. num_classes - 1``.
        topk: The ``k`` values :meth:`summary` reports (``top<k>``). Default: ``(1, 5)``.
        class_names: Names for the per-class keys (``acc_<name>``); default ``'0', '1', ...``.

    Raises:
        ValueError: ``num_classes < 1``, a ``topk`` value outside ``[1, num_classes]``, or ``class_names`` not
            ``num_classes`` distinct names.
    """

    def __init__(self, num_classes: int, topk: Sequence[int] = (1, 5),
                 class_names: Optional[Sequence[str]] = None) -> None:
        self.class_names = check_classes(num_classes, class_names)
        self.num_classes = int(num_classes)
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or any(not 1 <= k <= self.num_classes for k in self.topk):
            raise ValueError(f'topk: expected values in [1, {self.num_classes}] (num_classes), got {tuple(topk)}.')
        self._ranks: List[np.ndarray] = []
        self._targets: List[np.ndarray] = []

    def __len__(self) -> int:
        return int(sum(len(t) for t in self._targets))

    def reset(self) -> None:
        """Forget every image."""
        self._ranks, self._targets = [], []

    def add(self, logits_or_probs: ArrayLike, target: ArrayLike) -> None:
        """Add one image (``(C,)`` scores, a scalar target) or a batch (``(B, C)`` scores, ``(B,)`` targets).

        Args:
            logits_or_probs: Class scores, logits or probabilities, ``C = num_classes``.
            target: True class indices in ``[0, num_classes)``.

        Raises:
            ValueError: a wrong shape, a non-finite score, or a target that is not an integer in range; the message
                names the argument.
        """
        given = as_finite_tensor(logits_or_probs, 'logits_or_probs')
        scores = given[None] if given.dim() == 1 else given
        if scores.dim() != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(f'logits_or_probs: expected shape ({self.num_classes},) or (B, {self.num_classes}), '
                             f'got shape {tuple(given.shape)}.')
        labels = as_class_indices(target, 'target', self.num_classes)
        if labels.shape[0] != scores.shape[0]:
            raise ValueError(f'target: expected {scores.shape[0]} class indices (one per image), '
                             f'got {labels.shape[0]}.')
        true_score = scores.gather(1, labels[:, None])
        ranks = (scores >= true_score).sum(1) - 1  # other classes scoring at least as high
        self._ranks.append(ranks.numpy())
        self._targets.append(labels.numpy())

    def ranks(self) -> np.ndarray:
        """Rank of the true class per image (0: strictly the highest score), in :meth:`add` order."""
        return np.concatenate(self._ranks) if self._ranks else np.zeros(0, dtype=np.int64)

    def targets(self) -> np.ndarray:
        """True class per image, in :meth:`add` order."""
        return np.concatenate(self._targets) if self._targets else np.zeros(0, dtype=np.int64)

    def correct_at(self, k: int) -> np.ndarray:
        """Per-image correctness at top-``k``, for the bootstrap or a paired test.

        Args:
            k: Any value in ``[1, num_classes]`` (not only those of ``topk``).

        Returns:
            A bool array, one entry per image in :meth:`add` order.

        Raises:
            ValueError: ``k`` out of range.
        """
        if not 1 <= int(k) <= self.num_classes:
            raise ValueError(f'k: expected a value in [1, {self.num_classes}], got {k}.')
        return self.ranks() < int(k)

    def summary(self, indices: Optional[Sequence[int]] = None) -> Dict[str, float]:
        """Scores of the images ``indices`` (repeats count again, as a bootstrap draw needs).

        Args:
            indices: Positions of the images (in :meth:`add` order); default all.

        Returns:
            ``top<k>`` for each ``k`` of ``topk``, ``acc_<name>`` per class and ``num_images``; percent, NaN when
            there is no image (or no image of the class).

        Raises:
            ValueError: an index out of range.
        """
        ranks, targets = self.ranks(), self.targets()
        idx = np.arange(len(ranks)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(ranks)):
            raise ValueError(f'indices: out of range for {len(ranks)} images.')
        ranks, targets = ranks[idx], targets[idx]
        out: Dict[str, float] = {f'top{k}': _mean_percent(ranks < k) for k in self.topk}
        for cls, name in enumerate(self.class_names):
            out[f'acc_{name}'] = _mean_percent(ranks[targets == cls] < 1)
        out['num_images'] = int(idx.size)
        return out


def _mean_percent(correct: np.ndarray) -> float:
    """Share of ``True`` in percent; NaN for an empty array."""
    return 100.0 * float(correct.mean()) if correct.size else float('nan')
