"""A tqdm progress bar on rank 0, throttled so it costs nothing measurable per iteration."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from distengine.distributed import get_rank
from distengine.engine import Engine, Events, observer


def _as_number(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


class ProgressBar:
    """Shows epoch, iteration, the output (e.g. the loss) and chosen metrics, on rank 0.

    The bar is redrawn at most every ``mininterval`` seconds; between redraws
    an iteration costs a counter increment and a clock read. Outputs and
    metrics are read only at a redraw (tensors are read from the device
    then), and reading them never runs a collective: values such as a
    :class:`~distengine.metrics.RunningAverage` are already agreed across
    ranks when published. A run that is terminated closes its bar too.
    With ``persist=False`` the bar is cleared at the end of each epoch, so
    an evaluator's bar under the trainer's leaves no lines behind. Pass
    ``disable=None`` (a tqdm option) to turn it off where stdout is no
    terminal.

    Example::

        ProgressBar().attach(trainer, metric_names="all",
                             output_transform=lambda loss: {"loss": loss})
        ProgressBar(desc="validation").attach(evaluator)
    """

    def __init__(self, persist: bool = False, mininterval: float = 0.1, **tqdm_kwargs: Any) -> None:
        self.persist = persist
        self.mininterval = mininterval
        self.tqdm_kwargs = tqdm_kwargs
        self.enabled = get_rank() == 0
        self._bar = None
        self._pending = 0
        self._next_draw = 0.0

    def attach(
        self,
        engine: Engine,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        event_name: Any = Events.ITERATION_COMPLETED,
        closing_event_name: Any = Events.EPOCH_COMPLETED,
    ) -> None:
        """Advance on ``event_name``, close on ``closing_event_name``; rank 0 only."""
        if (
            metric_names is not None
            and metric_names != "all"
            and not isinstance(metric_names, (list, tuple))
        ):
            raise ValueError(f"metric_names must be None, 'all' or a list, got {metric_names!r}")
        if not self.enabled:
            return
        self.metric_names, self.output_transform = metric_names, output_transform
        engine.add_event_handler(event_name, self._advance)
        engine.add_event_handler(closing_event_name, self._close)
        engine.add_event_handler(
            Events.COMPLETED | Events.TERMINATE | Events.EXCEPTION_RAISED, self._finish
        )

    def _advance(self, engine: Engine) -> None:
        self._pending += 1
        now = time.monotonic()
        if now < self._next_draw and self._bar is not None:
            return
        self._next_draw = now + self.mininterval
        if self._bar is None:
            self._open(engine)
        self._bar.set_postfix(self._postfix(engine), refresh=False)
        self._bar.update(self._pending)
        self._pending = 0

    def _open(self, engine: Engine) -> None:
        from tqdm.auto import tqdm

        s = engine.state
        desc = self.tqdm_kwargs.get("desc")
        if desc is None:
            desc = f"Epoch [{s.epoch}/{s.max_epochs}]" if (s.max_epochs or 0) > 1 else "Iterations"
        kwargs = {"leave": self.persist, "dynamic_ncols": True, **self.tqdm_kwargs, "desc": desc}
        done = (s.iteration - 1) % s.epoch_length if s.epoch_length else 0
        self._bar = tqdm(total=s.epoch_length, initial=done, mininterval=self.mininterval, **kwargs)

    def _postfix(self, engine: Engine) -> dict[str, Any]:
        shown: dict[str, Any] = {}
        if self.output_transform is not None:
            out = self.output_transform(engine.state.output)
            shown.update(out if isinstance(out, dict) else {"output": out})
        metrics = engine.state.metrics
        names = metrics if self.metric_names == "all" else (self.metric_names or [])
        shown.update({name: metrics[name] for name in names if name in metrics})
        return {k: _as_number(v) for k, v in shown.items()}

    def _close(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix(engine), refresh=False)
            self._bar.update(self._pending)
            self._bar.close()
        self._bar, self._pending = None, 0

    @observer
    def _finish(self, engine: Engine, *error: Any) -> None:
        self._close(engine)

    def log_message(self, message: str) -> None:
        """Print ``message`` above the bar (rank 0 only)."""
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(message)
