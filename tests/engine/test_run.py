"""run() over different data, epoch lengths, and exact resume from a state dict."""

import io
import random

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distengine.engine import Engine, Events


def collect(engine):
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    return seen


def test_iterable_without_len_learns_epoch_length():
    def gen():
        yield from range(4)

    class Reiterable:
        def __iter__(self):
            return gen()

    engine = Engine(lambda e, b: b)
    seen = collect(engine)
    state = engine.run(Reiterable(), max_epochs=3)
    assert state.epoch_length == 4 and state.iteration == 12
    assert seen == [0, 1, 2, 3] * 3


def test_one_shot_iterator_with_epoch_length_flows_across_epochs():
    engine = Engine(lambda e, b: b)
    seen = collect(engine)
    engine.run(iter(range(9)), max_epochs=3, epoch_length=3)
    assert seen == list(range(9))


def test_exhausted_one_shot_iterator_is_a_clear_error():
    engine = Engine(lambda e, b: b)
    with pytest.raises(RuntimeError, match="one-shot iterator"):
        engine.run(iter(range(4)), max_epochs=2)
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        Engine(lambda e, b: b).run(iter(range(4)), max_epochs=2, epoch_length=3)


def test_epoch_length_longer_than_data_restarts_the_data():
    engine = Engine(lambda e, b: b)
    seen = collect(engine)
    stops = []
    engine.add_event_handler(
        Events.DATALOADER_STOP_ITERATION, lambda e: stops.append(e.state.iteration)
    )
    engine.run(range(3), max_epochs=2, epoch_length=4)
    assert seen == [0, 1, 2, 0, 1, 2, 0, 1]


def test_max_iters_stops_mid_epoch():
    engine = Engine(lambda e, b: b)
    state = engine.run(range(10), max_iters=13)
    assert (state.iteration, state.epoch) == (13, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_epochs=0), "max_epochs must be a positive int"),
        (dict(max_epochs=2, max_iters=3), "not both"),
        (dict(epoch_length=-1), "epoch_length must be"),
    ],
)
def test_bad_run_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Engine(lambda e, b: b).run([1], **kwargs)


def test_empty_data_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        Engine(lambda e, b: b).run([])


def test_state_attributes_and_times():
    engine = Engine(lambda e, b: b * 2)
    engine.state.custom = "mine"
    state = engine.run([1, 2, 3], max_epochs=2)
    assert state.output == 6 and state.batch == 3 and state.custom == "mine"
    assert (
        state.times["EPOCH_COMPLETED"] > 0
        and state.times["COMPLETED"] >= state.times["EPOCH_COMPLETED"]
    )


def test_sampler_set_epoch_is_called_each_epoch():
    class Sampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            return iter(range(4))

        def __len__(self):
            return 4

    sampler = Sampler()
    loader = DataLoader(list(range(4)), sampler=sampler, batch_size=2)
    Engine(lambda e, b: b).run(loader, max_epochs=3)
    assert sampler.epochs == [0, 1, 2]


# ------------------------------------------------------------------ exact resume
def make_loader(generator=None):
    data = TensorDataset(torch.arange(20))
    return DataLoader(data, batch_size=3, shuffle=True, generator=generator)


def noisy_step(engine, batch):
    # draws from torch and Python RNGs like dropout / augmentation would
    return (batch[0].tolist(), torch.rand(1).item(), random.random())


def run_uninterrupted(make_data, max_epochs):
    torch.manual_seed(0)
    random.seed(0)
    engine = Engine(noisy_step)
    seen = collect(engine)
    engine.run(make_data(), max_epochs=max_epochs)
    return seen


def run_interrupted(make_data, max_epochs, stop_at):
    torch.manual_seed(0)
    random.seed(0)
    engine = Engine(noisy_step)
    seen = collect(engine)
    saved = {}

    @engine.on(Events.ITERATION_COMPLETED(once=stop_at))
    def save_and_stop(e):
        buffer = io.BytesIO()
        torch.save(e.state_dict(), buffer)
        saved["bytes"] = buffer.getvalue()
        e.terminate()

    engine.run(make_data(), max_epochs=max_epochs)
    torch.manual_seed(123)  # a fresh process would have other RNG states
    random.seed(123)
    resumed = Engine(noisy_step)
    seen_after = collect(resumed)
    state = torch.load(io.BytesIO(saved["bytes"]), weights_only=True)
    resumed.load_state_dict(state)
    resumed.run(make_data())
    return seen + seen_after


@pytest.mark.parametrize("stop_at", [1, 5, 7, 8, 14, 20])
def test_resume_mid_epoch_sees_the_same_batches_and_random_draws(stop_at):
    expected = run_uninterrupted(make_loader, max_epochs=3)
    assert run_interrupted(make_loader, max_epochs=3, stop_at=stop_at) == expected


def test_resume_with_loader_generator_and_workers():
    def loader():
        return DataLoader(
            TensorDataset(torch.arange(16)),
            batch_size=4,
            shuffle=True,
            generator=torch.Generator().manual_seed(5),
            num_workers=1,
        )

    expected = run_uninterrupted(loader, max_epochs=2)
    assert run_interrupted(loader, max_epochs=2, stop_at=6) == expected


def test_resume_of_a_plain_iterable_fast_forwards():
    def data():
        return [torch.tensor([i]) for i in range(6)]

    expected = run_uninterrupted(lambda: [(x,) for x in data()], max_epochs=2)
    got = run_interrupted(lambda: [(x,) for x in data()], max_epochs=2, stop_at=8)
    assert got == expected


def test_resume_does_not_load_skipped_batches():
    loads = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            loads.append(i)
            return i

    loader = DataLoader(Counting(), batch_size=2, shuffle=True)
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())
    engine.run(loader, max_epochs=1)
    state = engine.state_dict()
    loads.clear()
    resumed = Engine(lambda e, b: b)
    resumed.load_state_dict(state)
    resumed.run(loader)
    assert len(loads) == 2  # only the last batch of the epoch is loaded


def test_load_state_dict_rejects_incomplete_state():
    saved = Engine(lambda e, b: b)
    saved.run([1, 2])
    state = saved.state_dict()
    del state["epoch"]
    with pytest.raises(ValueError, match="Required state attribute 'epoch' is absent"):
        Engine(lambda e, b: b).load_state_dict(state)


@pytest.mark.parametrize("kind", ["epoch", "iteration"])
def test_a_hand_written_ignite_state_dict_is_refused_by_name(kind):
    # Ignite's load_state_dict docs: {"epoch": 3, "max_epochs": 100, "epoch_length": n}
    ignite_style = {kind: 3, "max_epochs": 100, "epoch_length": 10}
    with pytest.raises(ValueError, match="no data position and generator states"):
        Engine(lambda e, b: b).load_state_dict(ignite_style)


def test_a_finished_run_asked_for_more_epochs_continues():
    engine = Engine(lambda e, b: b)
    seen = collect(engine)
    engine.run([1, 2], max_epochs=2)
    restored = Engine(lambda e, b: b)
    seen_after = collect(restored)
    restored.load_state_dict(engine.state_dict())
    state = restored.run([1, 2], max_epochs=3)
    assert (state.epoch, state.iteration, seen_after) == (3, 6, [1, 2])
    again = restored.run([1, 2], max_epochs=3)  # finished: a new run starts from scratch
    assert again.iteration == 6 and seen_after == [1, 2, 1, 2, 1, 2, 1, 2]
    assert seen == [1, 2, 1, 2]


@pytest.mark.parametrize(
    "state_dict, error, message",
    [
        ("not a dict", TypeError, "Argument state_dict should be a dictionary .*got str"),
        ({}, ValueError, "Required state attribute 'epoch_length' is absent .*keys \\[\\]"),
        ({"epoch_length": 5}, ValueError, "Required state attribute 'iteration' is absent"),
        (
            {"epoch_length": 5, "iteration": 10, "max_epochs": 5, "max_iters": 50},
            ValueError,
            "exactly one of '\\('max_epochs', 'max_iters'\\)'.*max_epochs=5, max_iters=50",
        ),
        ({"epoch": 5, "max_epochs": 3, "epoch_length": 10}, ValueError, "start epoch .*: 3 vs 5"),
        ({"iteration": 9, "max_iters": 5, "epoch_length": 3}, ValueError, "iteration .*: 5 vs 9"),
        (
            {"iteration": 5, "epoch": 1, "epoch_length": 5, "max_epochs": 2},
            ValueError,
            "only one of 'iteration' or 'epoch' keys, got iteration=5, epoch=1",
        ),
        (
            {"epoch": 2, "max_epochs": 9, "epoch_length": None},
            ValueError,
            "epoch_length must be a positive integer .*got epoch_length=None",
        ),
    ],
)
def test_a_bad_state_dict_is_refused_in_ignites_words_with_the_value(state_dict, error, message):
    with pytest.raises(error, match=message):
        Engine(lambda e, b: b).load_state_dict(state_dict)


def test_the_state_dict_of_a_fresh_engine_loads_and_holds_one_limit():
    engine = Engine(lambda e, b: b)
    engine.load_state_dict(Engine(lambda e, b: b).state_dict())  # nothing to resume: starts anew
    assert engine.run([1, 2]).iteration == 2
    by_iters = Engine(lambda e, b: b)
    by_iters.run([1, 2], max_iters=3)
    saved = by_iters.state_dict()
    assert saved["max_iters"] == 3 and "max_epochs" not in saved
    assert "max_iters" not in engine.state_dict() and engine.state_dict()["max_epochs"] == 1
    user_keys = Engine(lambda e, b: b)
    user_keys.state_dict_user_keys.append("alpha")
    with pytest.raises(ValueError, match="Required user state attribute 'alpha' is absent"):
        user_keys.load_state_dict(saved)
