"""Data-parallel fine-tuning under torchrun: DistributedDataParallel on gloo (CPU) or NCCL
(GPU), each rank training on its share of every epoch's batches (train.loop uses these).
Checkpoints are written by rank 0 only, atomically, the others waiting for it (a process
killed mid-write leaves the previous checkpoint whole), and every rank resumes from it. Masks
are computed on rank 0 and broadcast: integrations.ddp.

    torchrun --nproc-per-node 2 -m prunekit finetune MODEL OUT --prune gradual --sparsity 0.9 --checkpoints DIR
"""
import os

import torch
import torch.distributed as dist


def start() -> tuple:
    """(rank, world size), joining the process group when torchrun started several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank(), world()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_writer() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(model):
    """The model DDP trains (gradients averaged across ranks), or the model itself alone.
    Masks are broadcast by integrations.ddp.RankZero, not as DDP buffers: a mask attached
    during training would not be among the buffers DDP found at the start."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, forward_sync_buffers=False)
