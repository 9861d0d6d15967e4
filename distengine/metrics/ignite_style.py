"""PyTorch-Ignite's metric decorators, for custom metrics written Ignite's way.

An Ignite-style metric keeps its state in plain attributes (tensors or Python
numbers) that ``reset`` sets, ``update`` accumulates and ``compute`` reads
through ``@sync_all_reduce("_sum", "_num_examples:MAX", ...)``. Here the
attributes that ``compute``'s decorator names join the engine's one reduction
of all its metrics (one collective per dtype and op, shared with every other
metric of the engine; summed tensors of one or more dimensions add a second
round, in which their shapes are checked to agree across ranks); ``compute``
sees them reduced, as Python numbers where they were numbers, and the local
values are back afterwards (as in Ignite 0.5.5). ``PRODUCT`` attributes, and
the attributes of other decorated methods, are reduced when the method is
called (one collective per op).

Example::

    from distengine.metrics.metric import Metric, reinit__is_reduced, sync_all_reduce

    class CustomAccuracy(Metric):
        @reinit__is_reduced
        def reset(self):
            self._num_correct = torch.tensor(0, device=self._device)
            self._num_examples = 0
            super().reset()

        @reinit__is_reduced
        def update(self, output):
            y_pred, y = output[0].detach(), output[1].detach()
            self._num_correct += (y_pred.argmax(1) == y).sum().to(self._device)
            self._num_examples += y.shape[0]

        @sync_all_reduce("_num_examples", "_num_correct:SUM")
        def compute(self):
            return self._num_correct.item() / self._num_examples
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from numbers import Number
from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import get_world_size, is_distributed
from distengine.distributed.collectives import all_reduce
from distengine.metrics.state import StateSpec

if TYPE_CHECKING:
    from distengine.metrics.metric import Metric

__all__ = ["reinit__is_reduced", "sync_all_reduce"]

_VALID_OPS = ("MIN", "MAX", "SUM", "PRODUCT")
_SHADOW = "sync_all_reduce:"  # the declared state that carries an attribute through a reduction


def _parsed(attr: str) -> tuple[str, str]:
    name, _, op = attr.partition(":")
    return name, op or "SUM"


def _check_op(op: str) -> None:
    if op not in _VALID_OPS:
        expected = list(_VALID_OPS)
        raise ValueError(f"Reduction operation is not valid (expected : {expected}, got: {op}")


def _attribute(metric: Metric, name: str) -> Any:
    """The attribute's value, checked as Ignite checks it (a number or a tensor)."""
    if name not in metric.__dict__:
        raise ValueError(f"Metric {type(metric)} has no attribute named `{name}`.")
    value = metric.__dict__[name]
    if not isinstance(value, (Number, torch.Tensor)):
        raise TypeError(
            "Attribute provided to sync_all_reduce should be a number or tensor but "
            f"`{name}` has type {type(value)}"
        )
    return value


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    dtype = torch.int64 if isinstance(value, (bool, int)) else torch.float64
    return torch.tensor(value, dtype=dtype)


def _like(reduced: torch.Tensor, original: Any) -> Any:
    """``reduced`` in the original's form: a Python number stays a number."""
    if isinstance(original, torch.Tensor):
        return reduced.to(original.device)
    return type(original)(reduced.item())


def _active() -> bool:
    """Whether there are other ranks to reduce with."""
    return is_distributed() and get_world_size() > 1


def sync_all_reduce(*attrs: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make the method see ``attrs`` reduced over all ranks (``"name"`` or ``"name:OP"``, OP
    one of SUM, MAX, MIN, PRODUCT), then put the local values back.

    On ``compute`` the SUM/MAX/MIN attributes are reduced with the engine's other metrics in
    one collective. Numbers stay numbers. With one process nothing changes.
    """

    def decorator(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def reducing(self: Metric, *args: Any, **kwargs: Any) -> Any:
            from distengine.metrics.metric import Metric
            from distengine.metrics.reduction import reduced_states

            if not isinstance(self, Metric):
                raise RuntimeError(
                    "Decorator sync_all_reduce should be used on distengine.metrics.Metric "
                    "class methods only"
                )
            if not attrs or not _active():
                return method(self, *args, **kwargs)
            joins_group = reducing is getattr(type(self), "_ignite_sync_method", None)
            if joins_group and not self._synced:
                with reduced_states([self]):
                    return reducing(self, *args, **kwargs)
            with _reduced_attributes(self, attrs, joins_group):
                return method(self, *args, **kwargs)

        reducing._decorated = True  # type: ignore[attr-defined]
        reducing._sync_all_reduce = attrs  # type: ignore[attr-defined]
        return reducing

    return decorator


def reinit__is_reduced(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``reset``/``update`` as Ignite does (its cached result is dropped after the call).

    distengine reduces a copy at each ``compute`` and never keeps a reduced state, so there is
    nothing else to re-initialise.
    """

    @functools.wraps(method)
    def wrapper(self: Metric, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        if "_result" in self.__dict__:
            self._result = None
        return result

    wrapper._decorated = True  # type: ignore[attr-defined]
    return wrapper


@contextlib.contextmanager
def _reduced_attributes(metric: Metric, attrs: tuple[str, ...], joined: bool) -> Iterator[None]:
    """The attributes set to their reduced values; the local ones are back afterwards.

    ``joined``: SUM/MAX/MIN values were reduced with the engine's metrics (read from the
    declared shadow states); others (and PRODUCT) are reduced here, one collective per op.
    """
    originals: dict[str, Any] = {}
    direct: dict[str, list[str]] = {}
    for attr in attrs:
        name, op = _parsed(attr)
        _check_op(op)
        originals[name] = _attribute(metric, name)
        if joined and op != "PRODUCT":
            setattr(metric, name, _like(getattr(metric, _SHADOW + name), originals[name]))
        else:
            direct.setdefault(op, []).append(name)
    for op, names in direct.items():
        for name, value in zip(names, _reduce_together([originals[n] for n in names], op)):
            setattr(metric, name, value)
    try:
        yield
    finally:
        for name, value in originals.items():
            setattr(metric, name, value)


def _reduce_together(values: list[Any], op: str) -> list[Any]:
    """``values`` reduced with ``op``: one collective per dtype."""
    tensors = [_as_tensor(v) for v in values]
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    out: list[Any] = [None] * len(values)
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices])
        all_reduce(flat, op=op.lower())
        offset = 0
        for i in indices:
            n = tensors[i].numel()
            out[i] = _like(flat[offset : offset + n].view_as(tensors[i]), values[i])
            offset += n
    return out


def declare_shadows(metric: Metric) -> None:
    """Declare (again) a state for each SUM/MAX/MIN attribute of ``compute``'s decorator,
    holding the attribute's current value as a tensor, so that the engine's reduction
    carries it. With several ranks a missing or non-numeric attribute raises, as in Ignite."""
    method = getattr(type(metric), "_ignite_sync_method", None)
    if method is None:
        return
    for attr in method._sync_all_reduce:
        name, op = _parsed(attr)
        if op == "PRODUCT" or op not in _VALID_OPS:
            if _active():
                _check_op(op)
            continue
        if _active():
            value = _attribute(metric, name)
        else:
            value = metric.__dict__.get(name)
            if not isinstance(value, (Number, torch.Tensor)):
                continue
        tensor = _as_tensor(value)
        shadow = _SHADOW + name
        # a summed tensor that is not a scalar may differ in shape across ranks (it comes from
        # user code): declared lazy, its shape is checked in the reduction's first round (a
        # clear error on every rank, never a hang) and it is summed in a second one
        lazy = op == "SUM" and tensor.dim() > 0
        default = None if lazy else torch.zeros_like(tensor)
        metric._specs[shadow] = StateSpec(shadow, op.lower(), default)
        setattr(metric, shadow, tensor)


def restore_from_shadows(metric: Metric) -> None:
    """After a load: each attribute takes its shadow's value, in the attribute's form."""
    for shadow in [name for name in metric._specs if name.startswith(_SHADOW)]:
        name = shadow[len(_SHADOW) :]
        value = getattr(metric, shadow)
        setattr(metric, name, _like(value, metric.__dict__.get(name, value)))
