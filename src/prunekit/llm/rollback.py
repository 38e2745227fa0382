"""What a failing one-shot prune needs to put the model back: the original values of every
tensor it changed, without holding a second copy of a large model in memory.

Copies are kept in memory up to `memory_bytes` (small models: no disk traffic); past that,
each block's originals go to a safetensors file in a temporary folder once the block is done
(`flush`), so a 7B model costs one block in memory, not 13 GB. The folder is deleted by
`close`, whether the prune succeeded or not.
"""
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

MEMORY_BYTES = 1 << 30


class Rollback:
    def __init__(self, memory_bytes: int | None = None):
        self.memory_bytes = MEMORY_BYTES if memory_bytes is None else memory_bytes
        self.in_memory = 0
        self.tensors = []     # the live tensors, in the order kept
        self.copies = {}      # position -> original value, in memory
        self.pending = {}     # position -> original value, waiting for flush
        self.files = []       # (file, positions) on disk
        self.folder = None

    def keep(self, tensor: torch.Tensor) -> None:
        """Note `tensor`'s current value (call before changing it in place)."""
        original = tensor.detach().to("cpu", copy=True)
        position = len(self.tensors)
        self.tensors.append(tensor)
        size = original.numel() * original.element_size()
        if self.in_memory + size <= self.memory_bytes:
            self.copies[position] = original
            self.in_memory += size
        else:
            self.pending[position] = original

    def flush(self) -> None:
        """Write the originals past the memory budget to disk (at the end of a block)."""
        if not self.pending:
            return
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="prunekit-rollback-"))
        path = self.folder / f"{len(self.files):05d}.safetensors"
        save_file({str(k): v.contiguous() for k, v in self.pending.items()}, path)
        self.files.append(path)
        self.pending = {}

    def restore(self) -> None:
        """Put every kept tensor back to its original value."""
        with torch.no_grad():
            for position, value in [*self.copies.items(), *self.pending.items()]:
                self.tensors[position].copy_(value)
            for path in self.files:
                for key, value in load_file(path).items():
                    self.tensors[int(key)].copy_(value)

    def close(self) -> None:
        self.tensors, self.copies, self.pending, self.files = [], {}, {}, []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
