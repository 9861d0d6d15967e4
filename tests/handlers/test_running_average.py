"""RunningAverage: per-rank averages on the device, agreed across ranks only when published."""

import io

import pytest
import torch
import torch.distributed as dist

from distengine.engine import Engine, Events
from distengine.metrics import Accuracy, RunningAverage


def ema(values, alpha):
    """The running averages of ``values``, as plain Python floats."""
    out, current = [], None
    for v in values:
        current = v if current is None else alpha * current + (1 - alpha) * v
        out.append(current)
    return out


def outputs_of(rank, n):
    return [float((3 * i + rank) % 7) for i in range(n)]


@pytest.mark.parametrize("kind", ["tensor", "float", "vector"])
@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_one_process_publishes_every_iteration_without_changing_earlier_values(kind, alpha):
    values = outputs_of(0, 12)
    data = {
        "tensor": [torch.tensor(v) for v in values],
        "float": values,
        "vector": [torch.tensor([v - 1, v + 1]) for v in values],  # the mean is folded in
    }[kind]
    trainer = Engine(lambda e, b: b)
    RunningAverage(output_transform=lambda out: out, alpha=alpha).attach(trainer, "loss")
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["loss"])
    )
    trainer.run(data, max_epochs=1)
    assert all(isinstance(v, float if kind == "float" else torch.Tensor) for v in seen)
    assert [float(v) for v in seen] == pytest.approx(ema(values, alpha), rel=1e-6)


@pytest.mark.parametrize("kind", ["tensor", "float", "mixed", "float64"])
def test_outputs_kept_aside_fold_to_the_sequential_average(kind):
    values = outputs_of(1, 1500)  # more than are ever kept aside before a fold
    ra = RunningAverage(output_transform=lambda out: out, alpha=0.9)
    for i, v in enumerate(values):
        tensor = kind == "tensor" or (kind == "mixed" and i % 3) or kind == "float64"
        dtype = torch.float64 if kind == "float64" else torch.float32
        ra.update(torch.tensor(v, dtype=dtype) if tensor else v)
        if i == 700:
            assert float(ra.compute()) == pytest.approx(ema(values[:701], 0.9)[-1], rel=1e-5)
    assert float(ra.compute()) == pytest.approx(ema(values, 0.9)[-1], rel=1e-5)
    if kind in ("tensor", "float64"):
        assert ra.compute().dtype == (torch.float64 if kind == "float64" else torch.float32)


def test_metric_form_leaves_src_alone_so_it_can_also_be_attached():
    batches = [
        (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])),  # 1 of 2
        (torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([1, 1])),  # 2 of 2
        (torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1])),  # 0 of 2
    ]
    evaluator = Engine(lambda e, b: b)
    accuracy = Accuracy()
    accuracy.attach(evaluator, "acc")
    RunningAverage(accuracy, alpha=0.5).attach(evaluator, "running_acc")
    seen = []
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics["running_acc"])
    )
    evaluator.run(batches)
    assert evaluator.state.metrics["acc"] == pytest.approx(0.5)  # was 0.0: reset every batch
    assert seen == pytest.approx(ema([0.5, 1.0, 0.0], 0.5))


def test_state_dict_detach_and_argument_errors():
    ra = RunningAverage(output_transform=lambda out: out, alpha=0.5)
    ra.update(torch.tensor(4.0))
    ra.update(2.0)
    restored = RunningAverage(output_transform=lambda out: out, alpha=0.5)
    restored.load_state_dict(ra.state_dict())
    assert float(restored.compute()) == 3.0 and RunningAverage.checkpoint_per_rank
    engine = Engine(lambda e, b: b)
    restored.attach(engine, "x")
    assert restored.is_attached(engine)
    restored.detach(engine)
    engine.run([1.0])
    assert not restored.is_attached(engine) and "x" not in engine.state.metrics
    with pytest.raises(ValueError, match="every must be a positive int"):
        RunningAverage(output_transform=lambda out: out, every=0)
    with pytest.raises(ValueError, match="give exactly one of src"):
        RunningAverage()


# ------------------------------------------------------------------------- several ranks
def published_on_ranks(every, alpha, epochs, length):
    rank = dist.get_rank()
    data = [torch.tensor(v) for v in outputs_of(rank, length)]
    trainer = Engine(lambda e, b: b)
    RunningAverage(output_transform=lambda out: out, alpha=alpha, every=every).attach(
        trainer, "loss"
    )
    seen = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.metrics.get("loss"))
    )
    trainer.run(data, max_epochs=epochs)
    final = float(trainer.state.metrics["loss"])
    direct = RunningAverage(output_transform=lambda out: out, alpha=alpha)
    for value in data:
        direct.update(value)
    seen = [v if v is None else float(v) for v in seen]
    return seen, final, trainer.board.exchanges, float(direct.compute())


def expected_on_ranks(world, every, alpha, epochs, length):
    """Simulate the board: per-rank averages, their mean exchanged after k's handlers (the
    run's first iteration and multiples of every), published before k + 1's handlers, and
    exchanged once more at an epoch's end when the last exchange was older."""
    n = epochs * length
    per_rank = [ema(outputs_of(r, length) * epochs, alpha) for r in range(world)]
    mean = [sum(p[i] for p in per_rank) / world for i in range(n)]
    seen, current, as_of, pending, exchanges = [], None, None, None, 0
    for k in range(1, n + 1):
        if pending is not None:
            current, as_of, pending = mean[pending - 1], pending, None
        seen.append(current)
        if k == 1 or k % every == 0:
            pending, exchanges = k, exchanges + 1
        if k % length == 0:  # an epoch's end
            if pending is not None:
                current, as_of, pending = mean[pending - 1], pending, None
            if as_of != k:
                current, as_of, exchanges = mean[k - 1], k, exchanges + 1
    return seen, mean[-1], exchanges


@pytest.mark.parametrize("every", [1, 3, 10])
def test_every_rank_sees_the_same_mean_of_averages_published_at_agreed_iterations(ranks, every):
    world, alpha, epochs, length = ranks.world_size, 0.8, 2, 7
    results = ranks.run(published_on_ranks, every, alpha, epochs, length)
    seen, final, exchanges = expected_on_ranks(world, every, alpha, epochs, length)
    for got_seen, got_final, got_exchanges, _ in results:
        assert got_seen == results[0][0]  # the very same values on every rank
        assert [v is None for v in got_seen] == [v is None for v in seen]
        assert [v for v in got_seen if v is not None] == pytest.approx(
            [v for v in seen if v is not None], rel=1e-6
        )
        assert got_final == pytest.approx(final, rel=1e-6)
        assert got_exchanges == exchanges
    direct_means = {round(r[3], 6) for r in results}
    assert len(direct_means) == 1  # compute() called directly agrees on every rank too
    per_rank = [ema(outputs_of(r, length), alpha)[-1] for r in range(world)]
    assert direct_means.pop() == pytest.approx(sum(per_rank) / world, rel=1e-5)


def _averaged_engine():
    engine = Engine(lambda e, batch: torch.tensor(float(batch)))
    RunningAverage(output_transform=lambda x: x, alpha=0.5).attach(engine, "loss")
    return engine


@pytest.mark.parametrize("stop_at", [3, 7, 10, 14])
def test_the_running_average_resumes_with_the_engine_state(stop_at):
    """``{"trainer": trainer}`` in a checkpoint is enough: the average is part of the run."""
    data = list(range(10))
    whole = _averaged_engine()
    whole.run(data, max_epochs=2)
    first = _averaged_engine()
    first.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    first.run(data, max_epochs=2)
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    resumed = _averaged_engine()
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    resumed.run(data, max_epochs=2)
    assert torch.equal(resumed.state.metrics["loss"], whole.state.metrics["loss"])


def test_a_detached_running_average_leaves_the_engine_state():
    engine = Engine(lambda e, batch: torch.tensor(float(batch)))
    average = RunningAverage(output_transform=lambda x: x)
    average.attach(engine, "loss")
    assert "running_average[loss]" in engine.state_dict()
    average.detach(engine)
    assert "running_average[loss]" not in engine.state_dict()
