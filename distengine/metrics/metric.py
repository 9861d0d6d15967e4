"""The Metric base class: declared state, updates without syncs, one reduction per compute."""

from __future__ import annotations

import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from distengine.metrics.reduction import reduced_states
from distengine.metrics.state import REDUCTIONS, StateSpec

if TYPE_CHECKING:
    from distengine.engine import Engine

USAGES = ("epoch_wise", "batch_wise", "running")


def _reducing(compute: Callable[[Metric], Any]) -> Callable[[Metric], Any]:
    """Make ``compute`` see reduced states, and compute once per reduction."""

    @functools.wraps(compute)
    def wrapper(self: Metric) -> Any:
        if not self._synced:
            with reduced_states([self]):
                return wrapper(self)
        key = id(wrapper)
        if key not in self._cache:
            self._cache[key] = compute(self)
        return self._cache[key]

    return wrapper


class Metric(ABC):
    """A quantity accumulated over batches and reduced across ranks.

    A subclass declares its state with :meth:`add_state` (a tensor and how
    ranks combine it: ``sum``, ``max``, ``min`` or ``cat``), updates it in
    ``update(output)`` without host-device syncs, and reads it in ``compute``.
    ``compute`` always sees states reduced over all ranks: either the
    engine reduces every metric attached to it in one go, or ``compute``
    does it itself when called directly.

    Example::

        class MeanAbsolute(Metric):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.add_state("total", torch.tensor(0.0, dtype=torch.float64))
                self.add_state("n", torch.tensor(0))

            def update(self, output):
                y_pred, y = output
                self.total += (y_pred - y).abs().sum()
                self.tally("n", y.numel())      # a count known on the host

            def compute(self):
                return (self.total / self.n).item()

        MeanAbsolute().attach(evaluator, "mae")
    """

    #: Each rank accumulates its own state: a checkpoint keeps every rank's.
    checkpoint_per_rank = True

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
    ) -> None:
        self._output_transform = output_transform
        self._device = torch.device(device) if device is not None else None
        self._specs: dict[str, StateSpec] = {}
        self._synced = False
        self._cache: dict[int, Any] = {}
        self._host_counts: dict[str, int] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "compute" in cls.__dict__ and not getattr(
            cls.__dict__["compute"], "__isabstractmethod__", False
        ):
            cls.compute = _reducing(cls.__dict__["compute"])

    # ------------------------------------------------------------------ state
    def add_state(
        self, name: str, default: torch.Tensor | None = None, reduce: str = "sum"
    ) -> None:
        """Declare ``self.<name>``: reset to ``default``, combined across ranks by ``reduce``.

        ``reduce="cat"`` makes a list that ``update`` appends tensors to;
        ``compute`` sees them concatenated over updates and ranks.
        ``default=None`` (sum only) is a state shaped by the first update.
        """
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if default is None and reduce not in ("sum", "cat"):
            raise ValueError(f"state {name!r}: only 'sum' states may start as None (lazy)")
        spec = StateSpec(name, reduce, default)
        self._specs[name] = spec
        setattr(self, name, spec.fresh(self._device))

    def reset(self) -> None:
        """Forget everything seen: every declared state back to its default."""
        for spec in self._specs.values():
            setattr(self, spec.name, spec.fresh(self._device))
        self._host_counts.clear()

    def tally(self, name: str, n: int) -> None:
        """Add ``n`` to the sum state ``name`` on the host: counts known from shapes
        (examples seen) cost no device operation per batch."""
        self._host_counts[name] = self._host_counts.get(name, 0) + n

    def flush_counts(self) -> None:
        """Fold host-side counts into their state tensors (before a reduction or a save)."""
        for name, n in self._host_counts.items():
            setattr(self, name, getattr(self, name) + n)
        self._host_counts.clear()

    def _follow(self, tensor: torch.Tensor) -> None:
        """Move fixed states to the data's device on first use (when no device was given)."""
        if self._device is not None:
            return
        self._device = tensor.device
        for spec in self._specs.values():
            value = getattr(self, spec.name)
            if isinstance(value, torch.Tensor):
                setattr(self, spec.name, value.to(self._device))

    def dependencies(self) -> list[Metric]:
        """Metrics this one is computed from (reduced and updated with it)."""
        return []

    @abstractmethod
    def update(self, output: Any) -> None:
        """Accumulate one batch's (transformed) engine output."""

    @abstractmethod
    def compute(self) -> Any:
        """The metric's value from the (reduced) state."""

    def state_dict(self) -> dict[str, Any]:
        """This rank's accumulated (unreduced) state, for checkpoints (one per rank)."""
        self.flush_counts()
        state = {}
        for spec in self._specs.values():
            value = getattr(self, spec.name)
            state[spec.name] = list(value) if isinstance(value, list) else value
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; errors name missing or unexpected keys."""
        missing = set(self._specs) - set(state_dict)
        unexpected = set(state_dict) - set(self._specs)
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__} state dict: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        device = self._device
        for name, value in state_dict.items():
            if isinstance(value, list):
                value = [v.to(device) if device is not None else v for v in value]
            elif isinstance(value, torch.Tensor) and device is not None:
                value = value.to(device)
            setattr(self, name, value)
        self._host_counts.clear()

    # ------------------------------------------------------------- engine use
    def attach(self, engine: Engine, name: str | None = None, usage: str = "epoch_wise") -> None:
        """Update on every iteration of ``engine`` and publish in ``engine.state.metrics[name]``.

        ``usage``: ``epoch_wise`` (reset each epoch, value at epoch end),
        ``batch_wise`` (value of each batch) or ``running`` (value after each
        batch, never reset). All metrics of one engine are reduced together.
        """
        from distengine.metrics.group import MetricGroup

        if usage not in USAGES:
            raise ValueError(f"usage must be one of {USAGES}, got {usage!r}")
        MetricGroup.of(engine).add(self, name, usage)

    def detach(self, engine: Engine) -> None:
        """Stop updating on ``engine`` and remove its value from ``state.metrics``."""
        from distengine.metrics.group import MetricGroup

        MetricGroup.of(engine).remove(self)

    def is_attached(self, engine: Engine) -> bool:
        """Whether this metric is attached to ``engine`` under a name."""
        from distengine.metrics.group import MetricGroup

        return MetricGroup.of(engine).has(self)

    # ------------------------------------------------------------- arithmetic
    def _combine(self, other: Any, op: Callable[[Any, Any], Any], reverse: bool = False):
        from distengine.metrics.metrics_lambda import MetricsLambda

        return MetricsLambda((lambda a, b: op(b, a)) if reverse else op, self, other)

    def __add__(self, other):
        return self._combine(other, operator.add)

    def __radd__(self, other):
        return self._combine(other, operator.add, reverse=True)

    def __sub__(self, other):
        return self._combine(other, operator.sub)

    def __rsub__(self, other):
        return self._combine(other, operator.sub, reverse=True)

    def __mul__(self, other):
        return self._combine(other, operator.mul)

    def __rmul__(self, other):
        return self._combine(other, operator.mul, reverse=True)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv)

    def __rtruediv__(self, other):
        return self._combine(other, operator.truediv, reverse=True)

    def __pow__(self, other):
        return self._combine(other, operator.pow)

    def __getitem__(self, index):
        return self._combine(index, operator.getitem)

    def __neg__(self):
        from distengine.metrics.metrics_lambda import MetricsLambda

        return MetricsLambda(operator.neg, self)
