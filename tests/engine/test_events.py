"""Event order, filters, handler signatures and handles of the engine."""

import pytest

from distengine.engine import Engine, EventEnum, Events


def record_all(engine, log):
    for event in Events:
        if event is Events.EXCEPTION_RAISED:
            continue
        engine.add_event_handler(
            event, lambda e, ev=event: log.append((ev.name, e.state.iteration))
        )


def test_event_order_for_a_whole_run():
    engine = Engine(lambda e, b: b)
    log = []
    record_all(engine, log)
    engine.run([1, 2], max_epochs=2)
    names = [n for n, _ in log]
    per_iter = [
        "GET_BATCH_STARTED",
        "GET_BATCH_COMPLETED",
        "ITERATION_STARTED",
        "ITERATION_COMPLETED",
    ]
    epoch = ["EPOCH_STARTED", *per_iter, *per_iter, "EPOCH_COMPLETED"]
    # as in Ignite, the next epoch finds the data's pass ended: DATALOADER_STOP_ITERATION
    restart = ["EPOCH_STARTED", per_iter[0], "DATALOADER_STOP_ITERATION", *per_iter[1:]]
    assert names == ["STARTED", *epoch, *restart, *per_iter, "EPOCH_COMPLETED", "COMPLETED"]
    assert log[-1] == ("COMPLETED", 4)


def test_terminate_fires_terminate_and_completed_but_not_epoch_completed():
    engine = Engine(lambda e, b: b)
    log = []
    record_all(engine, log)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    state = engine.run(range(5), max_epochs=3)
    names = [n for n, _ in log]
    assert names[-3:] == ["ITERATION_COMPLETED", "TERMINATE", "COMPLETED"]
    assert names.count("EPOCH_COMPLETED") == 0
    assert state.iteration == 3 and state.epoch == 1


def test_terminate_skip_completed_then_run_starts_the_next_epoch():
    engine = Engine(lambda e, b: b)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.batch))
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate(skip_completed=True)
    )
    completed = []
    engine.add_event_handler(Events.COMPLETED, lambda: completed.append(1))
    engine.run(list(range(5)), max_epochs=2)
    assert completed == []
    engine.run(list(range(5)))  # not done: as in Ignite, the cut epoch 1 is not resumed
    assert seen == [0, 1, 2, 0, 1, 2, 3, 4] and completed == [1]
    assert (engine.state.epoch, engine.state.iteration) == (2, 8)


def test_terminate_epoch_ends_epoch_and_next_starts_new_pass():
    engine = Engine(lambda e, b: b)
    log = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: log.append(e.state.batch))
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda: log.append("T"))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: log.append(f"E{e.state.epoch}"))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate_epoch())
    engine.run([10, 11, 12], max_epochs=2)
    assert log == [10, 11, "T", "E1", 10, 11, 12, "E2"]


def test_exception_fires_exception_raised_with_the_error():
    def step(engine, batch):
        if batch == 2:
            raise ZeroDivisionError("boom")
        return batch

    engine = Engine(step)
    caught = []
    engine.add_event_handler(
        Events.EXCEPTION_RAISED, lambda e, err: caught.append((e.state.iteration, err))
    )
    engine.run([0, 1, 2, 3])
    assert caught[0][0] == 3 and isinstance(caught[0][1], ZeroDivisionError)
    assert engine.state.output == 1  # state consistent: last good output kept


def test_exception_is_reraised_without_handler_and_from_handlers():
    engine = Engine(lambda e, b: b)

    @engine.on(Events.EPOCH_COMPLETED)
    def bad():
        raise KeyError("in handler")

    with pytest.raises(KeyError, match="in handler"):
        engine.run([1])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(every=3), [3, 6, 9]),
        (dict(once=4), [4]),
        (dict(once=[2, 7]), [2, 7]),
        (dict(before=4), [1, 2, 3]),
        (dict(after=7), [8, 9, 10]),
        (dict(after=2, before=6), [3, 4, 5]),
        (dict(every=2, after=3, before=9), [4, 6, 8]),
        (dict(event_filter=lambda e, n: n in (1, 10)), [1, 10]),
    ],
)
def test_iteration_filters(kwargs, expected):
    engine = Engine(lambda e, b: b)
    seen = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(**kwargs), lambda e: seen.append(e.state.iteration)
    )
    engine.run(range(10))
    assert seen == expected


def test_epoch_filter_and_or_composition():
    engine = Engine(lambda e, b: b)
    seen = []
    events = Events.STARTED | Events.EPOCH_COMPLETED(every=2) | Events.COMPLETED
    handle = engine.add_event_handler(events, lambda e: seen.append(e.last_event_name.name))
    engine.run([1], max_epochs=4)
    assert seen == ["STARTED", "EPOCH_COMPLETED", "EPOCH_COMPLETED", "COMPLETED"]
    handle.remove()
    engine.run([1], max_epochs=4)
    assert len(seen) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(every=0), "every should be integer and greater than zero .*, got 0"),
        (dict(once=[]), "once should either be a positive integer .*, got \\[\\]"),
        (dict(once=2, every=3), r"Only one of .* got \['every', 'once'\]"),
        (dict(before="3"), "before should be integer and greater or equal to zero"),
        (dict(), "Only one of .* got none"),
        (dict(event_filter=lambda x: x), r"takes parameters \['x'\] but will be called with"),
    ],
)
def test_bad_filters_are_rejected_with_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Events.ITERATION_COMPLETED(**kwargs)


def test_filtered_event_cannot_be_filtered_twice():
    with pytest.raises(ValueError, match="already has a filter"):
        Events.ITERATION_COMPLETED(every=2)(once=1)


def test_handler_signatures_with_and_without_engine_and_extra_args():
    engine = Engine(lambda e, b: b)
    got = []
    engine.add_event_handler(Events.STARTED, lambda: got.append("none"))
    engine.add_event_handler(Events.STARTED, lambda e: got.append(type(e).__name__))
    engine.add_event_handler(Events.STARTED, lambda e, a, b=0: got.append((a, b)), 1, b=2)
    engine.add_event_handler(Events.STARTED, lambda a: got.append(a), "x")
    engine.run([1])
    assert got == ["none", "Engine", (1, 2), "x"]


def test_handler_with_wrong_signature_is_rejected_at_registration():
    engine = Engine(lambda e, b: b)
    with pytest.raises(ValueError, match="accepts neither"):
        engine.add_event_handler(Events.STARTED, lambda a, b, c: None)


def test_handles_remove_and_context_manager_and_has_handler():
    engine = Engine(lambda e, b: b)
    calls = []

    def handler(e):
        calls.append(e.state.iteration)

    with engine.add_event_handler(Events.ITERATION_COMPLETED, handler):
        assert engine.has_event_handler(handler, Events.ITERATION_COMPLETED)
        engine.run([1, 2])
    assert not engine.has_event_handler(handler)
    engine.run([1, 2])
    assert calls == [1, 2]
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), handler)
    assert engine.has_event_handler(handler, Events.ITERATION_COMPLETED)
    engine.remove_event_handler(handler, Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match="not registered"):
        engine.remove_event_handler(handler, Events.ITERATION_COMPLETED)


def test_handler_may_remove_itself_while_firing():
    engine = Engine(lambda e, b: b)
    calls = []

    def once(e):
        calls.append(1)
        e.remove_event_handler(once, Events.ITERATION_COMPLETED)

    engine.add_event_handler(Events.ITERATION_COMPLETED, once)
    engine.run(range(3))
    assert calls == [1]


class Backprop(EventEnum):
    BACKWARD_STARTED = "backward_started"
    BACKWARD_COMPLETED = "backward_completed"


def test_custom_events_register_fire_and_filter():
    def step(engine, batch):
        engine.fire_event(Backprop.BACKWARD_STARTED)
        engine.fire_event(Backprop.BACKWARD_COMPLETED)

    engine = Engine(step)
    with pytest.raises(ValueError, match="register"):
        engine.add_event_handler(Backprop.BACKWARD_STARTED, lambda: None)
    engine.register_events(*Backprop)
    seen = []
    engine.add_event_handler(Backprop.BACKWARD_STARTED, lambda e: seen.append("s"))
    engine.add_event_handler(Backprop.BACKWARD_COMPLETED(every=2), lambda e: seen.append("c"))
    engine.run(range(4))
    assert seen == ["s", "s", "c", "s", "s", "c"]


def test_observer_handlers_do_not_swallow_the_exception():
    from distengine.engine import observer

    def step(engine, batch):
        raise OSError("disk gone")

    engine = Engine(step)
    seen = []
    engine.add_event_handler(Events.EXCEPTION_RAISED, observer(lambda e, err: seen.append(err)))
    with pytest.raises(OSError, match="disk gone"):
        engine.run([1])
    assert len(seen) == 1


def test_every_event_is_a_callable_event_with_filter_and_equals_itself_filtered():
    from distengine.engine import CallableEventWithFilter, EventsList

    filtered = Events.EPOCH_COMPLETED(every=2)
    assert isinstance(Events.STARTED, CallableEventWithFilter)
    assert isinstance(filtered, CallableEventWithFilter)
    assert filtered == Events.EPOCH_COMPLETED and Events.EPOCH_COMPLETED == filtered
    assert filtered != Events.ITERATION_COMPLETED and filtered != "epoch_completed"
    assert hash(filtered) == hash(Events.EPOCH_COMPLETED)
    assert (filtered.name, filtered.value) == ("EPOCH_COMPLETED", "epoch_completed")
    both = Events.STARTED | filtered
    assert isinstance(both, EventsList) and both[1] is filtered
    with pytest.raises(TypeError, match="should be Events or CallableEventWithFilter, got 'abc'"):
        Events.STARTED | "abc"


def test_custom_events_may_be_strings_as_in_ignite():
    engine = Engine(lambda e, b: e.fire_event("backward_started"))
    engine.register_events("backward_started")
    fired = []
    engine.add_event_handler("backward_started", lambda e: fired.append(e.state.iteration))
    engine.run([1, 2])
    assert fired == [1, 2]
    with pytest.raises(TypeError, match="Value at 1 of event_names should be a str or EventEnum"):
        engine.register_events("ok", 5)
    with pytest.raises(ValueError, match="'other' is not a valid event for this Engine"):
        engine.add_event_handler("other", print)


def test_a_handle_holds_the_engine_and_handler_weakly_and_an_unused_engine_is_freed():
    import gc
    import weakref

    def log(engine):
        pass

    engine = Engine(lambda e, b: None)
    handle = engine.add_event_handler(Events.EPOCH_STARTED, log)
    assert handle.engine() is engine and handle.handler() is log
    engine.run(range(3), max_epochs=2)
    handle.remove()
    assert handle.handler() is None and not engine.has_event_handler(log)
    gc.disable()  # freed by reference counting alone, not by the cycle collector
    try:
        ref = weakref.ref(engine)
        del engine
        assert ref() is None and handle.engine() is None
    finally:
        gc.enable()


def test_a_process_function_that_cannot_take_engine_and_batch_is_refused_at_once():
    with pytest.raises(ValueError, match=r"takes parameters \['batch'\] but will be called with"):
        Engine(lambda batch: batch)
    with pytest.raises(ValueError, match="must be given a processing function.*got None"):
        Engine(None)


def test_state_times_include_the_epoch_and_run_handlers(monkeypatch):
    import distengine.engine.engine as engine_module

    clock = [0.0]
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: clock[0])
    engine = Engine(lambda e, b: clock.__setitem__(0, clock[0] + 1))  # 1 s per batch
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda: clock.__setitem__(0, clock[0] + 10))
    engine.add_event_handler(Events.COMPLETED, lambda: clock.__setitem__(0, clock[0] + 100))
    state = engine.run([1, 2], max_epochs=2)
    assert state.times == {"EPOCH_COMPLETED": 12.0, "COMPLETED": 124.0}


def test_interrupt_can_be_switched_off_as_in_ignite(monkeypatch):
    monkeypatch.setattr(Engine, "interrupt_resume_enabled", False)
    with pytest.raises(RuntimeError, match="'interrupt/resume' feature is disabled"):
        Engine(lambda e, b: None).interrupt()
