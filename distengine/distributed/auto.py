"""Adapt a model, an optimizer and a data loader to however many ranks there are."""

from __future__ import annotations

from typing import Any

import torch
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


def auto_dataloader(dataset: Dataset, **kwargs: Any) -> DataLoader:
    """A DataLoader giving this rank its share of ``dataset``.

    ``batch_size`` is the global batch: each of N ranks gets ``batch_size // N``.
    With several ranks a DistributedSampler shards the data (``shuffle``,
    ``drop_last`` and ``seed`` go to it); an engine calls its ``set_epoch``
    each epoch, so the order changes per epoch and agrees across ranks.
    ``num_workers`` is shared among the node's ranks.

    Example::

        loader = idist.auto_dataloader(train_set, batch_size=256, shuffle=True)
    """
    world = get_world_size()
    if world <= 1 or not is_distributed():
        return DataLoader(dataset, **kwargs)
    for key in ("sampler", "batch_sampler"):
        if kwargs.get(key) is not None:
            raise ValueError(
                f"auto_dataloader makes its own DistributedSampler; got {key}={kwargs[key]!r}. "
                "Shard the data yourself and use a plain DataLoader instead"
            )
    batch_size = kwargs.pop("batch_size", 1)
    if batch_size < world:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and must be >= {world} ranks"
        )
    kwargs["batch_size"] = batch_size // world
    if "num_workers" in kwargs:
        per_node = max(get_nproc_per_node(), 1)
        kwargs["num_workers"] = (kwargs["num_workers"] + per_node - 1) // per_node
    if torch.cuda.is_available():
        kwargs.setdefault("pin_memory", True)
    shuffle = kwargs.pop("shuffle", False)
    seed = kwargs.pop("seed", 0)
    if not isinstance(dataset, IterableDataset):
        kwargs["sampler"] = DistributedSampler(
            dataset,
            num_replicas=world,
            rank=get_rank(),
            shuffle=shuffle,
            drop_last=kwargs.get("drop_last", False),
            seed=seed,
        )
    return DataLoader(dataset, **kwargs)
