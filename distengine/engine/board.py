"""The engine's consensus board: per-iteration checks and running values, agreed in one collective.

Every :class:`~distengine.engine.Engine` has one, ``engine.board``, made with
it and driven by its run loop. Handlers register *slots* on it, the same on
every rank and in the same order: a **flag** (OR-ed across ranks: "some rank
saw NaN", "some rank got SIGTERM", "some rank's clock is past the limit") or
a **value** (averaged across ranks: a running loss). The run loop then packs
the slots due at an iteration into one vector and launches ONE asynchronous
all-reduce after that iteration's ``ITERATION_COMPLETED`` handlers; the next
iteration reads it before its own ``ITERATION_COMPLETED`` handlers (an epoch's
end, ``TERMINATE`` and ``COMPLETED`` read it at once). Every rank thus acts on
the same answer at the same iteration, and no iteration waits on the network.

When a slot is due: at the first iteration of every ``run()`` (a run resumed
after ``interrupt()`` too), at the iterations its ``every`` divides, and, for
``every=None`` (the default of the handlers and of running values), about
every ``interval_s`` seconds by rank 0's clock, and just before rank 0's
handlers on ``ITERATION_COMPLETED`` with an ``every``/``once``/``before``/
``after`` filter fire: rank 0 proposes the next iteration inside each
exchange, so the schedule is agreed. A logger every 50 iterations thus reads
values as of the iteration before it; a progress bar redraws only when an
agreed value is fresh. Values are also agreed at an epoch's end (when the
ranks' epochs end together) and when a run completes, so what a handler
reads there is as of that iteration. On a GPU a value stays on the device
(no host read); a flag is read on the host only at the iterations it is due.

Slots registered before ``run()`` make the ranks agree, when the run starts,
on the last iteration all of them reach (one tiny all-reduce; none for a
DataLoader over torch's DistributedSampler): only those iterations exchange,
so an evaluator over uneven shards is safe. A handler with a ``join_board(engine)``
method (TerminateOnNan, TimeLimit) registers when it is added to an
iteration event, however it is added. A slot registered during a run (a
handler of your own that registers on its first call) makes that agreement
at its first exchange, so every rank must then be running (a trainer: every
rank runs the same iterations; not an evaluator over a shard that is empty
on some rank).

Example::

    board = trainer.board
    board.flag("nan", every=None, on_agree=trainer.terminate)
    board.post("nan", ~torch.isfinite(loss))        # each iteration, no host sync
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from distengine.distributed.consensus import as_flag, pack
from distengine.distributed.env import comm_device, get_world_size, is_distributed

__all__ = ["INTERVAL_S", "Board", "board_of", "check_every"]

Flag = bool | torch.Tensor

#: How often (seconds, by rank 0's clock) a board exchanges the slots with ``every=None``.
INTERVAL_S = 0.5
_MAX_GROWTH = 16  # a timed gap grows at most this many times per exchange


def _active() -> bool:
    return is_distributed() and get_world_size() > 1


def check_every(every: Any) -> int | None:
    """``every`` if it is a positive int or None (timed); else a ValueError naming it."""
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ValueError(
            f"every must be a positive int (iterations) or None (timed), got {every!r}"
        )
    return every


def _or(a: Flag, b: Flag) -> Flag:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.logical_or(a, b.to(a.device))
    if isinstance(a, torch.Tensor):
        return a if not b else True
    if isinstance(b, torch.Tensor):
        return b if not a else True
    return a or b


@dataclass(eq=False)
class _Slot:
    """One flag (OR across ranks) or value (mean across ranks) on a board."""

    kind: str  # "flag" or "value"
    every: int | None
    on_agree: Callable[..., Any]
    poll: Callable[[], Any] | None
    name: str | None = None  # a value's name in engine.state.metrics, if it has one
    posted: Flag = False
    as_of: int | None = None  # a value: the iteration its last delivered mean holds for

    def take(self) -> Any:
        """What this rank contributes now; posted flags start afresh."""
        if self.kind == "value":
            return self.poll() if self.poll is not None else None
        flag, self.posted = self.posted, False
        if self.poll is not None:
            flag = _or(flag, as_flag(self.poll()))
        return flag


class _Exchange:
    """One launched all-reduce of packed slots, read later.

    On a GPU the result is copied to pinned host memory on a side stream only when
    the host needs it (flags, a proposal), so reading it waits for the collective only;
    values are read on the device, after the current stream waits for the collective.
    """

    _streams: dict[torch.device, Any] = {}

    def __init__(self, as_of: int, slots: list[_Slot], timed: bool, packed: torch.Tensor):
        self.as_of, self.slots, self.timed, self.packed = as_of, slots, timed, packed
        self.to_host = timed or any(slot.kind == "flag" for slot in slots)
        self.work = dist.all_reduce(packed, dist.ReduceOp.SUM, async_op=True) if _active() else None
        self.host: torch.Tensor | None = None
        self.event: Any = None
        if packed.is_cuda:
            self._follow_on_side_stream()

    def _follow_on_side_stream(self) -> None:
        device = self.packed.device
        stream = self._streams.get(device)
        if stream is None:
            stream = self._streams[device] = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            if self.work is not None:
                self.work.wait()
            if self.to_host:
                self.host = torch.empty(self.packed.shape, dtype=self.packed.dtype, pin_memory=True)
                self.host.copy_(self.packed, non_blocking=True)
            self.packed.record_stream(stream)  # kept alive for the side stream, even if dropped
            self.event = torch.cuda.Event()
            self.event.record(stream)
        self.work = None

    def on_host(self) -> list[float]:
        """The sums, read on the host (waits for this collective only)."""
        if self.event is not None and self.host is not None:
            self.event.synchronize()
            return self.host.tolist()
        self.wait()
        return self.packed.tolist()

    def on_device(self) -> torch.Tensor:
        """The sums where they were reduced; the current stream waits for them (no host read)."""
        if self.event is not None:
            torch.cuda.current_stream(self.packed.device).wait_event(self.event)
        else:
            self.wait()
        return self.packed

    def wait(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None


class Board:
    """Flags OR-ed and values averaged across ranks, in ONE asynchronous collective per exchange.

    See the module's description for when slots are exchanged and read. Every
    engine has one (``engine.board``), driven by its run loop; a board of your
    own is driven with :meth:`start`, :meth:`step` (or :meth:`read` then
    :meth:`launch`), :meth:`end_epoch`, :meth:`settle` and :meth:`complete`, on
    every rank at the same points.

    Example::

        trainer.board.value("loss", every=1, poll=lambda: local_loss,
                            on_agree=lambda mean: print(mean))
    """

    def __init__(
        self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._slots: dict[Hashable, _Slot] = {}
        self._named: dict[str, _Slot] = {}
        self._pending: _Exchange | None = None
        #: Whether the board has slots or an exchange in flight (the run loop asks, cheaply).
        self.active = False
        #: ``readers(after)``: the next iteration after ``after`` at which a handler reads the
        #: values (the engine's count-filtered ITERATION_COMPLETED handlers); rank 0's is used.
        self.readers: Callable[[int], int | None] | None = None
        self.exchanges = 0  # collectives launched, for tests and curious users
        self._start_run(1, None, same_everywhere=False)

    # ------------------------------------------------------------ registration
    def flag(
        self,
        key: Hashable,
        every: int | None,
        on_agree: Callable[[], Any],
        poll: Callable[[], Flag] | None = None,
    ) -> None:
        """A flag due every ``every`` iterations (None: timed): ``on_agree()`` when any rank
        raised it since its last exchange.

        Raise it with :meth:`post` (OR-ed until the next exchange) or give
        ``poll()``, called at each exchange. Registering a key again does nothing.
        """
        self._add(key, _Slot("flag", check_every(every), on_agree, poll))

    def value(
        self,
        key: Hashable,
        every: int | None,
        poll: Callable[[], float | torch.Tensor | None],
        on_agree: Callable[[Any], Any],
        name: str | None = None,
    ) -> None:
        """A value averaged over ranks every ``every`` iterations (None: timed):
        ``on_agree(mean)``.

        ``poll()`` gives this rank's value (a number or a 0-d tensor) at each
        exchange, or None when it has none yet (a mean read on the host is then
        not delivered). ``mean`` is a float when read on the host, a 0-d float64
        tensor when the exchange ran on a GPU. ``name`` (its key in
        ``engine.state.metrics``) lets loggers ask :meth:`as_of`.
        """
        self._add(key, _Slot("value", check_every(every), on_agree, poll, name))

    def _add(self, key: Hashable, slot: _Slot) -> None:
        if key in self._slots:
            return
        self._slots[key] = slot
        if slot.name is not None:
            self._named[slot.name] = slot
        if slot.every is None and self._next == math.inf and not self._proposing:
            self._next = -math.inf  # the first timed slot: due at the next exchange
        self.active = True

    def remove(self, key: Hashable) -> None:
        """Take slot ``key`` off the board (on every rank, at the same point)."""
        slot = self._slots.pop(key, None)
        if slot is not None and slot.name is not None and self._named.get(slot.name) is slot:
            del self._named[slot.name]
        self.active = bool(self._slots) or self._pending is not None

    def has(self, key: Hashable) -> bool:
        """Whether a slot is registered under ``key``."""
        return key in self._slots

    def post(self, key: Hashable, flag: Flag) -> None:
        """Raise (or not) flag ``key`` on this rank; a 0-d tensor stays on its device."""
        slot = self._slots[key]
        slot.posted = _or(slot.posted, as_flag(flag))

    def as_of(self, name: str) -> int | None:
        """The iteration that the agreed value published as ``name`` holds for.

        None when ``name`` is not a value of this board or none was delivered yet.
        Loggers use it to write a point at the step it belongs to, once.

        Example::

            trainer.board.as_of("running_loss")   # e.g. 41 at iteration 42
        """
        slot = self._named.get(name)
        return slot.as_of if slot is not None else None

    def shares(self, name: str) -> bool:
        """Whether ``name`` (in ``engine.state.metrics``) is a value agreed on this board."""
        return name in self._named

    # ------------------------------------------------------------- driving
    def start(
        self,
        first: int,
        last: int | None,
        same_everywhere: bool = False,
        resuming: bool = False,
        epoch_length: int | None = None,
    ) -> None:
        """A run starts at iteration ``first`` and ends at ``last`` on this rank (None: unknown).

        With slots and several ranks, agrees now on the smallest ``last`` and
        whether every rank has the same ``last`` and ``epoch_length`` (one tiny
        all-reduce) unless the caller knows the ranks run the same iterations
        (``same_everywhere``). ``resuming`` (after ``interrupt()``) keeps the
        exchange in flight, read at the first iteration.
        """
        if not resuming and self._pending is not None:
            self._pending.wait()  # launched on every rank: let it end, deliver nothing
            self._pending = None
        self._start_run(first, last, same_everywhere)
        self._epoch_length = epoch_length
        if self._slots:
            self._agree()
        self.active = bool(self._slots) or self._pending is not None

    def _start_run(self, first: int, last: int | None, same_everywhere: bool) -> None:
        self._first, self._last_here, self._same = first, last, same_everywhere
        self._epoch_length: int | None = None
        self._agreed, self._limit, self._aligned = False, math.inf, True
        self._launched = False  # no exchange launched in this run yet: the first takes all
        self._next, self._proposing = math.inf, False
        self._last_proposal: tuple[int, float] = (first - 1, self._clock())
        self._gap = 1

    def _agree(self) -> None:
        """The last iteration every rank reaches, and whether the ranks' runs and epochs
        end together (then an epoch's end is a point every rank reaches at once)."""
        last = math.inf if self._last_here is None else float(self._last_here)
        length = math.inf if self._epoch_length is None else float(self._epoch_length)
        if _active() and not self._same:
            mine = [last, -last, length, -length]
            packed = torch.tensor(mine, dtype=torch.float64, device=comm_device())
            dist.all_reduce(packed, dist.ReduceOp.MIN)
            low, high, short, long = packed.tolist()
            last, self._aligned = low, (low, short) == (-high, -long)
        self._limit, self._agreed = last, True

    def step(self, k: int) -> None:
        """Iteration ``k`` completed: :meth:`read`, then :meth:`launch`."""
        self.read(k)
        self.launch(k)

    def read(self, k: int) -> None:
        """Deliver the exchange launched before iteration ``k`` (the run loop calls this
        before ``k``'s ``ITERATION_COMPLETED`` handlers)."""
        if self._pending is not None and self._pending.as_of < k:
            self._deliver()

    def launch(self, k: int) -> None:
        """Launch the exchange due at iteration ``k`` (after its handlers), if any."""
        if not self._slots:
            return
        if not self._agreed:
            self._agree()  # slots registered during this run
        if k > self._limit:
            return
        if not self._launched:
            due = list(self._slots.values())
        else:
            due = [s for s in self._slots.values() if self._due(s, k)]
        if due:
            self._launch(k, due)

    def _due(self, slot: _Slot, k: int) -> bool:
        return k >= self._next if slot.every is None else k % slot.every == 0

    def settle(self) -> None:
        """Deliver the exchange in flight now (an epoch's end, ``TERMINATE``)."""
        if self._pending is not None:
            self._deliver()

    def end_epoch(self, k: int) -> None:
        """An epoch ended at iteration ``k``: deliver what is in flight and, when the ranks'
        epochs end together, exchange once more if a value is older than ``k``."""
        self.settle()
        if self._aligned and self._stale(k):
            self.flush(k)

    def complete(self, k: int) -> None:
        """The run completed at iteration ``k``: deliver what is in flight, then exchange every
        slot once more if a value could be older than ``k`` on some rank (so final values are
        fresh). Every rank decides alike: the ranks' last iterations were agreed."""
        self.settle()
        if self._stale(k) or (not self._aligned and self._has_values()):
            self.flush(k)

    def _has_values(self) -> bool:
        return any(slot.kind == "value" for slot in self._slots.values())

    def _stale(self, k: int) -> bool:
        return any(slot.kind == "value" and slot.as_of != k for slot in self._slots.values())

    def flush(self, k: int) -> None:
        """Deliver what is in flight, then exchange every slot now, as of iteration ``k``.

        Every rank must call it at the same point.
        """
        self.settle()
        if self._slots:
            self._launch(k, list(self._slots.values()), timed=False)
            self._deliver()

    def drop(self) -> None:
        """The run failed: forget the exchange in flight without waiting for it."""
        self._pending = None
        self.active = bool(self._slots)

    def _launch(self, k: int, slots: list[_Slot], timed: bool | None = None) -> None:
        entries = [slot.take() for slot in slots]
        if timed is None:
            timed = any(slot.every is None for slot in slots)
        if timed:
            entries.append(self._propose(k) if _rank() == 0 else 0.0)
            self._next, self._proposing = math.inf, True  # until the proposal is read
        self._pending = _Exchange(k, slots, timed, pack(entries))
        self._launched, self.active = True, True
        self.exchanges += 1

    def _propose(self, k: int) -> float:
        """Rank 0's iteration for the next timed exchange: about ``interval_s`` from now, or
        the iteration before its next reading handler fires, if that comes first."""
        now = self._clock()
        done, then = self._last_proposal
        if k > done:
            per_iteration = (now - then) / (k - done)
            wanted = self.interval_s / per_iteration if per_iteration > 0 else math.inf
            self._gap = int(max(1, min(wanted, self._gap * _MAX_GROWTH)))
        self._last_proposal = (k, now)
        proposal = k + self._gap
        reading = self.readers(k + 1) if self.readers is not None else None
        if reading is not None:  # this exchange serves k + 1; the next, the one after
            proposal = min(proposal, reading - 1)
        return float(proposal)

    def _deliver(self) -> None:
        exchange, self._pending = self._pending, None
        self.active = bool(self._slots)
        assert exchange is not None
        host = exchange.on_host() if exchange.to_host or not exchange.packed.is_cuda else None
        if exchange.timed:
            self._next, self._proposing = host[-1], False  # type: ignore[index]
        world = get_world_size() if _active() else 1
        device = None
        for i, slot in enumerate(exchange.slots):
            if slot.kind == "flag":
                if host[i] > 0:  # type: ignore[index]
                    slot.on_agree()
            elif host is not None:
                if not math.isnan(host[i]):
                    slot.as_of = exchange.as_of
                    slot.on_agree(host[i] / world)
            else:
                device = exchange.on_device() if device is None else device
                slot.as_of = exchange.as_of
                slot.on_agree(device[i] / world)


def _rank() -> int:
    return dist.get_rank() if _active() else 0


def board_of(engine: Any) -> Board:
    """``engine.board`` (kept for code written when boards were made on first use)."""
    return engine.board


def same_length_everywhere(data: Any) -> bool:
    """Whether every rank iterates over ``data`` the same number of times: a DataLoader over
    torch's own DistributedSampler (it pads or drops to equal shards), as a DDP trainer's."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    return isinstance(data, DataLoader) and type(data.sampler) is DistributedSampler
