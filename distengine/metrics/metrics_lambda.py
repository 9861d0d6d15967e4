"""A metric computed from other metrics by a function (metric arithmetic uses it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distengine.metrics.metric import Metric


class MetricsLambda(Metric):
    """``fn(*values)`` where each Metric argument is replaced by its computed value.

    Underlying metrics are updated once per batch and reduced and computed
    once per completion, however often they appear. Its state is theirs:
    ``state_dict``/``load_state_dict``/``reset`` pass through to them.

    Example::

        precision, recall = Precision(average=False), Recall(average=False)
        f1 = MetricsLambda(lambda p, r: (2 * p * r / (p + r)).mean(), precision, recall)
        f1.attach(evaluator, "f1")      # or: (2 * precision * recall / (precision + recall)).mean()
    """

    #: Making it never resets its arguments (Ignite's constructor does: IoU(cm) empties cm).
    _reset_on_init = False

    def __init__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        skip_unrolling: bool = False,
        metrics_result_mode: str = "both",
        **kwargs: Any,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"MetricsLambda needs a callable, got {fn!r}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        super().__init__(skip_unrolling=skip_unrolling, metrics_result_mode=metrics_result_mode)

    def dependencies(self) -> list[Metric]:
        return [a for a in (*self.args, *self.kwargs.values()) if isinstance(a, Metric)]

    def reset(self) -> None:
        for metric in self.dependencies():
            metric.reset()

    def update(self, output: Any) -> None:
        for metric in self.dependencies():
            metric._feed(output)

    def _feed(self, output: Any) -> None:
        self.update(output)  # each argument transforms, picks and unrolls for itself

    def compute(self) -> Any:
        def value(a: Any) -> Any:
            return a.compute() if isinstance(a, Metric) else a

        return self.fn(*map(value, self.args), **{k: value(v) for k, v in self.kwargs.items()})

    def state_dict(self) -> dict[str, Any]:
        """The state of every metric argument (``None`` for plain values), by position and key."""
        return {
            "args": [a.state_dict() if isinstance(a, Metric) else None for a in self.args],
            "kwargs": {k: v.state_dict() for k, v in self.kwargs.items() if isinstance(v, Metric)},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` into the metric arguments; errors name what differs."""
        args, kwargs = state_dict.get("args"), state_dict.get("kwargs")
        metric_kwargs = sorted(k for k, v in self.kwargs.items() if isinstance(v, Metric))
        if (
            set(state_dict) != {"args", "kwargs"}
            or len(args) != len(self.args)
            or sorted(kwargs) != metric_kwargs
        ):
            raise ValueError(
                "MetricsLambda state dict does not fit: expected 'args' of length "
                f"{len(self.args)} and 'kwargs' with keys {metric_kwargs}, "
                f"got keys {sorted(state_dict)}"
            )
        for arg, state in zip(self.args, args):
            if isinstance(arg, Metric):
                arg.load_state_dict(state)
        for key in metric_kwargs:
            self.kwargs[key].load_state_dict(kwargs[key])
