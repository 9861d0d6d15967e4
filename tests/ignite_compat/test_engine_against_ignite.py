"""The same engine code with ``ignite`` and with ``distengine``: the same events, batches and
counters, event by event (runs only where pytorch-ignite is installed).

Each case drives both engines with the same handlers and records every event
(with epoch and iteration), every batch processed and where each ``run()``
returned. The documented values these traces hold are also checked without
Ignite in test_engine_documented.py.
"""

import pytest

ignite = pytest.importorskip("ignite")

import ignite.engine as ie  # noqa: E402

import distengine.engine as de  # noqa: E402

TRACED = (
    "STARTED",
    "EPOCH_STARTED",
    "GET_BATCH_STARTED",
    "GET_BATCH_COMPLETED",
    "DATALOADER_STOP_ITERATION",
    "ITERATION_STARTED",
    "ITERATION_COMPLETED",
    "TERMINATE_SINGLE_EPOCH",
    "EPOCH_COMPLETED",
    "TERMINATE",
    "INTERRUPT",
    "COMPLETED",
)
DATA = [10, 11, 12, 13]


def _tracer(log, name):
    def handler(engine, *args, **kwargs):  # Ignite passes TERMINATE_SINGLE_EPOCH a kwarg
        log.append((name, engine.state.epoch, engine.state.iteration))

    return handler


def trace(lib, setup, runs):
    log = []
    engine = lib.Engine(lambda e, b: log.append(("process", e.state.epoch, e.state.iteration, b)))
    for name in TRACED:
        engine.add_event_handler(getattr(lib.Events, name), _tracer(log, name))
    setup(engine, lib.Events)
    for run in runs:
        state = engine.run(**run)
        log.append(("returned", state.epoch, state.iteration))
    return log


def act_at(event, nth, action, **kwargs):
    """Call ``engine.<action>(**kwargs)`` in the ``nth`` firing of ``event``."""

    def setup(engine, events):
        calls = [0]

        def act(engine, *args, **_):
            calls[0] += 1
            if calls[0] == nth:
                getattr(engine, action)(**kwargs)

        engine.add_event_handler(getattr(events, event), act)

    return setup


def nothing(engine, events):
    pass


EPOCHS3 = dict(data=DATA, max_epochs=3)
STOP_EVENTS = [
    ("STARTED", 1),
    ("EPOCH_STARTED", 2),
    ("GET_BATCH_STARTED", 6),
    ("GET_BATCH_COMPLETED", 6),
    ("DATALOADER_STOP_ITERATION", 1),
    ("ITERATION_STARTED", 6),
    ("ITERATION_COMPLETED", 6),
    ("EPOCH_COMPLETED", 1),
]
CASES = {
    "plain": (nothing, [EPOCHS3]),
    **{
        f"terminate-in-{event}": (act_at(event, nth, "terminate"), [EPOCHS3, EPOCHS3])
        for event, nth in STOP_EVENTS
    },
    "terminate-skip-completed": (
        act_at("ITERATION_COMPLETED", 6, "terminate", skip_completed=True),
        [EPOCHS3, EPOCHS3],
    ),
    "terminate-in-the-last-epoch": (
        act_at("ITERATION_COMPLETED", 10, "terminate"),
        [EPOCHS3, EPOCHS3],
    ),
    **{
        f"terminate_epoch-in-{event}": (act_at(event, nth, "terminate_epoch"), [EPOCHS3])
        for event, nth in STOP_EVENTS[2:]
    },
    "terminate_epoch-skip-epoch-completed": (
        act_at("ITERATION_COMPLETED", 6, "terminate_epoch", skip_epoch_completed=True),
        [EPOCHS3],
    ),
    **{
        f"interrupt-in-{event}": (act_at(event, nth, "interrupt"), [EPOCHS3, EPOCHS3])
        for event, nth in STOP_EVENTS
        if event in ("STARTED", "EPOCH_STARTED", "ITERATION_COMPLETED", "EPOCH_COMPLETED")
    },
    "interrupt-at-the-last-iteration": (
        act_at("ITERATION_COMPLETED", 12, "interrupt"),
        [EPOCHS3, EPOCHS3],
    ),
    "max_iters-inside-an-epoch": (nothing, [dict(data=DATA, max_iters=6)]),
    "max_iters-at-an-epoch-end": (nothing, [dict(data=DATA, max_iters=8)]),
    "max_iters-raised": (nothing, [dict(data=DATA, max_iters=6), dict(data=DATA, max_iters=11)]),
    "a-finished-run-asked-for-more-epochs": (nothing, [EPOCHS3, dict(data=DATA, max_epochs=4)]),
    "a-finished-run-runs-again": (nothing, [EPOCHS3, EPOCHS3]),
    "no-data": (nothing, [dict(max_epochs=2, epoch_length=3)]),
    "epoch-length-above-the-data": (nothing, [dict(data=DATA, max_epochs=2, epoch_length=6)]),
    "epoch-length-below-the-data": (nothing, [dict(data=DATA, max_epochs=3, epoch_length=3)]),
}


@pytest.mark.parametrize("case", CASES)
def test_events_batches_and_counters_match_ignite(case):
    setup, runs = CASES[case]
    assert trace(de, setup, runs) == trace(ie, setup, runs)


def replace_batch(engine, events):
    def double(engine):
        engine.state.batch = engine.state.batch * 2

    engine.add_event_handler(events.ITERATION_STARTED, double)


def switch_data(engine, events):
    engine.add_event_handler(
        events.ITERATION_COMPLETED(once=2), lambda engine: engine.set_data([20, 21, 22])
    )


def swap_dataloader(engine, events):
    def swap(engine):
        engine.state.dataloader = [30, 31]

    engine.add_event_handler(events.ITERATION_COMPLETED(once=2), swap)


@pytest.mark.parametrize(
    "setup, runs",
    [
        (replace_batch, [EPOCHS3]),
        (switch_data, [EPOCHS3]),
        (swap_dataloader, [EPOCHS3]),
    ],
    ids=["state.batch-replaced", "set_data", "state.dataloader-swapped"],
)
def test_data_changed_by_handlers_matches_ignite(setup, runs):
    assert trace(de, setup, runs) == trace(ie, setup, runs)


FILTERS = [
    dict(every=3),
    dict(every=1),
    dict(once=5),
    dict(once=[2, 9]),
    dict(before=4),
    dict(after=9),
    dict(before=0),
    dict(after=2, before=7),
    dict(every=3, after=2),
    dict(every=3, before=10),
    dict(every=4, after=1, before=12),
    dict(event_filter=lambda engine, count: count in (1, 12)),
]


@pytest.mark.parametrize(
    "kwargs",
    FILTERS,
    ids=lambda k: ",".join(f"{a}={'function' if callable(v) else v}" for a, v in k.items()),
)
@pytest.mark.parametrize("event", ["ITERATION_COMPLETED", "EPOCH_STARTED"])
def test_event_filters_fire_where_ignite_fires(event, kwargs):
    def fired(lib):
        seen = []
        engine = lib.Engine(lambda e, b: None)
        engine.add_event_handler(
            getattr(lib.Events, event)(**kwargs),
            lambda e: seen.append((e.state.epoch, e.state.iteration)),
        )
        engine.run(range(3), max_epochs=13)
        return seen

    assert fired(de) == fired(ie)


class Counter:
    def __init__(self):
        self.calls = 0

    def completed(self, engine):
        self.calls += 1


@pytest.mark.parametrize("lib", [de, ie], ids=["distengine", "ignite"])
def test_bound_method_handlers_are_found_and_removed_by_equality(lib):
    counter = Counter()
    engine = lib.Engine(lambda e, b: None)
    engine.add_event_handler(lib.Events.EPOCH_COMPLETED, counter.completed)
    found = engine.has_event_handler(counter.completed, lib.Events.EPOCH_COMPLETED)
    engine.remove_event_handler(counter.completed, lib.Events.EPOCH_COMPLETED)
    engine.run([1, 2], max_epochs=2)
    assert (found, counter.calls) == (True, 0)


@pytest.mark.parametrize("lib", [de, ie], ids=["distengine", "ignite"])
@pytest.mark.parametrize(
    "first, then, message",
    [
        (dict(max_epochs=3), dict(max_epochs=2), "max_epochs"),
        (dict(max_iters=7), dict(max_iters=5), "max_iters"),
        (dict(max_epochs=3), dict(max_iters=20), "max_epochs"),
        (dict(max_iters=5), dict(max_epochs=3), "max_iters"),
    ],
    ids=["fewer-epochs", "fewer-iters", "epochs-to-iters", "iters-to-epochs"],
)
def test_limits_that_cannot_go_on_raise_in_both(lib, first, then, message):
    engine = lib.Engine(lambda e, b: None)
    engine.run(DATA, **first)
    with pytest.raises(ValueError, match=message):
        engine.run(DATA, **then)
