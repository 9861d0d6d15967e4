"""Running values are current on several ranks: what a logger reads every 5 iterations, what
TensorBoard stores and what an epoch's end shows is the TRUE mean over ranks of the per-rank
running averages, computed here independently, at the iteration each value belongs to.

Before, with the defaults, values were exchanged about twice a second: a fast loop read the
first iteration's value for seconds, and TensorBoard repeated it as if new at every step.
"""

from __future__ import annotations

import io
import os

import pytest
import torch
import torch.distributed as dist

from distengine.engine import Engine, Events
from distengine.handlers import ProgressBar, TensorboardLogger
from distengine.metrics import RunningAverage

ALPHA, LENGTH, EPOCHS, EVERY, INTERRUPT_AT = 0.9, 20, 3, 5, 7


def output(rank: int, k: int) -> float:
    """Rank ``rank``'s loss at iteration ``k``: different on every rank and iteration."""
    return float((3 * k + 7 * rank) % 11) + rank


def true_means(world: int, n: int) -> dict[int, float]:
    """The mean over ranks of each rank's running average after iteration k, in float64."""
    means = {}
    averages = [None] * world
    for k in range(1, n + 1):
        for r in range(world):
            x = output(r, k)
            averages[r] = x if averages[r] is None else ALPHA * averages[r] + (1 - ALPHA) * x
        means[k] = sum(averages) / world
    return means


def logged_run(folder: str):
    """A trainer with the default RunningAverage, a handler reading ``state.metrics`` every 5
    iterations and at each epoch's end, and a TensorBoard logger every 5 iterations; paused
    by ``interrupt()`` at 7 and run again for more epochs (the exchange must go on)."""
    rank = dist.get_rank()
    trainer = Engine(lambda engine, _: torch.tensor(output(rank, engine.state.iteration)))
    RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA).attach(trainer, "loss")
    read, at_epoch_end = [], []

    @trainer.on(Events.ITERATION_COMPLETED(every=EVERY))
    def log(engine):
        value = engine.state.metrics.get("loss")
        read.append((engine.state.iteration, None if value is None else float(value)))

    @trainer.on(Events.EPOCH_COMPLETED)
    def epoch_end(engine):
        at_epoch_end.append((engine.state.iteration, float(engine.state.metrics["loss"])))

    tb = TensorboardLogger(folder)
    tb.attach_output_handler(
        trainer, Events.ITERATION_COMPLETED(every=EVERY), "train", metric_names=["loss"]
    )
    bar, shown = ProgressBar(file=io.StringIO(), mininterval=0.0), []
    bar.attach(trainer, metric_names=["loss"])  # drawn on rank 0 only
    postfix = bar._postfix  # what the bar shows, each time it draws

    def recorded(engine):
        values = postfix(engine)
        shown.append((engine.state.iteration, values.get("loss")))
        return values

    bar._postfix = recorded
    pause = trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=INTERRUPT_AT), lambda e: e.interrupt()
    )
    data = range(LENGTH)
    trainer.run(data, max_epochs=1)
    pause.remove()
    trainer.run(data, max_epochs=EPOCHS)  # past the paused run's last iteration
    tb.close()
    return read, at_epoch_end, float(trainer.state.metrics["loss"]), shown


def scalars(folder: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(folder)
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_logged_running_values_are_the_true_mean_over_ranks(ranks2, tmp_path):
    n = LENGTH * EPOCHS
    means = true_means(2, n)
    results = ranks2.run(logged_run, str(tmp_path), timeout=120)
    assert results[0][:3] == results[1][:3]  # the same values on every rank
    read, at_epoch_end, final, shown = results[0]
    assert [k for k, _ in read] == list(range(EVERY, n + 1, EVERY))
    for k, value in read:  # as of the previous iteration: one exchange in flight
        assert value == pytest.approx(means[k - 1], rel=1e-5), f"read at {k}"
    assert [k for k, _ in at_epoch_end] == [LENGTH * e for e in range(1, EPOCHS + 1)]
    for k, value in at_epoch_end:  # an epoch's end: as of its last iteration
        assert value == pytest.approx(means[k], rel=1e-5), f"epoch end at {k}"
    assert final == pytest.approx(means[n], rel=1e-5)
    points = scalars(str(tmp_path), "train/loss")
    assert [step for step, _ in points] == [k - 1 for k, _ in read]  # the step it belongs to
    for step, value in points:
        assert value == pytest.approx(means[step], rel=1e-5), f"TensorBoard step {step}"
    assert len(os.listdir(tmp_path)) == 1  # rank 0's event file only
    assert results[1][3] == [] and len(shown) >= n // EVERY  # the bar: rank 0, redrawn often
    assert [v for _, v in shown[:1]] == [None]  # opened at 1: no agreed value yet
    for k, value in shown[1:]:  # beside iteration k: as of k - 1, or k at an epoch's end
        fresh = [means[k - 1], means[k]]
        assert any(value == pytest.approx(m, rel=1e-5) for m in fresh), f"bar at {k}"


def logged_with_every(folder: str, every):
    """RunningAverage(every=N): values agreed at multiples of N only, logged every 2."""
    rank = dist.get_rank()
    trainer = Engine(lambda engine, _: torch.tensor(output(rank, engine.state.iteration)))
    average = RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA, every=every)
    average.attach(trainer, "loss")
    tb = TensorboardLogger(folder)
    tb.attach_output_handler(
        trainer, Events.ITERATION_COMPLETED(every=2), "train", metric_names=["loss"]
    )
    trainer.run(range(LENGTH))
    tb.close()


def test_tensorboard_writes_each_agreed_value_once_at_its_iteration(ranks2, tmp_path):
    # exchanged at 1, 6, 12, 18 and flushed at 20; logged every 2: a point only when a
    # newer value arrived since the last point, at the iteration it holds for
    means = true_means(2, LENGTH)
    ranks2.run(logged_with_every, str(tmp_path), 6, timeout=60)
    points = scalars(str(tmp_path), "train/loss")
    assert [step for step, _ in points] == [1, 6, 12, 18]  # read at 2, 8, 14, 20 (not 20's)
    for step, value in points:
        assert value == pytest.approx(means[step], rel=1e-5)


def logged_every_iteration(folder: str) -> list[str]:
    """A TensorBoard logger on every iteration for ``loss`` (a running value) and ``lost``
    (a typo); the warnings this rank gave."""
    import warnings

    rank = dist.get_rank()
    trainer = Engine(lambda engine, _: torch.tensor(output(rank, engine.state.iteration)))
    RunningAverage(output_transform=lambda loss: loss, alpha=ALPHA, every=6).attach(trainer, "loss")
    tb = TensorboardLogger(folder)
    tb.attach_output_handler(
        trainer, Events.ITERATION_COMPLETED, "train", metric_names=["loss", "lost"]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run(range(LENGTH))
    tb.close()
    return [str(w.message) for w in caught]


def test_a_running_value_not_agreed_yet_is_not_warned_about_but_a_typo_is(ranks2, tmp_path):
    """Iteration 1 logs before the ranks' first agreed value: nothing to write, nothing to
    warn about (it warned "metric 'loss' is not in the engine's metrics []")."""
    said = ranks2.run(logged_every_iteration, str(tmp_path), timeout=60)
    for messages in said:
        assert not [m for m in messages if m.startswith("metric 'loss'")], messages
    assert [m for m in said[0] if m.startswith("metric 'lost'")], said  # rank 0 logs: a typo is
    assert [step for step, _ in scalars(str(tmp_path), "train/loss")] == [1, 6, 12, 18]
