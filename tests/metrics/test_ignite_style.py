"""Custom metrics written PyTorch-Ignite's way (``@reinit__is_reduced``, ``@sync_all_reduce``)
reduce over 2 and 3 gloo ranks to the single-process value, in the engine's one collective."""

import pytest
import torch
import torch.distributed as dist

from distengine.engine import Engine
from distengine.exceptions import NotComputableError
from distengine.metrics import Accuracy
from distengine.metrics.metric import Metric, reinit__is_reduced, sync_all_reduce


class CollectiveCounter:
    """Counts all_reduce calls while installed (test_ranks.py has a fuller one; importing it
    would load scikit-learn in every rank)."""

    def __enter__(self):
        self.count, self._original = 0, dist.all_reduce

        def counting(*args, **kwargs):
            self.count += 1
            return self._original(*args, **kwargs)

        dist.all_reduce = counting
        return self

    def __exit__(self, *exc):
        dist.all_reduce = self._original


def custom_accuracy(Metric, reinit__is_reduced, sync_all_reduce):  # noqa: N803
    """Ignite's documentation example ("Metrics and distributed computations"), verbatim,
    on the given library's base class and decorators."""

    class CustomAccuracy(Metric):
        def __init__(self, ignored_class, output_transform=lambda x: x, device="cpu"):
            self.ignored_class = ignored_class
            self._num_correct = None
            self._num_examples = None
            super(CustomAccuracy, self).__init__(output_transform=output_transform, device=device)  # noqa: UP008, E501

        @reinit__is_reduced
        def reset(self):
            self._num_correct = torch.tensor(0, device=self._device)
            self._num_examples = 0
            super(CustomAccuracy, self).reset()  # noqa: UP008

        @reinit__is_reduced
        def update(self, output):
            y_pred, y = output[0].detach(), output[1].detach()

            indices = torch.argmax(y_pred, dim=1)

            mask = y != self.ignored_class
            mask &= indices != self.ignored_class
            y = y[mask]
            indices = indices[mask]
            correct = torch.eq(indices, y).view(-1)

            self._num_correct += torch.sum(correct).to(self._device)
            self._num_examples += correct.shape[0]

        @sync_all_reduce("_num_examples", "_num_correct")
        def compute(self):
            if self._num_examples == 0:
                raise NotComputableError(
                    "CustomAccuracy must have at least one example before it can be computed."
                )
            return self._num_correct.item() / self._num_examples

    return CustomAccuracy


CustomAccuracy = custom_accuracy(Metric, reinit__is_reduced, sync_all_reduce)


class Stats(Metric):
    """Every op and form Ignite's decorator takes: tensors, ints, floats; SUM, MAX, MIN,
    PRODUCT; the state read back as the same types."""

    @reinit__is_reduced
    def reset(self):
        self._sum = torch.zeros(3, dtype=torch.float64)
        self._num_examples = 0
        self._total = 0.0
        self._largest = -1e9
        self._smallest = torch.tensor(1e9)
        self._scale = 1.0

    @reinit__is_reduced
    def update(self, output):
        x = output.double()
        self._sum += x.sum(0)
        self._num_examples += x.shape[0]
        self._total += float(x.sum())
        self._largest = max(self._largest, float(x.max()))
        self._smallest = torch.minimum(self._smallest, x.min().float())
        self._scale *= 2.0

    @sync_all_reduce("_sum", "_num_examples:SUM", "_total", "_largest:MAX", "_smallest:MIN")
    def compute(self):
        types = [type(v).__name__ for v in (self._num_examples, self._total, self._largest)]
        return {
            "mean": (self._sum / self._num_examples).tolist(),
            "total": self._total,
            "max": self._largest,
            "min": self._smallest.item(),
            "n": self._num_examples,
            "types": types,
        }

    @sync_all_reduce("_scale:PRODUCT", "_num_examples:MAX")
    def scale_and_largest_shard(self):
        return self._scale, self._num_examples


def _data(n=41, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 4, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    labels[:15] = logits[:15].argmax(1)
    return logits, labels, torch.randn(n, 3, generator=g)


def _shard(world, rank, n=41):
    cuts = [n * r * (r + 1) // (world * (world + 1)) for r in range(world + 1)]  # uneven
    return cuts[rank], cuts[rank + 1]


def _batches(start, stop, size=6):
    logits, labels, x = _data()
    cut = [slice(i, min(i + size, stop)) for i in range(start, stop, size)]
    return [(logits[s], labels[s], x[s]) for s in cut]


def evaluate(world=None, rank=None):
    """Accuracy, CustomAccuracy and Stats on one engine: values, state after, collectives."""
    if world is None:
        world, rank = dist.get_world_size(), dist.get_rank()
    evaluator = Engine(lambda e, b: b)
    Accuracy(output_transform=lambda out: out[:2]).attach(evaluator, "acc")
    custom = CustomAccuracy(ignored_class=3, output_transform=lambda out: out[:2])
    custom.attach(evaluator, "custom")
    stats = Stats(output_transform=lambda out: out[2])
    stats.attach(evaluator, "stats")
    counter = CollectiveCounter()
    from distengine.engine import Events

    evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda: counter.__enter__())
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda: counter.__exit__())
    evaluator.run(_batches(*_shard(world, rank)))
    metrics = dict(evaluator.state.metrics)
    local = (custom._num_examples, type(custom._num_examples).__name__, stats._total)
    extra = stats.scale_and_largest_shard()
    return metrics, counter.count, local, extra, custom.compute()


def test_custom_metric_has_ignites_value_on_one_process():
    ignite_metric = pytest.importorskip("ignite.metrics.metric")
    on_ignite = custom_accuracy(
        ignite_metric.Metric, ignite_metric.reinit__is_reduced, ignite_metric.sync_all_reduce
    )
    theirs = on_ignite(ignored_class=3)
    mine = CustomAccuracy(ignored_class=3)
    for logits, labels, _ in _batches(0, 41):
        theirs.update((logits, labels))
        mine.update((logits, labels))
    assert mine.compute() == theirs.compute()
    metrics, _, _, (scale, largest), _ = evaluate(1, 0)
    assert metrics["custom"] == theirs.compute()
    assert (scale, largest) == (2.0 ** len(_batches(0, 41)), 41)


def test_custom_metrics_reduce_to_the_single_process_values(ranks):
    alone, _, _, _, _ = evaluate(1, 0)
    results = ranks.run(evaluate)
    world = ranks.world_size
    for rank, (metrics, collectives, local, extra, direct) in enumerate(results):
        assert metrics["custom"] == alone["custom"] and direct == alone["custom"]
        assert metrics["acc"] == alone["acc"]
        stats, want = metrics["stats"], alone["stats"]
        assert stats["n"] == want["n"] == 41 and stats["max"] == want["max"]
        assert stats["min"] == pytest.approx(want["min"])
        assert stats["total"] == pytest.approx(want["total"])
        assert stats["mean"] == pytest.approx(want["mean"])
        assert stats["types"] == ["int", "float", "float"]  # numbers stay numbers
        # every state of the three metrics (int64 and float64 sums, MAX, MIN, the (3,) vector
        # _sum) travels in the engine's one gather of fixed-shape states (Ignite: one
        # collective per attribute, 7 here)
        assert collectives == 1
        start, stop = _shard(world, rank)
        n_local, kind, total_local = local
        assert kind == "int" and 0 < n_local <= stop - start  # local state is back, unreduced
        n_batches = sum(len(_batches(*_shard(world, r))) for r in range(world))
        largest_shard = max(b - a for a, b in (_shard(world, r) for r in range(world)))
        assert extra == (2.0**n_batches, largest_shard)  # PRODUCT and MAX, on call
        assert total_local != pytest.approx(want["total"])


def misdeclared(kind):
    class Missing(Metric):
        @reinit__is_reduced
        def reset(self):
            self.n = 0
            self.text = "a string"

        def update(self, output):
            self.n += 1

        @sync_all_reduce({"missing": "gone", "type": "text", "op": "n:MINN"}[kind])
        def compute(self):
            return self.n

    metric = Missing()
    metric.update(None)
    try:
        metric.compute()
    except (ValueError, TypeError) as error:
        return type(error).__name__, str(error)
    return None


def test_misdeclared_attributes_raise_on_every_rank_as_in_ignite(ranks2):
    for kind, (error, pattern) in {
        "missing": ("ValueError", "has no attribute named `gone`"),
        "type": ("TypeError", "should be a number or tensor but `text`"),
        "op": ("ValueError", "Reduction operation is not valid"),
    }.items():
        for result in ranks2.run(misdeclared, kind):
            assert result[0] == error and pattern in result[1]
    assert misdeclared("missing") is None  # one process: nothing to reduce, as in Ignite


def uneven_vector_state():
    class PerClass(Metric):
        @reinit__is_reduced
        def reset(self):
            self._counts = torch.zeros(3 + dist.get_rank())  # a shape that depends on the rank

        def update(self, output):
            self._counts += 1

        @sync_all_reduce("_counts")
        def compute(self):
            return self._counts.tolist()

    from distengine.metrics import Average

    average = Average()  # a lazily shaped state of distengine's own, shaped by the outputs
    average.update(torch.ones(2, 3 + dist.get_rank()))
    messages = []
    for metric in (PerClass(), average):
        if isinstance(metric, PerClass):
            metric.update(None)
        try:
            metric.compute()
        except ValueError as error:
            messages.append(str(error))
    return messages


def test_a_state_shaped_differently_on_the_ranks_raises_on_every_rank(ranks2):
    # Ignite's gloo all_reduce waits for the timeout here; before, a lazy state's shape was
    # checked only past its first dimension (one rank raised, the other waited)
    for messages in ranks2.run(uneven_vector_state, timeout=60):
        assert len(messages) == 2 and all("differs across ranks" in m for m in messages)


def test_state_dict_carries_the_attributes_and_keeps_their_types():
    metric = CustomAccuracy(ignored_class=3)
    for logits, labels, _ in _batches(0, 41):
        metric.update((logits, labels))
    value, saved = metric.compute(), metric.state_dict()
    fresh = CustomAccuracy(ignored_class=3)
    assert fresh._num_examples == 0  # the constructor reset it, as Ignite's does
    fresh.load_state_dict(saved)
    assert type(fresh._num_examples) is int and fresh._num_examples == metric._num_examples
    assert torch.equal(fresh._num_correct, metric._num_correct)
    assert fresh.compute() == value


def test_states_saved_on_two_ranks_load_into_one_with_their_sum():
    shards = []
    for rank in range(2):  # two ranks' checkpointed states, made here on one process
        metric = CustomAccuracy(ignored_class=3)
        for logits, labels, _ in _batches(*_shard(2, rank)):
            metric.update((logits, labels))
        shards.append(metric.state_dict())
    whole = CustomAccuracy(ignored_class=3)
    whole.load_per_rank_state_dicts(shards)
    alone = CustomAccuracy(ignored_class=3)
    for logits, labels, _ in _batches(0, 41):
        alone.update((logits, labels))
    assert type(whole._num_examples) is int and whole._num_examples == alone._num_examples
    assert whole.compute() == alone.compute()
