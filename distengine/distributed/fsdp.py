"""Sharding a model with FSDP2 (``fully_shard``) and the step helpers a sharded model needs.

``shard_model`` wraps each repeated block, then the root; ``is_sharded`` tells
whether a model, optimizer or state dict holds DTensor shards (so a checkpoint
knows it must not go to one file); ``no_gradient_sync`` and ``clip_grad_norm``
are what a training step with gradient accumulation and clipping needs, for
FSDP2, DDP and plain models alike. Importing this module imports FSDP2 (half
a second); the helpers that only inspect live in the light
:mod:`distengine.distributed.sharding` and are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from distengine.distributed.env import device, get_world_size, is_distributed
from distengine.distributed.sharding import (
    REPLACED,
    clip_grad_norm,
    is_sharded,
    no_gradient_sync,
)

__all__ = ["clip_grad_norm", "default_blocks", "is_sharded", "no_gradient_sync", "shard_model"]

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}
WrapPolicy = Callable[[nn.Module], bool] | Iterable[type]


def _mp_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or value in _DTYPES.values():
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise ValueError(
        f"mp_dtype must be None, torch.bfloat16, torch.float16, torch.float32 or one of "
        f"{sorted(_DTYPES)}, got {value!r}"
    )


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def default_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks ``shard_model`` wraps one by one (the root is wrapped after them).

    They are the children of the ModuleList or Sequential that holds the most
    parameters (with at least two children that have parameters): a
    transformer's layers, a Sequential's layers. A model without such a
    container gets none (only the root is sharded).

    Example::

        blocks = default_blocks(model)      # e.g. list(model.layers)
    """
    best: list[nn.Module] = []
    best_count = 0
    for module in model.modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = [c for c in module.children() if _param_count(c) > 0]
        count = sum(_param_count(c) for c in children)
        if len(children) >= 2 and count > best_count:
            best, best_count = children, count
    return best


def _blocks(model: nn.Module, wrap: WrapPolicy | None) -> list[nn.Module]:
    if wrap is None:
        return default_blocks(model)
    if callable(wrap) and not isinstance(wrap, type):
        return [m for m in model.modules() if m is not model and wrap(m)]
    try:
        classes = tuple(wrap)
    except TypeError:
        classes = ()
    if not classes or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
        raise ValueError(
            f"wrap must be None, a callable(module) -> bool or module classes, got {wrap!r}"
        )
    return [m for m in model.modules() if m is not model and isinstance(m, classes)]


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"shard_model expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, DistributedDataParallel):
        raise ValueError(
            "shard_model got a DistributedDataParallel model: pass the unwrapped module "
            "(DDP and FSDP are alternatives)"
        )
    if isinstance(model, FSDPModule):
        raise ValueError(f"shard_model got {type(model).__name__}, which is already sharded")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"shard_model got {type(model).__name__} with no trainable parameters")


def shard_model(
    model: nn.Module,
    mp_dtype: torch.dtype | str | None = None,
    cpu_offload: bool = False,
    wrap: WrapPolicy | None = None,
) -> nn.Module:
    """``model`` sharded over all ranks with FSDP2: each block, then the root (in place).

    Blocks are ``default_blocks(model)`` unless ``wrap`` names them: a callable
    ``wrap(module) -> bool`` or module classes. ``mp_dtype`` (bf16/fp16) runs
    forward and gradient reduction in that dtype, keeping fp32 shards;
    ``cpu_offload`` keeps shards, gradients and optimizer state in host memory
    (pinned when CUDA is available). Shards live on ``idist.device()`` (the
    CPU under gloo). Every rank must call it. Without a
    process group the model is returned as it is (a mixed-precision request
    then warns: use autocast instead).

    Example::

        model = shard_model(Transformer(), mp_dtype="bf16")
        optimizer = torch.optim.AdamW(model.parameters())   # after sharding
    """
    _check_model(model)
    dtype = _mp_dtype(mp_dtype)
    blocks = _blocks(model, wrap)
    if not is_distributed():
        if dtype is not None:
            warnings.warn(
                f"shard_model: no process group, so the model is not sharded and "
                f"mp_dtype={mp_dtype!r} is not applied; use autocast for mixed precision",
                stacklevel=2,
            )
        return model
    # the mesh on this rank's device (the CPU under gloo even where GPUs exist)
    options: dict[str, Any] = {"mesh": init_device_mesh(device().type, (get_world_size(),))}
    if dtype is not None:
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=dtype)
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    replaced = list(model.parameters())
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    kept = {id(p) for p in model.parameters()}
    for param in replaced:  # an optimizer built before sharding holds these: auto_optim refuses it
        if id(param) not in kept:
            setattr(param, REPLACED, True)
    return model
