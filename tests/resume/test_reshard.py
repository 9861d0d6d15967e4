"""A pass resumed on another number of ranks: the same global samples, or a refusal by name.

Each run saves an engine (every rank's state, as ``Checkpoint`` does) at
iteration 3 of an 8-iteration epoch over numbered samples, on one pool, and
resumes it on a pool of another size; every rank records the sample numbers
of its batches, so the global batches (the union over the ranks) can be
compared with those of the uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

import distengine.distributed as idist
from distengine.engine import Engine, Events
from distengine.engine.resume import data_layout, layout_problem
from distengine.handlers import Checkpoint

SAMPLES, GLOBAL_BATCH, ITERATIONS, SAVED_AT = 48, 6, 8, 3


class Numbers(IterableDataset):
    """0, 1, ..., n - 1; with workers, each worker yields its own part (as PyTorch requires)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        return iter(range(start, self.n, step))


def make_loader(kind: str):
    if kind == "shrunk":  # an older run's loader: 64 on 3 ranks trained 21 per rank (63 in all)
        data = list(range(4 * 64))
        sampler = DistributedSampler(data, idist.get_world_size(), idist.get_rank(), False)
        return DataLoader(data, batch_size=64 // idist.get_world_size(), sampler=sampler)
    if kind == "global64":
        return idist.auto_dataloader(list(range(4 * 64)), batch_size=64, split="even")
    workers = 2 * idist.get_world_size() if kind == "workers" else 0
    return idist.auto_dataloader(
        Numbers(SAMPLES), batch_size=GLOBAL_BATCH, split="even", num_workers=workers
    )


def recording_engine(seen: list) -> Engine:
    return Engine(lambda engine, batch: seen.append((engine.state.iteration, batch.tolist())))


def save(folder: str, kind: str) -> list:
    """The uninterrupted epoch, and a checkpoint of its state at iteration 3."""
    seen: list = []
    engine = recording_engine(seen)
    checkpoint = Checkpoint({"trainer": engine}, folder, n_saved=1)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=SAVED_AT), checkpoint)
    engine.run(make_loader(kind), max_epochs=1, epoch_length=ITERATIONS)
    return seen


def resume(folder: str, kind: str) -> list | str:
    """The batches after the resume, or the ValueError's message."""
    seen: list = []
    engine = recording_engine(seen)
    Checkpoint.load_objects({"trainer": engine}, Path(folder) / f"trainer_{SAVED_AT}.pt")
    try:
        engine.run(make_loader(kind), max_epochs=1, epoch_length=ITERATIONS)
    except ValueError as error:
        return str(error)
    return seen


def global_batches(per_rank: list[list]) -> dict[int, list[int]]:
    """Iteration -> the sorted samples of every rank's batch at that iteration."""
    found: dict[int, list[int]] = {}
    for seen in per_rank:
        for iteration, batch in seen:
            found.setdefault(iteration, []).extend(batch)
    return {iteration: sorted(batch) for iteration, batch in found.items()}


@pytest.mark.filterwarnings("ignore:resuming on:RuntimeWarning")
def test_an_iterable_dataset_resumes_on_other_ranks_exactly_without_workers_else_is_refused(
    pools, tmp_path
):
    before = global_batches(pools.get(2).run(save, str(tmp_path), "plain"))
    assert sorted(sum(before.values(), [])) == list(range(SAMPLES))  # every sample once
    after = global_batches(pools.get(3).run(resume, str(tmp_path), "plain"))
    assert after == {i: before[i] for i in range(SAVED_AT + 1, ITERATIONS + 1)}

    refused = pools.get(3).run(resume, str(tmp_path), "workers")  # refused before any starts
    assert len(set(refused)) == 1, refused  # every rank, the same line: none goes on alone
    assert refused[0] == (
        "cannot resume this pass over the data: 2 ranks when saved, 3 now, over an "
        "IterableDataset read by DataLoader workers (0 per rank then, 2 now): each worker yields "
        "its own part of the stream, so items would be skipped and repeated; resume on 2 ranks "
        "with the same workers, or read the stream with num_workers=0 (then any number of ranks "
        "that divides the global batch continues it)"
    )


@pytest.mark.filterwarnings("ignore:resuming on:RuntimeWarning")
def test_a_global_batch_shrunk_on_three_ranks_is_not_resumed_on_two(pools, tmp_path):
    """64 on 3 ranks trained 63 per step; on 2 ranks 64 would repeat and skip samples."""
    pools.get(3).run(save, str(tmp_path), "shrunk")
    refused = pools.get(2).run(resume, str(tmp_path), "global64")
    assert refused[0] == refused[1]
    assert refused[0].startswith(
        "cannot resume this pass over the data: 3 ranks when saved, 2 now, with global batches "
        "of 63 samples then (21 per rank) and of 64 now (32 per rank)"
    )


def test_the_layout_of_a_pass_decides_which_resumes_continue_the_same_samples():
    loader = DataLoader(list(range(12)), batch_size=2)
    assert data_layout(loader) == {"world": 1, "batch": 2, "workers": 0, "iterable": False}
    two, three = data_layout(loader, world=2), data_layout(loader, world=3)
    assert layout_problem(two, two) is None and layout_problem(None, three) is None
    assert "global batches of 4 samples then (2 per rank) and of 6 now" in layout_problem(
        two, three
    )
    same_global = DataLoader(list(range(12)), batch_size=3)
    assert layout_problem(data_layout(loader, world=3), data_layout(same_global, world=2)) is None
    stream = DataLoader(Numbers(12), batch_size=2, num_workers=1)
    assert layout_problem(data_layout(stream, world=3), data_layout(stream, world=3)) is None
    assert "read by DataLoader workers" in layout_problem(
        data_layout(stream, world=3), data_layout(DataLoader(Numbers(12), batch_size=3), world=2)
    )


def test_a_global_batch_the_ranks_do_not_divide_is_refused_for_training_only(ranks3):
    said = ranks3.run(loaders_with_64)
    assert said[0] == (
        "batch_size=64 is the global batch and cannot be split evenly among 3 ranks (21 each, "
        "63 in all): use a multiple of 3 (63 or 66), or a number of ranks that divides 64 "
        "(1, 2, 4, 8, 16, 32, 64)",
        21,
        "batch_size=2 is the global batch and cannot be split evenly among 3 ranks (0 each, 0 in "
        "all): use a multiple of 3 (3), or a number of ranks that divides 2 (1, 2)",
    )


def loaders_with_64():
    try:
        idist.auto_dataloader(list(range(256)), batch_size=64, shuffle=True)
    except ValueError as error:
        training = str(error)
    evaluation = idist.auto_dataloader(list(range(256)), batch_size=64).batch_size
    try:
        idist.auto_dataloader(list(range(256)), batch_size=2)
    except ValueError as error:
        too_small = str(error)
    return training, evaluation, too_small


def test_divisors_are_listed_short():
    from distengine.distributed.shards import divisors_text

    assert divisors_text(64) == "1, 2, 4, 8, 16, 32, 64"
    assert divisors_text(96) == "1, 2, 3, 4, 6, 8, 12, ..., 96"
    assert divisors_text(7) == "1, 7"
