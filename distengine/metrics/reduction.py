"""Reduce the states of many metrics across ranks in as few collectives as possible.

Exactly what it costs, with several ranks:

- **Round 1, one collective**: every fixed-shape state, whatever its dtype and
  reduction (sum, max, min), travels as bytes in ONE ``all_gather``, with
  the layout of the states whose shape differs per rank; each rank then
  combines the world's copies itself, in rank order, so every rank gets the
  same result. States past a budget (:data:`GATHER_BUDGET` bytes received
  per rank, counted in declaration order) are all-reduced instead: one
  collective per (dtype, reduction) among them.
- **Round 2, only with** ``cat`` **or lazy states**: one all-reduce (sum) per
  dtype among those. ``cat`` states of uneven length (and lazy states a rank
  never filled) are placed by the layout: each rank fills only its own slice,
  so the sum gathers every rank's shard, empty ones included.

So the metrics of one engine usually cost one collective per evaluation
(accuracy, loss, top-k, a confusion matrix, precision and recall given
``num_classes``), two with lazily shaped or concatenated states of one dtype
(precision, recall, F1 without ``num_classes``: int64 counts; ROC AUC: its
scores), one more per further dtype among those.
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

#: Bytes each rank receives in round 1's gather, at most (world size x bytes gathered); states
#: past it are all-reduced, one collective per (dtype, reduction).
GATHER_BUDGET = 1 << 20


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
    reduced, layouts = _round_one([(v, s.reduce) for _, s, v in fixed], layout)
    for (metric, spec, _), value in zip(fixed, reduced):
        out[id(metric)][spec.name] = value
    if varying:
        for (metric, spec, _), value in zip(varying, _round_two(varying, layouts)):
            out[id(metric)][spec.name] = value
    return out


def reduce_tensors(items: Sequence[tuple[torch.Tensor, str]]) -> list[torch.Tensor]:
    """Each tensor combined across ranks by its reduction (``"sum"``, ``"max"``, ``"min"``).

    One collective for all of them (see the module's description: a gather of
    their bytes, or all-reduces past the budget); every tensor must have the
    same shape and dtype on every rank. The inputs are left as they are; the
    results live on each input's device. With one process: the inputs.

    Example::

        correct, total = reduce_tensors([(self.correct, "sum"), (self.total, "sum")])
    """
    for _, op in items:
        if op not in _OPS:
            raise ValueError(f"reduction must be one of {sorted(_OPS)}, got {op!r}")
    if not (is_distributed() and get_world_size() > 1):
        return [value for value, _ in items]
    return _round_one(list(items), None)[0]


def _layout_rows(varying) -> torch.Tensor | None:
    """This rank's layout of each varying state: [dtype code + 1, ndim, *shape]."""
    if not varying:
        return None
    rows = torch.zeros(len(varying), 2 + _MAX_DIMS, dtype=torch.int64)
    for i, (_, spec, value) in enumerate(varying):
        if value is None:
            continue
        if value.dim() > _MAX_DIMS or value.dtype not in _DTYPES:
            raise ValueError(
                f"metric state {spec.name!r} of shape {tuple(value.shape)} and {value.dtype} "
                f"cannot be reduced: at most {_MAX_DIMS} dims of {_DTYPES}"
            )
        rows[i, 0] = _DTYPES.index(value.dtype) + 1
        rows[i, 1] = value.dim()
        rows[i, 2 : 2 + value.dim()] = torch.tensor(value.shape)
    return rows


def _round_one(fixed: list[tuple[torch.Tensor, str]], layout: torch.Tensor | None):
    """Fixed states combined across ranks (gathered, or all-reduced past the budget), and
    every rank's layout rows (world, n, width) when ``layout`` is given."""
    world = get_world_size()
    gathered, reduced, budget = [], [], GATHER_BUDGET
    for i, (value, _) in enumerate(fixed):
        size = world * value.numel() * value.element_size()
        if size <= budget:
            gathered.append(i)
            budget -= size
        else:
            reduced.append(i)
    results: list[torch.Tensor | None] = [None] * len(fixed)
    layouts = None
    pieces = [fixed[i][0] for i in gathered] + ([layout] if layout is not None else [])
    if pieces:
        everyone = _gather(pieces)
        for i, stacked in zip(gathered, everyone):
            value, op = fixed[i]
            results[i] = _combine(stacked, op).to(value.device)
        if layout is not None:
            layouts = everyone[-1].cpu()
    for i, value in zip(reduced, _all_reduced([fixed[i] for i in reduced])):
        results[i] = value
    return results, layouts


def _gather(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every rank's copy of each tensor, stacked on a new first dim: ONE all_gather of bytes."""
    device = comm_device()
    flat = [t.detach().reshape(-1).contiguous().view(torch.uint8) for t in tensors]
    local = torch.cat([f.to(device) for f in flat])
    out = torch.empty(get_world_size(), local.numel(), dtype=torch.uint8, device=device)
    dist.all_gather(list(out.unbind(0)), local)
    stacked, offset = [], 0
    for t, f in zip(tensors, flat):
        piece = out[:, offset : offset + f.numel()].contiguous()
        stacked.append(piece.view(t.dtype).view(out.shape[0], *t.shape))
        offset += f.numel()
    return stacked


def _combine(stacked: torch.Tensor, op: str) -> torch.Tensor:
    """The world's copies (first dim) combined, in rank order."""
    if op == "max":
        return stacked.amax(0)
    if op == "min":
        return stacked.amin(0)
    if stacked.dtype == torch.bool:
        return stacked.any(0)
    return stacked.sum(0, dtype=stacked.dtype)


def _all_reduced(fixed: list[tuple[torch.Tensor, str]]) -> list[torch.Tensor]:
    """All-reduce states, one flat buffer per (dtype, op)."""
    device = comm_device()
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (value, op) in enumerate(fixed):
        groups[(value.dtype, op)].append(i)
    results: list[torch.Tensor] = [None] * len(fixed)  # type: ignore[list-item]
    for (_, op), indices in groups.items():
        buffer = torch.cat([fixed[i][0].reshape(-1).to(device) for i in indices])
        dist.all_reduce(buffer, _OPS[op])
        offset = 0
        for i in indices:
            value = fixed[i][0]
            results[i] = buffer[offset : offset + value.numel()].view_as(value).to(value.device)
            offset += value.numel()
    return results


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
