"""Metric usages, Ignite's handler methods, and how outputs are fed (mappings, lists)."""

import pytest
import torch
from torch import nn

from distengine.engine import Engine, Events
from distengine.metrics import (
    Accuracy,
    Average,
    BatchFiltered,
    BatchWise,
    EpochWise,
    Loss,
    Metric,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)

HITS = [2, 1, 0, 2, 1, 1, 2, 0]  # correct predictions (of 2) per iteration, 2 epochs of 4
EPOCHS, LENGTH = 2, 4


def batch(hits):
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    return logits, torch.tensor([0] * hits + [1] * (2 - hits))


def expected(usage_name):
    """What each usage publishes after every iteration and epoch, from HITS by formula."""
    out, seen = [], []
    for epoch in range(EPOCHS):
        epoch_hits = HITS[epoch * LENGTH : (epoch + 1) * LENGTH]
        for i, h in enumerate(epoch_hits):
            seen.append(h)
            if usage_name == "batch_wise":
                out.append(("iteration", h / 2))
            elif usage_name == "single_epoch_running_batch_wise":
                out.append(("iteration", sum(epoch_hits[: i + 1]) / (2 * (i + 1))))
            elif usage_name == "running_batch_wise":
                out.append(("iteration", sum(seen) / (2 * len(seen))))
        if usage_name == "epoch_wise":
            out.append(("epoch", sum(epoch_hits) / (2 * LENGTH)))
        elif usage_name == "batch_filtered":  # every=2 counts the run's iterations
            kept = [h for k, h in enumerate(epoch_hits, epoch * LENGTH + 1) if k % 2 == 0]
            out.append(("epoch", sum(kept) / (2 * len(kept))))
        elif usage_name == "running_epoch_wise":  # fed the epoch's last output, never reset
            last = [HITS[(e + 1) * LENGTH - 1] for e in range(epoch + 1)]
            out.append(("epoch", sum(last) / (2 * len(last))))
    return out


USAGES = {
    "epoch_wise": EpochWise,
    "batch_wise": BatchWise,
    "running_batch_wise": RunningBatchWise,
    "single_epoch_running_batch_wise": SingleEpochRunningBatchWise,
    "running_epoch_wise": RunningEpochWise,
    "batch_filtered": lambda: BatchFiltered(every=2),
}


def run_usage(usage):
    engine = Engine(lambda e, b: b)
    Accuracy().attach(engine, "m", usage=usage)
    log = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: log.append(("iteration", e.state.metrics.pop("m", None))),
    )
    engine.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: log.append(("epoch", e.state.metrics.pop("m", None)))
    )
    data = [batch(h) for h in HITS]
    engine.run(data, epoch_length=LENGTH, max_epochs=EPOCHS)
    return [(when, float(v)) for when, v in log if v is not None]


@pytest.mark.parametrize("name", list(USAGES))
def test_each_usage_publishes_what_ignite_documents(name):
    want = expected(name)
    assert run_usage(USAGES[name]()) == want
    if name != "batch_filtered":
        assert run_usage(name) == want  # the usage's name works too


def test_running_is_distengines_name_for_single_epoch_running_batch_wise():
    assert run_usage("running") == expected("single_epoch_running_batch_wise")


def test_usage_arguments_are_checked():
    with pytest.raises(ValueError, match="usage should be .*running_batch_wise"):
        Accuracy().attach(Engine(lambda e, b: b), "m", usage="weekly")
    with pytest.raises(TypeError, match="usage must be a usage name or a MetricUsage"):
        Accuracy().attach(Engine(lambda e, b: b), "m", usage=3)
    with pytest.raises(ValueError, match="started event must be one of"):
        MetricUsage(Events.COMPLETED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED)
    with pytest.raises(ValueError, match=r"completed event must be one of .* \(unfiltered\)"):
        MetricUsage(
            Events.EPOCH_STARTED, Events.EPOCH_COMPLETED(every=2), Events.ITERATION_COMPLETED
        )


def test_detach_and_is_attached_by_usage():
    engine, acc = Engine(lambda e, b: b), Accuracy()
    acc.attach(engine, "batch", usage=BatchWise())
    acc.attach(engine, "epoch")
    assert acc.is_attached(engine, "batch_wise") and acc.is_attached(engine, EpochWise())
    acc.detach(engine, usage="batch_wise")
    assert not acc.is_attached(engine, BatchWise()) and acc.is_attached(engine)
    engine.run([batch(2), batch(0)])
    assert engine.state.metrics == {"epoch": 0.5}


def test_ignite_handler_methods_started_iteration_completed_completed():
    engine, acc = Engine(lambda e, b: b), Accuracy()
    engine.add_event_handler(Events.EPOCH_STARTED, acc.started)
    engine.add_event_handler(Events.ITERATION_COMPLETED, acc.iteration_completed)
    engine.add_event_handler(Events.EPOCH_COMPLETED, acc.completed, "acc")
    engine.run([batch(h) for h in HITS[:LENGTH]], max_epochs=2)
    assert engine.state.metrics["acc"] == sum(HITS[:LENGTH]) / (2 * LENGTH)


class Everything(Metric):
    """Records what update receives; computes a mapping."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.received = []

    def update(self, output):
        self.received.append(output)

    def compute(self):
        return {"first": 1.0, "second": torch.tensor(2.0)}


def test_mapping_outputs_are_read_at_required_output_keys():
    logits, labels = batch(1)
    engine = Engine(lambda e, b: {"y_pred": logits, "y": labels, "x": None, "criterion_kwargs": {}})
    Accuracy().attach(engine, "acc")
    Loss(nn.functional.cross_entropy).attach(engine, "loss")
    engine.run([0])
    assert engine.state.metrics["acc"] == 0.5
    assert engine.state.metrics["loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, labels).item()
    )
    missing = Engine(lambda e, b: {"y_pred": logits, "y": labels})
    Loss(nn.functional.cross_entropy).attach(missing, "loss")
    with pytest.raises(ValueError, match=r"missing \['criterion_kwargs'\]"):
        missing.run([0])
    averaged = Engine(lambda e, b: {"loss": 1.0})
    Average().attach(averaged, "avg")
    with pytest.raises(TypeError, match="pick the value with output_transform"):
        averaged.run([0])


def test_lists_of_items_are_unrolled_unless_skip_unrolling():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 3, generator=g), torch.randint(0, 3, (5,), generator=g)
    engine = Engine(lambda e, b: (list(logits), labels.tolist()))  # per-item tensors and numbers
    acc, raw = Accuracy(), Everything(skip_unrolling=True)
    acc.attach(engine, "acc")
    raw.attach(engine, "raw")
    engine.run([0])
    assert engine.state.metrics["acc"] == (logits.argmax(1) == labels).double().mean().item()
    assert len(raw.received) == 1 and isinstance(raw.received[0][0], list)
    uneven = Engine(lambda e, b: ([logits[0]], [1, 2]))
    Accuracy().attach(uneven, "acc")
    with pytest.raises(ValueError, match="2 lists of the same length"):
        uneven.run([0])


def test_mapping_values_are_published_by_key_and_name():
    engine = Engine(lambda e, b: (torch.zeros(1), torch.zeros(1)))
    Everything().attach(engine, "both")
    engine.run([0])
    metrics = engine.state.metrics
    assert metrics["first"] == 1.0 and metrics["second"] == 2.0  # 0-d tensors become floats
    assert set(metrics["both"]) == {"first", "second"}
    clash = Engine(lambda e, b: (torch.zeros(1), torch.zeros(1)))
    Everything().attach(clash, "first")
    with pytest.raises(ValueError, match="is conflicting with mapping keys"):
        clash.run([0])


def test_running_average_of_a_metric_with_a_mapping_output():
    from distengine.metrics import RunningAverage

    logits, labels = batch(1)
    engine = Engine(lambda e, b: {"logits": logits, "labels": labels, "loss": torch.tensor(2.0)})
    accuracy = Accuracy(output_transform=lambda out: (out["logits"], out["labels"]))
    RunningAverage(accuracy, alpha=0.5).attach(engine, "acc")  # itself fed nothing
    RunningAverage(output_transform=lambda out: out["loss"]).attach(engine, "loss")
    engine.run([0, 1])
    assert engine.state.metrics["acc"] == 0.5 and float(engine.state.metrics["loss"]) == 2.0
