"""Adapt a model, an optimizer and a data loader to however many ranks there are."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from distengine.distributed.collectives import broadcast
from distengine.distributed.env import (
    device,
    get_nproc_per_node,
    get_rank,
    get_world_size,
    is_distributed,
)
from distengine.distributed.sharding import check_optimizer_after_sharding
from distengine.distributed.shards import (
    SPLITS,
    ExactShardSampler,
    RankShard,
    SizedRankShard,
    global_batch_problem,
)

STRATEGIES = ("ddp", "fsdp", "auto")
#: ``strategy="auto"`` shards when parameters, gradients and Adam's two moments
#: (4 x the parameters' bytes) would fill more than this share of one device.
AUTO_FSDP_SHARE = 0.25


def auto_model(
    model: nn.Module,
    sync_bn: bool = False,
    strategy: str = "ddp",
    mp_dtype: torch.dtype | str | None = None,
    cpu_offload: bool = False,
    wrap: Any = None,
    **ddp_kwargs: Any,
) -> nn.Module:
    """``model`` ready for this rank: on its device, replicated (DDP) or sharded (FSDP2).

    - ``strategy="ddp"`` (default): moved to ``idist.device()`` and, with
      several ranks, wrapped in DistributedDataParallel (extra keyword
      arguments go to it).
    - ``strategy="fsdp"``: sharded over the ranks with FSDP2's
      ``fully_shard`` (see :func:`~distengine.distributed.fsdp.shard_model`):
      each repeated block (the children of the biggest ModuleList or
      Sequential, or those ``wrap`` picks), then the root. Each rank holds
      1/N of the parameters, gradients and optimizer state. ``mp_dtype``
      (``"bf16"``, ``"fp16"``) computes and reduces in that dtype over fp32
      shards; ``cpu_offload`` keeps shards and optimizer state in host memory.
      Build the optimizer **after** this call, from the returned model's
      parameters. Without a process group the model is returned whole.
    - ``strategy="auto"``: ``"fsdp"`` when there are several ranks and
      parameters, gradients and Adam's two moments (4 x the parameters' bytes)
      would take more than a quarter of one device's memory (the GPU's, or on
      CPU the host's divided among the node's ranks), else ``"ddp"``. Rank 0
      decides for all (one tiny broadcast).

    ``sync_bn=True`` turns BatchNorm layers into SyncBatchNorm first (with several ranks).

    Example::

        model = idist.auto_model(Net())                                    # DDP
        model = idist.auto_model(Transformer(), strategy="fsdp", mp_dtype="bf16")
        optimizer = idist.auto_optim(torch.optim.AdamW(model.parameters()))
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if sync_bn and is_distributed() and get_world_size() > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy == "auto":
        strategy = _auto_strategy(model)
    if strategy == "fsdp":
        if ddp_kwargs:
            raise ValueError(
                f"{sorted(ddp_kwargs)} are DistributedDataParallel arguments; "
                "strategy='fsdp' takes mp_dtype, cpu_offload and wrap"
            )
        return _sharded(model, mp_dtype, cpu_offload, wrap)
    given = {"mp_dtype": mp_dtype, "cpu_offload": cpu_offload or None, "wrap": wrap}
    extra = sorted(k for k, v in given.items() if v is not None)
    if extra:
        raise ValueError(f"{extra} apply to strategy='fsdp', not {strategy!r}")
    return _replicated(model, ddp_kwargs)


def _replicated(model: nn.Module, ddp_kwargs: dict[str, Any]) -> nn.Module:
    model = model.to(device())
    if not (is_distributed() and get_world_size() > 1):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model
    if device().type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device().index])
    return DistributedDataParallel(model, **ddp_kwargs)


def _sharded(model: nn.Module, mp_dtype: Any, cpu_offload: bool, wrap: Any) -> nn.Module:
    from distengine.distributed.fsdp import shard_model  # imports FSDP2 (half a second)

    if not is_distributed():
        return shard_model(model.to(device()), mp_dtype, cpu_offload, wrap)
    return shard_model(model, mp_dtype, cpu_offload, wrap)  # fully_shard moves each shard


def _device_memory() -> int:
    """Bytes of one device: this rank's GPU, or on CPU the host's share per local rank."""
    if device().type == "cuda":
        return torch.cuda.get_device_properties(device()).total_memory
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host // max(get_nproc_per_node(), 1)


def _auto_strategy(model: nn.Module) -> str:
    """``"fsdp"`` or ``"ddp"`` by the documented rule (see :func:`auto_model`); rank 0 decides."""
    if not (is_distributed() and get_world_size() > 1):
        return "ddp"
    state = 4 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    choice = "fsdp" if state > AUTO_FSDP_SHARE * _device_memory() else "ddp"
    return broadcast(choice)


def auto_optim(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer to use on this rank, checked; DDP and FSDP2 need no change.

    An optimizer built before ``auto_model(..., strategy="fsdp")`` sharded its
    model holds the replaced full parameters and would update nothing: it is
    refused with a ValueError that says to build it from the sharded model.

    Example::

        optimizer = idist.auto_optim(torch.optim.AdamW(model.parameters(), lr=1e-3))
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"auto_optim expects a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    check_optimizer_after_sharding(optimizer)
    return optimizer


def auto_dataloader(dataset: Dataset, split: str | None = None, **kwargs: Any) -> DataLoader:
    """A DataLoader giving this rank its share of ``dataset``.

    ``batch_size`` is the global batch: each of N ranks gets ``batch_size // N``.
    A training loader (``"even"``) refuses a global batch that N does not
    divide (a ValueError naming the sizes that work): 64 on 3 ranks would
    train 63 samples per step, and a resume on 2 ranks could not continue
    the same samples. An evaluation loader (``"exact"``) takes it: each
    rank's batches hold ``batch_size // N`` samples and every sample is still
    evaluated exactly once. A global batch smaller than N is refused either way.
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

    An ``"even"`` loader draws the same global sequence of samples on any
    number of ranks (one process included: a DistributedSampler of one
    replica, reshuffled by ``set_epoch``, which an engine calls): every full
    global batch ``i`` of an epoch is the same set of samples whatever the
    world size, as long as it divides ``batch_size``, so a run can resume on
    another number of ranks where it stopped.

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
        if split == "even" and _samples_like_ranks(dataset, kwargs):
            drop = kwargs.get("drop_last", False)
            sampler = DistributedSampler(
                dataset, 1, 0, shuffle=shuffle, seed=seed or 0, drop_last=drop
            )
            return DataLoader(dataset, sampler=sampler, **kwargs)
        return _single_process_loader(dataset, shuffle, seed, kwargs)
    for key in ("sampler", "batch_sampler"):
        if kwargs.get(key) is not None:
            raise ValueError(
                f"auto_dataloader makes its own sampler; got {key}={kwargs[key]!r}. "
                "Shard the data yourself and use a plain DataLoader instead"
            )
    _per_rank_arguments(kwargs, world, split)
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


def _per_rank_arguments(kwargs: dict[str, Any], world: int, split: str) -> None:
    """The global batch and the node's workers, divided among the ranks."""
    batch_size = kwargs.pop("batch_size", 1)
    problem = global_batch_problem(batch_size, world)
    if problem and (split == "even" or batch_size < world):
        raise ValueError(f"batch_size={batch_size} is the global batch and {problem}")
    kwargs["batch_size"] = batch_size // world
    if "num_workers" in kwargs:
        per_node = max(get_nproc_per_node(), 1)
        kwargs["num_workers"] = (kwargs["num_workers"] + per_node - 1) // per_node


def _samples_like_ranks(dataset: Dataset, kwargs: dict[str, Any]) -> bool:
    """Whether one process can draw its samples as N ranks would (a DistributedSampler of one):
    a map-style dataset, no sampler or generator of the caller's."""
    if isinstance(dataset, IterableDataset):
        return False
    return all(kwargs.get(key) is None for key in ("sampler", "batch_sampler", "generator"))


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
