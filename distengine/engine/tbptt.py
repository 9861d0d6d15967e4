"""Truncated back-propagation through time: a trainer for recurrent models on long sequences.

Each batch ``(x, y)`` of sequences is cut along its time dimension into
chunks of ``tbtt_step`` steps. The model runs on one chunk at a time,
``y_pred, hidden = model(x_chunk, hidden)``; the chunk's loss is
back-propagated and the optimizer steps, then the hidden state is carried to
the next chunk *detached*, so gradients flow back at most ``tbtt_step``
steps. The hidden state starts anew with each batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from distengine.distributed.shards import check_training_shards
from distengine.engine.engine import Engine
from distengine.engine.events import EventEnum
from distengine.engine.steps import copies_overlap, model_device
from distengine.engine.steps import prepare_batch as _prepare_batch

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Tbptt_Events", "TbpttStep", "create_supervised_tbptt_trainer", "detach_hidden"]


class Tbptt_Events(EventEnum):  # noqa: N801  (PyTorch-Ignite's name)
    """Events of a TBPTT trainer, fired around each time chunk inside an iteration.

    Filters count their firings: ``Tbptt_Events.TIME_ITERATION_COMPLETED(every=4)``.
    """

    TIME_ITERATION_STARTED = "time_iteration_started"
    TIME_ITERATION_COMPLETED = "time_iteration_completed"


def detach_hidden(hidden: Any) -> Any:
    """``hidden`` (a tensor, or tuples/lists/dicts of them, as an LSTM's ``(h, c)``) detached.

    Example::

        h, c = detach_hidden((h, c))
    """
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    if isinstance(hidden, (str, bytes)):
        return hidden
    if isinstance(hidden, dict):
        return {k: detach_hidden(v) for k, v in hidden.items()}
    if isinstance(hidden, (list, tuple)):
        return type(hidden)(detach_hidden(v) for v in hidden)
    return hidden


#: PyTorch-Ignite's private name for :func:`detach_hidden`, for code that imports it.
_detach_hidden = detach_hidden


class TbpttStep:
    """``(engine, batch) -> mean loss``: one TBPTT iteration over a batch of sequences.

    For each chunk of ``tbtt_step`` time steps along ``dim``: fire
    ``TIME_ITERATION_STARTED``, zero the gradients, run the model (the first
    chunk as ``model(x)``, the next ones as ``model(x, detached hidden)``),
    back-propagate the chunk's loss, step the optimizer, set
    ``engine.state.output`` to the chunk's detached loss and fire
    ``TIME_ITERATION_COMPLETED``. Returns the mean of the chunks' losses (a
    detached float64 tensor: no host sync per chunk). Under DDP every chunk
    is one synchronised step on every rank (the ranks' sequences must have
    the same length). It keeps nothing between iterations, so a checkpoint
    of model, optimizer and engine resumes it exactly.

    Example::

        step = TbpttStep(rnn, optimizer, nn.MSELoss(), tbtt_step=20)
        trainer = Engine(step)
        trainer.register_events(*Tbptt_Events)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        tbtt_step: int,
        dim: int = 0,
        device: torch.device | str | None = None,
        non_blocking: bool | None = None,
        prepare_batch: Callable = _prepare_batch,
    ) -> None:
        if not isinstance(tbtt_step, int) or isinstance(tbtt_step, bool) or tbtt_step < 1:
            raise ValueError(
                f"tbtt_step must be an int >= 1 (time steps per chunk), got {tbtt_step!r}"
            )
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise ValueError(f"dim must be an int (the time dimension), got {dim!r}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.tbtt_step, self.dim = tbtt_step, dim
        self.device = torch.device(device) if device is not None else model_device(model)
        self.non_blocking = copies_overlap(self.device) if non_blocking is None else non_blocking
        self.prepare_batch = prepare_batch
        self._checked_data: Any = None

    def __call__(self, engine: Engine, batch: Any) -> torch.Tensor:
        if isinstance(self.model, DistributedDataParallel):
            if engine.state.dataloader is not self._checked_data:
                check_training_shards(engine.state.dataloader)
                self._checked_data = engine.state.dataloader
        x, y = batch
        if x.shape[self.dim] != y.shape[self.dim]:
            raise ValueError(
                f"x and y differ along the time dimension dim={self.dim}: "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        losses, hidden = [], None
        for chunk in zip(x.split(self.tbtt_step, self.dim), y.split(self.tbtt_step, self.dim)):
            x_t, y_t = self.prepare_batch(chunk, self.device, self.non_blocking)
            engine.fire_event(Tbptt_Events.TIME_ITERATION_STARTED)
            loss, hidden = self._chunk(x_t, y_t, hidden)
            engine.state.output = loss
            losses.append(loss)
            engine.fire_event(Tbptt_Events.TIME_ITERATION_COMPLETED)
        return torch.stack(losses).to(torch.float64).mean()

    def _chunk(self, x: Any, y: Any, hidden: Any) -> tuple[torch.Tensor, Any]:
        """Forward, backward and optimizer step on one chunk; the hidden state it leaves."""
        self.model.train()
        self.optimizer.zero_grad()
        if hidden is None:
            y_pred, hidden = self.model(x)
        else:
            y_pred, hidden = self.model(x, detach_hidden(hidden))
        loss = self.loss_fn(y_pred, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), hidden


def create_supervised_tbptt_trainer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    tbtt_step: int | None = None,
    dim: int = 0,
    device: torch.device | str | None = None,
    non_blocking: bool | None = None,
    prepare_batch: Callable = _prepare_batch,
    *,
    tbptt_step: int | None = None,
) -> Engine:
    """A trainer for recurrent models by truncated back-propagation through time.

    PyTorch-Ignite's signature (``tbtt_step``, also accepted as
    ``tbptt_step``): each batch ``(x, y)`` is split into chunks of
    ``tbtt_step`` steps along ``dim`` (the last may be shorter); the model,
    called as ``model(x)`` then ``model(x, hidden)``, returns ``(y_pred,
    hidden)``; the optimizer steps after each chunk and the hidden state goes
    to the next chunk detached (see :class:`TbpttStep`). The engine has the
    events :class:`Tbptt_Events` registered; its output is the batch's mean
    chunk loss. Works with a DDP model (``idist.auto_model``) on every rank,
    and with :class:`~distengine.handlers.Checkpoint` and exact resume.
    As the supervised trainer (not Ignite), ``device`` defaults to the
    model's device and ``non_blocking`` (None) is True on CUDA.

    Example::

        trainer = create_supervised_tbptt_trainer(rnn, optimizer, nn.MSELoss(), tbtt_step=20)

        @trainer.on(Tbptt_Events.TIME_ITERATION_COMPLETED)
        def chunk_done(engine):
            print(engine.state.output)

        trainer.run(sequences, max_epochs=10)
    """
    if (tbtt_step is None) == (tbptt_step is None):
        raise ValueError(
            "give the chunk length once: tbtt_step (PyTorch-Ignite's name) or tbptt_step, "
            f"got tbtt_step={tbtt_step!r}, tbptt_step={tbptt_step!r}"
        )
    step = TbpttStep(
        model,
        optimizer,
        loss_fn,
        tbtt_step if tbtt_step is not None else tbptt_step,  # type: ignore[arg-type]
        dim,
        device,
        non_blocking,
        prepare_batch,
    )
    engine = Engine(step)
    engine.register_events(*Tbptt_Events)
    return engine
