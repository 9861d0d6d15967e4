"""TensorBoard logging on rank 0 through torch's own SummaryWriter.

PyTorch-Ignite's handler classes (``OutputHandler``, ``WeightsScalarHandler``,
...) are importable from here too, as from ``ignite.handlers.tensorboard_logger``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from distengine.distributed import get_rank
from distengine.distributed.sharding import is_dtensor
from distengine.engine import Engine, Events
from distengine.engine.handlers import RemovableEventHandle
from distengine.handlers.tensorboard_handlers import (
    BaseHandler,
    GradsHistHandler,
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    WeightsHistHandler,
    WeightsScalarHandler,
    event_step,
    global_step_from_engine,
)

__all__ = [
    "GradsHistHandler",
    "GradsScalarHandler",
    "OptimizerParamsHandler",
    "OutputHandler",
    "TensorboardLogger",
    "WeightsHistHandler",
    "WeightsScalarHandler",
    "global_step_from_engine",
]


class _NoWriter:
    """What ranks other than 0 hold: every call does nothing, no file is created."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class TensorboardLogger:
    """Writes scalars, histograms and hparams to ``log_dir``; a no-op on ranks other than 0.

    Without ``log_dir``, torch's SummaryWriter picks ``runs/<date>_<host>``.

    View with ``tensorboard --logdir <log_dir>``.

    Example::

        tb = TensorboardLogger("runs/exp1/tb")
        tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED(every=50), "train",
                                 output_transform=lambda loss: {"loss": loss})
        tb.attach_opt_params_handler(trainer, Events.ITERATION_STARTED, optimizer)
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, **writer_kwargs: Any) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)
        if get_rank() == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer: Any = SummaryWriter(log_dir=self.log_dir, **writer_kwargs)
            self.log_dir = self.writer.log_dir  # without log_dir: runs/<date>_<host>, as torch's
        else:
            self.writer = _NoWriter()

    def __getattr__(self, name: str) -> Any:
        """The writer's methods on the logger itself (``tb.add_scalar(...)``), as in Ignite."""
        if name == "writer":
            raise AttributeError(name)
        return getattr(self.writer, name)

    def attach(
        self, engine: Engine, log_handler: Callable[[Engine, Any, Any], None], event_name: Any
    ) -> RemovableEventHandle:
        """Call ``log_handler(engine, logger, event)`` on ``event_name``, on rank 0 only.

        ``logger`` is this logger: write with ``logger.writer.add_scalar(...)``
        or ``logger.add_scalar(...)`` (the writer's methods pass through).
        ``log_handler`` is one of PyTorch-Ignite's handler classes
        (:class:`OutputHandler`, :class:`WeightsScalarHandler`, ...) or any
        function of those three arguments. A weights or gradients handler over
        sharded parameters runs on every rank (measuring them is a collective);
        other ranks get a handle that removes nothing.

        Example::

            tb.attach(trainer, log_handler=GradsScalarHandler(model),
                      event_name=Events.ITERATION_COMPLETED(every=100))
        """
        every_rank = isinstance(log_handler, BaseHandler) and log_handler.every_rank()
        if get_rank() != 0 and not every_rank:
            return RemovableEventHandle(engine, [])
        return engine.add_event_handler(
            event_name, lambda e: log_handler(e, self, e.last_event_name)
        )

    def attach_output_handler(
        self,
        engine: Engine,
        event_name: Any,
        tag: str,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
        state_attributes: Sequence[str] | None = None,
    ) -> RemovableEventHandle:
        """Log ``tag/<metric>`` for the chosen metrics, the transformed output and state
        attributes (an :class:`OutputHandler`).

        The step is the counter of the event it fires on (``EPOCH_COMPLETED``:
        the epoch), as in PyTorch-Ignite, unless ``global_step_transform``
        gives another (see :func:`global_step_from_engine`). A value agreed
        across ranks on the engine's board (a running average on several ranks)
        is written once per agreed value: at the iteration it holds for when
        the step counts iterations, and never again until a newer one arrives.
        """
        handler = OutputHandler(
            tag, metric_names, output_transform, global_step_transform, state_attributes
        )
        return self.attach(engine, handler, event_name)

    def attach_opt_params_handler(
        self,
        engine: Engine,
        event_name: Any,
        optimizer: torch.optim.Optimizer,
        param_name: str = "lr",
        tag: str | None = None,
    ) -> RemovableEventHandle:
        """Log each param group's ``param_name`` (e.g. the learning rate): an
        :class:`OptimizerParamsHandler`."""
        return self.attach(engine, OptimizerParamsHandler(optimizer, param_name, tag), event_name)

    def attach_weights_handler(
        self,
        engine: Engine,
        event_name: Any,
        model: torch.nn.Module,
        kind: str = "scalar",
        grads: bool = False,
        tag: str | None = None,
    ) -> Any:
        """Log each parameter's norm (``kind="scalar"``) or histogram, or those of its gradients.

        Sharded (FSDP, DTensor) parameters are measured whole: every rank
        computes (the norms of all sharded parameters in one all-reduce per
        mesh, a histogram's full tensor one parameter at a time) and rank 0
        writes, so the handler runs on every rank. Plain parameters cost
        nothing on the other ranks.
        """
        if kind not in ("scalar", "histogram"):
            raise ValueError(f"kind must be 'scalar' or 'histogram', got {kind!r}")
        what = "grads" if grads else "weights"
        prefix = f"{tag}/" if tag else ""
        module = getattr(model, "module", model)
        suffix = "norm" if kind == "scalar" else "hist"
        writes = get_rank() == 0

        def log(engine: Engine) -> None:
            named = [(n, p.grad if grads else p) for n, p in module.named_parameters()]
            named = [(n, v.detach()) for n, v in named if v is not None]
            if not writes and not any(is_dtensor(v) for _, v in named):
                return  # nothing to take part in
            step = event_step(engine, engine.last_event_name)
            if kind == "scalar":
                values = dict(zip([n for n, _ in named], _norms([v for _, v in named], writes)))
            for name, value in named:
                key = f"{prefix}{what}_{suffix}/{name.replace('.', '/')}"
                if kind == "scalar":
                    if writes:
                        self.writer.add_scalar(key, values[name], step)
                    continue
                full = value.full_tensor() if is_dtensor(value) else value  # a collective
                if writes:
                    self.writer.add_histogram(key, full.cpu(), step)

        return engine.add_event_handler(event_name, log)

    def attach_hparams(
        self,
        engine: Engine,
        hparams: dict[str, Any],
        metric_names: Sequence[str] | str = "all",
        metrics_from: Engine | None = None,
        tag: str | None = None,
        highlight: Sequence[str] = (),
    ) -> Any:
        """Show ``hparams`` in the HPARAMS tab, with the run's own metric curves as its metrics.

        The first time ``metrics_from`` (default: ``engine``) completes, the
        HParams plugin's summaries are written into this run's event file:
        the hyperparameters, and as metrics the scalar tags
        ``<tag>/<metric>`` of ``metric_names`` that an output handler logs
        (the plugin shows each one's last value). No scalar of its own is
        written (``SummaryWriter.add_hparams`` would add ``hparam/*`` charts
        and a second run). Values other than numbers and strings are shown
        as strings. The table shows five hyperparameters at first: those named
        in ``highlight`` (e.g. the ones a sweep varies) come first.

        Example::

            tb.attach_output_handler(evaluator, Events.COMPLETED, "validation",
                                     metric_names="all",
                                     global_step_transform=global_step_from_engine(
                                         trainer, Events.ITERATION_COMPLETED))
            tb.attach_hparams(trainer, {"lr": 0.01, "batch_size": 64},
                              metrics_from=evaluator, tag="validation")
        """
        source = metrics_from or engine
        written: list[bool] = []

        def log(_: Engine, writer: Any, event: Any) -> None:
            if written:
                return
            metrics = source.state.metrics
            names = list(metrics) if metric_names == "all" else list(metric_names)
            tags = [f"{tag}/{name}" if tag else name for name in names]
            write_hparams(writer, hparams, tags, highlight)
            written.append(True)

        return self.attach(source, log, Events.COMPLETED)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> TensorboardLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _norms(values: list[torch.Tensor], writes: bool) -> list[float]:
    """The 2-norm of each tensor, whole: sharded ones' squared sums reduced over their mesh.

    Every rank must call it (the same tensors, in the same order); on ranks
    that do not write, plain tensors are skipped (their norm is 0.0 there).
    """
    squares: list[torch.Tensor | None] = [None] * len(values)
    by_mesh: dict[tuple[int, str], list[int]] = {}
    for i, value in enumerate(values):
        if is_dtensor(value):
            by_mesh.setdefault((id(value.device_mesh), str(value.placements)), []).append(i)
            squares[i] = value.to_local().double().pow(2).sum()
        elif writes:
            squares[i] = value.double().pow(2).sum()
    for indices in by_mesh.values():
        mesh = values[indices[0]].device_mesh
        stacked = torch.stack([squares[i] for i in indices])  # type: ignore[misc]
        for dim, placement in enumerate(values[indices[0]].placements):
            if not placement.is_replicate():  # a shard (or partial sum) on this mesh dim
                torch.distributed.all_reduce(stacked, group=mesh.get_group(dim))
        for i, total in zip(indices, stacked):
            squares[i] = total
    return [float(s.sqrt()) if s is not None else 0.0 for s in squares]


def write_hparams(
    writer: Any, hparams: dict[str, Any], metric_tags: Sequence[str], highlight: Sequence[str] = ()
) -> None:
    """Write the HParams plugin's experiment and session into ``writer``'s own event file.

    The names in ``highlight`` are marked as differing between runs (the
    plugin lists those first).
    """
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    clean = {  # booleans as "True"/"False" (the plugin would show them as 1 and 0)
        k: v if isinstance(v, (str, numbers.Number)) and not isinstance(v, bool) else str(v)
        for k, v in hparams.items()
    }
    experiment, start, end = hparams_summaries(clean, dict.fromkeys(metric_tags, 0.0))
    if highlight:
        metadata = experiment.value[0].metadata.plugin_data
        data = HParamsPluginData.FromString(metadata.content)
        for info in data.experiment.hparam_infos:
            info.differs = info.name in highlight
        metadata.content = data.SerializeToString()
    for summary in (experiment, start, end):
        writer._get_file_writer().add_summary(summary)
