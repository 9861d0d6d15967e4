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


def global_step_from_engine(engine: Engine) -> Callable[[Engine, Any], int]:
    """A ``global_step_transform`` giving ``engine``'s iteration (e.g. the trainer's).

    Validation metrics logged with it sit on the same x axis as training
    losses logged per iteration.

    Example::

        tb.attach_output_handler(evaluator, Events.COMPLETED, "validation", metric_names="all",
                                 global_step_transform=global_step_from_engine(trainer))
    """

    def transform(_: Engine, __: Any = None) -> int:
        return engine.state.iteration

    return transform


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
        """Log ``tag/<metric>`` for the chosen metrics and the transformed output."""
        step_of = global_step_transform or (lambda e, _: e.state.iteration)

        def log(engine: Engine, writer: Any, event: Any) -> None:
            values: dict[str, Any] = {}
            metrics = engine.state.metrics
            names = metrics if metric_names == "all" else (metric_names or [])
            values.update({n: metrics[n] for n in names if n in metrics})
            if output_transform is not None:
                out = output_transform(engine.state.output)
                values.update(out if isinstance(out, dict) else {"output": out})
            step = step_of(engine, event)
            for name, value in values.items():
                _add_value(writer, f"{tag}/{name}", value, step)

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
                writer.add_scalar(
                    f"{prefix}{param_name}/group_{i}", group[param_name], engine.state.iteration
                )

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
            step = engine.state.iteration
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
    ) -> Any:
        """When ``engine`` completes, log ``hparams`` with final metrics (the HPARAMS tab).

        ``metrics_from`` names another engine to read the metrics from, e.g.
        the evaluator's when attached to the trainer.
        """
        source = metrics_from or engine

        def log(engine: Engine, writer: Any, event: Any) -> None:
            metrics = source.state.metrics
            names = metrics if metric_names == "all" else metric_names
            final = {
                f"hparam/{n}": float(_scalar(metrics[n]))
                for n in names
                if n in metrics and _scalar(metrics[n]) is not None
            }
            clean = {
                k: v if isinstance(v, (bool, str, numbers.Number)) else str(v)
                for k, v in hparams.items()
            }
            writer.add_hparams(clean, final, run_name=".")

        return self.attach(engine, log, Events.COMPLETED)

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
