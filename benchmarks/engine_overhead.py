"""Per-iteration overhead of the engine, against a raw loop and PyTorch-Ignite.

Cases: (a) raw Python loop, (b) engine with no handlers, (c) engine with a
typical set (one handler every 100 iterations, one plain handler on
ITERATION_COMPLETED, and each library's own ``RunningAverage`` of the output,
a float). Figures are the median over several runs of microseconds per
iteration, with the cost of the step itself (a no-op) included in every case.

Run: ``python benchmarks/engine_overhead.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # measure this checkout's distengine
from common import machine, median_time, try_import  # noqa: E402

N = 200_000
DATA = list(range(N))


def step(engine, batch):
    return batch


def raw_loop() -> None:
    output = None
    for batch in DATA:
        output = step(None, batch)
    del output


def attach_typical(engine, events, running_average) -> None:
    state = {"count": 0}

    @engine.on(events.ITERATION_COMPLETED(every=100))
    def every_100(engine):
        state["count"] += 1

    @engine.on(events.ITERATION_COMPLETED)
    def plain(engine):
        pass

    running_average(output_transform=lambda out: out).attach(engine, "avg")


def engine_case(engine_cls, events, running_average=None):
    engine = engine_cls(step)
    if running_average is not None:
        attach_typical(engine, events, running_average)
    return lambda: engine.run(DATA, max_epochs=1)


def main() -> None:
    from distengine.engine import Engine, Events
    from distengine.metrics import RunningAverage

    rows = [("raw loop", median_time(raw_loop))]
    rows.append(("distengine, no handlers", median_time(engine_case(Engine, Events))))
    rows.append(
        (
            "distengine, typical handlers (RunningAverage)",
            median_time(engine_case(Engine, Events, RunningAverage)),
        )
    )
    ignite = try_import("ignite.engine")
    if ignite is not None:
        from ignite.engine import Engine as IEngine
        from ignite.engine import Events as IEvents
        from ignite.metrics import RunningAverage as IRunningAverage

        rows.append(("ignite, no handlers", median_time(engine_case(IEngine, IEvents), 3)))
        rows.append(
            (
                "ignite, typical handlers (RunningAverage)",
                median_time(engine_case(IEngine, IEvents, IRunningAverage), 3),
            )
        )
    raw = rows[0][1]
    print(f"# Engine overhead ({machine()}; {N} iterations, median)")
    print("| case | us/iteration | overhead vs raw (us) |")
    print("|---|---|---|")
    for name, seconds in rows:
        per_iter = seconds / N * 1e6
        print(f"| {name} | {per_iter:.2f} | {per_iter - raw / N * 1e6:.2f} |")


if __name__ == "__main__":
    main()
