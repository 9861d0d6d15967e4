"""Snapshots of the random number generators a training run draws from.

An exact resume needs the generators as they were when the current data
iterator was made (to rebuild the same shuffle) and as they were at the save
(to continue dropout, augmentation, ... identically). Snapshots hold only
tensors, ints and tuples, so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import torch


def _generators_of(data: Any) -> list[torch.Generator]:
    """The explicit ``torch.Generator`` objects a DataLoader and its sampler draw from."""
    found = []
    for owner in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    inner = getattr(getattr(data, "batch_sampler", None), "sampler", None)
    gen = getattr(inner, "generator", None)
    if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
        found.append(gen)
    return found


def snapshot(data: Any = None) -> dict[str, Any]:
    """The state of torch's, Python's, CUDA's and ``data``'s own generators."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "generators": [g.get_state() for g in _generators_of(data)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], data: Any = None) -> None:
    """Put every generator that ``snapshot(data)`` saw back into ``state``."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generators = _generators_of(data)
    if len(generators) == len(state["generators"]):
        for gen, gen_state in zip(generators, state["generators"]):
            gen.set_state(gen_state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
