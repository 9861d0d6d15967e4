"""A metric computed from other metrics by a function (metric arithmetic uses it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distengine.metrics.metric import Metric


class MetricsLambda(Metric):
    """``fn(*values)`` where each Metric argument is replaced by its computed value.

    Underlying metrics are updated once per batch and reduced and computed
    once per completion, however often they appear.

    Example::

        precision, recall = Precision(average=False), Recall(average=False)
        f1 = MetricsLambda(lambda p, r: (2 * p * r / (p + r)).mean(), precision, recall)
        f1.attach(evaluator, "f1")      # or: (2 * precision * recall / (precision + recall)).mean()
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"MetricsLambda needs a callable, got {fn!r}")
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def dependencies(self) -> list[Metric]:
        return [a for a in (*self.args, *self.kwargs.values()) if isinstance(a, Metric)]

    def reset(self) -> None:
        for metric in self.dependencies():
            metric.reset()

    def update(self, output: Any) -> None:
        for metric in self.dependencies():
            metric.update(metric._output_transform(output))

    def compute(self) -> Any:
        def value(a: Any) -> Any:
            return a.compute() if isinstance(a, Metric) else a

        return self.fn(*map(value, self.args), **{k: value(v) for k, v in self.kwargs.items()})

    def __getattr__(self, name: str) -> Any:
        # methods on the value, e.g. (precision * 2).mean()
        if name.startswith("_") or name in ("fn", "args", "kwargs"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> MetricsLambda:
            return MetricsLambda(lambda v: getattr(v, name)(*args, **kwargs), self)

        return method
