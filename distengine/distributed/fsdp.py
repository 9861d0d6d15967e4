"""Sharding a model with FSDP2 (``fully_shard``) and the step helpers a sharded model needs.

``shard_model`` wraps each repeated block, then the root; ``is_sharded`` tells
whether a model, optimizer or state dict holds DTensor shards (so a checkpoint
knows it must not go to one file); ``no_gradient_sync`` and ``clip_grad_norm``
are what a training step with gradient accumulation and clipping needs, for
FSDP2, DDP and plain models alike.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

from distengine.distributed.env import device, get_world_size, is_distributed

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
    for block in blocks:
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model


def is_sharded(obj: Any) -> bool:
    """Whether ``obj`` holds DTensor shards: a tensor, module, optimizer or nested state dict.

    A sharded state must go to a sharded checkpoint (each rank writes its
    shards); written to one file by one rank, it would hold that rank's shard only.

    Example::

        is_sharded(model.state_dict())      # True after shard_model on several ranks
        is_sharded(torch.load(path))        # True for a file written from such a state
    """
    if isinstance(obj, torch.Tensor):
        return isinstance(obj, DTensor) or type(obj).__name__ == "ShardedTensor"
    if isinstance(obj, nn.Module):
        return any(map(is_sharded, obj.parameters())) or any(map(is_sharded, obj.buffers()))
    if isinstance(obj, torch.optim.Optimizer):
        params = (p for group in obj.param_groups for p in group["params"])
        return any(map(is_sharded, params)) or is_sharded(list(obj.state.values()))
    if isinstance(obj, Mapping):
        return any(is_sharded(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(is_sharded(v) for v in obj)
    return False


@contextlib.contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Backward passes inside accumulate gradients locally, without reducing them across ranks.

    For gradient accumulation: every micro-step but the last runs inside it.
    FSDP2 modules get ``set_requires_gradient_sync(False)`` (and ``True`` again
    after), DDP its ``no_sync()``; a plain model needs nothing.

    Example::

        for micro_batch in micro_batches[:-1]:
            with no_gradient_sync(model):
                loss_fn(model(micro_batch)).backward()
        loss_fn(model(micro_batches[-1])).backward()   # reduces the summed gradients
    """
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def _by_gradient_kind(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Parameters grouped so each group's gradients are plain tensors or DTensors of one mesh."""
    groups: dict[Any, list[torch.Tensor]] = {}
    for p in params:
        grad = p.grad
        key = (id(grad.device_mesh), grad.device) if isinstance(grad, DTensor) else grad.device
        groups.setdefault(key, []).append(p)
    return list(groups.values())


def clip_grad_norm(
    parameters: Iterable[torch.Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> torch.Tensor:
    """Clip gradients to a total norm of ``max_norm``; returns the total norm before clipping.

    Like ``torch.nn.utils.clip_grad_norm_``, and also right for FSDP2 (DTensor)
    gradients, alone or mixed with plain ones: the norm is over the whole
    model, on every rank, and comes back as a plain tensor (call ``.item()``).

    Example::

        loss.backward()
        norm = clip_grad_norm(model.parameters(), max_norm=1.0)
        optimizer.step()
    """
    if not (isinstance(max_norm, (int, float)) and max_norm > 0):
        raise ValueError(f"max_norm must be a positive number, got {max_norm!r}")
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    groups = _by_gradient_kind(params)
    norms = []
    for group in groups:
        norm = get_total_norm([p.grad for p in group], norm_type, error_if_nonfinite)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    device = norms[0].device
    total = get_total_norm([n.to(device) for n in norms], norm_type)
    for group in groups:
        clip_grads_with_norm_(group, max_norm, total.to(group[0].grad.device))
    return total
