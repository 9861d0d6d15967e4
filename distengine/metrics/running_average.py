"""An exponential moving average of the engine's output, or of a metric."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from distengine.distributed import all_reduce, get_world_size
from distengine.engine.board import check_every
from distengine.metrics.metric import Metric
from distengine.metrics.state import NotComputableError

if TYPE_CHECKING:
    from distengine.engine import Engine
    from distengine.metrics.usage import MetricUsage

_KEPT = (torch.float32, torch.float64)
_MAX_UNFOLDED = 1024  # outputs kept aside before they are folded in anyway


class RunningAverage(Metric):
    """``value = alpha * value + (1 - alpha) * current``, after every iteration.

    **Output form** (``output_transform=``, e.g. a running loss): each rank
    keeps the average of its own outputs where they are (a 0-d tensor on the
    device for tensor outputs, a float for numbers): no host sync per
    iteration. The average is linear, so the mean over ranks of the per-rank
    averages is the average of the per-rank means: ranks exchange only their
    averages, never their outputs. With one process
    ``engine.state.metrics[name]`` is refreshed every iteration. With several
    it is the mean over ranks, exchanged through the engine's consensus board
    (``engine.board``: one asynchronous collective, shared with the consensus
    checks, launched after an iteration's handlers and read before the next
    iteration's). By default (``every=None``) the ranks agree on it about
    twice a second, just before each iteration at which a handler with an
    ``every``/``once`` filter fires on ``ITERATION_COMPLETED`` (a logger, a
    TensorBoard handler: what it reads at iteration ``k`` is the mean over
    ranks as of ``k - 1``), at each epoch's end and when the run completes (as
    of that iteration); a :class:`~distengine.handlers.ProgressBar` redraws
    when a fresh value arrives. ``engine.board.as_of(name)`` says which
    iteration a value holds for: a handler without a filter reads the last
    agreed value. ``every=N`` agrees at multiples of N instead, ``every=1``
    after every iteration (one small collective per iteration). Every rank
    holds the same value at every point, and reading it (a progress bar on
    rank 0, a logger) never triggers a collective. Numbers stay floats;
    tensors stay 0-d tensors (on the GPU, on the device: no host read until
    someone reads the value).

    **Metric form** (``src=``): the average of ``src``'s value on each global
    batch, as in PyTorch-Ignite. ``src`` is copied: the copy is updated and
    reset every iteration, so ``src`` itself is never touched and may also be
    attached on its own. This form reduces the copy's state across ranks and
    computes it every iteration (one collective per iteration with several
    ranks); use the output form for the typical running loss.

    It starts afresh every epoch when attached with
    ``usage=SingleEpochRunningBatchWise()`` (or made with ``epoch_bound=True``,
    which, as in Ignite, overrides ``usage``); the default usage,
    ``RunningBatchWise()``, runs across epochs. Ignite's other usages
    (``RunningEpochWise``, ``EpochWise``, ``BatchWise``) raise ValueError.

    Example::

        RunningAverage(output_transform=lambda loss: loss).attach(trainer, "loss")
        RunningAverage(Accuracy(output_transform=...)).attach(trainer, "running_acc")
    """

    #: Each rank's own average is saved and restored (the output form's value differs per rank).
    checkpoint_per_rank = True

    def __init__(
        self,
        src: Metric | None = None,
        alpha: float = 0.98,
        output_transform: Callable[[Any], Any] | None = None,
        epoch_bound: bool | None = None,
        device: str | torch.device | None = None,
        every: int | None = None,
    ) -> None:
        if src is not None and not isinstance(src, Metric):
            raise TypeError(f"Argument src should be a Metric or None, got {type(src).__name__}")
        if not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"Argument alpha should be a float between 0.0 and 1.0, got {alpha!r}")
        if src is not None and output_transform is not None:
            raise ValueError(
                "Argument output_transform should be None if src is a Metric "
                "(give exactly one of src (a Metric) or output_transform)"
            )
        if src is None and output_transform is None:
            raise ValueError(
                "Argument output_transform should not be None if src corresponds to the output "
                "of process function (give exactly one of src (a Metric) or output_transform)"
            )
        super().__init__(output_transform or (lambda output: output), device)
        self.src = copy.deepcopy(src) if src is not None else None
        self.alpha, self.epoch_bound = float(alpha), epoch_bound
        self.every = check_every(every)
        self.value: Any = None
        self._unfolded: list[Any] = []  # outputs not yet folded into ``value``
        self._attached: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def dependencies(self) -> list[Metric]:
        return [self.src] if self.src is not None else []

    @property
    def _value(self) -> Any:
        """Ignite's name for this rank's current average."""
        return self._fold()

    # ------------------------------------------------------------------ the average
    def update(self, output: Any) -> None:
        """Take one (transformed) output into this rank's average (output form).

        It is kept aside (no device operation for a 0-d tensor) and folded in
        when the average is read, in one vectorised step.
        """
        if self.src is not None:
            return  # the engine's metric group updates the copy of src itself
        self._unfolded.append(_current(output, self._device))
        if len(self._unfolded) >= _MAX_UNFOLDED:
            self._fold()

    def _fold(self) -> Any:
        """``value`` brought up to date with the outputs kept aside; returns it."""
        pending, self._unfolded = self._unfolded, []
        if pending and self.value is None:
            first = pending.pop(0)
            self.value = first.clone() if isinstance(first, torch.Tensor) else first
        if not pending:
            return self.value
        tensors = [x for x in pending if isinstance(x, torch.Tensor)]
        if not tensors and not isinstance(self.value, torch.Tensor):
            for x in pending:
                self.value = self.alpha * self.value + (1.0 - self.alpha) * x
        elif len(pending) == 1 and isinstance(self.value, torch.Tensor) and tensors:
            # Ignite's formula, so one process publishes Ignite's values to the last bit
            current = tensors[0].to(self.value.dtype)
            self.value = self.value * self.alpha + (1.0 - self.alpha) * current
        else:
            self.value = _folded(self.value, pending, self.alpha)
        return self.value

    def compute(self) -> Any:
        """Metric form: one step of the average with ``src``'s value. Output form: the mean
        over ranks of the per-rank averages (a collective with several ranks: call it on all)."""
        if self.src is not None:
            current = self.src.compute()
            if self.value is None:
                self.value = current
            else:
                self.value = self.alpha * self.value + (1.0 - self.alpha) * current
            return self.value
        if self._fold() is None:
            raise NotComputableError("RunningAverage has seen no output yet")
        if get_world_size() <= 1:
            return self.value
        if isinstance(self.value, torch.Tensor):
            return all_reduce(self.value.detach().clone(), "mean")
        return all_reduce(float(self.value), "mean")

    # ------------------------------------------------------------------- engine use
    def attach(
        self, engine: Engine, name: str | None = None, usage: str | MetricUsage | None = None
    ) -> None:
        """Publish ``engine.state.metrics[name]`` after iterations.

        ``usage``: ``RunningBatchWise()`` (the default: across epochs) or
        ``SingleEpochRunningBatchWise()`` (afresh every epoch), or their names.

        Example::

            RunningAverage(output_transform=lambda loss: loss).attach(
                trainer, "epoch_loss", usage=SingleEpochRunningBatchWise())
        """
        from distengine.engine import Events

        restart_each_epoch = _restarts_each_epoch(usage, self.epoch_bound)

        if self.src is not None:
            super().attach(engine, name, "batch_wise")
            handles = []
        else:
            if self.is_attached(engine):
                raise ValueError("RunningAverage is already attached to this engine")
            alone = get_world_size() <= 1  # with one process, publish every iteration
            step = self._step_and_publish if alone and name is not None else self._step
            handles = [engine.add_event_handler(Events.ITERATION_COMPLETED, step, name)]
            if not alone:
                publish = lambda mean: self._publish(engine, name, mean)  # noqa: E731
                engine.board.value(self, self.every, self._local, publish, name=name)
            # the average is part of the run: {"trainer": trainer} in a checkpoint keeps it
            taken = sum(key.startswith("running_average") for key in engine.statefuls())
            self._keys[engine] = f"running_average[{name if name else taken}]"
            engine.register_stateful(self._keys[engine], self)
        if restart_each_epoch:
            handles.append(engine.add_event_handler(Events.EPOCH_STARTED, self._restart))
        self._attached[engine] = handles

    def _step(self, engine: Engine, name: str | None) -> None:
        self.update(self._output_transform(engine.state.output))

    def _step_and_publish(self, engine: Engine, name: str) -> None:
        self.update(self._output_transform(engine.state.output))
        engine.state.metrics[name] = self._fold()

    def _local(self) -> Any:
        return self._fold()

    def _publish(self, engine: Engine, name: str | None, mean: float | torch.Tensor) -> None:
        """Put the mean over ranks in ``state.metrics``: a float for numbers, else a 0-d tensor
        of the average's dtype (``mean`` is a float read on the host, or a device tensor)."""
        if name is None:
            return
        if not isinstance(self.value, torch.Tensor):
            engine.state.metrics[name] = float(mean)
        elif isinstance(mean, torch.Tensor):
            engine.state.metrics[name] = mean.to(self.value.dtype)
        else:
            engine.state.metrics[name] = torch.tensor(mean, dtype=self.value.dtype)

    def _restart(self) -> None:
        self.value, self._unfolded = None, []

    def detach(self, engine: Engine) -> None:
        """Stop updating on ``engine`` (every rank at the same point) and drop its value."""
        if engine not in self._attached:
            return
        for handle in self._attached.pop(engine):
            handle.remove()
        if self.src is not None:
            super().detach(engine)
        else:
            engine.board.remove(self)
            engine.unregister_stateful(self._keys.pop(engine))

    def is_attached(self, engine: Engine) -> bool:
        """Whether this average is attached to ``engine``."""
        return engine in self._attached

    # ------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This rank's average (and, in the metric form, nothing of ``src``: it is per batch)."""
        return {"value": self._fold()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (older states with extra keys load too)."""
        if "value" not in state_dict:
            raise ValueError(
                f"RunningAverage state dict lacks 'value'; it has {sorted(state_dict)}"
            )
        self.value, self._unfolded = state_dict["value"], []

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Restore averages saved on another number of ranks: every rank takes their mean
        (what the ranks publish), or the shared value where they were all equal."""
        values = [state["value"] for state in states if state.get("value") is not None]
        if not values or all(_same(v, values[0]) for v in values):
            self.load_state_dict({"value": values[0] if values else None})
            return
        like = next((v for v in values if isinstance(v, torch.Tensor)), None)
        mean = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]).mean(0)
        value = mean.to(like.dtype) if like is not None else float(mean)
        self.load_state_dict({"value": value})


def _restarts_each_epoch(usage: str | MetricUsage | None, epoch_bound: bool | None) -> bool:
    """Whether the average starts afresh every epoch; Ignite's other usages are refused."""
    from distengine.metrics.usage import RunningBatchWise, SingleEpochRunningBatchWise, as_usage

    chosen = RunningBatchWise() if usage is None else as_usage(usage)
    if type(chosen) not in (RunningBatchWise, SingleEpochRunningBatchWise):
        raise ValueError(
            "RunningAverage takes usage=RunningBatchWise() (the default) or "
            f"SingleEpochRunningBatchWise(), got {type(chosen).__name__}: distengine does not "
            "average across epochs (RunningEpochWise) nor within a batch"
        )
    if epoch_bound is not None:  # as in Ignite, the deprecated argument wins
        return epoch_bound
    return isinstance(chosen, SingleEpochRunningBatchWise)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b


def _folded(value: Any, pending: list[Any], alpha: float) -> torch.Tensor:
    """``value`` after the averages of ``pending``, computed at once in float64:
    ``alpha**n * value + sum((1 - alpha) * alpha**(n - 1 - i) * pending[i])``."""
    like = (
        value
        if isinstance(value, torch.Tensor)
        else next(x for x in pending if isinstance(x, torch.Tensor))
    )
    device = like.device
    xs = torch.stack(
        [x if isinstance(x, torch.Tensor) else torch.tensor(x, device=device) for x in pending]
    ).double()
    n = xs.numel()
    powers = torch.arange(n - 1, -1, -1, dtype=torch.float64, device=device)
    weights = torch.pow(alpha, powers) * (1.0 - alpha)
    return (value * alpha**n + (weights * xs).sum()).to(like.dtype)


def _current(output: Any, device: torch.device | None) -> Any:
    """This batch's value: a float, or a floating 0-d tensor (the mean of a larger one)."""
    if not isinstance(output, torch.Tensor):
        return float(output)
    if output.dim() == 0 and output.dtype in _KEPT and device is None:
        return output.detach()  # the common case, a loss: no device operation
    value = output.detach()
    if device is not None:
        value = value.to(device)
    if not value.is_floating_point() or value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value.mean() if value.numel() != 1 else value.reshape(())
