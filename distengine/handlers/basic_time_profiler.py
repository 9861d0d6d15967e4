"""Times of a run by part: data loading, the process function, each event's handlers."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distengine.engine import Engine, EventEnum, Events
from distengine.engine.handlers import HandlerRecord, handler_lists
from distengine.handlers.profiling import Installed, check_engine, fmt, handler_name, say, write_csv
from distengine.handlers.timer import Timer


class BasicTimeProfiler:
    """Times the data loading, the process function and each event's handlers, per step.

    Attach it before ``run``; it installs its timers when the run starts and
    takes them out when it completes. :meth:`get_results` gives totals,
    min/max (with their index), mean and std in seconds; a step whose time
    is 0 (not reached yet) is left out.

    Example::

        profiler = BasicTimeProfiler()
        profiler.attach(trainer)
        trainer.run(loader, max_epochs=3)
        profiler.write_results("profile.csv")     # one row per iteration, rank 0
    """

    events_to_ignore = [
        Events.EXCEPTION_RAISED,
        Events.TERMINATE,
        Events.TERMINATE_SINGLE_EPOCH,
        Events.DATALOADER_STOP_ITERATION,
        Events.INTERRUPT,
    ]
    _PER_ITERATION = (
        Events.GET_BATCH_STARTED,
        Events.GET_BATCH_COMPLETED,
        Events.ITERATION_STARTED,
        Events.ITERATION_COMPLETED,
    )

    def __init__(self) -> None:
        self._dataflow_timer = Timer()
        self._processing_timer = Timer()
        self._event_handlers_timer = Timer()
        self._installed = Installed()
        self._started_open = False
        self.max_epochs = self.total_num_iters = self.epoch_length = 0
        self._reset(0, 0)
        self.event_handlers_names: dict[EventEnum, list[str]] = {e: [] for e in self._profiled()}

    def _profiled(self) -> list[EventEnum]:
        return [e for e in Events if e not in self.events_to_ignore]

    def _reset(self, num_epochs: int, total_num_iters: int) -> None:
        self.dataflow_times = torch.zeros(total_num_iters)
        self.processing_times = torch.zeros(total_num_iters)
        self.event_handlers_times: dict[EventEnum, torch.Tensor] = {
            Events.STARTED: torch.zeros(1),
            Events.COMPLETED: torch.zeros(1),
            Events.EPOCH_STARTED: torch.zeros(num_epochs),
            Events.EPOCH_COMPLETED: torch.zeros(num_epochs),
            **{e: torch.zeros(total_num_iters) for e in self._PER_ITERATION},
        }

    def attach(self, engine: Engine) -> None:
        """Profile ``engine``'s next runs (attaching twice is a no-op)."""
        check_engine(engine)
        if not engine.has_event_handler(self._as_first_started, Events.STARTED):
            handler_lists(engine)[Events.STARTED].insert(
                0, HandlerRecord(self._as_first_started, (), {}, True, None)
            )

    def _as_first_started(self, engine: Engine) -> None:
        s = self.epoch_length = engine.state.epoch_length
        if s is None:
            raise ValueError(
                "BasicTimeProfiler needs the epoch length, which data without len() does not "
                "give before its first pass: set trainer.run(..., epoch_length=epoch_length)"
            )
        total = engine.state.max_iters or (engine.state.max_epochs or 1) * s
        self.max_epochs = engine.state.max_epochs or math.ceil(total / max(s, 1))
        self.total_num_iters = total
        self._reset(self.max_epochs, total)
        self.event_handlers_names = {
            e: [handler_name(r.fn) for r in handler_lists(engine)[e] if not self._own(r.fn)]
            for e in self._profiled()
        }
        self._install(engine)
        self._event_handlers_timer.reset()

    def _own(self, fn: Callable[..., Any]) -> bool:
        return getattr(fn, "__self__", None) is self

    def _install(self, engine: Engine) -> None:
        installed = self._installed
        installed.remove(engine)
        self._started_open = True  # STARTED's handlers end where the next event begins
        for event in self._profiled():
            if event is not Events.STARTED:
                installed.add(engine, event, self._starts(engine, event), first=True)
                installed.add(engine, event, self._ends(engine, event), first=False)
        installed.add(engine, Events.COMPLETED, lambda: installed.remove(engine), first=False)

    def _starts(self, engine: Engine, event: EventEnum) -> Callable[[], None]:
        def start() -> None:
            if self._started_open:
                self._started_open = False
                self.event_handlers_times[Events.STARTED][0] = self._event_handlers_timer.value()
            if event is Events.ITERATION_COMPLETED:
                self._put(self.processing_times, engine.state.iteration - 1, self._processing_timer)
            if event is Events.GET_BATCH_STARTED:
                self._dataflow_timer.reset()
            self._event_handlers_timer.reset()

        return start

    def _ends(self, engine: Engine, event: EventEnum) -> Callable[[], None]:
        times = self.event_handlers_times

        def end() -> None:
            index = self._index(engine, event)
            self._put(times[event], index, self._event_handlers_timer, key=event)
            if event is Events.GET_BATCH_COMPLETED:
                self._put(self.dataflow_times, index, self._dataflow_timer)
            if event is Events.ITERATION_STARTED:
                self._processing_timer.reset()

        return end

    @staticmethod
    def _index(engine: Engine, event: EventEnum) -> int:
        s = engine.state
        if event in (Events.STARTED, Events.COMPLETED):
            return 0
        if event in (Events.EPOCH_STARTED, Events.EPOCH_COMPLETED):
            return s.epoch - 1
        if event in (Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED):
            return s.iteration  # the batch is for the next iteration
        return s.iteration - 1

    def _put(self, times: torch.Tensor, index: int, timer: Timer, key: Any = None) -> None:
        if index >= len(times):  # a run that went past what STARTED foresaw
            grown = torch.cat([times, torch.zeros(index + 1 - len(times))])
            self._replace(times, grown, key)
            times = grown
        times[index] = timer.value()

    def _replace(self, old: torch.Tensor, new: torch.Tensor, key: Any) -> None:
        if key is not None:
            self.event_handlers_times[key] = new
        elif old is self.processing_times:
            self.processing_times = new
        else:
            self.dataflow_times = new

    @staticmethod
    def _compute_basic_stats(data: torch.Tensor) -> dict[str, Any]:
        """Total, min/index, max/index, mean, std of the steps that ran (time above 0)."""
        ran = torch.nonzero(data > 0).flatten()
        values = data[ran]
        stats: dict[str, Any] = OrderedDict(
            total=values.sum().item() if len(values) else "not yet triggered"
        )
        if len(values) > 1:
            low, high = int(values.argmin()), int(values.argmax())
            stats["min/index"] = (values[low].item(), int(ran[low]))
            stats["max/index"] = (values[high].item(), int(ran[high]))
            stats["mean"] = values.mean().item()
            stats["std"] = values.std().item()
        return stats

    def get_results(self) -> dict[str, dict[str, Any]]:
        """The statistics so far, by part; also during the run.

        Example: ``profiler.get_results()["processing_stats"]["mean"]``.
        """
        times = self.event_handlers_times
        stats: dict[str, Any] = {e.name: self._compute_basic_stats(times[e]) for e in times}
        stats["total_time"] = sum(t.sum() for t in times.values())
        names = {f"{e.name}_names": v for e, v in self.event_handlers_names.items()}
        return OrderedDict(
            processing_stats=self._compute_basic_stats(self.processing_times),
            dataflow_stats=self._compute_basic_stats(self.dataflow_times),
            event_handlers_stats=stats,
            event_handlers_names=names,
        )

    def write_results(self, output_path: str | Path) -> None:
        """One CSV row per iteration: epoch, iteration, times of each part (rank 0 writes).

        Example: ``profiler.write_results("runs/profile.csv")``.
        """
        total, length = self.total_num_iters, max(self.epoch_length or 1, 1)
        iterations = torch.arange(total, dtype=torch.float32) + 1
        epochs = torch.div(iterations - 1, length, rounding_mode="floor") + 1
        times = self.event_handlers_times
        epoch_index = (epochs - 1).long().clamp(max=max(len(times[Events.EPOCH_STARTED]) - 1, 0))
        columns = [epochs, iterations, self.processing_times[:total], self.dataflow_times[:total]]
        headers = ["epoch", "iteration", "processing_stats", "dataflow_stats"]
        for event in (Events.STARTED, Events.COMPLETED):
            columns.append(times[event].expand(total))
            headers.append(f"Event_{event.name}")
        for event in (Events.EPOCH_STARTED, Events.EPOCH_COMPLETED):
            column = times[event][epoch_index] if len(times[event]) else torch.zeros(total)
            columns.append(column)
            headers.append(f"Event_{event.name}")
        for event in self._PER_ITERATION:
            columns.append(times[event][:total])
            headers.append(f"Event_{event.name}")
        write_csv(output_path, headers, columns)

    @staticmethod
    def print_results(results: dict[str, Any]) -> str:
        """Print :meth:`get_results` as text on rank 0; return the text on every rank."""

        def line(stats: Any) -> str:
            if not isinstance(stats, dict):
                return fmt(stats)
            return " | ".join(fmt(v) for v in stats.values())

        stats, names = results["event_handlers_stats"], results["event_handlers_names"]
        parts = [
            " ----------------------------------------------------",
            "| Time profiling stats (in seconds):                 |",
            " ----------------------------------------------------",
            "total  |  min/index  |  max/index  |  mean  |  std",
            "",
            f"Processing function:\n{line(results['processing_stats'])}",
            "",
            f"Dataflow:\n{line(results['dataflow_stats'])}",
            "",
            f"Event handlers:\n{line(stats['total_time'])}",
        ]
        for event in ("STARTED", "EPOCH_STARTED", "ITERATION_STARTED", "ITERATION_COMPLETED"):
            parts += ["", f"- Events.{event}: {names[f'{event}_names']}\n{line(stats[event])}"]
        for event in ("EPOCH_COMPLETED", "COMPLETED"):
            parts += ["", f"- Events.{event}: {names[f'{event}_names']}\n{line(stats[event])}"]
        return say("\n" + "\n".join(parts) + "\n")
