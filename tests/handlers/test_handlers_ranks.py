"""Handlers on 2 gloo ranks: rank 0 writes, every rank stops together."""

import io
import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

import distengine.distributed as idist
from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.handlers import (
    Checkpoint,
    EarlyStopping,
    Preemption,
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
    ProgressBar(file=bar_out, mininterval=0.0, persist=True).attach(trainer, metric_names="all")
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
    assert last0 == last1 == tmp_path / "ckpt" / "checkpoint_15.pt"  # named by iteration
    kept = sorted(n for n in os.listdir(tmp_path / "ckpt") if not n.startswith("."))
    assert kept == ["checkpoint_10.pt", "checkpoint_15.pt"]
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
    assert [e.step for e in accumulator.Scalars("validation/acc")] == [1, 2, 3]  # epochs (Ignite)
    assert any(t.startswith("weights_hist/") for t in accumulator.Tags()["histograms"])
    _, state = find_latest_checkpoint(tmp_path / "ckpt")
    per_rank = state["trainer"]["__per_rank__"]
    assert [s["epoch"] for s in per_rank] == [3, 3] and "weight" in state["model"]  # unwrapped


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
    return trainer.state.epoch, stopper.state_dict()


def test_early_stopping_stops_every_rank_at_the_same_epoch(ranks2):
    # rank 0's scores stall after epoch 2; rank 1's do not, but it follows rank 0's scores
    assert (
        ranks2.run(early_stop_on_rank_dependent_scores)
        == [(4, {"counter": 2, "best_score": 0.6, "threshold_mode": "abs"})] * 2
    )


def nan_on_rank_1(every, event):
    rank = dist.get_rank()

    def step(engine, batch):
        bad = rank == 1 and engine.state.iteration >= 3  # NaN weights stay NaN
        return {"loss": torch.tensor(float("nan") if bad else 1.0), "n": 1}

    trainer = Engine(step)
    trainer.add_event_handler(event, TerminateOnNan(lambda out: out, every=every))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    trainer.run(range(50), max_epochs=2)
    return trainer.state.iteration, getattr(trainer.state, "terminated_on_nan", False)


@pytest.mark.parametrize(
    "every, event, stop",
    [
        (1, Events.ITERATION_COMPLETED, 4),  # first at 3, exchanged at 3, read at 4
        (2, Events.ITERATION_COMPLETED, 5),  # exchanged at 4
        (10, Events.ITERATION_COMPLETED, 11),  # exchanged at 10
        (None, Events.ITERATION_COMPLETED, range(4, 19)),  # timed: 1, then a gap of <= 16
        (1, Events.EPOCH_COMPLETED, 50),  # checked on the spot, at the epoch's end
    ],
)
def test_nan_on_one_rank_stops_all_ranks_at_the_same_iteration(ranks2, every, event, stop):
    # a run of 100 iterations: "never stopped" (100) fails every case
    (first, nan0), (second, nan1) = ranks2.run(nan_on_rank_1, every, event)
    assert first == second and nan0 and nan1
    assert first in stop if isinstance(stop, range) else first == stop


def time_limit_run(every):
    import time

    trainer = Engine(lambda e, b: time.sleep(0.01 * (1 + dist.get_rank())))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(0.2, every=every))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    trainer.run(range(1000))
    return trainer.state.iteration


@pytest.mark.parametrize("every", [1, 5])
def test_time_limit_stops_all_ranks_together(ranks2, every):
    first, second = ranks2.run(time_limit_run, every)
    assert first == second < 1000 and first % every == 1 % every  # one iteration after a check


def per_rank_scores(folder):
    rank = dist.get_rank()
    scores = iter([0.5, 0.9, 0.7, 0.6] if rank == 0 else [0.9, 0.1, 0.95, 0.99])
    trainer = Engine(lambda e, b: b)
    checkpoint = Checkpoint(
        {"trainer": trainer},
        folder,
        score_function=lambda e: next(scores),
        score_name="acc",
        n_saved=2,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: idist.barrier())
    trainer.run(range(3), max_epochs=4)
    return checkpoint.saved, sorted(n for n in os.listdir(folder) if not n.startswith("."))


def test_a_per_rank_score_is_decided_by_rank_0_for_every_rank(ranks2, tmp_path):
    # before: rank 1 found its scores worth keeping when rank 0 did not, and entered the
    # gather of per-rank states alone
    kept = [(0.7, "trainer_9_acc=0.7000.pt"), (0.9, "trainer_6_acc=0.9000.pt")]
    files = ["trainer_6_acc=0.9000.pt", "trainer_9_acc=0.7000.pt"]
    assert ranks2.run(per_rank_scores, str(tmp_path)) == [(kept, files)] * 2


def preempt_rank_1(folder, every, signum):
    import signal

    rank = dist.get_rank()
    trainer = Engine(lambda e, b: b)
    checkpoint = Checkpoint({"trainer": trainer}, folder)
    stops = []

    def on_stop(engine):
        stops.append(engine.state.iteration)
        checkpoint(engine)

    preemption = Preemption(on_stop=on_stop, every=every)
    preemption.attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED(once=3))
    def signal_on_rank_1():
        if rank == 1:
            os.kill(os.getpid(), getattr(signal, signum))

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda: idist.barrier())
    try:
        trainer.run(range(20), max_epochs=2)
    finally:
        preemption.restore()
    s = trainer.state
    return s.iteration, s.preempted, s.stop_signal, stops, checkpoint.last_checkpoint.name


@pytest.mark.parametrize(
    "every, signum, stop", [(1, "SIGTERM", 4), (4, "SIGINT", 5), (10, "SIGTERM", 11)]
)
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_iteration(
    ranks2, tmp_path, every, signum, stop
):
    # the signal lands in iteration 3's handlers: the first exchange at or after 3 carries it
    # (launched after the handlers), and every rank stops one iteration later, runs on_stop
    # and is marked preempted
    expected = (stop, True, signum, [stop], f"trainer_{stop}.pt")
    assert ranks2.run(preempt_rank_1, str(tmp_path), every, signum) == [expected] * 2


def preempt_during_uneven_evaluation():
    import signal

    rank = dist.get_rank()
    trainer, evaluator = Engine(lambda e, b: b), Engine(lambda e, b: b)
    evaluations, stops = [], []

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate():
        evaluator.run(range(12 if rank == 0 else 7))  # unpadded shards: uneven lengths
        evaluations.append((evaluator.state.iteration, evaluator.state.preempted))

    preemption = Preemption(on_stop=lambda e: stops.append(e.state.iteration), every=2)
    preemption.attach(trainer)
    preemption.attach(evaluator, final=False)

    @evaluator.on(Events.ITERATION_COMPLETED(once=2))
    def signal_rank_1_in_epoch_2():
        if rank == 1 and trainer.state.epoch == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    evaluator.add_event_handler(Events.COMPLETED, lambda: idist.barrier())
    try:
        trainer.run(range(5), max_epochs=3)
    finally:
        preemption.restore()
    return evaluations, stops, trainer.state.iteration, trainer.state.preempted


def test_a_signal_during_an_uneven_evaluation_stops_it_then_the_trainer(ranks2):
    # checks in the evaluator stop at 7 (the shorter shard): at 1, 2, 4 and 6. Epoch 1 runs
    # 12 and 7 iterations without a hang; in epoch 2 the signal in 2's handlers goes with
    # 2's exchange, read at 3, and the evaluation ends there on both ranks, uncomputed; then
    # the trainer stops
    (first0, _), (first1, _) = [r[0][0] for r in ranks2.run(preempt_during_uneven_evaluation)]
    results = ranks2.run(preempt_during_uneven_evaluation)
    assert (first0, first1) == (12, 7)
    for rank, (evaluations, stops, iteration, preempted) in enumerate(results):
        assert evaluations == [((12, 7)[rank], False), (3, True)]
        assert (stops, iteration, preempted) == ([10], 10, True)


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
