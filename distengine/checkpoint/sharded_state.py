"""What goes into a sharded checkpoint: models and optimizers as shards, the rest as plain state.

``gather_state`` splits the objects of a checkpoint in two: modules and
optimizers become ``torch.distributed.checkpoint.state_dict`` state dicts
(DTensor shards under FSDP2, keyed by parameter name, the same for DDP, FSDP
and a plain model), which every rank writes its part of; anything else
(engine, scheduler, metrics) is its ``state_dict()``, small and written once
(an object declaring ``checkpoint_per_rank`` as every rank's state, contract
C1). ``restore_state`` puts both back. How they are stored is the storage's
business (:mod:`distengine.checkpoint.sharded`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distengine.checkpoint.stateful import gather_states, load_state, unwrap


def is_shardable(obj: Any) -> bool:
    """Whether ``obj`` goes to the sharded part of a checkpoint (a module or an optimizer)."""
    return isinstance(obj, (nn.Module, torch.optim.Optimizer))


def model_of(name: str, optimizer: torch.optim.Optimizer, objects: Mapping[str, Any]) -> nn.Module:
    """The module in ``objects`` that holds every parameter ``optimizer`` updates."""
    wanted = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for obj in objects.values():
        if isinstance(obj, nn.Module) and wanted <= {id(p) for p in obj.parameters()}:
            return obj
    modules = [k for k, v in objects.items() if isinstance(v, nn.Module)]
    raise ValueError(
        f"optimizer {name!r} updates parameters of no single module among {modules}: "
        "checkpoint the model it optimizes beside it"
    )


def sharded_template(objects: Mapping[str, Any], names: Any = None) -> dict[str, Any]:
    """The sharded part of ``objects`` (every module and optimizer, or those in ``names``).

    Every rank must call it; a load fills it in place. An optimizer's model
    is looked up among all of ``objects``.
    """
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    sharded: dict[str, Any] = {}
    for name, obj in objects.items():
        if names is not None and name not in names:
            continue
        if isinstance(obj, nn.Module):
            sharded[name] = get_model_state_dict(obj)
        elif isinstance(obj, torch.optim.Optimizer):
            sharded[name] = get_optimizer_state_dict(model_of(name, obj, objects), obj)
    return sharded


def gather_state(objects: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sharded, plain)`` state of ``objects``: modules and optimizers, then the rest.

    Every rank must call it. An optimizer without state yet gets it
    initialised (a step with zero gradients and learning rate), so the sharded
    part is also the template a load fills in place. Per-rank objects
    (``checkpoint_per_rank``) are in the plain part as every rank's state.

    Example::

        sharded, plain = gather_state({"model": model, "optimizer": opt, "trainer": trainer})
        # sharded == {"model": {...}, "optimizer": {...}}, plain == {"trainer": {...}}
    """
    sharded = sharded_template(objects)
    others = {name: obj for name, obj in objects.items() if not is_shardable(obj)}
    for name, obj in others.items():
        if not (hasattr(unwrap(obj), "state_dict") and hasattr(unwrap(obj), "load_state_dict")):
            raise TypeError(
                f"objects[{name!r}] is a {type(obj).__name__}, which has no "
                "state_dict/load_state_dict"
            )
    return sharded, gather_states(others) if others else {}


def restore_state(
    objects: Mapping[str, Any],
    sharded: Mapping[str, Any],
    plain: Mapping[str, Any],
    strict: bool = True,
) -> None:
    """Load ``sharded`` and ``plain`` (from ``gather_state``'s layout) into ``objects``.

    Every rank must call it. A name missing from both raises a ValueError
    naming it; ``strict=False`` lets a model ignore keys it lacks or the
    checkpoint lacks, as ``load_state_dict(strict=False)`` does.

    Example::

        sharded, plain = gather_state(objects)     # the template
        plain = storage.load("checkpoint_100", sharded)
        restore_state(objects, sharded, plain)
    """
    for name in objects:
        if name not in sharded and name not in plain:
            held = sorted([*sharded, *plain])
            raise ValueError(f"the checkpoint has no entry {name!r}; it holds {held}")
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(strict=strict)
    for name, obj in objects.items():
        if name not in sharded:
            load_state(name, obj, plain[name], strict=strict)
        elif isinstance(obj, nn.Module):
            set_model_state_dict(obj, sharded[name], options=options)
        else:
            model = model_of(name, obj, objects)
            set_optimizer_state_dict(model, obj, sharded[name], options=options)
