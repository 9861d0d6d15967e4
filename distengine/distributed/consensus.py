"""Agreement across ranks: every decision that changes control flow is taken here, once.

A decision taken per rank before a collective makes ranks disagree on which
collectives they run, and they hang. So a handler never acts on its own
rank's view; it asks this module, and every rank gets the same answer:

- :func:`any_rank` / :func:`all_ranks`: one tiny all-reduce of a flag.
- :func:`decide`: rank ``src`` decides (a score, a step), every rank gets its value.
- :func:`agree`: several flags, OR-ed across ranks, in one collective.
- :class:`Board`: periodic, asynchronous agreement for checks that run every
  iteration (TerminateOnNan, Preemption, TimeLimit) and for values shown
  every so often (RunningAverage). Handlers post flags (device tensors too:
  no host sync) or give a function polled when it is time; every ``every``
  iterations, or about every half second by default, the board launches ONE
  packed, asynchronous all-reduce and reads it one iteration later, so every
  rank acts at the same iteration and no iteration waits on the network or
  the device.

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
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.collectives import broadcast
from distengine.distributed.env import comm_device, get_world_size, is_distributed

__all__ = ["Board", "agree", "all_ranks", "any_rank", "board_of", "check_every", "decide"]

Flag = bool | torch.Tensor


def _active() -> bool:
    return is_distributed() and get_world_size() > 1


def _pack(entries: Sequence[Any]) -> torch.Tensor:
    """A float64 vector on the collectives' device: numbers as they are, None as NaN, 0-d
    CPU tensors read, others copied in on their device (no host sync unless it differs).
    With one process (nothing to reduce) the vector lives where the device tensors are."""
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


def _as_flag(flag: Any) -> Flag:
    if isinstance(flag, torch.Tensor):
        return flag.detach().reshape(()) != 0
    return bool(flag)


def _sum_flags(flags: Sequence[Any]) -> list[float]:
    """How many ranks raised each flag (one collective with several ranks)."""
    packed = _pack([_as_flag(f) for f in flags])
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

    Numbers (and tuples or lists of numbers) travel as float64 in one tiny
    broadcast and come back with their types (a whole int stays an int,
    ``None`` in a tuple stays ``None``); a tensor is copied and broadcast
    (same shape and dtype on every rank); anything else is pickled.

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
    packed = _pack([v is None for v in numbers] + [0.0 if v is None else v for v in numbers])
    dist.broadcast(packed, src)
    received = packed.tolist()
    nones, values = received[: len(numbers)], received[len(numbers) :]
    agreed = [
        None if none else _like(v, x) for v, none, x in zip(numbers, nones, values, strict=True)
    ]
    return type(value)(agreed) if isinstance(value, (tuple, list)) else agreed[0]


def _is_simple(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))


def _like(original: Any, received: float) -> Any:
    """``received`` with the type this rank passed (None on this rank: a float)."""
    if isinstance(original, bool):
        return received != 0
    if isinstance(original, int) and received.is_integer():
        return int(received)
    return received


# ---------------------------------------------------------------------------- the board
@dataclass
class _Slot:
    """One flag (OR across ranks) or value (mean across ranks) on a board."""

    kind: str  # "flag" or "value"
    every: int | None
    on_agree: Callable[..., Any]
    poll: Callable[[], Any] | None
    posted: Flag = False

    def take(self) -> Any:
        """What this rank contributes now; posted flags start afresh."""
        if self.kind == "value":
            return self.poll() if self.poll is not None else None
        flag = self.posted
        self.posted = False
        if self.poll is not None:
            flag = _or(flag, _as_flag(self.poll()))
        return flag


def _or(a: Flag, b: Flag) -> Flag:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.logical_or(a, b.to(a.device))
    if isinstance(a, torch.Tensor):
        return a if not b else True
    if isinstance(b, torch.Tensor):
        return b if not a else True
    return a or b


class _Exchange:
    """One launched all-reduce of a packed board, read later."""

    _streams: dict[torch.device, Any] = {}

    def __init__(self, step: int, slots: list[_Slot], packed: torch.Tensor) -> None:
        self.step, self.slots, self.packed = step, slots, packed
        self.work = dist.all_reduce(packed, dist.ReduceOp.SUM, async_op=True) if _active() else None
        self.host: torch.Tensor | None = None
        self.event: Any = None
        if packed.is_cuda:
            self._copy_to_host_behind()

    def _copy_to_host_behind(self) -> None:
        """Copy the result to pinned memory on a side stream, so reading it later waits
        for the collective only, never for the iterations queued after it."""
        device = self.packed.device
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            if self.work is not None:
                self.work.wait()
            self.host = torch.empty(self.packed.shape, dtype=self.packed.dtype, pin_memory=True)
            self.host.copy_(self.packed, non_blocking=True)
            self.packed.record_stream(stream)  # kept alive for the side stream, even if dropped
            self.event = torch.cuda.Event()
            self.event.record(stream)
        self.work = None

    def result(self) -> list[float]:
        if self.event is not None:
            self.event.synchronize()
            return self.host.tolist()  # type: ignore[union-attr]
        if self.work is not None:
            self.work.wait()
        return self.packed.tolist()


#: How often (seconds, by rank 0's clock) a board exchanges for slots with ``every=None``.
INTERVAL_S = 0.5
_MAX_GROWTH = 16  # a timed gap grows at most this many times per exchange


class Board:
    """Periodic agreement: flags OR-ed and values averaged across ranks in ONE async collective.

    Handlers register slots (:meth:`flag`, :meth:`value`) on every rank in
    the same order, then post flags (:meth:`post`) as they go. The engine's
    events drive it (see :func:`board_of`). At the first iteration of each
    run, at iterations that a slot's ``every`` divides, and, for slots with
    ``every=None`` (the handlers' default), about every ``interval_s``
    seconds, the board packs every slot into one float64 vector and launches
    one asynchronous all-reduce; one iteration later it reads the result and
    calls each raised flag's ``on_agree()`` and each value's
    ``on_agree(mean)``, the same on every rank. The timed schedule is
    agreed, not measured per rank: rank 0 proposes the next exchange's
    iteration (from its iteration time) inside each exchange. A fast loop
    thus exchanges a few times a second, whatever its speed, and a slow one
    every iteration. Only iterations every rank reaches are used: at the
    start of each run the ranks agree (one tiny all-reduce) on the last
    iteration all of them will run, so an evaluator over uneven shards is
    safe (over data without a length the ranks must run the same iterations,
    as a DDP trainer does). When a run completes the board exchanges once
    more, so the final values are fresh.

    Example::

        board = board_of(trainer)
        board.flag("nan", every=None, on_agree=trainer.terminate)
        board.post("nan", ~torch.isfinite(loss))     # each iteration, no host sync
    """

    def __init__(
        self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._slots: dict[Hashable, _Slot] = {}
        self._intervals: set[int] = set()
        self._timed = False
        self._pending: _Exchange | None = None
        self._first: int | None = None
        self._next: float = math.inf  # the agreed iteration of the next timed exchange
        self._last: tuple[int, float] | None = None  # rank 0's last exchange: iteration, time
        self._gap = 1
        self._limit = math.inf
        self.exchanges = 0  # collectives launched, for tests and curious users

    # ------------------------------------------------------------ registration
    def flag(
        self,
        key: Hashable,
        every: int | None,
        on_agree: Callable[[], Any],
        poll: Callable[[], Flag] | None = None,
    ) -> None:
        """A flag checked every ``every`` iterations (None: timed): ``on_agree()`` when any
        rank raised it.

        Raise it with :meth:`post` (OR-ed until the next exchange) or give
        ``poll()``, called at each exchange. Registering a key again does nothing.
        """
        self._add(key, _Slot("flag", check_every(every), on_agree, poll))

    def value(
        self,
        key: Hashable,
        every: int | None,
        poll: Callable[[], float | torch.Tensor | None],
        on_agree: Callable[[float], Any],
    ) -> None:
        """A value averaged over ranks every ``every`` iterations (None: timed):
        ``on_agree(mean)``.

        ``poll()`` gives this rank's value (a number or a 0-d tensor) at each
        exchange, or None when it has none yet (then nothing is delivered).
        """
        self._add(key, _Slot("value", check_every(every), on_agree, poll))

    def _add(self, key: Hashable, slot: _Slot) -> None:
        if key not in self._slots:
            self._slots[key] = slot
            self._plan()

    def _plan(self) -> None:
        everies = [slot.every for slot in self._slots.values()]
        self._intervals = {every for every in everies if every is not None}
        self._timed = None in everies

    def remove(self, key: Hashable) -> None:
        """Take slot ``key`` off the board (on every rank, at the same point)."""
        self._slots.pop(key, None)
        self._plan()

    def has(self, key: Hashable) -> bool:
        """Whether a slot is registered under ``key``."""
        return key in self._slots

    def post(self, key: Hashable, flag: Flag) -> None:
        """Raise (or not) flag ``key`` on this rank; a 0-d tensor stays on its device."""
        slot = self._slots[key]
        slot.posted = _or(slot.posted, _as_flag(flag))

    # ------------------------------------------------------------- driving
    def start(self, first: int, last: int | None, same_everywhere: bool = False) -> None:
        """A run starts at iteration ``first`` and ends at ``last`` on this rank (None: unknown).

        With several ranks, agrees on the smallest ``last`` (one tiny all-reduce),
        unless the caller knows ``last`` is ``same_everywhere``.
        """
        self._pending, self._first = None, first
        self._next, self._last, self._gap = math.inf, (first - 1, self._clock()), 1
        limit = math.inf if last is None else float(last)
        if _active() and not same_everywhere:
            packed = torch.tensor([limit], dtype=torch.float64, device=comm_device())
            dist.all_reduce(packed, dist.ReduceOp.MIN)
            limit = packed.item()
        self._limit = limit

    def step(self, k: int) -> None:
        """Iteration ``k`` completed: read the last exchange, launch the next when due."""
        if self._pending is not None and k > self._pending.step:
            self._read()
        if k < self._limit and self._slots and self._due(k):
            self._launch(k)

    def _due(self, k: int) -> bool:
        return (
            k == self._first or k >= self._next or any(k % every == 0 for every in self._intervals)
        )

    def flush(self) -> None:
        """Read the exchange in flight, then exchange every slot now (synchronously).

        Every rank must call it at the same point.
        """
        if self._pending is not None:
            self._read()
        if self._slots:
            self._launch(-1)
            self._read()

    def finish(self) -> None:
        """The run ended: read the exchange in flight, if any."""
        if self._pending is not None:
            self._read()

    def drop(self) -> None:
        """The run failed: forget the exchange in flight without waiting for it."""
        self._pending = None

    def _launch(self, k: int) -> None:
        slots = list(self._slots.values())
        entries = [slot.take() for slot in slots]
        if self._timed and k < 0:
            entries.append(math.nan)  # a flush keeps the timed schedule as it is
        elif self._timed:
            entries.append(self._propose(k) if _rank() == 0 else 0.0)
            self._next = math.inf  # until the proposal is read
        self._pending = _Exchange(k, slots, _pack(entries))
        self.exchanges += 1

    def _propose(self, k: int) -> float:
        """Rank 0's iteration for the next timed exchange: about ``interval_s`` from now."""
        now = self._clock()
        if self._last is not None and k > self._last[0]:
            per_iteration = (now - self._last[1]) / (k - self._last[0])
            wanted = self.interval_s / per_iteration if per_iteration > 0 else math.inf
            self._gap = int(max(1, min(wanted, self._gap * _MAX_GROWTH)))
        self._last = (k, now)
        return float(k + self._gap)

    def _read(self) -> None:
        exchange, self._pending = self._pending, None
        results = exchange.result()  # type: ignore[union-attr]
        if len(results) > len(exchange.slots):  # type: ignore[union-attr]
            proposal = results.pop()
            self._next = self._next if math.isnan(proposal) else proposal
        world = get_world_size() if _active() else 1
        for slot, total in zip(exchange.slots, results):  # type: ignore[union-attr]
            if slot.kind == "flag" and total > 0:
                slot.on_agree()
            elif slot.kind == "value" and not math.isnan(total):
                slot.on_agree(total / world)


def _rank() -> int:
    return dist.get_rank() if _active() else 0


def check_every(every: Any) -> int | None:
    """``every`` if it is a positive int or None (timed); else a ValueError naming it."""
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ValueError(
            f"every must be a positive int (iterations) or None (timed), got {every!r}"
        )
    return every


_ATTR = "_distengine_board"


def board_of(engine: Any) -> Board:
    """The engine's board, made and bound to its events on first use.

    Binding: ``STARTED`` agrees on the run's last iteration, each
    ``ITERATION_COMPLETED`` steps the board, ``TERMINATE`` reads what is in
    flight, ``COMPLETED`` also exchanges once more (so final values are
    fresh), ``EXCEPTION_RAISED`` drops what is in flight. A board made during a
    run assumes every rank runs the same iterations until the next
    ``STARTED`` (true for a DDP trainer).
    """
    board = engine.__dict__.get(_ATTR)
    if board is None:
        board = Board()
        setattr(engine, _ATTR, board)
        _bind(board, engine)
    return board


def _same_length_everywhere(data: Any) -> bool:
    """Whether every rank iterates over ``data`` the same number of times: a DataLoader over
    torch's own DistributedSampler (it pads or drops to equal shards), as a DDP trainer's."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    return isinstance(data, DataLoader) and type(data.sampler) is DistributedSampler


def _bind(board: Board, engine: Any) -> None:
    # imported here: distributed/ does not depend on the engine; only this binding does
    from distengine.engine import Events, observer

    def started(engine: Any) -> None:
        s = engine.state
        last = s.max_iters
        if last is None and s.max_epochs is not None and s.epoch_length is not None:
            last = s.max_epochs * s.epoch_length
        board.start(s.iteration + 1, last, _same_length_everywhere(s.dataloader))

    engine.add_event_handler(Events.STARTED, started)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: board.step(e.state.iteration))
    engine.add_event_handler(Events.TERMINATE, lambda e: board.finish())
    engine.add_event_handler(Events.COMPLETED, lambda e: board.flush())
    engine.add_event_handler(Events.EXCEPTION_RAISED, observer(lambda e, error: board.drop()))
