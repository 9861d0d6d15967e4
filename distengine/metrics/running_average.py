"""An exponential moving average of a metric or of the engine's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from distengine.metrics.metric import Metric

if TYPE_CHECKING:
    from distengine.engine import Engine


class RunningAverage(Metric):
    """``value = alpha * value + (1 - alpha) * current``, updated after every iteration.

    ``current`` is ``src.compute()`` on the last batch, or the mean over
    ranks of the (transformed) output. The value is a 0-d tensor when it comes
    from outputs, so nothing waits for the device each iteration. With
    ``epoch_bound=True`` it starts afresh every epoch.

    Example::

        RunningAverage(output_transform=lambda loss: loss).attach(trainer, "loss")
        RunningAverage(Accuracy(output_transform=...)).attach(trainer, "running_acc")
    """

    def __init__(
        self,
        src: Metric | None = None,
        alpha: float = 0.98,
        output_transform: Callable[[Any], Any] | None = None,
        epoch_bound: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        if (src is None) == (output_transform is None):
            raise ValueError("give exactly one of src (a Metric) or output_transform")
        if src is not None and not isinstance(src, Metric):
            raise TypeError(f"src must be a Metric, got {type(src).__name__}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        super().__init__(output_transform or (lambda output: output), device)
        self.src, self.alpha, self.epoch_bound = src, alpha, epoch_bound
        self.value: Any = None
        if src is None:
            self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
            self.add_state(
                "n", torch.tensor(0.0, dtype=torch.float64)
            )  # beside total: one collective

    def dependencies(self) -> list[Metric]:
        return [self.src] if self.src is not None else []

    def update(self, output: Any) -> None:
        if self.src is not None:
            return  # the engine's metric group updates src itself
        value = output.detach() if isinstance(output, torch.Tensor) else torch.tensor(output)
        self._follow(value)
        self.total += value.double().mean()
        self.tally("n", 1)

    def compute(self) -> Any:
        current = self.src.compute() if self.src is not None else self.total / self.n
        if self.value is None:
            self.value = current
        else:
            self.value = self.alpha * self.value + (1.0 - self.alpha) * current
        return self.value

    def attach(self, engine: Engine, name: str | None = None, usage: str = "batch_wise") -> None:
        """Attach with a value after every iteration (``usage`` is always batch-wise)."""
        from distengine.engine import Events

        super().attach(engine, name, "batch_wise")
        if self.epoch_bound:
            engine.add_event_handler(Events.EPOCH_STARTED, self._restart)

    def _restart(self) -> None:
        self.value = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self.value = state.pop("value", None)
        super().load_state_dict(state)
