"""k-means initialisation of the exits' codebooks before the first epoch that trains them.

The BoF codewords start at k-means centres of real features (docs/method.md §2); under
torchrun rank 0 computes them and broadcasts them, since the same seeded work on every rank
would be wasted.
"""

from __future__ import annotations

import torch

from bofexits.data import ImageDataset
from bofexits.models.exits import ExitHeads
from bofexits.models.multiexit import MultiExitNetwork
from bofexits.training import distributed
from bofexits.training.distributed import World

__all__ = ["kmeans_init", "kmeans_once"]


@torch.no_grad()
def kmeans_init(
    model: MultiExitNetwork, data: ImageDataset, images: int, seed: int, device: torch.device
) -> None:
    """Initialise every exit's codebook by k-means on features of `images` training images.

    Heads without a data-dependent initialisation (the baselines) are left alone.
    """
    if type(model.exits).init_from_features is ExitHeads.init_from_features:
        return
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=gen)[: max(1, images)]
    sub = data.subset(idx)
    model.eval()
    maps_per_exit: list[list[torch.Tensor]] = [[] for _ in range(model.exits.num_exits)]
    for x, _ in sub.batches(256, shuffle=False):
        maps, _ = model.features(x.to(device))
        for store, m in zip(maps_per_exit, maps, strict=True):
            store.append(m.cpu())
    model.exits.cpu().init_from_features([torch.cat(m) for m in maps_per_exit], generator=gen)
    model.to(device)


def kmeans_once(
    model: MultiExitNetwork,
    data: ImageDataset,
    images: int,
    seed: int,
    device: torch.device,
    world: World = distributed.ONE_PROCESS,
) -> None:
    """`kmeans_init` on rank 0, then every rank takes rank 0's codebooks."""
    if world.is_main:
        kmeans_init(model, data, images, seed, device)
    distributed.broadcast_module(model.exits)
