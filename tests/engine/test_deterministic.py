"""DeterministicEngine: the dataflow depends on state.seed and the pass only, as in Ignite."""

import io
import random

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distengine.engine import DeterministicEngine, Engine, Events
from distengine.utils import manual_seed


def loader():
    return DataLoader(TensorDataset(torch.arange(12)), batch_size=3, shuffle=True)


def step(engine, batch):
    return batch[0].tolist(), torch.rand(1).item(), random.random()


def draw_more():
    torch.rand(7)
    random.random()


def run(engine_cls, disturb=False, stop_at=None, events=Events):
    manual_seed(5)
    engine = engine_cls(step)
    seen = []
    engine.add_event_handler(events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    if disturb:  # other code drawing from the global generators between epochs
        engine.add_event_handler(events.EPOCH_COMPLETED, draw_more)
    saved = {}
    if stop_at is not None:

        @engine.on(events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(e):
            buffer = io.BytesIO()
            torch.save(e.state_dict(), buffer)
            saved["state"] = buffer.getvalue()
            e.terminate()

    engine.run(loader(), max_epochs=3)
    if stop_at is not None:
        manual_seed(123)  # a new process
        resumed = engine_cls(step)
        resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
        resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=True))
        resumed.run(loader())
    return engine.state.seed, seen


def test_each_pass_is_a_function_of_the_seed_only():
    seed, plain = run(DeterministicEngine)
    again, disturbed = run(DeterministicEngine, disturb=True)
    assert seed == again and plain == disturbed
    assert run(Engine)[1] != run(Engine, disturb=True)[1]  # a plain Engine's would change


@pytest.mark.parametrize("stop_at", [2, 4, 7])
def test_a_resumed_deterministic_run_is_exact(stop_at):
    assert run(DeterministicEngine, stop_at=stop_at)[1] == run(DeterministicEngine)[1]


def test_it_needs_data_as_in_ignite():
    with pytest.raises(ValueError, match="does not support the option of data=None"):
        DeterministicEngine(step).run(max_epochs=1, epoch_length=2)


def test_the_same_numbers_as_ignites_deterministic_engine():
    ignite_engine = pytest.importorskip("ignite.engine")
    theirs = run(ignite_engine.DeterministicEngine, events=ignite_engine.Events)
    assert run(DeterministicEngine) == theirs


def test_keep_random_state_leaves_every_generator_as_it_found_it():
    import numpy

    from distengine.engine.deterministic import keep_random_state

    @keep_random_state
    def plot_samples(fail=False):
        manual_seed(0)  # a handler that seeds and draws
        torch.rand(3), random.random(), numpy.random.rand()
        if fail:
            raise RuntimeError("plot failed")

    def draws():
        return torch.rand(2).tolist(), random.random(), numpy.random.rand()

    manual_seed(54)
    expected = [draws(), draws()]
    manual_seed(54)
    first = draws()
    plot_samples()
    with pytest.raises(RuntimeError, match="plot failed"):
        plot_samples(fail=True)  # put back also when it raises
    assert [first, draws()] == expected
    assert plot_samples.__name__ == "plot_samples"


def test_reproducible_batch_sampler_starts_a_pass_at_any_batch_in_the_plain_order():
    from distengine.engine.deterministic import ReproducibleBatchSampler, update_dataloader

    plain = DataLoader(list(range(20)), batch_size=4, shuffle=True)
    torch.manual_seed(3)
    expected = [b.tolist() for b in plain]
    resumable = update_dataloader(plain, ReproducibleBatchSampler(plain.batch_sampler))
    assert type(resumable) is DataLoader and resumable.dataset is plain.dataset
    torch.manual_seed(3)
    assert [b.tolist() for b in resumable] == expected
    torch.manual_seed(3)
    resumable.batch_sampler.start_iteration = 2
    assert [b.tolist() for b in resumable] == expected[2:]
    assert len(list(resumable)) == 5  # the next pass is whole again
    with pytest.raises(TypeError, match="should be torch.utils.data.sampler.BatchSampler.*str"):
        ReproducibleBatchSampler("abc")
