"""torch.distributed for one run on several processes, as ``torchrun`` starts them.

``torchrun --nproc-per-node N -m olsdesk train ...`` (or ``olsdesk train --gpus N``) sets
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables (one process too: then the
same code runs with a group of one); ``Context.from_env()`` joins
the process group (NCCL on CUDA, gloo on the CPU) and tells the trainer which process it
is. Rank 0 writes the run folder; every rank trains on its shard of the training set
(``DistributedSampler``) and validates its shard of the validation set, which
``gather`` puts back together in image order, each image exactly once. Without those
variables everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_FLAGS = None  # the gloo group for any_of's flags when the run's own group is NCCL


def _flags_group():
    """The group ``any_of`` reduces over: gloo, host to host, beside an NCCL run's group
    (read back over NCCL, the flags made the host wait for the GPU's queued work at every
    step). Made at the first ``any_of``, which every process reaches together."""
    global _FLAGS
    if _FLAGS is None and dist.get_backend() == "nccl":
        _FLAGS = dist.new_group(backend="gloo")
    return _FLAGS


@dataclass(frozen=True)
class Context:
    """Which process of how many this is (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False  # started by torchrun (a one-process torchrun run is too)

    @property
    def main(self) -> bool:
        """The process that writes the run folder, the log and the checkpoints."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device_kind: str) -> Context:
        """Join torchrun's process group if this process was started by it. ``device_kind``
        ("cuda" or "cpu") picks the backend: NCCL for CUDA, gloo otherwise."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        world = int(os.environ["WORLD_SIZE"])
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            if device_kind == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
        return cls(rank, world, local, True)

    def device(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU under torchrun, else ``device``."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    # --- collectives (each one a no-op for a single process) -------------------------
    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes, in place."""
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any_of(self, flags) -> tuple[bool, ...]:
        """Each flag, true on every process when it is true on any (a stop reaches all
        ranks at the same batch). A host tensor over gloo: no wait for the GPU."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_flags_group())
        return tuple(bool(x > 0) for x in t.tolist())

    def gather(self, obj):
        """Every process's ``obj``, in rank order (a list of one when not distributed)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every process."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        global _FLAGS
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
            _FLAGS = None


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index from ``rank``: each image in exactly one shard, no
    padding (``DistributedSampler`` repeats images to even the shards out, which would
    count them twice in the validation metrics)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
