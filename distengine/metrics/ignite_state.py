"""The attributes an Ignite-style metric names in ``_state_dict_all_req_keys``, in its state dict.

PyTorch-Ignite saves a metric's ``_state_dict_all_req_keys`` attributes: numbers, tensors,
``None``, other metrics (by their state dicts) and lists, tuples and dicts of those. distengine
saves them beside the states declared with ``add_state`` (this rank's, as for every metric) and
restores them in place (a metric inside is loaded, not replaced).

Example::

    class Collect(Metric):
        _state_dict_all_req_keys = ("_values", "_count")

        def reset(self):
            self._values, self._count = [], 0
        ...

    Collect().state_dict()     # {"_values": [...], "_count": 3}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import get_rank, get_world_size
from distengine.metrics.ignite_style import _SHADOW
from distengine.utils import _tree_map

if TYPE_CHECKING:
    from distengine.metrics.metric import Metric

#: The key of Ignite's own format, ``{PER_RANK: [rank 0's state, rank 1's, ...]}``.
PER_RANK = "__metric_state_per_rank"


def attribute_keys(metric: Metric) -> list[str]:
    """The ``_state_dict_all_req_keys`` that are not declared states, nor carried by one (an
    attribute of ``compute``'s ``sync_all_reduce``: saved, merged and restored as its state)."""
    keys = getattr(type(metric), "_state_dict_all_req_keys", ())
    return [key for key in keys if key not in metric._specs and _SHADOW + key not in metric._specs]


def attribute_state(metric: Metric) -> dict[str, Any]:
    """The attributes, with every metric among them replaced by its state dict."""

    def saved(value: Any, key: Any = None) -> Any:
        from distengine.metrics.metric import Metric

        if isinstance(value, Metric):
            return value.state_dict()
        if value is None or isinstance(value, (int, float, torch.Tensor)):
            return value
        raise TypeError(
            "Found attribute of unsupported type. Currently, supported types include numeric "
            f"types, tensor, Metric or sequence/mapping of metrics: {type(value).__name__} in "
            f"{type(metric).__name__}._state_dict_all_req_keys"
        )

    state = {}
    for key in attribute_keys(metric):
        if key not in metric.__dict__:
            raise ValueError(
                "Found a value in _state_dict_all_req_keys that is not among metric "
                f"attributes: {key} ({type(metric).__name__} has no attribute {key!r})"
            )
        state[key] = _tree_map(saved, metric.__dict__[key])
    return state


def restore_attributes(metric: Metric, state: Mapping[str, Any]) -> None:
    """Set each attribute from ``state``; a metric among them loads its saved state."""
    for key in attribute_keys(metric):
        metric.__dict__[key] = _restored(metric.__dict__.get(key), state[key])


def _restored(current: Any, saved: Any) -> Any:
    from distengine.metrics.metric import Metric

    if isinstance(current, Metric):
        current.load_state_dict(saved)
        return current
    if isinstance(current, Mapping) and isinstance(saved, Mapping):
        return type(current)({k: _restored(current.get(k), v) for k, v in saved.items()})
    if isinstance(current, (list, tuple)) and isinstance(saved, (list, tuple)):
        if len(current) == len(saved) and any(isinstance(c, Metric) for c in current):
            return type(current)(_restored(c, s) for c, s in zip(current, saved))
    return saved


def this_ranks(state_dict: Any, metric: Metric) -> Mapping[str, Any]:
    """``state_dict`` checked to be a mapping; in Ignite's per-rank format, this rank's entry."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"Argument state_dict should be a dictionary, but given {type(state_dict)} "
            f"({type(metric).__name__}.load_state_dict)"
        )
    if PER_RANK not in state_dict:
        return state_dict
    per_rank, world = state_dict[PER_RANK], get_world_size()
    if len(state_dict) != 1 or not isinstance(per_rank, (list, tuple)) or len(per_rank) != world:
        count = len(per_rank) if isinstance(per_rank, (list, tuple)) else per_rank
        raise ValueError(
            "Incorrect state_dict object. Argument state_dict should be a dictionary provided "
            f"by Metric.state_dict(). Expected a list of state_dicts of size equal world_size: "
            f"{world}, but got {count}"
        )
    return per_rank[get_rank()]
