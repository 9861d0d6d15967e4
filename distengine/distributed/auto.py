"""Adapt a model, an optimizer and a data loader to however many ranks there are."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from distengine.distributed.env import (
    device,
    get_nproc_per_node,
    get_rank,
    get_world_size,
    is_distributed,
)
from distengine.distributed.shards import SPLITS, ExactShardSampler, RankShard, SizedRankShard


def auto_model(model: nn.Module, sync_bn: bool = False, **ddp_kwargs: Any) -> nn.Module:
    """``model`` on this rank's device, wrapped in DistributedDataParallel with several ranks.

    ``sync_bn=True`` turns BatchNorm layers into SyncBatchNorm first. Extra
    keyword arguments go to DistributedDataParallel.

    Example::

        model = idist.auto_model(Net())
    """
    model = model.to(device())
    if not (is_distributed() and get_world_size() > 1):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device().type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device().index])
    return DistributedDataParallel(model, **ddp_kwargs)


def auto_optim(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer to use on this rank; DDP needs no change, so it is returned as given."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"auto_optim expects a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return optimizer


def auto_dataloader(dataset: Dataset, split: str | None = None, **kwargs: Any) -> DataLoader:
    """A DataLoader giving this rank its share of ``dataset``.

    ``batch_size`` is the global batch: each of N ranks gets ``batch_size // N``.
    ``split`` says how the samples are shared (see ``distributed/shards.py``):

    - ``"even"`` (training): every rank the same number of samples and batches,
      as DDP needs; a DistributedSampler pads by repeating a few samples, or
      drops them with ``drop_last=True``.
    - ``"exact"`` (evaluation): each sample on exactly one rank (rank r takes
      samples r, r + N, ...), never repeated nor dropped, so metrics equal
      those of one process; shards may differ by one sample or be empty (an
      engine runs an empty shard's epoch with no iteration, joining every
      reduction). A DDP training step refuses such a loader when its ranks'
      batch counts differ.
    - ``None`` (default): ``"even"`` with ``shuffle=True`` or ``drop_last=True``,
      else ``"exact"``. A training loader without either must say ``"even"``.

    Where this rank computes on a GPU (:func:`~distengine.distributed.device`),
    batches come in pinned memory (``pin_memory=True`` unless given), so the
    training step's ``non_blocking`` copies overlap with the GPU's work.

    ``shuffle`` and ``seed`` order the samples (``seed + epoch``; an engine
    calls ``set_epoch`` each epoch, so ranks agree); with one process,
    ``seed`` seeds the loader's generator. ``num_workers`` is shared among the
    node's ranks. An ``IterableDataset`` is sharded too: each rank takes every
    N-th item of the stream (``"even"`` drops the last incomplete round of N);
    within a rank, the dataset must give each DataLoader worker its own part,
    as PyTorch requires.

    Example::

        train_loader = idist.auto_dataloader(train_set, batch_size=256, shuffle=True)
        val_loader = idist.auto_dataloader(val_set, batch_size=256)  # exact shards
    """
    shuffle = kwargs.pop("shuffle", False)
    seed = kwargs.pop("seed", None)
    if split is None:
        split = "even" if shuffle or kwargs.get("drop_last", False) else "exact"
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if isinstance(dataset, IterableDataset) and shuffle:
        raise ValueError("shuffle=True cannot apply to an IterableDataset: shuffle in the dataset")
    if device().type == "cuda":
        kwargs.setdefault("pin_memory", True)
    world = get_world_size()
    if world <= 1 or not is_distributed():
        return _single_process_loader(dataset, shuffle, seed, kwargs)
    for key in ("sampler", "batch_sampler"):
        if kwargs.get(key) is not None:
            raise ValueError(
                f"auto_dataloader makes its own sampler; got {key}={kwargs[key]!r}. "
                "Shard the data yourself and use a plain DataLoader instead"
            )
    _per_rank_arguments(kwargs, world)
    if isinstance(dataset, IterableDataset):
        sized = kwargs.get("num_workers", 0) == 0 and hasattr(dataset, "__len__")
        shard = SizedRankShard if sized else RankShard
        return DataLoader(shard(dataset, get_rank(), world, even=split == "even"), **kwargs)
    if split == "exact":
        sampler: Any = ExactShardSampler(dataset, world, get_rank(), shuffle, seed or 0)
    else:
        drop = kwargs.get("drop_last", False)
        sampler = DistributedSampler(
            dataset, world, get_rank(), shuffle=shuffle, seed=seed or 0, drop_last=drop
        )
    loader = DataLoader(dataset, sampler=sampler, **kwargs)
    if split == "even" and len(loader) == 0:
        raise ValueError(
            f"{len(dataset)} samples give each of {world} ranks no batch of "  # type: ignore[arg-type]
            f"{loader.batch_size}: use a smaller batch_size or drop_last=False"
        )
    return loader


def _per_rank_arguments(kwargs: dict[str, Any], world: int) -> None:
    """The global batch and the node's workers, divided among the ranks."""
    batch_size = kwargs.pop("batch_size", 1)
    if batch_size < world:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must be >= {world} ranks"
        )
    kwargs["batch_size"] = batch_size // world
    if "num_workers" in kwargs:
        per_node = max(get_nproc_per_node(), 1)
        kwargs["num_workers"] = (kwargs["num_workers"] + per_node - 1) // per_node


def _single_process_loader(
    dataset: Dataset, shuffle: bool, seed: int | None, kwargs: dict[str, Any]
) -> DataLoader:
    if seed is not None and shuffle:
        if kwargs.get("generator") is not None:
            raise ValueError("give seed or generator, not both")
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    if shuffle:
        kwargs["shuffle"] = True
    return DataLoader(dataset, **kwargs)


def sync_buffers(module: nn.Module, process_group: Any = None, src_group_rank: int = 0) -> None:
    """Broadcast ``module``'s buffers (BatchNorm statistics) from one rank, once per dtype.

    What DDP's forward does before each batch, done once (e.g. before an
    evaluation that runs the unwrapped module). A no-op with one process.

    Example::

        sync_buffers(ddp_model.module, ddp_model.process_group)
    """
    if not (is_distributed() and get_world_size() > 1):
        return
    src = dist.get_global_rank(process_group or dist.group.WORLD, src_group_rank)
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for buffer in module.buffers():
        groups[(buffer.dtype, buffer.device)].append(buffer)
    for (dtype, _), buffers in groups.items():
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        wire = flat.to(torch.uint8) if dtype == torch.bool else flat
        dist.broadcast(wire, src=src, group=process_group)
        flat = wire.to(dtype)
        offset = 0
        for buffer in buffers:
            buffer.data.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
            offset += buffer.numel()
