"""Loading a one-file (full, unsharded) checkpoint into sharded objects without a copy per rank.

Rank 0 alone reads the file (memory-mapped); modules and optimizers are
filled through ``set_model_state_dict`` / ``set_optimizer_state_dict`` with
``broadcast_from_rank0``, which sends each rank only what it needs; the
small plain entries (engine, schedulers) are broadcast whole. The other
ranks never hold the full state. An optimizer saved with
``optimizer.state_dict()`` (keyed by parameter index) is re-keyed by
parameter name first, as those functions expect.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distengine.checkpoint.sharded_state import is_shardable, model_of
from distengine.checkpoint.stateful import load_state
from distengine.distributed import broadcast, get_rank


def _by_name(
    saved: Mapping[str, Any], optimizer: torch.optim.Optimizer, model: nn.Module
) -> dict[str, Any]:
    """``optimizer.state_dict()`` (keys: parameter indices) keyed by parameter name instead."""
    if all(isinstance(key, str) for key in saved.get("state", {})):
        return dict(saved)  # already keyed by name (a consolidated sharded checkpoint)
    names = {id(p): name for name, p in model.named_parameters()}
    ours = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    theirs = [index for group in saved["param_groups"] for index in group["params"]]
    if len(ours) != len(theirs):
        raise ValueError(
            f"the checkpoint's optimizer has {len(theirs)} parameters, this one {len(ours)}"
        )
    rename = dict(zip(theirs, ours))
    return {
        "state": {rename[index]: value for index, value in saved["state"].items()},
        "param_groups": [
            {**group, "params": [rename[i] for i in group["params"]]}
            for group in saved["param_groups"]
        ],
    }


def _prepare_on_rank0(
    objects: Mapping[str, Any], checkpoint: Any, map_location: Any
) -> tuple[dict[str, Any], Any]:
    """(rank 0: the entries to load, optimizers keyed by name; {} elsewhere, and what every rank
    learns: the checkpoint's keys, or rank 0's error as a string)."""
    from distengine.checkpoint.loading import load_checkpoint_file

    if get_rank() != 0:
        return {}, broadcast(None)
    try:
        state = checkpoint
        if isinstance(checkpoint, (str, os.PathLike)):
            state = load_checkpoint_file(Path(checkpoint), map_location)
        if not isinstance(state, Mapping):
            raise TypeError(f"the checkpoint is a {type(state).__name__}, not a dict")
        mine = {name: state[name] for name in objects if name in state}
        for name, obj in objects.items():
            if isinstance(obj, torch.optim.Optimizer) and name in mine:
                mine[name] = _by_name(mine[name], obj, model_of(name, obj, objects))
        said: Any = sorted(state)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError) as error:
        mine, said = {}, f"{type(error).__name__}: {error}"
    return mine, broadcast(said)


def load_full_into(
    objects: Mapping[str, Any],
    checkpoint: str | os.PathLike | Mapping[str, Any],
    map_location: Any = "cpu",
    strict: bool = True,
) -> None:
    """Load a full checkpoint (a file path, or a dict on rank 0) into ``objects``, some sharded.

    Every rank must call it; only rank 0 reads the file or the dict (other
    ranks may pass anything). Errors (a corrupt file, a missing entry) raise
    on every rank.

    Example::

        load_full_into({"model": fsdp_model, "optimizer": opt, "trainer": trainer}, "ddp.pt")
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    mine, said = _prepare_on_rank0(objects, checkpoint, map_location)
    if isinstance(said, str):
        raise RuntimeError(f"rank 0 could not read the checkpoint: {said}")
    missing = [name for name in objects if name not in said]
    if missing:
        raise KeyError(
            f"checkpoint lacks {missing}; it holds {said} (load only those, or save them too)"
        )
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
    for name, obj in objects.items():
        if isinstance(obj, nn.Module):
            set_model_state_dict(obj, mine.get(name, {}), options=options)
        elif isinstance(obj, torch.optim.Optimizer):
            model = model_of(name, obj, objects)
            set_optimizer_state_dict(model, obj, mine.get(name, {}), options=options)
    plain = [name for name, obj in objects.items() if not is_shardable(obj)]
    entries = broadcast({name: mine[name] for name in plain} if get_rank() == 0 else None)
    for name in plain:
        load_state(name, objects[name], entries[name], strict=strict)
