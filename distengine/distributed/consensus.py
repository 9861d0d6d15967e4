"""Agreement across ranks: every decision that changes control flow is taken here, once.

A decision taken per rank before a collective makes ranks disagree on which
collectives they run, and they hang. So a handler never acts on its own
rank's view; it asks this module, and every rank gets the same answer:

- :func:`any_rank` / :func:`all_ranks`: one tiny all-reduce of a flag.
- :func:`decide`: rank ``src`` decides (a score, a step), every rank gets its value.
- :func:`agree`: several flags, OR-ed across ranks, in one collective.

Checks that run every iteration (TerminateOnNan, Preemption, TimeLimit) and
running values agree through the engine's board instead
(``distengine.engine.board``): one asynchronous collective, read one
iteration later.

With one process every function answers from the local value, with no
collective; asking the rank never performs one.

Example::

    from distengine.distributed.consensus import any_rank, decide

    if any_rank(~torch.isfinite(loss).all()):   # every rank gets the same answer
        trainer.terminate()
    best = decide(score)                     # rank 0's score, everywhere
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.collectives import broadcast
from distengine.distributed.env import comm_device, get_world_size, is_distributed

__all__ = ["agree", "all_ranks", "any_rank", "decide"]

Flag = bool | torch.Tensor


def _active() -> bool:
    return is_distributed() and get_world_size() > 1


def pack(entries: Sequence[Any]) -> torch.Tensor:
    """A float64 vector on the collectives' device (the engine's board packs its slots so):
    numbers as they are, None as NaN, 0-d CPU tensors read, others copied in on their
    device (no host sync unless it differs). With one process (nothing to reduce) the
    vector lives where the device tensors are."""
    device = comm_device() if _active() else _device_of(entries)
    host, on_device = [], []
    for i, e in enumerate(entries):
        if isinstance(e, torch.Tensor) and e.device.type != "cpu":
            host.append(0.0)
            on_device.append((i, e))
        else:
            host.append(math.nan if e is None else float(e))
    packed = torch.tensor(host, dtype=torch.float64, device=device)
    if on_device:
        index = torch.tensor([i for i, _ in on_device], device=device)
        values = [e.detach().reshape(()).to(device, torch.float64) for _, e in on_device]
        packed.index_copy_(0, index, torch.stack(values))
    return packed


def _device_of(entries: Sequence[Any]) -> torch.device:
    for e in entries:
        if isinstance(e, torch.Tensor) and e.device.type != "cpu":
            return e.device
    return torch.device("cpu")


def as_flag(flag: Any) -> Flag:
    if isinstance(flag, torch.Tensor):
        return flag.detach().reshape(()) != 0
    return bool(flag)


def _sum_flags(flags: Sequence[Any]) -> list[float]:
    """How many ranks raised each flag (one collective with several ranks)."""
    packed = pack([as_flag(f) for f in flags])
    if _active():
        dist.all_reduce(packed, dist.ReduceOp.SUM)
    return packed.tolist()


def any_rank(flag: bool | torch.Tensor) -> bool:
    """Whether ``flag`` is true on at least one rank (one tiny all-reduce).

    Example::

        if any_rank(time.monotonic() > deadline):
            trainer.terminate()            # on every rank, at the same point
    """
    return _sum_flags([flag])[0] > 0


def all_ranks(flag: bool | torch.Tensor) -> bool:
    """Whether ``flag`` is true on every rank (one tiny all-reduce).

    Example::

        ready = all_ranks(os.path.exists(cache))
    """
    return _sum_flags([flag])[0] == get_world_size()


def agree(flags: dict[str, bool | torch.Tensor]) -> dict[str, bool]:
    """Each flag OR-ed across ranks, all in one collective.

    Every rank must pass the same keys in the same order.

    Example::

        verdict = agree({"nan": ~torch.isfinite(loss), "stop": stop_requested})
        if verdict["nan"] or verdict["stop"]:
            trainer.terminate()
    """
    counts = _sum_flags(list(flags.values()))
    return {name: count > 0 for name, count in zip(flags, counts)}


def decide(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank: rank ``src`` decides, the others follow.

    Numbers (and tuples or lists of numbers) travel exactly, with rank
    ``src``'s types, in one tiny broadcast: a float keeps every bit (NaN,
    infinities, -0.0), an int stays that int however large, a bool a bool,
    ``None`` stays ``None`` (an int beyond 64 bits adds a second broadcast,
    on every rank). A tensor is copied and broadcast (same shape and dtype on
    every rank); anything else is pickled. Every rank must pass the same kind
    of value (which path a rank takes depends on its own argument): numbers
    where ``src`` passes numbers, as many of them, never a string on one rank
    and ``None`` on another.

    Example::

        score = decide(float(evaluator.state.metrics["accuracy"]))  # rank 0's score
    """
    if not _active():
        return value
    if isinstance(value, torch.Tensor):
        return broadcast(value.detach().clone(), src)
    numbers = value if isinstance(value, (tuple, list)) else (value,)
    if not all(_is_simple(v) for v in numbers):
        return broadcast(value, src)
    codes, bits = zip(*(_encode(v) for v in numbers)) if numbers else ((), ())
    packed = torch.tensor(codes + bits, dtype=torch.int64, device=comm_device())
    dist.broadcast(packed, src)
    received = packed.tolist()
    codes, bits = received[: len(numbers)], received[len(numbers) :]
    if _BIG in codes:  # an int beyond 64 bits: rank src's values, pickled
        return broadcast(value, src)
    agreed = [_decode(code, b) for code, b in zip(codes, bits, strict=True)]
    return type(value)(agreed) if isinstance(value, (tuple, list)) else agreed[0]


def _is_simple(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))


_NONE, _BOOL, _INT, _FLOAT, _BIG = range(5)
_INT64 = (-(2**63), 2**63)


def _encode(value: Any) -> tuple[int, int]:
    """(kind, 64 bits) of a simple value: an int64 as it is, a float's IEEE bits."""
    if value is None:
        return _NONE, 0
    if isinstance(value, bool):
        return _BOOL, int(value)
    if isinstance(value, int):
        return (_INT, value) if _INT64[0] <= value < _INT64[1] else (_BIG, 0)
    return _FLOAT, struct.unpack("<q", struct.pack("<d", value))[0]


def _decode(kind: int, bits: int) -> Any:
    if kind == _NONE:
        return None
    if kind == _BOOL:
        return bool(bits)
    if kind == _INT:
        return bits
    return struct.unpack("<d", struct.pack("<q", bits))[0]
