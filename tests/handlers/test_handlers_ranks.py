"""Handlers on 2 gloo ranks: rank 0 writes, every rank stops together."""

import io
import os

import torch
import torch.distributed as dist
from torch import nn

import distengine.distributed as idist
from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.handlers import (
    Checkpoint,
    EarlyStopping,
    ProgressBar,
    TensorboardLogger,
    TerminateOnNan,
    TimeLimit,
    find_latest_checkpoint,
    global_step_from_engine,
    setup_logger,
)
from distengine.metrics import Accuracy


def train_with_all_writers(folder):
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = idist.auto_model(nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
    g = torch.Generator().manual_seed(rank)
    data = [
        (torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(5)
    ]
    Accuracy(output_transform=lambda _: (model(data[0][0]), data[0][1])).attach(trainer, "acc")
    bar_out = io.StringIO()
    ProgressBar(file=bar_out, mininterval=0.0).attach(trainer, metric_names="all")
    tb = TensorboardLogger(os.path.join(folder, "tb"))
    tb.attach_output_handler(
        trainer, Events.ITERATION_COMPLETED, "train", output_transform=lambda loss: {"loss": loss}
    )
    tb.attach_output_handler(
        trainer,
        Events.EPOCH_COMPLETED,
        "validation",
        metric_names="all",
        global_step_transform=global_step_from_engine(trainer),
    )
    tb.attach_opt_params_handler(trainer, Events.ITERATION_STARTED, optimizer)
    tb.attach_weights_handler(trainer, Events.EPOCH_COMPLETED, model, kind="histogram")
    tb.attach_hparams(trainer, {"lr": 0.1, "model": "linear"})
    checkpoint = Checkpoint(
        {"model": model, "trainer": trainer}, os.path.join(folder, "ckpt"), n_saved=2
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    logger = setup_logger(
        "test", filepath=os.path.join(folder, "rank{rank}.log"), stream=io.StringIO()
    )
    logger.info("hello from %d", rank)
    trainer.run(data, max_epochs=3)
    tb.close()
    return bar_out.getvalue(), checkpoint.last_checkpoint


def test_only_rank_zero_writes_checkpoints_event_files_and_bars(ranks2, tmp_path):
    results = ranks2.run(train_with_all_writers, str(tmp_path))
    (bar0, last0), (bar1, last1) = results
    assert "Epoch [3/3]" in bar0 and "acc=" in bar0 and bar1 == ""
    assert last0 == last1 == "checkpoint_3.pt"
    kept = sorted(n for n in os.listdir(tmp_path / "ckpt") if not n.startswith("."))
    assert kept == ["checkpoint_2.pt", "checkpoint_3.pt"]
    event_files = [f for _, _, files in os.walk(tmp_path / "tb") for f in files]
    assert event_files and all("events.out.tfevents" in f for f in event_files)
    assert "[rank 0]" in (tmp_path / "rank0.log").read_text()
    assert "[rank 1] test INFO: hello from 1" in (tmp_path / "rank1.log").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / "tb"))
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert {"train/loss", "validation/acc", "lr/group_0"} <= set(scalars)
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(1, 16))
    assert [e.step for e in accumulator.Scalars("validation/acc")] == [5, 10, 15]
    assert any(t.startswith("weights_hist/") for t in accumulator.Tags()["histograms"])
    _, state = find_latest_checkpoint(tmp_path / "ckpt")
    assert state["trainer"]["epoch"] == 3 and "weight" in state["model"]  # saved unwrapped


def early_stop_on_rank_dependent_scores():
    rank = dist.get_rank()
    trainer = Engine(lambda e, b: b)
    scores = {0: [0.5, 0.6, 0.6, 0.6, 0.6, 0.6], 1: [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}[rank]
    stopper = EarlyStopping(
        patience=2, score_function=lambda e: scores[e.state.epoch - 1], trainer=trainer
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, stopper)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: idist.barrier())  # a collective
    trainer.run([0, 1], max_epochs=6)
    return trainer.state.epoch


def test_early_stopping_stops_every_rank_at_the_same_epoch(ranks2):
    # rank 0's scores stall after epoch 2; rank 1's do not, but it follows rank 0's decision
    assert ranks2.run(early_stop_on_rank_dependent_scores) == [4, 4]


def nan_on_rank_1():
    rank = dist.get_rank()

    def step(engine, batch):
        bad = rank == 1 and engine.state.iteration == 3
        return torch.tensor(float("nan") if bad else 1.0)

    trainer = Engine(step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    trainer.run(range(10), max_epochs=2)
    return trainer.state.iteration, getattr(trainer.state, "terminated_on_nan", False)


def test_nan_on_one_rank_stops_all_ranks_at_that_iteration(ranks2):
    assert ranks2.run(nan_on_rank_1) == [(3, True), (3, True)]


def time_limit_run():
    import time

    trainer = Engine(lambda e, b: time.sleep(0.01 * (1 + dist.get_rank())))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(0.2))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    trainer.run(range(1000))
    return trainer.state.iteration


def test_time_limit_stops_all_ranks_together(ranks2):
    first, second = ranks2.run(time_limit_run)
    assert first == second < 1000


def train_with_rank_seeds(folder, stop_at):
    """DDP with dropout and per-rank seeds; stop at ``stop_at`` and resume if asked."""
    from torch.utils.data import TensorDataset

    def build():
        torch.manual_seed(0)
        model = idist.auto_model(nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        data = TensorDataset(
            torch.randn(64, 4, generator=g), torch.randint(0, 2, (64,), generator=g)
        )
        loader = idist.auto_dataloader(data, batch_size=16, shuffle=True)
        trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
        idist.manual_seed(100, rank_offset=True)  # each rank its own dropout masks
        return model, optimizer, trainer, loader

    model, optimizer, trainer, loader = build()
    if stop_at is None:
        trainer.run(loader, max_epochs=3)
        return [p.detach().clone() for p in model.parameters()]
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, Checkpoint(to_save, folder))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    trainer.run(loader, max_epochs=3)
    idist.manual_seed(999 + idist.get_rank())  # a fresh process: other random states
    model, optimizer, trainer, loader = build()
    _, state = find_latest_checkpoint(folder)
    Checkpoint.load_objects({"model": model, "optimizer": optimizer, "trainer": trainer}, state)
    trainer.run(loader)
    return [p.detach().clone() for p in model.parameters()]


def test_resume_is_exact_when_ranks_draw_different_random_numbers(ranks2, tmp_path):
    expected = ranks2.run(train_with_rank_seeds, None, None)
    resumed = ranks2.run(train_with_rank_seeds, str(tmp_path), 5)  # mid-epoch 2
    for got, want in zip(resumed[1], expected[1]):
        assert torch.equal(got, want)
    for got, want in zip(resumed[0], expected[0]):
        assert torch.equal(got, want)
