"""Training on many processes (torchrun): the process group, rank helpers, the per-epoch shard.

`torchrun --nproc-per-node N -m bofexits train ...` sets RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/MASTER_PORT; `process_group` reads them and joins the group (gloo for CPUs, nccl
for GPUs), so the loop runs data-parallel without a flag. Without them, or with a world of
one, every collective here is a no-op and training is the single-process code path.

The data scheme is `DistributedSampler`'s without its padding: every rank draws the same
permutation from the run's seed and the epoch, and rank r keeps rows r::world of each global
batch (`shard`). The union of the ranks' local batches is the single-process batch; each rank
weights its loss by its share of the batch and `DistributedDataParallel` averages the
gradients (`data_parallel`), so the gradient and the result do not depend on the number of
processes (docs/distributed.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bofexits.errors import ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "ONE_PROCESS",
    "World",
    "all_gather_object",
    "all_reduce_sum",
    "broadcast_buffers",
    "backend_for",
    "barrier",
    "broadcast_module",
    "check_batch_size",
    "check_same_config",
    "data_parallel",
    "current_world",
    "interleave",
    "process_group",
    "shard",
    "world_from_env",
]

DEFAULT_TIMEOUT = timedelta(minutes=5)  # a collective waits this long for a dead or stuck rank
T = TypeVar("T", torch.Tensor, list[Any])


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 does the once-only work: logs, progress bars, checkpoints, k-means."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


ONE_PROCESS = World()


def world_from_env(env: Mapping[str, str]) -> World:
    """The world torchrun describes in `env` (RANK, WORLD_SIZE, LOCAL_RANK); one process if unset.

    >>> world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    World(rank=1, size=2, local_rank=1)
    >>> world_from_env({})
    World(rank=0, size=1, local_rank=0)
    """
    if "WORLD_SIZE" not in env:
        return World()
    try:
        rank, size = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r} "
            "are not integers; launch with torchrun or unset them"
        ) from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"RANK={rank} is not in [0, WORLD_SIZE={size}); launch with torchrun or unset them")
    return World(rank, size, local)


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPUs (nccl cannot carry CPU tensors).

    >>> backend_for(torch.device("cpu"))
    'gloo'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def current_world() -> World:
    """The world of the process group already joined; one process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextmanager
def process_group(device: torch.device, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[World]:
    """Join the process group torchrun's variables describe for the block, then leave it.

    A group the caller already joined is used as it is and left to the caller. Every
    collective of the group gives up after `timeout`, so a dead or stuck rank ends the job
    with an error instead of hanging it forever.
    """
    if dist.is_available() and dist.is_initialized():
        yield current_world()
        return
    world = world_from_env(os.environ)
    if not world.distributed:
        yield world
        return
    if not dist.is_available():
        raise ConfigError(
            "this torch build has no torch.distributed; run one process or install a full torch"
        )
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend_for(device), timeout=timeout, rank=world.rank, world_size=world.size)
    try:
        yield world
    finally:
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(rows: T, world: World) -> T:
    """This rank's rows of a global batch (or index list): rows rank, rank + size, ...

    Applied to each batch of one shared per-epoch permutation, this is `DistributedSampler`'s
    split without padding: ranks see disjoint samples, together the whole batch.

    >>> shard(torch.arange(7), World(rank=1, size=2))
    tensor([1, 3, 5])
    """
    return rows[world.rank :: world.size] if world.distributed else rows


def interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """Undo `shard`: `parts[r]` holds rows r::len(parts) of the result.

    >>> interleave([torch.tensor([0, 2, 4]), torch.tensor([1, 3])])
    tensor([0, 1, 2, 3, 4])
    """
    if len(parts) == 1:
        return parts[0]
    out = parts[0].new_empty((sum(len(p) for p in parts), *parts[0].shape[1:]))
    for r, part in enumerate(parts):
        out[r :: len(parts)] = part
    return out


def check_batch_size(batch_size: int, samples: int, world: World) -> None:
    """Refuse a global batch that does not split evenly over the ranks or exceeds the data.

    >>> check_batch_size(30, 100, World(0, 4))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bofexits.errors.ConfigError: --batch-size 30 does not split over 4 processes; ...: use a multiple of 4
    """
    if not world.distributed:
        return
    if batch_size % world.size:
        raise ConfigError(
            f"--batch-size {batch_size} does not split over {world.size} processes; it is the global batch: "
            f"use a multiple of {world.size}"
        )
    if batch_size > samples:
        raise ConfigError(
            f"--batch-size {batch_size} is larger than the {samples} training images; "
            "use a smaller global batch or more data"
        )


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has finished writing a checkpoint)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over the ranks, in place; returned for chaining."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (`[obj]` in one process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every weight and buffer of `module` with rank `src`'s, in place."""
    if not _active():
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor, src)


class _Call(nn.Module):
    """`fn(module, x)` as a module's forward, so DistributedDataParallel can wrap it.

    The training phases call parts of the network (`features`, `exits`, `forward_backbone`),
    not its `forward`; this gives DDP one forward to hook whatever the phase computes.
    """

    def __init__(self, module: nn.Module, fn: Callable[[nn.Module, torch.Tensor], Any]) -> None:
        super().__init__()
        self.module = module
        self._fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self._fn(self.module, x)


@contextmanager
def data_parallel(
    module: nn.Module,
    trainable: Iterable[nn.Parameter],
    fn: Callable[[nn.Module, torch.Tensor], Any],
    device: torch.device,
) -> Iterator[Callable[[torch.Tensor], Any]]:
    """`fn(module, x)` wrapped in `DistributedDataParallel` for the block (plain in one process).

    DDP averages the gradients of every parameter that requires one, so for the block only the
    `trainable` ones (the phase's optimiser's) do: the frozen parts would otherwise be waited
    for and all-reduced as zeros every step. `requires_grad` is restored on exit. DDP also
    broadcasts rank 0's buffers (BatchNorm statistics) before each forward.
    """
    call = _Call(module, fn)
    if not _active():
        yield call
        return
    keep = {id(p) for p in trainable}
    saved = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        # Some parameters never take part (an RBF exit's logistic a, c): with unused-parameter
        # detection DDP leaves their gradient None, as one process does, so AdamW skips them.
        yield DistributedDataParallel(call, device_ids=ids, find_unused_parameters=True)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every rank rank `src`'s buffers (BatchNorm statistics), as DDP does before each forward.

    After an epoch's last step each rank's training-mode BatchNorm statistics follow its own
    last local batch; rank 0's are the ones the checkpoint keeps, so every rank takes them
    before validation.
    """
    if not _active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


def check_same_config(text: str, world: World) -> None:
    """Refuse to train when the ranks were given different configs (compared by hash).

    Ranks with different data, seeds or networks would all-reduce gradients of unrelated
    models without any error; one hash per rank, gathered once at start, catches it.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    hashes = all_gather_object(digest)
    if len(set(hashes)) > 1:
        odd = [r for r, h in enumerate(hashes) if h != hashes[0]]
        raise ConfigError(
            f"rank {world.rank}: ranks {', '.join(map(str, odd))} have a different config from rank 0 "
            f"(hashes {', '.join(hashes)}); launch every rank with the same flags, data and code"
        )
