"""Handlers from PyTorch-Ignite 0.5.5 that distengine took over, from the user's side:
BatchSizeScheduler, the state parameter schedulers, EMAHandler, EpochOutputStore, the profilers.

Each one's state is saved with the trainer's and the resumed run sees what
the uninterrupted one saw; the profilers time the user's handlers and write
on rank 0 only.
"""

from __future__ import annotations

import copy
import csv
import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distengine.engine import Engine, Events
from distengine.engine.handlers import handler_lists
from distengine.handlers import (
    BasicTimeProfiler,
    BatchSizeScheduler,
    Checkpoint,
    EMAHandler,
    EpochOutputStore,
    HandlersTimeProfiler,
    PiecewiseLinearStateScheduler,
)


def _loader() -> DataLoader:
    data = TensorDataset(torch.arange(24))
    return DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))


def _batch_size_run(event, stop_at=None, saved=None):
    """Batches seen (as lists) by a trainer whose loader's batch size follows a schedule."""
    loader = _loader()
    scheduler = BatchSizeScheduler(loader, scheduler_fn=lambda e: 4 * (e + 1))
    seen = []
    trainer = Engine(lambda engine, batch: seen.append(batch[0].tolist()))
    scheduler.attach(trainer, event)
    states = {}
    if stop_at is not None:

        @trainer.on(Events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(engine):
            states.update(trainer=trainer.state_dict(), scheduler=scheduler.state_dict())
            engine.terminate()

    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
        scheduler.load_state_dict(saved["scheduler"])
    trainer.run(loader, max_epochs=3)
    return seen, states, loader


def test_batch_size_schedule_resumes_with_the_batches_of_the_uninterrupted_run():
    full, _, loader = _batch_size_run(Events.EPOCH_STARTED)
    assert loader.batch_sampler.batch_size == 12 and [len(b) for b in full[6:9]] == [8, 8, 8]
    for stop_at in (8, 11, 16):  # in both passes of epoch 2 (batches of 8), in epoch 3 (12)
        head, saved, _ = _batch_size_run(Events.EPOCH_STARTED, stop_at=stop_at)
        assert saved["scheduler"]["batch_size"] == len(full[stop_at - 1])
        tail, _, _ = _batch_size_run(Events.EPOCH_STARTED, saved=saved)
        assert head + tail == full, stop_at


def test_a_resume_into_a_pass_whose_batch_size_changed_midway_is_refused():
    every_5 = Events.ITERATION_STARTED(every=5)  # changes the size in the middle of a pass
    _, saved, _ = _batch_size_run(every_5, stop_at=11)  # 8 from iteration 10 on
    with pytest.raises(ValueError, match="batches of 4 per rank and the data now gives .* of 8"):
        _batch_size_run(every_5, saved=saved)


def test_batch_size_scheduler_refuses_what_it_cannot_schedule():
    with pytest.raises(TypeError, match="should be torch.utils.data.DataLoader.*list"):
        BatchSizeScheduler([1, 2], scheduler_fn=lambda e: 2)
    with pytest.raises(ValueError, match="BatchSampler"):
        BatchSizeScheduler(DataLoader(range(4), batch_size=None), scheduler_fn=lambda e: 2)
    scheduler = BatchSizeScheduler(_loader(), scheduler_fn=lambda e: 2.5)
    with pytest.raises(ValueError, match="positive integer, but given 2.5"):
        scheduler(None)


def _state_run(stop_at=None, saved=None):
    seen = []
    trainer = Engine(lambda engine, batch: seen.append(engine.state.weight))
    scheduler = PiecewiseLinearStateScheduler(
        [(0, 0.0), (10, 1.0)], param_name="weight", create_new=True
    )
    scheduler.attach(trainer, Events.ITERATION_COMPLETED)
    states = {}
    if stop_at is not None:

        @trainer.on(Events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(engine):
            states.update(trainer=trainer.state_dict(), scheduler=scheduler.state_dict())
            engine.terminate()

    if saved is not None:
        trainer.load_state_dict(saved["trainer"])
        scheduler.load_state_dict(saved["scheduler"])
    trainer.run(range(6), max_epochs=2)
    return seen, states


def test_state_param_scheduler_resumes_with_the_value_the_run_had():
    full, _ = _state_run()
    assert full[:3] == [None, 0.1, 0.2] and full[-1] == pytest.approx(1.0)
    head, saved = _state_run(stop_at=4)
    tail, _ = _state_run(saved=saved)
    assert head + tail == full  # the first resumed iteration reads 0.4, not None


def test_state_param_scheduler_does_not_take_a_name_another_handler_owns():
    trainer = Engine(lambda engine, batch: None)
    trainer.state.weight = 0.5
    scheduler = PiecewiseLinearStateScheduler([(0, 0.0)], param_name="weight", create_new=True)
    with pytest.raises(ValueError, match="'weight' already exists in the engine.state"):
        scheduler.attach(trainer)


def _profiled_run(profiler, path):
    calls = []
    trainer = Engine(lambda engine, batch: None)

    def log(engine):
        calls.append(engine.has_event_handler(log, Events.ITERATION_COMPLETED))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, log)
    profiler.attach(trainer)
    trainer.run(range(3), max_epochs=2)
    profiler.write_results(path)
    return calls, trainer, log


def test_handlers_time_profiler_times_each_handler_and_gives_it_back(tmp_path):
    profiler = HandlersTimeProfiler()
    calls, trainer, log = _profiled_run(profiler, tmp_path / "handlers.csv")
    assert calls == [True] * 6  # the wrapped handler is still found by has_event_handler
    rows = profiler.get_results()
    mine = [row for row in rows if row[0].endswith("log")]
    assert [row[1] for row in mine] == ["ITERATION_COMPLETED"]
    assert len(profiler.event_handlers_times[Events.ITERATION_COMPLETED][mine[0][0]]) == 6
    assert [row[0] for row in rows[-3:]] == ["Total", "Processing", "Dataflow"]
    assert len(profiler.processing_times) == len(profiler.dataflow_times) == 6
    lists = handler_lists(trainer)
    assert [r.fn for r in lists[Events.ITERATION_COMPLETED]] == [log]  # unwrapped, timers gone
    assert lists[Events.GET_BATCH_STARTED] == []
    with open(tmp_path / "handlers.csv") as stream:
        assert len(list(csv.reader(stream))) == 7


def test_basic_time_profiler_fills_one_row_per_iteration(tmp_path):
    profiler = BasicTimeProfiler()
    _profiled_run(profiler, tmp_path / "basic.csv")
    results = profiler.get_results()
    assert results["event_handlers_names"]["ITERATION_COMPLETED_names"][0].endswith("log")
    assert set(results["processing_stats"]) == {"total", "min/index", "max/index", "mean", "std"}
    with open(tmp_path / "basic.csv") as stream:
        rows = list(csv.reader(stream))
    assert rows[0][:2] == ["epoch", "iteration"] and len(rows) == 7
    assert [float(r[0]) for r in rows[1:]] == [1, 1, 1, 2, 2, 2]
    assert "BasicTimeProfiler" not in profiler.print_results(results)


def profile_on_every_rank(folder: str) -> int:
    profiler = HandlersTimeProfiler()
    trainer = Engine(lambda engine, batch: None)
    profiler.attach(trainer)
    trainer.run(range(2), max_epochs=1)
    profiler.write_results(os.path.join(folder, f"profile{torch.distributed.get_rank()}.csv"))
    return len(profiler.processing_times)


def test_each_rank_profiles_itself_and_rank_0_writes(ranks2, tmp_path):
    assert ranks2.run(profile_on_every_rank, str(tmp_path), timeout=30) == [2, 2]
    assert sorted(os.listdir(tmp_path)) == ["profile0.csv"]


def _ema_run(stop_at=None, saved=None):
    """An EMA (with a momentum warm-up) and an output store over a model that steps by 1."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    trainer = Engine(lambda e, b: model.weight.data.add_(1).item())
    ema = EMAHandler(model, momentum=0.5, momentum_warmup=0.1, warmup_iters=4)
    store = EpochOutputStore()
    ema.attach(trainer)
    store.attach(trainer)
    to_save = {"trainer": trainer, "ema": ema, "store": store, "model": model}
    states = {}
    if stop_at is not None:

        @trainer.on(Events.ITERATION_COMPLETED(once=stop_at))
        def save_and_stop(engine):
            states.update({k: copy.deepcopy(v.state_dict()) for k, v in to_save.items()})
            engine.terminate()

    if saved is not None:
        for key, obj in to_save.items():
            obj.load_state_dict(saved[key])
    trainer.run(range(6), max_epochs=1)
    return ema.ema_model.weight.item(), list(store.data), states


def test_ema_and_output_store_resume_where_they_stood():
    weight, outputs, _ = _ema_run()
    assert outputs == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    _, _, saved = _ema_run(stop_at=2)  # in the momentum's warm-up, mid-epoch
    resumed_weight, resumed_outputs, _ = _ema_run(saved=saved)
    assert resumed_outputs == outputs
    assert resumed_weight == pytest.approx(weight)


def checkpoint_on_failing_ranks(folder: str) -> list[str]:
    import warnings

    def crash(engine, batch):
        raise RuntimeError(f"rank {torch.distributed.get_rank()} crashed")

    trainer = Engine(crash)
    checkpoint = Checkpoint({"model": torch.nn.Linear(1, 1)}, folder)
    trainer.add_event_handler(Events.EXCEPTION_RAISED, checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run([0], max_epochs=1)
    return [str(w.message) for w in caught if "EXCEPTION_RAISED" in str(w.message)]


def test_checkpoint_on_exception_with_several_ranks_warns_instead_of_hanging(ranks2, tmp_path):
    for said in ranks2.run(checkpoint_on_failing_ranks, str(tmp_path), timeout=30):
        assert len(said) == 1 and "saves nothing with 2 ranks" in said[0]
    assert list(tmp_path.glob("*.pt")) == []
