"""One-shot pruning across processes (torchrun): the route past one machine's speed.

    torchrun --nproc-per-node 2 -m prunekit llm prune --model DIR --method wanda --out OUT

Each rank runs its share of the calibration sequences through the blocks; before a block's
masks are chosen, every layer's input statistics (Wanda's norms, SparseGPT's Gram matrix, and
so OWL's outlier counts, which are read from them) are summed over the ranks, so every rank
holds the statistics of all the sequences. The layers of a block are then shared out (largest
first, to the least loaded rank): each rank prunes its layers and sends each result to the
others, so the masks' selection and SparseGPT's solves run in parallel too, and every rank ends
with the same weights. Rank 0 writes. On CPUs the group is
gloo; on GPUs NCCL (statistics and weights are moved to the group's device for the collective).
Alone (no process group, or one process), every function here is a no-op.
"""
import torch
import torch.distributed as dist

from prunekit.errors import PruneError
from prunekit.llm.layers import InputStats
from prunekit.train.distributed import active, rank, world


def share(batches: torch.Tensor) -> torch.Tensor:
    """This rank's calibration sequences (rows rank, rank + N, ...)."""
    if not active():
        return batches
    if len(batches) < world():
        raise PruneError(f"{len(batches)} calibration sequences cannot be shared by {world()} processes: "
                         "give at least one per process")
    return batches[rank()::world()]


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _sum(tensor: torch.Tensor) -> torch.Tensor:
    moved = tensor.to(_device())
    dist.all_reduce(moved)
    return moved.to(tensor.device)


def reduce_stats(stats: dict, gram: bool) -> dict:
    """{name: InputStats} summed over the ranks, in one order on every rank; a layer that only
    some ranks' sequences reached (an expert) gets zeros from the others."""
    if not active():
        return stats
    sizes = [None] * world()
    dist.all_gather_object(sizes, {name: s.squares.numel() for name, s in stats.items()})
    union = {name: size for found in sizes for name, size in found.items()}
    out = {}
    for name in sorted(union):
        mine = stats.get(name) or InputStats(union[name], gram)
        total = InputStats(union[name], gram, mine.squares.device)
        total.tokens = int(_sum(torch.tensor([mine.tokens], dtype=torch.float64)).item())
        total.squares, total.sums = _sum(mine.squares), _sum(mine.sums)
        if gram:
            total.gram = _sum(mine.gram)
        out[name] = total
    return out


def owners(sizes: list) -> list:
    """The rank that prunes each of a block's layers: the largest first, each to the rank with
    the least work so far (the same answer on every rank); all 0 alone."""
    load, owner = [0] * world(), [0] * len(sizes)
    for position in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        owner[position] = min(range(world()), key=lambda r: (load[r], r))
        load[owner[position]] += sizes[position]
    return owner


def share_result(owner: int, value: torch.Tensor) -> torch.Tensor:
    """A pruned matrix, from the rank that computed it, on every rank."""
    if not active():
        return value
    moved = value.contiguous().to(_device())
    dist.broadcast(moved, src=owner)
    return moved.to(value.device)

