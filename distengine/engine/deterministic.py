"""An engine whose every pass over the data starts from seeded generators (PyTorch-Ignite's
``DeterministicEngine``), and :func:`keep_random_state` for handlers that draw."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from distengine.distributed.utils import manual_seed
from distengine.engine.engine import Engine
from distengine.engine.reproducible import ReproducibleBatchSampler, update_dataloader
from distengine.engine.resume import capture_rng, data_length, restore_rng

__all__ = [
    "DeterministicEngine",
    "ReproducibleBatchSampler",
    "keep_random_state",
    "update_dataloader",
]

F = TypeVar("F", bound=Callable[..., Any])


def keep_random_state(func: F) -> F:
    """Decorate ``func`` so that it leaves the random generators as it found them.

    torch's (and the current CUDA device's, once CUDA is in use), Python's
    ``random`` and NumPy's global generators are saved before each call and put
    back after it, also when it raises: a handler that seeds or draws (a
    validation run, a sample plot) does not change the training's draws.

    Example::

        @trainer.on(Events.EPOCH_COMPLETED)
        @keep_random_state
        def show_samples(engine):
            torch.manual_seed(0)
            plot(model(torch.randn(4, 100)))
    """

    @functools.wraps(func)
    def keeping(*args: Any, **kwargs: Any) -> Any:
        saved = capture_rng()
        try:
            return func(*args, **kwargs)
        finally:
            restore_rng(saved)

    return keeping  # type: ignore[return-value]


class DeterministicEngine(Engine):
    """An :class:`Engine` whose dataflow depends only on ``state.seed`` and the pass number.

    As PyTorch-Ignite's: a fresh run draws ``state.seed`` from torch's
    generator (so ``manual_seed(s)`` before it fixes everything), and each new
    pass over the data starts by seeding torch, ``random`` and NumPy with
    ``state.seed + iteration // epoch_length``; on CUDA,
    ``torch.use_deterministic_algorithms(True, warn_only=True)`` and
    ``cudnn.benchmark = False`` are set. A resumed run (a checkpoint, or
    ``run()`` after :meth:`interrupt`) reopens the saved pass exactly, as any
    :class:`Engine` does; the seed is part of the state dict. It needs data
    (``run(data=None)`` is a ValueError, as in Ignite).

    Example::

        manual_seed(17)
        trainer = DeterministicEngine(train_step)
        trainer.run(loader, max_epochs=3)   # the same batches and draws on every run
    """

    def _prepare_fresh(
        self, data: Iterable[Any] | None, max_epochs, epoch_length, max_iters
    ) -> None:
        if data is None:
            raise ValueError(
                "Deterministic engine does not support the option of data=None: "
                "run(data, ...) with a list or a DataLoader"
            )
        super()._prepare_fresh(data, max_epochs, epoch_length, max_iters)
        self.state.seed = int(torch.randint(0, int(1e9), (1,)).item())
        if torch.cuda.is_available():
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _prepare_resume(self, data: Iterable[Any] | None, epoch_length: int | None) -> None:
        super()._prepare_resume(data, epoch_length)
        if self.state.dataloader is None:
            raise ValueError(
                "DeterministicEngine needs data: resume with run(data, ...) over the saved data"
            )

    def _new_pass(self) -> None:
        s = self.state
        per_pass = data_length(s.dataloader) or s.epoch_length  # Ignite: the data's length
        passes = s.iteration // per_pass if per_pass else s.epoch - 1
        manual_seed(int(s.seed) + passes)  # type: ignore[arg-type]


def _get_rng_states() -> list[Any]:
    """PyTorch-Ignite's private form of the generator states: ``[random, torch, numpy]``."""
    states: list[Any] = [random.getstate(), torch.get_rng_state()]
    try:
        import numpy
    except ImportError:
        return states
    return [*states, numpy.random.get_state()]


def _set_rng_states(rng_states: list[Any]) -> None:
    """Put back what :func:`_get_rng_states` returned (torch's state moved to the CPU)."""
    random.setstate(rng_states[0])
    rng_states[1] = rng_states[1].cpu()
    torch.set_rng_state(rng_states[1])
    if len(rng_states) > 2:
        import numpy

        numpy.random.set_state(rng_states[2])
