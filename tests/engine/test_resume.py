"""Exact resume in one process: each reproduced bug of issue 11, and what is refused by name."""

import io
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from distengine.engine import Engine, Events


class Augmented(Dataset):
    """Random augmentation from torch's, Python's and NumPy's global generators."""

    def __len__(self):
        return 24

    def __getitem__(self, i):
        return torch.tensor([float(i), torch.rand(()).item(), random.random(), np.random.rand()])


def through_torch_save(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def scramble():
    """Stand in for a new process: other global generator states."""
    torch.manual_seed(987)
    random.seed(987)
    np.random.seed(987)


def batches_seen(make_loader, max_epochs, stop_at=None, step=lambda e, b: b):
    """Every batch of a run; with ``stop_at``, saved there and resumed with fresh objects."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    seen, saved = [], {}
    engine = Engine(step)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    if stop_at is not None:

        @engine.on(Events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(e):
            saved["state"] = through_torch_save(e.state_dict())
            e.terminate()

    engine.run(make_loader(), max_epochs=max_epochs)
    if stop_at is None:
        return seen
    scramble()
    resumed = Engine(step)
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    resumed.load_state_dict(saved["state"])
    resumed.run(make_loader())
    return seen


def assert_same_batches(want, got):
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got)):
        a, b = (a[0], b[0]) if isinstance(a, list) else (a, b)
        assert torch.equal(a, b), f"batch {i} differs"


def test_generator_loader_keeps_later_epochs_after_resume():
    # bug: the generator was reset to its fresh state, so epoch 3 was shuffled differently
    def loader():
        gen = torch.Generator().manual_seed(5)
        return DataLoader(
            TensorDataset(torch.arange(12)), batch_size=3, shuffle=True, generator=gen
        )

    want = batches_seen(loader, max_epochs=3)
    for stop in (2, 4, 6):
        assert_same_batches(want, batches_seen(loader, 3, stop))


def test_a_sampler_drawing_lazily_from_the_generator_keeps_later_epochs_after_resume():
    # bug: a resumed pass drew its whole order at once; a RandomSampler given generator= draws
    # again every 32 samples, so the generator then stood elsewhere and epoch 2 was another
    def loader():
        gen = torch.Generator().manual_seed(5)
        return DataLoader(
            TensorDataset(torch.arange(40)), batch_size=3, shuffle=True, generator=gen
        )

    want = batches_seen(loader, max_epochs=2)
    for stop in (2, 12):  # before and after the pass's second draw (sample 33)
        assert_same_batches(want, batches_seen(loader, 2, stop))


@pytest.mark.parametrize("persistent", [False, True], ids=["workers", "persistent-workers"])
def test_workers_with_random_augmentation_resume_exactly(persistent):
    # bug: workers restarted with the epoch's first seeds and took other batches
    loader = DataLoader(
        Augmented(), batch_size=4, shuffle=True, num_workers=2, persistent_workers=persistent
    )
    want = batches_seen(lambda: loader, max_epochs=2)
    for stop in (3, 8):
        assert_same_batches(want, batches_seen(lambda: loader, 2, stop))


def test_augmentation_in_the_main_process_uses_the_saved_generators():
    # the first batch after a resume is loaded under the save-time generator states
    def loader():
        return DataLoader(Augmented(), batch_size=4, shuffle=True)

    want = batches_seen(loader, max_epochs=2)
    assert_same_batches(want, batches_seen(loader, 2, stop_at=3))


def test_resuming_mid_epoch_fires_no_second_epoch_started():
    # bug: EPOCH_STARTED fired again, so an LR scheduler on it stepped twice
    fired = []
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    engine.run(list(range(5)), max_epochs=2)
    resumed = Engine(lambda e, b: b)
    for event in (Events.STARTED, Events.EPOCH_STARTED, Events.EPOCH_COMPLETED):
        resumed.add_event_handler(event, lambda e, ev=event: fired.append((ev.name, e.state.epoch)))
    resumed.load_state_dict(through_torch_save(engine.state_dict()))
    resumed.run(list(range(5)))
    assert fired == [
        ("STARTED", 1),
        ("EPOCH_COMPLETED", 1),
        ("EPOCH_STARTED", 2),
        ("EPOCH_COMPLETED", 2),
    ]


def test_numpy_generator_is_saved_and_restored():
    def step(engine, batch):
        return torch.tensor([float(np.random.rand())])

    want = batches_seen(lambda: [0] * 4, max_epochs=2, step=step)
    assert_same_batches(want, batches_seen(lambda: [0] * 4, 2, stop_at=3, step=step))


def stopped_state(data, stop_at=2, max_epochs=2):
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    engine.run(data, max_epochs=max_epochs)
    return through_torch_save(engine.state_dict())


def resume_with(state, data):
    engine = Engine(lambda e, b: b)
    engine.load_state_dict(state)
    return engine.run(data)


def test_a_one_shot_iterator_cannot_be_resumed():
    state = stopped_state(iter(range(10)), max_epochs=1)
    with pytest.raises(ValueError, match="one-shot iterator range_iterator"):
        resume_with(state, iter(range(10)))


def test_data_with_other_generators_is_refused_by_name():
    data = TensorDataset(torch.arange(8))
    state = stopped_state(DataLoader(data, batch_size=2, shuffle=True))
    gen = torch.Generator()
    with pytest.raises(ValueError, match="holds 1 torch.Generator.*saved 0"):
        resume_with(state, DataLoader(data, batch_size=2, shuffle=True, generator=gen))


def test_out_of_order_workers_mid_epoch_are_refused():
    def loader():
        return DataLoader(list(range(8)), batch_size=2, num_workers=1, in_order=False)

    with pytest.raises(ValueError, match="in_order=False"):
        resume_with(stopped_state(loader()), loader())


def test_a_checkpoint_without_numpy_state_is_refused():
    state = stopped_state(list(range(4)))
    del state["rng"]["numpy"]
    with pytest.raises(ValueError, match="lack \\['numpy'\\].*older distengine"):
        resume_with(state, list(range(4)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_a_gpu_generator_state_without_cuda_is_refused():
    state = stopped_state(list(range(4)))
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="CUDA generator state.*not available"):
        resume_with(state, list(range(4)))


def test_data_shorter_than_the_saved_position_is_refused():
    state = stopped_state([[i] for i in range(6)], stop_at=4, max_epochs=1)
    with pytest.raises(ValueError, match="data ended after 2 batches"):
        resume_with(state, iter_twice([[0], [1]]))


class iter_twice:
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_an_interrupted_run_frees_its_loader_workers_and_continues_in_place():
    loader = DataLoader(Augmented(), batch_size=4, num_workers=2)
    torch.manual_seed(0)
    want = [b for b in loader]
    seen = []
    engine = Engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.interrupt())
    torch.manual_seed(0)
    engine.run(loader)
    assert engine._flow._it is None  # no iterator (and no workers) left behind
    engine.run(loader)
    assert [b[:, 0].tolist() for b in seen] == [b[:, 0].tolist() for b in want]


def test_a_loaded_state_saved_again_before_running_is_the_same_state():
    state = stopped_state(DataLoader(list(range(8)), batch_size=2, shuffle=True))
    engine = Engine(lambda e, b: b)
    engine.load_state_dict(state)
    torch.manual_seed(5)  # the global generators move on before the run resumes
    again = engine.state_dict()
    assert again["data_position"] is not None
    assert torch.equal(again["rng"]["torch"], state["rng"]["torch"])
