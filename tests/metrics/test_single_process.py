"""Every metric against scikit-learn on one process; arithmetic, usages, errors, state."""

import pytest
import torch
from torch import nn

from distengine.engine import Engine
from distengine.metrics import (
    Accuracy,
    Average,
    ConfusionMatrix,
    Loss,
    MetricsLambda,
    NotComputableError,
    Precision,
    RunningAverage,
    TopKCategoricalAccuracy,
)
from tests.metrics.cases import assert_matches, batches, data, make_metrics, references


@pytest.mark.parametrize("num_classes", [4, None], ids=["fixed", "lazy"])
def test_all_metrics_match_references_through_an_engine(num_classes):
    d = data()
    evaluator = Engine(lambda e, b: b)
    for name, metric in make_metrics(num_classes).items():
        metric.attach(evaluator, name)
    state = evaluator.run(batches(d, 0, len(d["labels"])), max_epochs=2)  # reset per epoch
    assert_matches(state.metrics, references(d))


def test_standalone_update_and_compute_match():
    d = data(1)
    want = references(d)
    for name, metric in make_metrics().items():
        for batch in batches(d, 0, len(d["labels"])):
            metric.update(metric._output_transform(batch))
        assert_matches({name: metric.compute()}, {name: want[name]})


def test_each_dependency_computed_once_however_often_it_appears():
    calls = []

    class Counting(Accuracy):
        def compute(self):
            calls.append(1)
            return super().compute()

    acc = Counting()
    expr = acc * acc + acc / (acc + 1) - MetricsLambda(lambda a: a, acc)
    evaluator = Engine(lambda e, b: b)
    expr.attach(evaluator, "expr")
    acc.attach(evaluator, "acc")
    d = data()
    evaluator.run([(d["logits"], d["labels"])])
    a = evaluator.state.metrics["acc"]
    assert evaluator.state.metrics["expr"] == pytest.approx(a * a + a / (a + 1) - a)
    assert len(calls) == 1


def test_batch_wise_and_running_usages():
    steps = [
        (torch.tensor([[0.0, 1.0]]), torch.tensor([1])),
        (torch.tensor([[0.0, 1.0]]), torch.tensor([0])),
    ]
    evaluator = Engine(lambda e, b: b)
    Accuracy().attach(evaluator, "batch", usage="batch_wise")
    Accuracy().attach(evaluator, "running", usage="running")
    seen = []
    from distengine.engine import Events

    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((e.state.metrics["batch"], e.state.metrics["running"])),
    )
    evaluator.run(steps)
    assert seen == [(1.0, 1.0), (0.0, 0.5)]


def test_running_average_of_output_and_of_a_metric():
    trainer = Engine(lambda e, b: b)
    RunningAverage(output_transform=lambda out: out[0], alpha=0.5).attach(trainer, "loss")
    values = []
    from distengine.engine import Events

    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: values.append(float(e.state.metrics["loss"]))
    )
    trainer.run([(torch.tensor(4.0),), (torch.tensor(2.0),), (torch.tensor(0.0),)])
    assert values == [4.0, 3.0, 1.5]
    ev = Engine(lambda e, b: b)
    RunningAverage(Accuracy(), alpha=0.5).attach(ev, "acc")
    ev.run(
        [
            (torch.tensor([[0.0, 1.0]]), torch.tensor([1])),
            (torch.tensor([[1.0, 0.0]]), torch.tensor([1])),
        ]
    )
    assert ev.state.metrics["acc"] == 0.5


def test_running_average_epoch_bound_restarts_each_epoch():
    trainer = Engine(lambda e, b: b)
    ra = RunningAverage(output_transform=lambda out: out, alpha=0.5, epoch_bound=True)
    ra.attach(trainer, "x")
    trainer.run([torch.tensor(2.0), torch.tensor(4.0)], max_epochs=2)
    assert float(trainer.state.metrics["x"]) == 3.0


def test_detach_and_is_attached():
    evaluator = Engine(lambda e, b: b)
    acc = Accuracy()
    acc.attach(evaluator, "acc")
    assert acc.is_attached(evaluator)
    acc.detach(evaluator)
    assert not acc.is_attached(evaluator)
    evaluator.run([(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))])
    assert "acc" not in evaluator.state.metrics
    with pytest.raises(ValueError, match="usage should be .* got .weekly"):
        acc.attach(evaluator, "acc", usage="weekly")


def test_state_dict_roundtrip_and_errors():
    acc = Accuracy()
    acc.update((torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])))
    restored = Accuracy()
    restored.load_state_dict(acc.state_dict())
    assert restored.compute() == 0.5
    with pytest.raises(ValueError, match=r"missing \['invalid', 'total'\], unexpected \['wrong'\]"):
        restored.load_state_dict({"correct": torch.tensor(1), "wrong": 1})


@pytest.mark.parametrize(
    "metric, output, message",
    [
        (
            Accuracy(),
            (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)),
            r"got y_pred \(4, 3\) and y \(5,\)",
        ),
        (Accuracy(), torch.zeros(3), r"expects output \(y_pred, y\)"),
        (
            ConfusionMatrix(3),
            (torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)),
            r"y_pred does not have correct number of classes: 2 vs 3",
        ),
        (
            TopKCategoricalAccuracy(5),
            (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)),
            "C >= 5",
        ),
        (
            Precision(num_classes=3),
            (torch.zeros(4, 4), torch.zeros(4, dtype=torch.long)),
            "num_classes is 3",
        ),
        (
            Loss(
                nn.functional.mse_loss,
            ),
            (torch.zeros(4), torch.zeros(4), {"reduction": "none"}),
            "scalar",
        ),
    ],
)
def test_bad_inputs_name_the_shapes(metric, output, message):
    with pytest.raises((ValueError, TypeError), match=message):
        metric.update(output)


def test_float_class_labels_warn_as_in_ignite_and_count_as_integers():
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    for metric in (Accuracy(), Precision(average=False)):
        with pytest.warns(RuntimeWarning, match="`y` should be of dtype long"):
            metric.update((logits, labels.float()))
        exact = type(metric)() if isinstance(metric, Accuracy) else Precision(average=False)
        exact.update((logits, labels))
        assert torch.equal(torch.as_tensor(metric.compute()), torch.as_tensor(exact.compute()))


def test_bad_arguments_and_empty_compute():
    with pytest.raises(ValueError, match="average must be one of"):
        Precision(average="median")
    with pytest.raises(
        ValueError, match="num_classes needs to be > 1: num_classes must be an int >= 2"
    ):
        ConfusionMatrix(1)
    with pytest.raises(ValueError, match="exactly one of"):
        RunningAverage()
    with pytest.raises(NotComputableError, match="Accuracy must have at least one example"):
        Accuracy().compute()
    with pytest.raises(NotComputableError):
        Average().compute()


def test_update_makes_no_host_device_sync():
    """update() must not call .item()/bool() on a tensor (a sync on GPUs)."""
    d = data()
    metrics = make_metrics()
    batch = batches(d, 0, 20)[0]
    names = ("item", "__bool__", "__int__", "__float__", "tolist")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def forbidden(*args, **kwargs):
        raise AssertionError("host-device sync in update()")

    for name in names:
        setattr(torch.Tensor, name, forbidden)
    try:
        for metric in metrics.values():
            metric.update(metric._output_transform(batch))
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
