"""Where a run's time goes: data loading, the process function, and each event's handlers.

:class:`BasicTimeProfiler` times each event's handlers together;
:class:`HandlersTimeProfiler` times every handler on its own. Both are
PyTorch-Ignite's profilers with the same results. On several ranks each
rank profiles itself (no collective); ``write_results`` writes on rank 0
only and ``print_results`` prints there, as distengine's other writers do.

Example::

    from distengine.handlers.time_profilers import HandlersTimeProfiler

    profiler = HandlersTimeProfiler()
    profiler.attach(trainer)
    trainer.run(loader, max_epochs=2)
    profiler.print_results(profiler.get_results())
"""

from distengine.handlers.basic_time_profiler import BasicTimeProfiler
from distengine.handlers.handlers_time_profiler import HandlersTimeProfiler

__all__ = ["BasicTimeProfiler", "HandlersTimeProfiler"]
