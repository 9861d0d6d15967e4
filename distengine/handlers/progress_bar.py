"""A progress bar on rank 0, as PyTorch-Ignite's: tqdm on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import torch

from distengine.distributed import get_rank
from distengine.engine import Engine, Events, observer
from distengine.handlers import console

#: PyTorch-Ignite's default ``bar_format`` (``None``: tqdm's own, with the rate).
IGNITE_BAR_FORMAT = (
    "{desc}[{n_fmt}/{total_fmt}] {percentage:3.0f}%|{bar}{postfix} [{elapsed}<{remaining}]"
)
#: Ignite's order of the events a bar may advance and close on.
_ORDER = [
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.ITERATION_STARTED,
    Events.ITERATION_COMPLETED,
    Events.EPOCH_COMPLETED,
    Events.COMPLETED,
]


def _max_events(event: Any, engine: Engine) -> int | None:
    """How many times ``event`` fires per bar: the epoch length or the number of epochs."""
    base = getattr(event, "event", event)
    if base in (Events.ITERATION_STARTED, Events.ITERATION_COMPLETED):
        return engine.state.epoch_length
    if base in (Events.EPOCH_STARTED, Events.EPOCH_COMPLETED):
        return engine.state.max_epochs
    return 1


def _shown(name: str, value: Any) -> dict[str, Any]:
    """A postfix entry: numbers, strings, 0-d tensors, and 1-d tensors as ``name_i``."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return {name: value.item()}
        if value.dim() == 1:
            return {f"{name}_{i}": v for i, v in enumerate(value.tolist())}
        warnings.warn(
            f"ProgressBar can not log tensor with {value.dim()} dimensions ({name!r}): "
            "it is left out of the bar",
            UserWarning,
            stacklevel=2,
        )
        return {}
    return {name: value}


class ProgressBar:
    """Shows epoch, iteration, the output (e.g. the loss) and chosen metrics, on rank 0.

    As PyTorch-Ignite's ``ProgressBar`` (same arguments, ``bar_format`` and
    positions: after a full epoch the bar reads ``[100/100]`` whatever the
    event's filter; attached to epoch events it counts epochs). How it is
    drawn depends on where it writes (``file``, tqdm's default stderr):

    - on a terminal, or under ``python -m launch`` run from a terminal: one
      live line, redrawn at most every ``mininterval`` seconds;
    - elsewhere (a pipe, a log file, CI, SLURM): a plain line every
      ``line_interval_s`` seconds and one when the bar closes (always after
      such a line, so a log never ends on a stale position; otherwise with
      ``persist=True``); never redraws. Ignite writes tqdm's redraws there:
      ``attach`` warns (UserWarning, unless the launcher runs it or
      ``disable`` is set).

    ``disable=None`` (a tqdm option) turns the bar off where nothing draws it
    live (the second case). Between redraws an iteration costs a clock read;
    outputs and metrics are read only when drawn (tensors from the device
    then), never through a collective: values such as a
    :class:`~distengine.metrics.RunningAverage` are already agreed across
    ranks, and the bar redraws when such a value is fresh (as of the
    iteration before the one it shows), never beside a newer iteration. A
    run that is terminated closes its bar at its position. With
    ``persist=False`` the bar is cleared when it closes (an evaluator's bar
    under the trainer's leaves no line behind).

    Example::

        ProgressBar(persist=True).attach(trainer, metric_names="all",
                                         output_transform=lambda loss: {"loss": loss})
        ProgressBar(desc="validation").attach(evaluator)
        pbar.log_message("epoch done")   # a line above the bar, on the bar's file
    """

    def __init__(
        self,
        persist: bool = False,
        bar_format: str | None = IGNITE_BAR_FORMAT,
        mininterval: float = 0.1,
        line_interval_s: float = 30.0,
        **tqdm_kwargs: Any,
    ) -> None:
        self.persist = persist
        self.bar_format = bar_format
        self.mininterval = mininterval
        self.line_interval_s = line_interval_s
        self.tqdm_kwargs = tqdm_kwargs
        self.enabled = get_rank() == 0
        self._bar: Any = None
        self._kind = "terminal"
        self._next_draw = 0.0
        self._next_line = 0.0
        self._lines_written = 0  # by the open bar, where nothing draws it live
        self._fired = 0
        self._stamps: tuple = ()  # the iterations of the agreed values last drawn

    @property
    def file(self) -> TextIO:
        """Where the bar writes: ``file=`` or tqdm's default, stderr."""
        return self.tqdm_kwargs.get("file") or sys.stderr

    def attach(
        self,
        engine: Engine,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        event_name: Any = Events.ITERATION_COMPLETED,
        closing_event_name: Any = Events.EPOCH_COMPLETED,
        state_attributes: Sequence[str] | None = None,
    ) -> None:
        """Advance on ``event_name``, close on ``closing_event_name`` (unfiltered); rank 0 draws."""
        if metric_names is not None and metric_names != "all":
            if not isinstance(metric_names, (list, tuple)):
                raise TypeError(f"metric_names must be None, 'all' or a list, got {metric_names!r}")
        if output_transform is not None and not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {output_transform!r}")
        if getattr(closing_event_name, "filter", None) is not None:
            raise ValueError("Closing Event should not be a filtered event")
        start, end = getattr(event_name, "event", event_name), closing_event_name
        if start in _ORDER and end in _ORDER and _ORDER.index(start) >= _ORDER.index(end):
            raise ValueError(
                f"Logging event {event_name} should be called before closing event {end}"
            )
        self.metric_names, self.output_transform = metric_names, output_transform
        self.state_attributes = list(state_attributes or [])
        self.event_name, self.closing_event_name = event_name, closing_event_name
        self._counter = engine.state.counter_for(start)
        if not self.enabled:
            return
        engine.add_event_handler(event_name, self._advance)
        engine.add_event_handler(closing_event_name, self._close)
        engine.add_event_handler(
            Events.COMPLETED | Events.TERMINATE | Events.EXCEPTION_RAISED, self._finish
        )

    def _advance(self, engine: Engine) -> None:
        if self._counter is None:
            self._fired += 1
        now = time.monotonic()
        if now < self._next_draw and self._bar is not None:
            return
        fresh = self._fresh(engine)  # remembers the agreed values' iterations it draws
        if not fresh and self._bar is not None:
            return  # an agreed value would be shown beside a newer iteration
        self._next_draw = now + self.mininterval
        if self._bar is None:
            self._open(engine)
        self._draw(engine, now)

    def _fresh(self, engine: Engine) -> bool:
        """Whether the shown values agreed on the engine's board (running averages on several
        ranks) are newer than at the last redraw, or none is shown."""
        board = getattr(engine, "board", None)
        if board is None:
            return True
        metrics = engine.state.metrics
        names = metrics if self.metric_names == "all" else (self.metric_names or [])
        stamps = tuple(board.as_of(name) for name in names if board.shares(name))
        if not stamps or stamps == self._stamps:
            return not stamps
        self._stamps = stamps
        return True

    def _open(self, engine: Engine) -> None:
        self._kind = console.console_kind(self.file)
        disable = self.tqdm_kwargs.get("disable", False)
        if disable is None:
            disable = self._kind == "lines"
        kwargs = {"leave": self.persist, "dynamic_ncols": True, **self.tqdm_kwargs}
        kwargs.update(disable=bool(disable), mininterval=self.mininterval)
        kwargs["desc"] = f"{self._description(engine)}: "  # as set_description() writes it
        if self._kind == "terminal":
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm

            kwargs.update(file=console.Sink(self.file), dynamic_ncols=False)
            kwargs.setdefault("ncols", console.frame_width() if self._kind == "frames" else None)
        total = _max_events(self.event_name, engine)
        initial = self._position(engine, total)
        self._bar = tqdm(total=total, initial=initial, bar_format=self.bar_format, **kwargs)
        self._next_line = time.monotonic() + self.line_interval_s
        self._lines_written = 0

    def _position(self, engine: Engine, total: int | None) -> int:
        """Ignite's: the event's counter within the bar (1 to ``total``)."""
        step = getattr(engine.state, self._counter) if self._counter else self._fired
        return (step - 1) % total + 1 if total and step else step

    def _description(self, engine: Engine) -> str:
        """``Epoch [2/10]``, ``Iteration`` (one epoch), or ``desc`` with the same suffix."""
        s = engine.state
        desc = self.tqdm_kwargs.get("desc") or ("Iteration" if s.max_epochs == 1 else "Epoch")
        closing = _max_events(self.closing_event_name, engine)
        counter = s.counter_for(getattr(self.closing_event_name, "event", None))
        if closing and closing > 1 and counter:
            desc += f" [{getattr(s, counter)}/{closing}]"
        return desc

    def _draw(self, engine: Engine, now: float) -> None:
        bar = self._bar
        if bar.disable:
            return
        bar.set_description(self._description(engine), refresh=False)
        bar.set_postfix(self._postfix(engine), refresh=False)
        bar.update(self._position(engine, bar.total) - bar.n)
        if self._kind == "frames":
            console.write_frame(self.file, str(bar))
        elif self._kind == "lines" and now >= self._next_line:
            self._next_line = now + self.line_interval_s
            self._lines_written += 1
            console.write_line(self.file, str(bar))

    def _postfix(self, engine: Engine) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        if self.output_transform is not None:
            out = self.output_transform(engine.state.output)
            for name, value in (out if isinstance(out, dict) else {"output": out}).items():
                shown.update(_shown(name, value))
        metrics = engine.state.metrics
        names = metrics if self.metric_names == "all" else (self.metric_names or [])
        for name in names:
            if name in metrics:
                shown.update(_shown(name, metrics[name]))
        for name in self.state_attributes:
            shown.update(_shown(name, getattr(engine.state, name, None)))
        return shown

    def _close(self, engine: Engine, complete: bool = True) -> None:
        """Draw the last state and close; at the closing event the bar is full (as Ignite's)."""
        bar, self._bar = self._bar, None
        if bar is None:
            return
        if not bar.disable:
            end = bar.total if complete and bar.total else self._position(engine, bar.total)
            bar.set_description(self._description(engine), refresh=False)
            bar.set_postfix(self._postfix(engine), refresh=False)
            bar.n = end
            if self._kind != "terminal":
                # a log that showed this bar mid-way never ends on that stale position
                if self.persist or (self._kind == "lines" and self._lines_written):
                    console.write_line(self.file, str(bar))
                elif self._kind == "frames":
                    console.clear_frame(self.file)
        bar.close()
        self._fired = 0

    @observer
    def _finish(self, engine: Engine, *error: Any) -> None:
        self._close(engine, complete=False)

    def log_message(self, message: str) -> None:
        """Print ``message`` on its own line above the bar, on the bar's ``file`` (rank 0)."""
        if not self.enabled:
            return
        if console.console_kind(self.file) == "terminal":
            from tqdm.auto import tqdm

            tqdm.write(message, file=self.file)
        else:
            console.write_line(self.file, message)
            if self._kind == "frames" and self._bar is not None and not self._bar.disable:
                console.write_frame(self.file, str(self._bar))  # the bar comes back at once
