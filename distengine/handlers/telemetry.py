"""How fast a run trains: samples/s, step time, time waiting for data, GPU memory."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from distengine.distributed import device as rank_device
from distengine.distributed import get_world_size
from distengine.engine import Engine, Events


def batch_size(batch: Any) -> int:
    """The number of samples in ``batch``: the first dimension of its first tensor (0 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            size = batch_size(item)
            if size:
                return size
    return 0


class Telemetry:
    """Measures the training loop over each interval of ``every`` iterations; rank-local.

    ``values`` holds the last interval's figures (empty before the first):

    - ``samples_per_s``: samples of the whole job per second (this rank's
      batch size times the world size, over the time per iteration);
    - ``step_time_ms``: wall time per iteration (fetching the batch, the
      step and the iteration's handlers);
    - ``data_wait_fraction``: the share of that time spent waiting for the
      next batch;
    - ``gpu_memory_gib``: the peak memory allocated on the GPU during the
      interval (when ``device``, by default the rank's, is a CUDA device).

    Per iteration it costs two clock reads (when the batch is asked for and
    when it arrives); the rest is computed every ``every`` iterations from
    host clocks, without a device sync (on a GPU the host waits for the
    device somewhere in each interval, so the averages hold). Work between
    epochs (validation, checkpoints) is left out: the wall time of each
    epoch's last iteration is not counted.

    Example::

        telemetry = Telemetry(every=100)
        telemetry.attach(trainer)
        tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED(every=100), "telemetry",
                                 output_transform=lambda _: telemetry.values)
    """

    def __init__(
        self,
        every: int = 100,
        samples: Callable[[Any], int] = batch_size,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.every, self.samples = every, samples
        self.device = torch.device(device) if device is not None else None
        self.values: dict[str, float] = {}
        self._epoch = self._iteration = -1
        self._mark = 0.0
        self._fetch = 0.0  # the last fetch's duration, counted with its iteration
        self._busy = self._waited = 0.0
        self._cycles = 0
        self._warned = False

    def attach(self, engine: Engine) -> None:
        """Measure ``engine``; publish ``values`` every ``every`` iterations (attach it first)."""
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._fetching)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._fetched)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._publish)

    def _fetching(self, engine: Engine) -> None:
        s = engine.state
        if s.iteration == self._iteration and s.epoch == self._epoch:
            return  # the data is asked again (a new pass): the same fetch goes on
        now = time.perf_counter()
        if s.epoch == self._epoch:  # an iteration of this epoch ended
            self._busy += now - self._mark
            self._waited += self._fetch
            self._cycles += s.iteration - self._iteration
        else:  # the first of an epoch: what came before it is not the loop's
            self._epoch = s.epoch
        self._mark, self._iteration = now, s.iteration

    def _fetched(self, _: Engine) -> None:
        self._fetch = time.perf_counter() - self._mark

    def _publish(self, engine: Engine) -> None:
        if self._cycles == 0 or self._busy <= 0:
            if engine.state.dataloader is None and not self._warned:
                self._warned = True
                warnings.warn(
                    "Telemetry measures when batches are fetched (GET_BATCH events), which a "
                    "run without data (run(epoch_length=n)) does not fire: it reports nothing",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        step = self._busy / self._cycles
        samples = self.samples(engine.state.batch) * get_world_size()
        self.values = {
            "samples_per_s": samples / step,
            "step_time_ms": step * 1000.0,
            "data_wait_fraction": min(self._waited / self._busy, 1.0),
        }
        device = self.device or rank_device()
        if device.type == "cuda":
            self.values["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            torch.cuda.reset_peak_memory_stats(device)
        self._busy = self._waited = 0.0
        self._cycles = 0
