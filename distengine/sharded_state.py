"""What goes into a sharded checkpoint: models and optimizers as shards, the rest as plain state.

``gather_state`` splits the objects of a checkpoint in two: modules and
optimizers become ``torch.distributed.checkpoint.state_dict`` state dicts
(DTensor shards under FSDP2, keyed by parameter name, the same for DDP, FSDP
and a plain model), which every rank writes its part of; anything else
(engine, scheduler, metrics) is its ``state_dict()``, small and written once.
``restore_state`` puts both back. How they are stored is the storage's business
(``distengine.checkpoint_sharded``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)


def _model_of(name: str, optimizer: torch.optim.Optimizer, objects: Mapping[str, Any]) -> nn.Module:
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


def gather_state(objects: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(sharded, plain)`` state of ``objects``: modules and optimizers, then the rest.

    Every rank must call it. An optimizer without state yet gets it
    initialised (a step with zero gradients and learning rate), so the sharded
    part is also the template a load fills in place.

    Example::

        sharded, plain = gather_state({"model": model, "optimizer": opt, "trainer": trainer})
        # sharded == {"model": {...}, "optimizer": {...}}, plain == {"trainer": {...}}
    """
    sharded: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            sharded[name] = get_model_state_dict(obj)
        elif isinstance(obj, torch.optim.Optimizer):
            sharded[name] = get_optimizer_state_dict(_model_of(name, obj, objects), obj)
        elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            plain[name] = obj.state_dict()
        else:
            raise TypeError(
                f"objects[{name!r}] is a {type(obj).__name__}, which has no "
                "state_dict/load_state_dict"
            )
    return sharded, plain


def restore_state(
    objects: Mapping[str, Any], sharded: Mapping[str, Any], plain: Mapping[str, Any]
) -> None:
    """Load ``sharded`` and ``plain`` (from ``gather_state``'s layout) into ``objects``.

    Every rank must call it. A name missing from both raises a ValueError naming it.

    Example::

        sharded, plain = gather_state(objects)     # the template
        plain = storage.load("checkpoint_100", sharded)
        restore_state(objects, sharded, plain)
    """
    for name in objects:
        if name not in sharded and name not in plain:
            held = sorted([*sharded, *plain])
            raise ValueError(f"the checkpoint has no entry {name!r}; it holds {held}")
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            set_model_state_dict(obj, sharded[name])
        elif isinstance(obj, torch.optim.Optimizer):
            set_optimizer_state_dict(_model_of(name, obj, objects), obj, sharded[name])
        else:
            obj.load_state_dict(plain[name])
