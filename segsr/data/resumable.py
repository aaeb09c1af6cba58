"""Training data that a resumed run sees exactly as the uninterrupted run would have.

BasicSR's loop replays an interrupted epoch from its start, and its data randomness (crops, flips, degradations)
comes from generators that each worker reseeds to the same values at every epoch: a run resumed mid-epoch sees other
batches than the run it continues. Here

- :class:`ResumableSampler` gives BasicSR's enlarged, per-rank shuffled order (reshuffled per epoch, and per
  ``manual_seed``) and can start an epoch at any position;
- every sample carries its own seed, mixed from ``(manual_seed, epoch, rank, position)``; :class:`SeededDataset`
  seeds ``random``, NumPy and torch's CPU generator with it before reading the sample (and restores them after, when
  it runs in the training process), so a sample's augmentation depends only on where it sits in the run, not on the
  worker that reads it or on ``num_worker_per_gpu``.
"""
import math
from typing import Iterator, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from segsr.utils.rng import isolated_rng, sample_seed, seed_host_generators


class ResumableSampler(Sampler):
    """BasicSR's ``EnlargedSampler`` order, yielding ``(index, seed)`` pairs, and able to start mid-epoch.

    Args:
        dataset: The dataset to sample from.
        num_replicas: World size.
        rank: This process's rank.
        ratio: ``dataset_enlarge_ratio``: each epoch walks the data this many times.
        seed: The run's ``manual_seed``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, ratio: int = 1, seed: int = 0):
        self.dataset_size = len(dataset)
        if self.dataset_size == 0:
            raise ValueError('ResumableSampler: the training dataset is empty.')
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.num_samples = math.ceil(self.dataset_size * int(ratio) / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Shuffle for ``epoch`` and skip its first ``start`` samples of this rank (resume mid-epoch)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f'ResumableSampler: start {start} is outside the epoch (0..{self.num_samples}).')
        self.epoch, self.start = int(epoch), int(start)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        g = torch.Generator()
        g.manual_seed(sample_seed(self.seed, self.epoch))
        indices = torch.randperm(self.total_size, generator=g)[self.rank:self.total_size:self.num_replicas]
        for position in range(self.start, self.num_samples):
            yield int(indices[position]) % self.dataset_size, sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return self.num_samples - self.start


class SeededDataset(Dataset):
    """Wrap a dataset so that item ``(index, seed)`` is read with the host generators seeded by ``seed``.

    The generators are restored afterwards, so reading a sample in the training process (``num_worker_per_gpu: 0``)
    does not shift the training's own random stream. A plain integer index reads without seeding.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Union[int, Tuple[int, int]]):
        if isinstance(item, int):
            return self.dataset[item]
        index, seed = item
        if get_worker_info() is not None:  # a loader worker: its generators serve nothing else
            seed_host_generators(seed)
            return self.dataset[index]
        with isolated_rng():
            seed_host_generators(seed)
            return self.dataset[index]

    def __getattr__(self, name: str):  # expose the wrapped dataset's attributes (e.g. opt, paths)
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)


def build_train_loader(dataset: Dataset, dataset_opt: dict, opt: dict) -> Tuple[DataLoader, ResumableSampler]:
    """The training loader: BasicSR's batch size / worker rules, a :class:`ResumableSampler`, seeded samples.

    Mirrors ``basicsr.data.build_dataloader`` for the train phase (``batch_size_per_gpu`` and ``num_worker_per_gpu``
    multiplied by ``num_gpu`` without DDP, ``drop_last``, ``pin_memory``, ``persistent_workers``, ``prefetch_mode:
    cpu``) and gives the loader its own generator, so starting an epoch draws nothing from torch's global one. No
    ``worker_init_fn``: every sample seeds the worker's generators itself.

    Args:
        dataset: The built training dataset (unwrapped).
        dataset_opt: ``datasets.train``.
        opt: The run's options (``num_gpu``, ``dist``, ``world_size``, ``rank``, ``manual_seed``).
    """
    from basicsr.data.prefetch_dataloader import PrefetchDataLoader

    multiplier = 1 if opt['dist'] or not opt['num_gpu'] else int(opt['num_gpu'])
    batch_size = int(dataset_opt['batch_size_per_gpu']) * multiplier
    num_workers = int(dataset_opt.get('num_worker_per_gpu', 0)) * multiplier
    seed = int(opt['manual_seed'])
    sampler = ResumableSampler(dataset, opt['world_size'], opt['rank'], dataset_opt.get('dataset_enlarge_ratio', 1),
                               seed)
    if sampler.num_samples < batch_size:
        raise ValueError(f"Dataset '{dataset_opt.get('name')}': {sampler.num_samples} training samples per process "
                         f'(with dataset_enlarge_ratio) are fewer than one batch of {batch_size}; raise '
                         "'datasets.train.dataset_enlarge_ratio' or lower 'batch_size_per_gpu'.")
    args = dict(dataset=SeededDataset(dataset), batch_size=batch_size, shuffle=False, sampler=sampler,
                num_workers=num_workers, drop_last=True, pin_memory=bool(dataset_opt.get('pin_memory', False)),
                persistent_workers=bool(dataset_opt.get('persistent_workers', False)) and num_workers > 0,
                generator=torch.Generator().manual_seed(seed))
    if dataset_opt.get('prefetch_mode') == 'cpu':
        return PrefetchDataLoader(num_prefetch_queue=dataset_opt.get('num_prefetch_queue', 1), **args), sampler
    return DataLoader(**args), sampler
