"""What a checkpoint holds: objects with ``state_dict``/``load_state_dict``, some of them per rank.

An object whose state differs from rank to rank (the engine's random
generators and data position, a metric's local accumulation, a training
step's pending gradients) declares the class attribute
``checkpoint_per_rank = True``. Rank 0 writes the checkpoint, so such an
object is saved as every rank's state, ``{"__per_rank__": [sd_0, sd_1, ...]}``
(one gather to rank 0 for all of them), and on load each rank gets its own. There is no
special case for any class: the engine is one such object among others.

A dict of such objects is one entry too (``{"metrics": {"accuracy": acc, "nll": nll}}``,
as PyTorch-Ignite's ``to_save`` allows): its state is the dict of their states, per rank
when any of them is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist

from distengine.distributed import get_rank, get_world_size
from distengine.distributed.env import is_distributed

PER_RANK = "__per_rank__"
_LEGACY_PER_RANK = "per_rank"  # engine states saved before the Stateful contract


@runtime_checkable
class Stateful(Protocol):
    """Anything a checkpoint can hold: ``state_dict()`` and ``load_state_dict(sd)``.

    Set ``checkpoint_per_rank = True`` on the class when the state differs per
    rank; define ``load_per_rank_state_dicts(list_of_sds)`` to accept states
    saved with another world size (otherwise that load is refused by name).

    Example::

        class Counter:
            checkpoint_per_rank = True          # each rank counts its own batches

            def __init__(self):
                self.n = 0

            def state_dict(self):
                return {"n": self.n}

            def load_state_dict(self, state):
                self.n = state["n"]
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...


class StateGroup:
    """A dict of stateful objects seen as one: its state is the dict of their states.

    It is per rank when any member is; saved per rank, each rank's entry holds
    every member's state (members that are the same on every rank load rank 0's).

    Example::

        group = StateGroup({"accuracy": Accuracy(), "nll": Loss(criterion)})
        group.state_dict()      # {"accuracy": {...}, "nll": {...}}
    """

    def __init__(self, members: Mapping[str, Any]) -> None:
        self.members = dict(members)

    @property
    def checkpoint_per_rank(self) -> bool:
        return any(is_per_rank(obj) for obj in self.members.values())

    def state_dict(self) -> dict[str, Any]:
        return {name: unwrap(obj).state_dict() for name, obj in self.members.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        missing = [name for name in self.members if name not in state_dict]
        if missing:
            raise KeyError(f"checkpoint entry lacks {missing}; it holds {sorted(state_dict)}")
        for name, obj in self.members.items():
            load_state(name, obj, state_dict[name])

    def load_per_rank_state_dicts(self, states: list[Mapping[str, Any]]) -> None:
        """Every rank's saved states, from a run with another world size."""
        for name, obj in self.members.items():
            entries = [state[name] for state in states]
            if is_per_rank(obj):
                _load_other_world(name, unwrap(obj), entries)
            else:
                load_state(name, obj, entries[0])


def unwrap(obj: Any) -> Any:
    """The module inside DistributedDataParallel/DataParallel, so checkpoints load anywhere;
    a dict of stateful objects as one :class:`StateGroup`."""
    if isinstance(obj, torch.nn.Module):
        return getattr(obj, "module", obj)
    if isinstance(obj, Mapping) and not isinstance(obj, Stateful):
        return StateGroup(obj)
    return obj


def is_per_rank(obj: Any) -> bool:
    """Whether ``obj`` declares a state that differs per rank."""
    return bool(getattr(unwrap(obj), "checkpoint_per_rank", False))


def check_stateful(objects: Mapping[str, Any], what: str) -> None:
    """Raise TypeError naming the first entry of ``objects`` that is not :class:`Stateful`."""
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError(f"{what} must be a non-empty dict of name -> object, got {objects!r}")
    for name, obj in objects.items():
        if isinstance(obj, Mapping) and not isinstance(obj, Stateful):
            check_stateful(obj, f"{what}[{name!r}]")
        elif not isinstance(unwrap(obj), Stateful):
            raise TypeError(
                f"{what}[{name!r}] is a {type(obj).__name__}, which has no "
                "state_dict/load_state_dict"
            )


def gather_states(objects: Mapping[str, Any]) -> dict[str, Any]:
    """Every object's state; per-rank ones as every rank's, on rank 0 (a collective: all ranks
    call it).

    Rank 0 writes checkpoints, so per-rank states are gathered to rank 0
    only: the other ranks hold their own state and nothing more (their dict
    holds ``{"__per_rank__": None}`` for such an entry). Which objects are
    per rank is the same on every rank (it is declared by their classes), so
    every rank runs the same one gather, or none.

    Example::

        gather_states({"model": model, "trainer": trainer})
        # rank 0: {"model": {...}, "trainer": {"__per_rank__": [sd_0, sd_1, ...]}}
    """
    states = {name: unwrap(obj).state_dict() for name, obj in objects.items()}
    mine = {name: states[name] for name, obj in objects.items() if is_per_rank(obj)}
    if not mine:
        return states
    every = _gather_to_rank0(mine)
    for name in mine:
        states[name] = {PER_RANK: None if every is None else [ranks[name] for ranks in every]}
    return states


def _gather_to_rank0(value: Any) -> list[Any] | None:
    """Every rank's ``value`` on rank 0 (a list by rank), None on the other ranks."""
    if not is_distributed() or get_world_size() == 1:
        return [value]
    gathered: list[Any] | None = [None] * get_world_size() if get_rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def load_state(name: str, obj: Any, entry: Any, strict: bool = True) -> None:
    """Load checkpoint entry ``name`` into ``obj``, giving this rank its own per-rank state."""
    target = unwrap(obj)
    if isinstance(entry, Mapping) and PER_RANK in entry:
        states = list(entry[PER_RANK])
        if len(states) != get_world_size():
            _load_other_world(name, target, states)
            return
        entry = states[get_rank()]
    elif isinstance(entry, Mapping) and _LEGACY_PER_RANK in entry:
        entry = _legacy_for_this_rank(entry)
    if isinstance(target, torch.nn.Module):
        target.load_state_dict(entry, strict=strict)
    else:
        target.load_state_dict(entry)


def _load_other_world(name: str, target: Any, states: list[Any]) -> None:
    loader = getattr(target, "load_per_rank_state_dicts", None)
    if loader is None:
        raise ValueError(
            f"checkpoint entry {name!r} holds per-rank states of {len(states)} rank(s) and this "
            f"run has {get_world_size()}: a {type(target).__name__} cannot be resumed with another "
            "world size (it has no load_per_rank_state_dicts); resume with "
            f"{len(states)} rank(s)"
        )
    loader(states)


def _legacy_for_this_rank(state: Mapping[str, Any]) -> dict[str, Any]:
    """An engine state from before the Stateful contract, with this rank's own generators."""
    per_rank = state[_LEGACY_PER_RANK]
    merged = {k: v for k, v in state.items() if k != _LEGACY_PER_RANK}
    if per_rank and len(per_rank) == get_world_size():
        merged.update(per_rank[get_rank()])
    return merged
