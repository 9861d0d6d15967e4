"""Stop every rank at the same iteration on SIGTERM, save a checkpoint, and say so."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from distengine.distributed import all_reduce, get_world_size
from distengine.engine import Engine, Events

#: Exit code of a rank (and of the launcher) after a preemption checkpoint: "try again".
EXIT_PREEMPTED = 75


class Preemption:
    """On SIGTERM (or the given signals), all ranks stop at the next iteration boundary.

    The signal only sets a flag; after each iteration the ranks agree on it
    (one tiny all-reduce with several ranks), then every rank runs
    ``on_stop(engine)`` (e.g. a Checkpoint) and the engine terminates with
    ``engine.state.preempted = True``. Exit with :data:`EXIT_PREEMPTED` then.

    Example::

        preemption = Preemption(on_stop=checkpoint)
        preemption.attach(trainer)
        trainer.run(loader, max_epochs=10)
        if trainer.state.preempted:
            sys.exit(EXIT_PREEMPTED)
    """

    def __init__(
        self,
        on_stop: Callable[[Engine], Any] | None = None,
        signals: tuple[int, ...] = (signal.SIGTERM,),
        every: int = 1,
    ) -> None:
        self.on_stop = on_stop
        self.signals = signals
        self.every = every
        self.requested = False

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def attach(self, engine: Engine) -> None:
        """Install the signal handlers and check after every ``every`` iterations."""
        for signum in self.signals:
            signal.signal(signum, self._request)
        engine.state.preempted = False
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._check)

    def _check(self, engine: Engine) -> None:
        stop = int(self.requested)
        if get_world_size() > 1:
            stop = all_reduce(stop, "max")
        if not stop:
            return
        if self.on_stop is not None:
            self.on_stop(engine)
        engine.state.preempted = True
        engine.terminate()
