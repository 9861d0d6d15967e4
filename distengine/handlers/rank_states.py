"""Every rank's random generator states in the engine's part of a checkpoint.

Rank 0 writes the checkpoint, but each rank draws from its own generators
(seeded ``seed + rank`` for per-rank augmentation, say). Saving gathers every
rank's states; loading gives each rank its own, so resume stays exact.
"""

from __future__ import annotations

from typing import Any

from distengine.distributed import all_gather, get_rank, get_world_size

PER_RANK = "per_rank"
_RANK_KEYS = ("rng", "data_position", "metrics", "process_function")


def with_every_rank(engine_state: dict[str, Any]) -> dict[str, Any]:
    """``engine_state`` plus every rank's generator states (a collective: all ranks call it)."""
    if get_world_size() <= 1:
        return engine_state
    mine = {key: engine_state.get(key) for key in _RANK_KEYS}
    return {**engine_state, PER_RANK: all_gather(mine)}


def for_this_rank(engine_state: dict[str, Any]) -> dict[str, Any]:
    """The engine state with this rank's own generator states, where they were saved."""
    per_rank = engine_state.get(PER_RANK)
    state = {k: v for k, v in engine_state.items() if k != PER_RANK}
    if per_rank and len(per_rank) == get_world_size():
        state.update(per_rank[get_rank()])
    return state
