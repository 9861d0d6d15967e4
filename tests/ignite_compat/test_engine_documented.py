"""Engine behaviours as PyTorch-Ignite 0.5.5 documents them (values from its docstrings),
and how they meet distengine's exact resume. Needs no Ignite installed."""

import io
import random
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distengine.engine import Engine, EventEnum, Events


def printed(engine):
    seen = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((e.state.epoch, e.state.iteration, e.state.batch)),
    )
    return seen


def test_terminate_docstring_example():
    # Engine.terminate's example: stop at 14, then a second run() ends at epoch 4, iteration 34
    engine = Engine(lambda e, b: None)
    seen = printed(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=14), lambda e: e.terminate())
    first = engine.run(range(10), max_epochs=4)
    assert (first.epoch, first.iteration) == (2, 14)
    assert seen[-1] == (2, 14, 3)
    second = engine.run(range(10), max_epochs=4)
    assert (second.epoch, second.iteration) == (4, 34)
    assert seen[14] == (3, 15, 0) and seen[-1] == (4, 34, 9)


def test_interrupt_docstring_example():
    # Engine.interrupt's example: interrupted at (2, 11) and (3, 22), ended at (3, 30)
    data = range(10)
    engine = Engine(lambda e, b: None)
    seen = printed(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=11), lambda e: e.interrupt())
    stops = []
    for _ in range(3):
        state = engine.run(data, max_epochs=3)
        stops.append((state.epoch, state.iteration))
    assert stops == [(2, 11), (3, 22), (3, 30)]
    assert [b for _, i, b in seen] == [data[(i - 1) % 10] for _, i, _ in seen]


@pytest.mark.parametrize(
    "kwargs, epochs",
    [
        (dict(before=30, after=10), list(range(11, 30))),  # "do something in 11 to 29 epoch"
        (dict(every=5, before=25, after=8), [9, 14, 19, 24]),  # "on 9, 14, 19, 24 epochs"
    ],
)
def test_events_docstring_filters(kwargs, epochs):
    engine = Engine(lambda e, b: None)
    seen = []
    engine.add_event_handler(Events.EPOCH_STARTED(**kwargs), lambda e: seen.append(e.state.epoch))
    engine.run([0], max_epochs=40)
    assert seen == epochs


@pytest.mark.parametrize(
    "event, batches_run",
    [
        (Events.STARTED, 0),
        (Events.EPOCH_STARTED, 0),  # bug: one more iteration ran
        (Events.GET_BATCH_STARTED, 0),
        (Events.ITERATION_STARTED, 0),  # the batch is not processed, as in Ignite
        (Events.ITERATION_COMPLETED, 1),
    ],
)
def test_terminate_acts_right_after_the_event_it_was_called_in(event, batches_run):
    processed = []
    engine = Engine(lambda e, b: processed.append(b))
    engine.add_event_handler(event, lambda e: e.terminate())
    fired = []
    engine.add_event_handler(Events.TERMINATE, lambda: fired.append("TERMINATE"))
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda: fired.append("EPOCH_COMPLETED"))
    engine.run([1, 2, 3], max_epochs=2)
    assert len(processed) == batches_run and fired == ["TERMINATE"]


def test_max_iters_inside_an_epoch_terminates_without_epoch_completed():
    # bug: EPOCH_COMPLETED fired for the cut epoch (its metrics covered half an epoch)
    engine = Engine(lambda e, b: None)
    fired = []
    for event in (Events.EPOCH_COMPLETED, Events.TERMINATE, Events.COMPLETED):
        engine.add_event_handler(event, lambda e, ev=event: fired.append((ev.name, e.state.epoch)))
    engine.run(range(4), max_iters=6)
    assert fired == [("EPOCH_COMPLETED", 1), ("TERMINATE", 2), ("COMPLETED", 2)]


def test_a_handler_replacing_the_batch_feeds_the_process_function():
    # Ignite's run() note: preprocess at ITERATION_STARTED into engine.state.batch
    engine = Engine(lambda e, b: b)
    seen = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: setattr(e.state, "batch", -1))
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    engine.run([1, 2, 3])
    assert seen == [-1, -1, -1]


def test_fewer_epochs_than_reached_raise_and_a_reset_restarts():
    engine = Engine(lambda e, b: None)
    engine.run([1, 2], max_epochs=3)
    with pytest.raises(
        ValueError, match="max_epochs should be greater than or equal to the start epoch.*: 2 vs 3"
    ):
        engine.run([1, 2], max_epochs=2)
    engine.state.max_epochs = None  # Ignite's documented way to start anew
    state = engine.run([1, 2], max_epochs=2)
    assert (state.epoch, state.iteration) == (2, 4)


def test_run_without_data_processes_none_batches_and_needs_epoch_length():
    batches, data_events = [], []
    engine = Engine(lambda e, b: batches.append(b))
    for event in (Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED):
        engine.add_event_handler(event, lambda: data_events.append(1))
    state = engine.run(max_epochs=2, epoch_length=3)
    assert batches == [None] * 6 and data_events == [] and state.iteration == 6
    with pytest.raises(ValueError, match="epoch_length should be provided if data is None"):
        Engine(lambda e, b: None).run(max_epochs=2)
    with pytest.raises(TypeError, match="data should be iterable"):
        Engine(lambda e, b: None).run(5)


def test_set_data_switches_from_the_next_batch_and_keeps_the_epoch_length():
    engine = Engine(lambda e, b: None)
    seen = printed(engine)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=3), lambda e: e.set_data(["a", "b", "c", "d", "e"])
    )
    state = engine.run([0, 1, 2, 3], max_epochs=2)
    assert [b for *_, b in seen] == [0, 1, 2, "a", "b", "c", "d", "e"]
    assert state.epoch_length == 4 and state.iteration == 8


def test_terminate_epoch_on_epoch_started_is_an_error_as_in_ignite():
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: e.terminate_epoch())
    with pytest.raises(RuntimeError, match="terminate_epoch\\(\\) was called on EPOCH_STARTED"):
        engine.run([1, 2])


def test_interrupt_inside_an_iteration_warns_that_it_waits_for_its_end():
    processed = []
    engine = Engine(lambda e, b: processed.append(b))
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), lambda e: e.interrupt())
    with pytest.warns(UserWarning, match="ITERATION_STARTED takes effect at the end"):
        state = engine.run([1, 2, 3])
    assert processed == [1, 2] and state.iteration == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # called from the process function: no warning
        engine = Engine(lambda e, b: e.interrupt() if b == 2 else None)
        assert engine.run([1, 2, 3]).iteration == 2


def test_user_keys_and_custom_event_counters():
    class Steps(EventEnum):
        STEP = "step"

    engine = Engine(lambda e, b: [e.fire_event(Steps.STEP) for _ in range(2)])
    engine.register_events(*Steps, event_to_attr={Steps.STEP: "step"})
    assert engine.has_registered_events(Steps.STEP) and engine.state.step == 0
    fired = []
    engine.add_event_handler(Steps.STEP, lambda e: setattr(e.state, "step", e.state.step + 1))
    engine.add_event_handler(Steps.STEP(every=2), lambda e: fired.append(e.state.step))
    engine.state_dict_user_keys.append("step")
    engine.run([0, 1, 2])
    assert fired == [2, 4, 6]  # the filter reads state.step, which the user counts
    restored = Engine(lambda e, b: None)
    restored.state_dict_user_keys.append("step")
    restored.load_state_dict(engine.state_dict())
    assert restored.state.step == 6
    assert engine.state.get_event_attrib_value(Steps.STEP) == 6


def test_a_user_key_missing_from_saved_states_is_refused_on_any_world_size():
    saved = Engine(lambda e, b: None)
    saved.run([0, 1], max_epochs=1)
    for load in ("load_state_dict", "load_per_rank_state_dicts"):
        restored = Engine(lambda e, b: None)
        restored.state_dict_user_keys.append("alpha")
        state = saved.state_dict()
        with pytest.raises(ValueError, match="Required user state attribute 'alpha' is absent"):
            getattr(restored, load)(state if load == "load_state_dict" else [state])


# ---------------------------------------------------------------- exact resume
def noisy(engine, batch):
    return (batch[0].tolist(), torch.rand(1).item(), random.random())


def loader():
    data = TensorDataset(torch.arange(12))
    return DataLoader(data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(3))


def outputs(engine):
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    return seen


def test_interrupted_run_goes_on_exactly_in_place():
    torch.manual_seed(0)
    random.seed(0)
    want = outputs(plain := Engine(noisy))
    plain.run(loader(), max_epochs=3)
    torch.manual_seed(0)
    random.seed(0)
    engine = Engine(noisy)
    got = outputs(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(every=5), lambda e: e.interrupt())
    data, runs = loader(), 0
    while not engine.is_done():
        engine.run(data, max_epochs=3)
        runs += 1
    assert runs == 3 and got == want


def test_a_terminated_run_saved_after_it_stopped_resumes_at_the_next_batch():
    # terminate() ends the run as in Ignite (a second run() starts epoch 2);
    # the state dict it leaves still resumes exactly where it stopped
    torch.manual_seed(0)
    random.seed(0)
    want = outputs(plain := Engine(noisy))
    plain.run(loader(), max_epochs=2)
    torch.manual_seed(0)
    random.seed(0)
    engine = Engine(noisy)
    before = outputs(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    engine.run(loader(), max_epochs=2)
    buffer = io.BytesIO()
    torch.save(engine.state_dict(), buffer)
    torch.manual_seed(99)  # a new process
    resumed = Engine(noisy)
    after = outputs(resumed)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    resumed.run(loader())
    assert before + after == want
    in_process = engine.run(loader(), max_epochs=2)
    assert (in_process.epoch, in_process.iteration) == (2, 6)
