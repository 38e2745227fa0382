"""Seeded randomness that leaves the caller's global random state as it was."""
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int):
    """The global torch RNG seeded with `seed` for the duration, the caller's state restored
    after: module initialisation and dropout draw from the global generator, and a library
    call must not change what its caller's next random draw gives. CUDA generators are
    forked too where CUDA is already in use (starting it here would cost seconds)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for device in devices:
            torch.cuda.default_generators[device].manual_seed(seed)
        yield
