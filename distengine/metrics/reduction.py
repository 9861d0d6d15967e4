"""Reduce the states of many metrics across ranks in as few collectives as possible.

Round 1 packs every fixed-shape state into one flat buffer per (dtype,
reduction op) and all-reduces each buffer once. States whose layout differs
per rank (``cat`` states of uneven length, ``lazy`` states a rank may never
have filled) add a small int64 "layout" block to round 1: each rank writes its
row, the sum gives every rank every row. Round 2 then sums one buffer per
dtype in which each rank fills only its own slice of the concatenations (and
its lazy states), which gathers uneven shards, empty ones included.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from distengine.distributed import get_rank, get_world_size, is_distributed
from distengine.distributed.collectives import comm_device

if TYPE_CHECKING:
    from distengine.metrics.metric import Metric

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]
_MAX_DIMS = 6


def _with_dependencies(metrics: Sequence[Metric]) -> list[Metric]:
    found: dict[int, Metric] = {}
    stack = list(metrics)
    while stack:
        metric = stack.pop()
        if id(metric) not in found:
            found[id(metric)] = metric
            stack.extend(metric.dependencies())
    return list(found.values())


@contextlib.contextmanager
def reduced_states(metrics: Sequence[Metric]) -> Iterator[None]:
    """Within the block, every state of ``metrics`` (and their dependencies) is reduced.

    Each metric computes at most once inside the block (its value is cached).
    Outside it the local, unreduced states are back in place.
    """
    members = [m for m in _with_dependencies(metrics) if not m._synced]
    for metric in members:
        metric.flush_counts()
    saved = {id(m): {s.name: getattr(m, s.name) for s in m._specs.values()} for m in members}
    try:
        values = _reduce(members)
        for metric in members:
            for name, value in values[id(metric)].items():
                setattr(metric, name, value)
            metric._synced = True
            metric._cache = {}
        yield
    finally:
        for metric in members:
            for name, value in saved[id(metric)].items():
                setattr(metric, name, value)
            metric._synced = False
            metric._cache = {}


def _local(metric: Metric, spec) -> torch.Tensor | None:
    value = getattr(metric, spec.name)
    if spec.reduce != "cat":
        return value
    return torch.cat(value) if value else None


def _reduce(members: list[Metric]) -> dict[int, dict[str, torch.Tensor | None]]:
    entries = [(m, s, _local(m, s)) for m in members for s in m._specs.values()]
    out: dict[int, dict] = defaultdict(dict)
    if not (is_distributed() and get_world_size() > 1):
        for metric, spec, value in entries:
            out[id(metric)][spec.name] = value
        return out
    fixed = [(m, s, v) for m, s, v in entries if s.reduce != "cat" and not s.lazy]
    varying = [(m, s, v) for m, s, v in entries if s.reduce == "cat" or s.lazy]
    layout = _layout_rows(varying)
    reduced, layouts = _round_one(fixed, layout)
    for (metric, spec, _), value in zip(fixed, reduced):
        out[id(metric)][spec.name] = value
    if varying:
        for (metric, spec, _), value in zip(varying, _round_two(varying, layouts)):
            out[id(metric)][spec.name] = value
    return out


def _layout_rows(varying) -> torch.Tensor | None:
    """This rank's layout of each varying state: [dtype code + 1, ndim, *shape]."""
    if not varying:
        return None
    width = 2 + _MAX_DIMS
    rows = torch.zeros(get_world_size(), len(varying), width, dtype=torch.int64)
    for i, (_, spec, value) in enumerate(varying):
        if value is None:
            continue
        if value.dim() > _MAX_DIMS or value.dtype not in _DTYPES:
            raise ValueError(
                f"metric state {spec.name!r} of shape {tuple(value.shape)} and {value.dtype} "
                f"cannot be reduced: at most {_MAX_DIMS} dims of {_DTYPES}"
            )
        rows[get_rank(), i, 0] = _DTYPES.index(value.dtype) + 1
        rows[get_rank(), i, 1] = value.dim()
        rows[get_rank(), i, 2 : 2 + value.dim()] = torch.tensor(value.shape)
    return rows


def _round_one(fixed, layout):
    """All-reduce the fixed states, one flat buffer per (dtype, op); the layout rides along."""
    device = comm_device()
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (_, spec, value) in enumerate(fixed):
        groups[(value.dtype, spec.reduce)].append(i)
    if layout is not None:
        groups.setdefault((torch.int64, "sum"), [])
    results: list[torch.Tensor | None] = [None] * len(fixed)
    layouts = None
    for (dtype, op), indices in groups.items():
        parts = [fixed[i][2].reshape(-1).to(device) for i in indices]
        with_layout = layout is not None and (dtype, op) == (torch.int64, "sum")
        if with_layout:
            parts.append(layout.reshape(-1).to(device))
        buffer = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=device)
        dist.all_reduce(buffer, _OPS[op])
        offset = 0
        for i in indices:
            value = fixed[i][2]
            results[i] = buffer[offset : offset + value.numel()].view_as(value).to(value.device)
            offset += value.numel()
        if with_layout:
            layouts = buffer[offset:].view_as(layout).cpu()
    return results, layouts


def _agreed(layouts: torch.Tensor, i: int, name: str, whole: bool = False):
    """(dtype, trailing shape, rows per rank) of varying state ``i``, checked across ranks
    (``whole``: a lazy state, whose full shape must agree)."""
    rows = layouts[:, i]
    present = [r for r in range(rows.shape[0]) if rows[r, 0] > 0]
    if not present:
        return None
    shapes = {tuple(rows[r, 2 : 2 + rows[r, 1]].tolist()) for r in present}
    codes = {int(rows[r, 0]) for r in present}
    if len(codes) > 1 or len({s[1:] for s in shapes}) > 1 or (whole and len(shapes) > 1):
        raise ValueError(f"metric state {name!r} differs across ranks: shapes {sorted(shapes)}")
    lengths = [int(rows[r, 2]) if rows[r, 0] > 0 else 0 for r in range(rows.shape[0])]
    return _DTYPES[codes.pop() - 1], next(iter(shapes)), lengths


def _round_two(varying, layouts):
    """Sum one buffer per dtype holding lazy states and this rank's slice of each concatenation."""
    device = comm_device()
    plans = [
        _agreed(layouts, i, spec.name, spec.reduce != "cat")
        for i, (_, spec, _) in enumerate(varying)
    ]
    by_dtype: dict[torch.dtype, list[int]] = defaultdict(list)
    for i, plan in enumerate(plans):
        if plan is not None:
            by_dtype[plan[0]].append(i)
    results: list[torch.Tensor | None] = [None] * len(varying)
    for dtype, indices in by_dtype.items():
        sizes, pieces = [], []
        for i in indices:
            _, spec, value = varying[i]
            _, shape, lengths = plans[i]
            full = torch.zeros(_full_shape(spec, shape, lengths), dtype=dtype, device=device)
            if value is not None and spec.reduce == "cat":
                start = sum(lengths[: get_rank()])
                full[start : start + value.shape[0]] = value.to(device)
            elif value is not None:
                full.copy_(value)
            sizes.append(full.shape)
            pieces.append(full.reshape(-1))
        buffer = torch.cat(pieces)
        work = buffer if dtype != torch.bool else buffer.to(torch.uint8)
        dist.all_reduce(work, dist.ReduceOp.SUM)
        buffer = work.to(dtype)
        offset = 0
        for i, shape in zip(indices, sizes):
            numel = shape.numel()
            results[i] = buffer[offset : offset + numel].view(shape)
            offset += numel
    return results


def _full_shape(spec, shape, lengths) -> tuple[int, ...]:
    if spec.reduce == "cat":
        return (sum(lengths), *shape[1:])
    return tuple(shape)
