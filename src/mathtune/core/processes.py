"""This process's place among the processes of a launch: the one answer to "which process am
I" for every stage (training, evaluation, the command's closing lines).

    here = this_process()     # under torchrun / accelerate launch: joins their process group
    if here.is_first:
        ...                   # what is written or said once
    here.wait()               # every process gets here before any goes on

A plain process is the first of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Process:
    """This process's rank among world_size processes, and what they do together."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Every process reaches this point before any goes on."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def same_for_all(self, value):
        """The first process's value, in every process."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def this_process() -> Process:
    """Where this process stands: torchrun and accelerate launch say how many there are
    (WORLD_SIZE); with several, this joins their process group (once: accelerate keeps it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Process()
    import torch
    from accelerate import PartialState

    # gloo on a CPU, nccl on a GPU; without cpu=True accelerate would treat several CPU
    # processes as one process each, not as a data-parallel group.
    state = PartialState(cpu=not torch.cuda.is_available())
    return Process(state.process_index, state.num_processes)
