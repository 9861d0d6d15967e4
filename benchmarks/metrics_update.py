"""Per-batch update cost of six metrics, and collectives per evaluation on 2 ranks.

Metrics: Accuracy, Loss, Precision, Recall, ConfusionMatrix, TopK on 64x10
logits. Compared with a hand-written accumulation loop over the same tensors
(the floor) and with PyTorch-Ignite's metrics when installed. Collectives are
counted on 2 real gloo ranks during one evaluation's completion.

Run: ``python benchmarks/metrics_update.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, median_time, on_gloo_ranks, try_import  # noqa: E402

C, B, BATCHES = 10, 64, 2000


def make_batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(B, C, generator=g), torch.randint(0, C, (B,), generator=g))
        for _ in range(BATCHES)
    ]


def hand_written(batches):
    def run():
        correct = torch.tensor(0)
        loss_sum = torch.tensor(0.0, dtype=torch.float64)
        tp = torch.zeros(C, dtype=torch.int64)
        pp = torch.zeros(C, dtype=torch.int64)
        ap = torch.zeros(C, dtype=torch.int64)
        cm = torch.zeros(C * C, dtype=torch.int64)
        top = torch.tensor(0)
        for y_pred, y in batches:
            pred = y_pred.argmax(1)
            hit = pred == y
            correct += hit.sum()
            loss_sum += torch.nn.functional.cross_entropy(y_pred, y).double() * len(y)
            ones = torch.ones_like(y)
            tp.index_add_(0, y, hit.long())
            pp.index_add_(0, pred, ones)
            ap.index_add_(0, y, ones)
            cm.index_add_(0, y * C + pred, ones)
            top += (y_pred.topk(3, 1).indices == y[:, None]).any(1).sum()

    return run


def ours(num_classes=C):
    from distengine.metrics import (
        Accuracy,
        ConfusionMatrix,
        Loss,
        Precision,
        Recall,
        TopKCategoricalAccuracy,
    )

    return [
        Accuracy(),
        Loss(torch.nn.functional.cross_entropy),
        Precision(average="macro", num_classes=num_classes),
        Recall(average="macro", num_classes=num_classes),
        ConfusionMatrix(C),
        TopKCategoricalAccuracy(3),
    ]


def ignites():
    from ignite.metrics import (
        Accuracy,
        ConfusionMatrix,
        Loss,
        Precision,
        Recall,
        TopKCategoricalAccuracy,
    )

    return [
        Accuracy(),
        Loss(torch.nn.functional.cross_entropy),
        Precision(average=True),
        Recall(average=True),
        ConfusionMatrix(C),
        TopKCategoricalAccuracy(3),
    ]


def updating(make_metrics, batches):
    def run():
        metrics = make_metrics()
        for batch in batches:
            for metric in metrics:
                metric.update(batch)
            # a real batch dies after its step, and with it what metrics cached on it
            batch[0].__dict__.pop("_distengine_derived", None)

    return run


def _count_collectives(which: str) -> int:
    """On each rank: collectives made by one evaluation's completion (after a warm-up)."""
    from distengine.engine import Engine

    if which == "ignite":
        from ignite.engine import Engine as IgniteEngine

        engine, metrics = IgniteEngine(lambda e, b: b), ignites()
    else:
        engine, metrics = Engine(lambda e, b: b), ours(C if which == "ours" else None)
    for i, metric in enumerate(metrics):
        metric.attach(engine, f"m{i}")
    batches = make_batches(dist.get_rank())[:3]
    engine.run(batches)
    count = [0]
    names = ("all_reduce", "all_gather", "broadcast", "all_gather_object", "broadcast_object_list")
    originals = {name: getattr(dist, name) for name in names}
    for name, fn in originals.items():

        def wrapper(*args, _fn=fn, **kwargs):
            count[0] += 1
            return _fn(*args, **kwargs)

        setattr(dist, name, wrapper)
    engine.run(batches)
    for name, fn in originals.items():
        setattr(dist, name, fn)
    return count[0]


def collectives(which: str) -> int:
    return on_gloo_ranks(_count_collectives, which)


def main() -> None:
    torch.set_num_threads(1)
    batches = make_batches()
    floor = median_time(hand_written(batches), 5)
    rows = [("hand-written loop", floor, "-")]
    rows.append(("distengine", median_time(updating(ours, batches), 5), collectives("ours")))
    rows.append(
        (
            "distengine, no num_classes",
            median_time(updating(lambda: ours(None), batches), 5),
            collectives("ours_lazy"),
        )
    )
    if try_import("ignite") is not None:
        rows.append(("ignite", median_time(updating(ignites, batches), 3), collectives("ignite")))
    print(f"# Metric updates ({machine()}; 6 metrics, {BATCHES} batches of {B}x{C}, median)")
    print("| case | us/batch | x hand-written | collectives per evaluation (2 ranks) |")
    print("|---|---|---|---|")
    for name, seconds, count in rows:
        print(f"| {name} | {seconds / BATCHES * 1e6:.1f} | {seconds / floor:.2f} | {count} |")


if __name__ == "__main__":
    main()
