"""Random-number generator states as plain data, for exact resume and for randomness that does not leak.

Training states hold the generators' states so that a resumed run draws the same numbers as the uninterrupted one.
Everything here is plain (tensors, ints, floats, lists, dicts), so a state file loads with ``weights_only=True``.
"""
import contextlib
import random
from typing import Iterator, Optional

import numpy as np
import torch


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {'name': name, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
            'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)}


def _set_numpy_state(state: dict) -> None:
    keys = state['keys'].numpy().astype(np.uint32)
    np.random.set_state((state['name'], keys, state['pos'], state['has_gauss'], state['cached_gaussian']))


def get_rng_state(cuda: Optional[bool] = None) -> dict:
    """The states of Python's ``random``, NumPy's global generator, torch's CPU generator and (if used) CUDA's.

    Args:
        cuda: Include the CUDA generators; None: only when CUDA is initialised in this process.
    """
    version, internal, gauss = random.getstate()
    state = {'python': {'version': version, 'internal': list(internal), 'gauss': gauss},
             'numpy': _numpy_state(), 'torch': torch.get_rng_state()}
    if cuda is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only when they were saved and CUDA is here)."""
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss']))
    _set_numpy_state(state['numpy'])
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = state['cuda']
        if len(cuda_states) != torch.cuda.device_count():
            raise ValueError(f'The saved state has {len(cuda_states)} CUDA generators but this machine has '
                             f'{torch.cuda.device_count()} GPUs.')
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


@contextlib.contextmanager
def isolated_rng(cuda: bool = False) -> Iterator[None]:
    """Run a block without changing the global generators seen after it (``random``, NumPy, torch CPU[, CUDA]).

    Used around validation and around per-sample seeding, so that what a block draws never shifts training's
    random stream.
    """
    saved = get_rng_state(cuda=None if cuda else False)
    try:
        yield
    finally:
        set_rng_state(saved)


def seed_host_generators(seed: int) -> None:
    """Seed ``random``, NumPy's global generator and torch's CPU generator (not CUDA) from one 64-bit seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.random.default_generator.manual_seed(seed)


def sample_seed(*entropy: int) -> int:
    """A 63-bit seed mixed from integers (e.g. run seed, epoch, rank, position) by NumPy's ``SeedSequence``."""
    words = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])
