"""Telling sharded (FSDP2, DTensor) state apart, and the step helpers it needs; cheap to import.

``torch.distributed.tensor`` and ``torch.distributed.fsdp`` take half a
second to import, so nothing here imports them: a DTensor or an FSDP module
can only exist once its module is loaded, so ``sys.modules`` answers. The
code that shards a model is :mod:`distengine.distributed.fsdp`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grads_with_norm_, get_total_norm

#: Set on the parameters ``shard_model`` replaced by DTensor ones (an optimizer must not hold them).
REPLACED = "_distengine_replaced_by_shards"


def is_dtensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.distributed.tensor.DTensor``."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(value, module.DTensor)


def is_fsdp_module(model: Any) -> bool:
    """Whether ``model`` was sharded with FSDP2's ``fully_shard`` (an ``FSDPModule``)."""
    module = sys.modules.get("torch.distributed.fsdp")
    return module is not None and isinstance(model, module.FSDPModule)


def is_sharded(obj: Any) -> bool:
    """Whether ``obj`` holds DTensor shards: a tensor, module, optimizer or nested state dict.

    A sharded state must go to a sharded checkpoint (each rank writes its
    shards); written to one file by one rank, it would hold that rank's shard only.

    Example::

        is_sharded(model.state_dict())      # True after shard_model on several ranks
        is_sharded(torch.load(path))        # True for a file written from such a state
    """
    if isinstance(obj, torch.Tensor):
        return is_dtensor(obj) or type(obj).__name__ == "ShardedTensor"
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


def sharded_entry(state: Mapping[str, Any]) -> str | None:
    """The first key of ``state`` whose value holds DTensor shards, or None."""
    return next((name for name, value in state.items() if is_sharded(value)), None)


def mixed_precision_dtype(model: Any) -> torch.dtype | None:
    """The ``param_dtype`` of an FSDP2 model's mixed-precision policy (None: none, or not FSDP)."""
    if not is_fsdp_module(model):
        return None
    state = model._get_fsdp_state()  # FSDP2 keeps the policy on its state; no public getter
    policy = getattr(state, "_mp_policy", None)
    return getattr(policy, "param_dtype", None)


def check_optimizer_after_sharding(optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer built before its model was sharded: it would update nothing.

    ``fully_shard`` replaces every parameter by a DTensor one; an optimizer
    made earlier holds the old, full parameters, which no longer get gradients.
    """
    for group in optimizer.param_groups:
        if any(getattr(p, REPLACED, False) for p in group["params"]):
            raise ValueError(
                "the optimizer holds parameters that sharding replaced (it was built before "
                "auto_model(strategy='fsdp') / shard_model): it would update nothing. Build it "
                "after sharding, from the sharded model: optimizer = Adam(model.parameters())"
            )


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
    if is_fsdp_module(model):
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
        key = (id(grad.device_mesh), grad.device) if is_dtensor(grad) else grad.device
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
        norms.append(norm.full_tensor() if is_dtensor(norm) else norm)
    device = norms[0].device
    total = get_total_norm([n.to(device) for n in norms], norm_type)
    for group in groups:
        clip_grads_with_norm_(group, max_norm, total.to(group[0].grad.device))
    return total
