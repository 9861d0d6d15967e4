"""Times of every handler on its own, and of data loading and the process function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from distengine.engine import Engine, EventEnum, Events
from distengine.engine.handlers import HandlerRecord, handler_lists
from distengine.handlers.profiling import Installed, check_engine, handler_name, say, write_csv
from distengine.handlers.timer import Timer


class _Timed:
    """A handler that records how long each call of ``fn`` takes; compares equal to ``fn``
    (so ``has_event_handler`` and ``remove_event_handler`` still find it)."""

    def __init__(self, fn: Callable[..., Any], times: list[float], clock: Timer) -> None:
        self.fn, self.times, self.clock = fn, times, clock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.clock.reset()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.times.append(self.clock.value())

    def __eq__(self, other: object) -> bool:
        return other is self or self.fn == other

    def __hash__(self) -> int:
        return hash(self.fn)

    def __getattr__(self, name: str) -> Any:  # __qualname__, observer marks, ...
        return getattr(self.__dict__["fn"], name)


def _stats(times: Sequence[float] | torch.Tensor) -> list[Any]:
    """[total, (min, index), (max, index), mean, std] of the calls, rounded to 5 digits."""
    data = torch.as_tensor(times, dtype=torch.float32)
    ran = torch.nonzero(data > 0).flatten()
    values = data[ran]
    if not len(values):
        return ["not triggered", ("None", "None"), ("None", "None"), "None", "None"]
    low, high = int(values.argmin()), int(values.argmax())
    return [
        round(values.sum().item(), 5),
        (round(values[low].item(), 5), int(ran[low])),
        (round(values[high].item(), 5), int(ran[high])),
        round(values.mean().item(), 5),
        round(values.std().item(), 5) if len(values) > 1 else "None",
    ]


class HandlersTimeProfiler:
    """Times each handler of each event (custom events too), the data loading and the step.

    Attach it before ``run``: when the run starts it wraps the handlers
    registered then, and unwraps them when the run completes. A handler
    with a filter (``Events.EPOCH_STARTED(once=2)``) is timed only where its
    filter lets it run (``EVENT_FILTER_THESHOLD_TIME`` is kept for code that
    reads it). :meth:`get_results` gives one row per handler, then the
    total of the handlers, the processing and the data flow.

    Example::

        profiler = HandlersTimeProfiler()
        profiler.attach(trainer)
        trainer.run(loader, max_epochs=2)
        profiler.print_results(profiler.get_results())   # a table, on rank 0
    """

    EVENT_FILTER_THESHOLD_TIME = 0.0001

    def __init__(self) -> None:
        self._dataflow_timer = Timer()
        self._processing_timer = Timer()
        self._event_handlers_timer = Timer()
        self._installed = Installed()
        self._wrapped: list[HandlerRecord] = []
        self.dataflow_times: list[float] = []
        self.processing_times: list[float] = []
        self.event_handlers_times: dict[EventEnum, dict[str, list[float]]] = {}
        self.event_handlers_names: dict[EventEnum, list[str]] = {}

    def attach(self, engine: Engine) -> None:
        """Profile ``engine``'s next runs (attaching twice is a no-op)."""
        check_engine(engine)
        if not engine.has_event_handler(self._as_first_started, Events.STARTED):
            handler_lists(engine)[Events.STARTED].insert(
                0, HandlerRecord(self._as_first_started, (), {}, True, None)
            )

    def _own(self, fn: Callable[..., Any]) -> bool:
        owner = getattr(fn, "__self__", None)
        return owner is self or owner in (self._processing_timer, self._dataflow_timer)

    def _as_first_started(self, engine: Engine) -> None:
        self._detach(engine)
        lists = handler_lists(engine)
        self.event_handlers_names = {
            e: [handler_name(r.fn) for r in records if not self._own(r.fn)]
            for e, records in lists.items()
        }
        self.event_handlers_times = {
            e: {name: [] for name in names} for e, names in self.event_handlers_names.items()
        }
        self.dataflow_times, self.processing_times = [], []
        for event, records in lists.items():
            for record in records:
                if not self._own(record.fn):
                    times = self.event_handlers_times[event][handler_name(record.fn)]
                    record.fn = _Timed(record.fn, times, self._event_handlers_timer)
                    self._wrapped.append(record)
        add = self._installed.add
        add(engine, Events.ITERATION_STARTED, self._processing_timer.reset, first=False)
        add(engine, Events.ITERATION_COMPLETED, self._timeit_processing, first=True)
        add(engine, Events.GET_BATCH_STARTED, self._dataflow_timer.reset, first=False)
        add(engine, Events.GET_BATCH_COMPLETED, self._timeit_dataflow, first=True)
        add(engine, Events.COMPLETED, lambda: self._detach(engine), first=False)

    def _timeit_processing(self) -> None:
        self.processing_times.append(self._processing_timer.value())

    def _timeit_dataflow(self) -> None:
        self.dataflow_times.append(self._dataflow_timer.value())

    def _detach(self, engine: Engine) -> None:
        """Give the handlers back unwrapped and take the profiler's own out."""
        for record in self._wrapped:
            if isinstance(record.fn, _Timed):
                record.fn = record.fn.fn
        self._wrapped = []
        self._installed.remove(engine)

    def get_results(self) -> list[list[Any]]:
        """``[handler, event name, total, (min, index), (max, index), mean, std]`` rows.

        Then ``["Total", "", total of the handlers, ...]``, the ``"Processing"``
        row and the ``"Dataflow"`` row. Example: ``profiler.get_results()[-1][2]``.
        """
        times = self.event_handlers_times
        rows = [
            [name, getattr(e, "name", str(e)), *_stats(calls)]
            for e in times
            for name, calls in times[e].items()
        ]
        total = round(float(sum(sum(calls) for e in times for calls in times[e].values())), 5)
        rows.append(["Total", "", total, "", "", "", ""])
        rows.append(["Processing", "None", *_stats(self.processing_times)])
        rows.append(["Dataflow", "None", *_stats(self.dataflow_times)])
        return rows

    def write_results(self, output_path: str | Path) -> None:
        """One CSV row per call: processing, data flow and each handler's time (rank 0 writes).

        Example: ``profiler.write_results("runs/handlers.csv")``.
        """
        columns = [torch.tensor(self.processing_times), torch.tensor(self.dataflow_times)]
        headers = ["processing_stats", "dataflow_stats"]
        for e, handlers in self.event_handlers_times.items():
            for name, calls in handlers.items():
                headers.append(f"{name} ({getattr(e, 'name', str(e))})")
                columns.append(torch.tensor(calls))
        rows = max(len(c) for c in columns)
        columns = [torch.nn.functional.pad(c.float(), (0, rows - len(c))) for c in columns]
        columns.insert(0, torch.arange(rows, dtype=torch.float32) + 1)
        write_csv(output_path, ["#", *headers], columns)

    @staticmethod
    def print_results(results: list[list[Any]]) -> str:
        """Print :meth:`get_results` as a table on rank 0; return the text on every rank."""
        handler_width = max(len(str(row[0])) for row in results) + 4
        event_width = max(len(str(row[1])) for row in results) + 4
        widths = [handler_width, event_width] + [14] * 5
        headers = ["Handler", "Event Name", "Total(s)", "Min(s)/IDX", "Max(s)/IDX", "Mean(s)"]
        headers.append("Std(s)")

        def row(cells: Sequence[Any]) -> str:
            left = [f"{str(c):<{w}}" for c, w in zip(cells[:2], widths[:2])]
            right = [f"{str(c):>{w}}" for c, w in zip(cells[2:], widths[2:])]
            return "  ".join(left + right)

        rule = "  ".join("-" * w for w in widths)
        lines = ["", rule, row(headers), rule]
        for cells in results[:-3]:
            lines.append(
                row(
                    [*cells[:3], "{}/{}".format(*cells[3]), "{}/{}".format(*cells[4])]
                    + list(cells[5:])
                )
            )
        lines += [rule, row(results[-3]), rule]
        for name, _, total, low, high, mean, std in results[-2:]:
            lines.append(
                f"{name} took total {total}s [min/index: {low[0]}s/{low[1]}, "
                f"max/index: {high[0]}s/{high[1]}, mean: {mean}s, std: {std}s]"
            )
        return say("\n".join(lines) + "\n")
