"""TensorBoard logging on rank 0 through torch's own SummaryWriter."""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from distengine.distributed import get_rank
from distengine.distributed.sharding import is_dtensor
from distengine.engine import Engine, Events


def global_step_from_engine(
    engine: Engine, custom_event_name: Any = None, fallback_attr: str = "epoch"
) -> Callable[[Engine, Any], int]:
    """A ``global_step_transform`` reading ``engine``'s counter, as PyTorch-Ignite's.

    The counter is the one of the event the handler fires on (an evaluator's
    ``COMPLETED`` or ``EPOCH_COMPLETED``: the trainer's epoch), or of
    ``custom_event_name``; an event no counter is registered for gives
    ``engine.state.<fallback_attr>``. To put validation points on the same x
    axis as per-iteration training curves, name the iteration:

    Example::

        tb.attach_output_handler(evaluator, Events.COMPLETED, "validation", metric_names="all",
                                 global_step_transform=global_step_from_engine(
                                     trainer, Events.ITERATION_COMPLETED))
    """

    def transform(_: Engine, event_name: Any = None) -> int:
        event = custom_event_name if custom_event_name is not None else event_name
        base = getattr(event, "event", event)
        if base is None or engine.state.counter_for(base) is None:
            return getattr(engine.state, fallback_attr)
        return engine.state.get_event_attrib_value(base)

    return transform


def _event_step(engine: Engine, event: Any) -> int:
    """The counter of ``event`` in ``engine``'s state (its iteration for an uncounted event)."""
    return global_step_from_engine(engine, fallback_attr="iteration")(engine, event)


class _NoWriter:
    """What ranks other than 0 hold: every call does nothing, no file is created."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class TensorboardLogger:
    """Writes scalars, histograms and hparams to ``log_dir``; a no-op on ranks other than 0.

    View with ``tensorboard --logdir <log_dir>``.

    Example::

        tb = TensorboardLogger("runs/exp1/tb")
        tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED(every=50), "train",
                                 output_transform=lambda loss: {"loss": loss})
        tb.attach_opt_params_handler(trainer, Events.ITERATION_STARTED, optimizer)
    """

    def __init__(self, log_dir: str | os.PathLike, **writer_kwargs: Any) -> None:
        self.log_dir = str(log_dir)
        if get_rank() == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer: Any = SummaryWriter(log_dir=self.log_dir, **writer_kwargs)
        else:
            self.writer = _NoWriter()

    def attach(
        self, engine: Engine, log_handler: Callable[[Engine, Any, Any], None], event_name: Any
    ) -> Any:
        """Call ``log_handler(engine, writer, event_name)`` on ``event_name`` (rank 0 only)."""
        if get_rank() != 0:
            return None
        return engine.add_event_handler(
            event_name, lambda e: log_handler(e, self.writer, e.last_event_name)
        )

    def attach_output_handler(
        self,
        engine: Engine,
        event_name: Any,
        tag: str,
        metric_names: str | Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        global_step_transform: Callable[[Engine, Any], int] | None = None,
    ) -> Any:
        """Log ``tag/<metric>`` for the chosen metrics and the transformed output.

        The step is the counter of the event it fires on (``EPOCH_COMPLETED``:
        the epoch), as in PyTorch-Ignite, unless ``global_step_transform``
        gives another (see :func:`global_step_from_engine`). A value agreed
        across ranks on the engine's board (a running average on several ranks)
        is written once per agreed value: at the iteration it holds for when
        the step counts iterations, and never again until a newer one arrives.
        """
        step_of = global_step_transform or _event_step
        written: dict[str, int] = {}  # board values: the iteration of the last one written

        def log(engine: Engine, writer: Any, event: Any) -> None:
            metrics = engine.state.metrics
            names = metrics if metric_names == "all" else (metric_names or [])
            step = step_of(engine, event)
            steps = {n: step for n in names if n in metrics}
            _fresh_only(engine, event, global_step_transform is None, steps, written)
            values = {n: (metrics[n], at) for n, at in steps.items()}
            if output_transform is not None:
                out = output_transform(engine.state.output)
                out = out if isinstance(out, dict) else {"output": out}
                values.update({n: (value, step) for n, value in out.items()})
            for name, (value, at) in values.items():
                _add_value(writer, f"{tag}/{name}", value, at)

        return self.attach(engine, log, event_name)

    def attach_opt_params_handler(
        self,
        engine: Engine,
        event_name: Any,
        optimizer: torch.optim.Optimizer,
        param_name: str = "lr",
        tag: str | None = None,
    ) -> Any:
        """Log each param group's ``param_name`` (e.g. the learning rate)."""
        prefix = f"{tag}/" if tag else ""

        def log(engine: Engine, writer: Any, event: Any) -> None:
            for i, group in enumerate(optimizer.param_groups):
                step = _event_step(engine, event)
                writer.add_scalar(f"{prefix}{param_name}/group_{i}", group[param_name], step)

        return self.attach(engine, log, event_name)

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
            step = _event_step(engine, engine.last_event_name)
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


def _fresh_only(
    engine: Engine, event: Any, own_step: bool, steps: dict[str, int], written: dict[str, int]
) -> None:
    """Drop from ``steps`` the board values already written; the others are written at the
    iteration they hold for when the step counts ``engine``'s iterations."""
    board = getattr(engine, "board", None)
    if board is None:
        return
    by_iteration = own_step and engine.state.counter_for(event) in ("iteration", None)
    for name in list(steps):
        as_of = board.as_of(name)
        if as_of is None:
            continue
        if written.get(name) == as_of:
            del steps[name]  # the same agreed value: no new point
            continue
        written[name] = as_of
        if by_iteration:
            steps[name] = as_of


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, numbers.Number):
        return float(value)
    return None


def _add_value(writer: Any, tag: str, value: Any, step: int) -> None:
    scalar = _scalar(value)
    if scalar is not None:
        writer.add_scalar(tag, scalar, step)
    elif isinstance(value, torch.Tensor) and value.dim() == 1:
        for i, v in enumerate(value.tolist()):
            writer.add_scalar(f"{tag}/{i}", v, step)
