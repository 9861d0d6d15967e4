"""Metrics on 2 and 3 gloo ranks with uneven shards: same values as one process, few collectives."""

import torch
import torch.distributed as dist

from distengine.engine import Engine
from distengine.metrics import ROC_AUC, Accuracy, EpochMetric, Loss, Precision
from tests.metrics.cases import N, assert_matches, batches, data, make_metrics, references


def shard_bounds(world: int) -> list[int]:
    """Uneven shards: rank r gets a share that grows with r."""
    weights = [r + 1 for r in range(world)]
    cuts = [0]
    for w in weights:
        cuts.append(cuts[-1] + N * w // sum(weights))
    cuts[-1] = N
    return cuts


class CollectiveCounter:
    """Counts collectives issued while installed (wraps torch.distributed's functions)."""

    names = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list")

    def __enter__(self):
        self.count = 0
        self._originals = {n: getattr(dist, n) for n in self.names}
        for name, fn in self._originals.items():
            setattr(dist, name, self._counting(fn))
        return self

    def _counting(self, fn):
        def wrapper(*args, **kwargs):
            self.count += 1
            return fn(*args, **kwargs)

        return wrapper

    def __exit__(self, *exc):
        for name, fn in self._originals.items():
            setattr(dist, name, fn)


def evaluate_shard(num_classes):
    from distengine.engine import Events

    rank, world = dist.get_rank(), dist.get_world_size()
    cuts = shard_bounds(world)
    evaluator = Engine(lambda e, b: b)
    for name, metric in make_metrics(num_classes).items():
        metric.attach(evaluator, name)
    counter = CollectiveCounter()
    evaluator.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda: counter.__enter__())
    evaluator.add_event_handler(Events.EPOCH_STARTED(once=2), lambda: counter.__exit__())
    evaluator.run(batches(data(), cuts[rank], cuts[rank + 1]), max_epochs=2)
    return evaluator.state.metrics, counter.count


def test_every_rank_gets_the_single_process_values(ranks):
    expected = references(data())
    for metrics, _ in ranks.run(evaluate_shard, 4):
        assert_matches(metrics, expected)


def test_lazily_shaped_counts_reduce_correctly_too(ranks2):
    expected = references(data())
    for metrics, _ in ranks2.run(evaluate_shard, None):
        assert_matches(metrics, expected)


def common_metrics_collectives(num_classes, confusion_classes=10):
    """Collectives of one evaluation with accuracy, loss, precision, recall, F1, a confusion
    matrix and top-3 attached (the values are checked against one process elsewhere)."""
    from distengine.metrics import ConfusionMatrix, Fbeta, Recall, TopKCategoricalAccuracy

    evaluator = Engine(lambda e, b: b)
    Accuracy().attach(evaluator, "acc")
    Loss(torch.nn.functional.cross_entropy).attach(evaluator, "loss")
    Precision(average="macro", num_classes=num_classes).attach(evaluator, "precision")
    Recall(average="macro", num_classes=num_classes).attach(evaluator, "recall")
    Fbeta(num_classes=num_classes).attach(evaluator, "f1")
    ConfusionMatrix(confusion_classes).attach(evaluator, "cm")
    TopKCategoricalAccuracy(3).attach(evaluator, "top3")
    g = torch.Generator().manual_seed(dist.get_rank())
    n = confusion_classes
    batch = (torch.randn(64, n, generator=g), torch.randint(0, n, (64,), generator=g))
    with CollectiveCounter() as counter:
        evaluator.run([batch] * 3)
    return counter.count


def test_common_metrics_cost_one_collective_per_evaluation(ranks2):
    # every fixed-shape state (int64 counts, float64 loss) in one gather of bytes
    assert ranks2.run(common_metrics_collectives, 10) == [1, 1]


def test_without_num_classes_they_cost_two(ranks2):
    # before: 3 (int64 and float64 in round 1, the lazily shaped counts in round 2); now the
    # layout rides in the one gather, and round 2 sums the int64 counts
    assert ranks2.run(common_metrics_collectives, None) == [2, 2]


def test_states_past_the_gather_budget_are_all_reduced(ranks2):
    # a 400-class confusion matrix (1.3 MB of int64 per rank): all-reduced, not gathered
    assert ranks2.run(common_metrics_collectives, 400, 400) == [2, 2]


def reduced_exactly():
    from distengine.metrics.reduction import reduce_tensors

    r = dist.get_rank()
    items = [
        (torch.tensor([2**53 + 1, -(r + 1)]), "sum"),  # exact beyond float64's integers
        (torch.tensor([0.5 + r, -1.0 * r], dtype=torch.float32), "max"),
        (torch.tensor([r == 1, False]), "sum"),  # bool: any rank
        (torch.tensor([10 - r], dtype=torch.int8), "min"),
        (torch.tensor(1.5, dtype=torch.bfloat16), "sum"),
    ]
    with CollectiveCounter() as counter:
        reduced = reduce_tensors(items)
    unchanged = items[0][0].tolist() == [2**53 + 1, -(r + 1)]
    return [t.tolist() for t in reduced], [t.dtype for t in reduced], counter.count, unchanged


def test_reduce_tensors_combines_any_dtype_and_op_exactly_in_one_collective(ranks):
    w = ranks.world_size
    values = [
        [w * (2**53 + 1), -sum(range(1, w + 1))],
        [0.5 + w - 1, 0.0],
        [True, False],
        [10 - (w - 1)],
        1.5 * w,
    ]
    dtypes = [torch.int64, torch.float32, torch.bool, torch.int8, torch.bfloat16]
    assert ranks.run(reduced_exactly) == [(values, dtypes, 1, True)] * w


def empty_shard_epoch_metrics():
    rank = dist.get_rank()
    d = data()
    auc = ROC_AUC(lambda out: (out["scores"], out["bin_true"]))
    spread = EpochMetric(
        lambda p, y: (len(p), p.sum().item()), lambda out: (out["scores"], out["bin_true"])
    )
    acc = Accuracy(lambda out: (out["logits"], out["labels"]))
    lazy = Precision(lambda out: (out["logits"], out["labels"]), average="micro")
    if rank != 0:  # rank 0 holds no data at all
        for batch in batches(d, 0, N):
            for metric in (auc, spread, acc, lazy):
                metric.update(metric._output_transform(batch))
    return auc.compute(), spread.compute(), acc.compute(), lazy.compute()


def test_empty_shard_on_a_rank_neither_hangs_nor_crashes(ranks):
    from sklearn.metrics import accuracy_score, roc_auc_score

    d = data()
    copies = ranks.world_size - 1
    want_auc = roc_auc_score(d["bin_true"], d["scores"])
    want_acc = accuracy_score(d["labels"], d["logits"].argmax(1))
    for auc, (n, total), acc, micro in ranks.run(empty_shard_epoch_metrics, timeout=60):
        assert abs(auc - want_auc) < 1e-9 and abs(acc - want_acc) < 1e-12
        assert n == copies * N and abs(total - copies * d["scores"].sum().item()) < 1e-3
        assert abs(micro - want_acc) < 1e-12


def rank_dependent_running_average():
    from distengine.engine import Events
    from distengine.metrics import RunningAverage

    rank = dist.get_rank()
    trainer = Engine(lambda e, b: b)
    RunningAverage(output_transform=lambda out: out, alpha=0.5, every=1).attach(trainer, "loss")
    values = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: values.append(e.state.metrics.get("loss"))
    )
    trainer.run([torch.tensor(float(rank)), torch.tensor(float(rank + 2))])
    return [v if v is None else float(v) for v in values], float(trainer.state.metrics["loss"])


def test_running_average_is_the_same_on_every_rank(ranks2):
    # the mean over ranks of per-rank averages, exchanged (every=1) and published one iteration
    # later, then fresh at the epoch's end: iteration 1: mean(0, 1) = 0.5; iteration 2:
    # 0.5 * 0.5 + 0.5 * mean(2, 3) = 1.5
    assert ranks2.run(rank_dependent_running_average) == [([None, 0.5], 1.5)] * 2
