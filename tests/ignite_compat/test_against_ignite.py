"""The same code with ``ignite`` and with ``distengine``: the same numbers.

Runs only where pytorch-ignite is installed (``pip install pytorch-ignite``);
the cases where Ignite 0.5.5 contradicts its own documentation are in
test_schedulers.py, checked against torch and the documented values.
"""

import warnings

import pytest
import torch

ignite = pytest.importorskip("ignite")

import ignite.engine as ie  # noqa: E402
import ignite.handlers.param_scheduler as ips  # noqa: E402
import ignite.metrics as im  # noqa: E402
import ignite.metrics.confusion_matrix as icm  # noqa: E402

import distengine.engine as de  # noqa: E402
import distengine.handlers.param_scheduler as dps  # noqa: E402
import distengine.metrics as dm  # noqa: E402

N, C = 53, 4


def _data():
    g = torch.Generator().manual_seed(0)
    return {
        "binary": (torch.randint(0, 2, (N,), generator=g), torch.randint(0, 2, (N,), generator=g)),
        "multiclass": (torch.randn(N, C, generator=g), torch.randint(0, C, (N,), generator=g)),
        "multilabel": (
            torch.randint(0, 2, (N, 3), generator=g),
            torch.randint(0, 2, (N, 3), generator=g),
        ),
        "segmentation": (
            torch.randn(5, C, 4, 6, generator=g),
            torch.randint(0, C, (5, 4, 6), generator=g),
        ),
    }


DATA = _data()


def _value(metric, kind):
    y_pred, y = DATA[kind]
    for i in range(0, len(y), 10):
        metric.update((y_pred[i : i + 10], y[i : i + 10]))
    result = metric.compute()
    if isinstance(result, torch.Tensor):
        return result.double()
    return torch.tensor(float(result), dtype=torch.float64)


def _same(mine, theirs, rtol=1e-12):
    assert mine.shape == theirs.shape
    torch.testing.assert_close(mine, theirs, rtol=rtol, atol=1e-15)


def _metric_cases():
    cases = []
    for kind in ("binary", "multiclass", "multilabel"):
        averages = [False, None, True, "micro", "macro", "weighted"]
        averages += ["samples"] if kind == "multilabel" else []
        for name in ("Precision", "Recall"):
            for average in averages:
                kwargs = dict(average=average, is_multilabel=kind == "multilabel")
                cases.append((kind, name, kwargs))
        if kind != "multilabel":
            cases += [(kind, "Fbeta", dict(beta=2.0, average=a)) for a in (True, False)]
        cases.append((kind, "Accuracy", dict(is_multilabel=kind == "multilabel")))
    return cases


@pytest.mark.parametrize("kind, name, kwargs", _metric_cases(), ids=str)
def test_classification_metrics_equal_ignites(kind, name, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ignite warns about dtypes in the binary case
        theirs = _value(getattr(im, name)(**kwargs), kind)
    _same(_value(getattr(dm, name)(**kwargs), kind), theirs)


CM_FUNCTIONS = [
    ("IoU", {}),
    ("IoU", {"ignore_index": 1}),
    ("mIoU", {"ignore_index": 0}),
    ("JaccardIndex", {}),
    ("DiceCoefficient", {"ignore_index": 2}),
    ("cmAccuracy", {}),
    ("cmPrecision", {}),
    ("cmPrecision", {"average": False}),
    ("cmRecall", {"average": False}),
]


@pytest.mark.parametrize("kind", ["multiclass", "segmentation"])
def test_confusion_matrix_family_equals_ignites(kind):
    for average in (None, "samples", "recall", "precision"):
        mine = _value(dm.ConfusionMatrix(C, average=average), kind)
        theirs = _value(im.ConfusionMatrix(C, average=average), kind)
        _same(mine, theirs, rtol=1e-6)  # Ignite normalises in float32, distengine in float64
    for name, kwargs in CM_FUNCTIONS:
        mine = _value(getattr(dm, name)(dm.ConfusionMatrix(C), **kwargs), kind)
        theirs = _value(getattr(icm, name)(icm.ConfusionMatrix(C), **kwargs), kind)
        _same(mine, theirs)


USAGES = ["epoch_wise", "batch_wise", "running_batch_wise", "single_epoch_running_batch_wise"]


def _usage_log(engine_module, metrics_module, usage):
    engine = engine_module.Engine(lambda e, b: b)
    metrics_module.Accuracy().attach(engine, "acc", usage=usage)
    log = []
    for event in (engine_module.Events.ITERATION_COMPLETED, engine_module.Events.EPOCH_COMPLETED):
        engine.add_event_handler(
            event, lambda e, ev=event: log.append((ev.name, e.state.metrics.pop("acc", None)))
        )
    y_pred, y = DATA["multiclass"]
    engine.run([(y_pred[i : i + 7], y[i : i + 7]) for i in range(0, 42, 7)], max_epochs=3)
    return log


@pytest.mark.parametrize("usage", USAGES + ["batch_filtered", "running_epoch_wise"])
def test_usages_publish_what_ignite_publishes(usage):
    def make(module):
        if usage == "batch_filtered":
            return module.BatchFiltered(every=4)
        return usage if usage in USAGES else module.RunningEpochWise()

    from ignite.metrics import metric as ignite_metric

    assert _usage_log(de, dm, make(dm)) == _usage_log(ie, im, make(ignite_metric))


def _optimizer(groups=1):
    params = [
        {"params": [torch.zeros(1, requires_grad=True)], "lr": 1.0 + g} for g in range(groups)
    ]
    return torch.optim.SGD(params, lr=1.0)


SCHEDULES = {
    "piecewise": lambda m, o: m.PiecewiseLinear(o, "lr", [(2, 0.5), (5, 1.0), (5, 0.2), (9, 0.0)]),
    "linear": lambda m, o: m.LinearCyclicalScheduler(
        o, "lr", 1.0, 0.0, 6, cycle_mult=1.5, start_value_mult=0.9, end_value_mult=0.5
    ),
    "linear_warmup": lambda m, o: m.LinearCyclicalScheduler(
        o, "lr", 1.0, 0.0, 5, warmup_duration=3, monotonic=True
    ),
    "cosine": lambda m, o: m.CosineAnnealingScheduler(
        o, "lr", 1.0, 0.1, 7, cycle_mult=2.0, warmup_duration=2
    ),
    "concat": lambda m, o: m.ConcatScheduler(
        [
            m.LinearCyclicalScheduler(o, "lr", 0.0, 1.0, 8),
            m.CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 10),
        ],
        durations=[4],
    ),
    "param_groups": lambda m, o: m.ParamGroupScheduler(
        [
            m.PiecewiseLinear(o, "lr", [(0, 0.1), (10, 1.0)], param_group_index=0),
            m.CosineAnnealingScheduler(o, "lr", 2.0, 0.0, 5, param_group_index=1),
        ]
    ),
    "torch_step": lambda m, o: m.LRScheduler(torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
    "torch_one_cycle": lambda m, o: m.LRScheduler(
        torch.optim.lr_scheduler.OneCycleLR(o, 1.0, total_steps=30)
    ),
    "torch_lambda": lambda m, o: m.LRScheduler(
        torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.9**e)
    ),
    "warmup_torch": lambda m, o: m.create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.StepLR(o, 2, 0.7), 0.0, 4
    ),
    "warmup_torch_end": lambda m, o: m.create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.StepLR(o, 1, 0.5), 0.1, 3, 0.5
    ),
    "warmup_cosine": lambda m, o: m.create_lr_scheduler_with_warmup(
        m.CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 6), 0.0, 5
    ),
    "warmup_cosine_2": lambda m, o: m.create_lr_scheduler_with_warmup(
        m.CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 6), 0.0, 2
    ),
    "warmup_cosine_end": lambda m, o: m.create_lr_scheduler_with_warmup(
        m.CosineAnnealingScheduler(o, "lr", 1.0, 0.0, 6), 0.0, 4, 0.5
    ),
}


def _lrs(module, make, groups):
    engines = ie if module is ips else de
    optimizer = _optimizer(groups)
    scheduler = make(module, optimizer)
    engine = engines.Engine(lambda e, b: [g["lr"] for g in optimizer.param_groups])
    engine.add_event_handler(engines.Events.ITERATION_STARTED, scheduler)
    seen = []
    engine.add_event_handler(
        engines.Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: scheduler stepped before the optimizer
        engine.run(range(25))
    return seen


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedulers_set_the_values_ignite_sets(name):
    groups = 2 if name == "param_groups" else 1
    make = SCHEDULES[name]
    assert _lrs(dps, make, groups) == _lrs(ips, make, groups)  # bitwise


def test_simulate_values_and_history_equal_ignites():
    simulated = [
        (
            module.CosineAnnealingScheduler.simulate_values(
                12, param_name="lr", start_value=1.0, end_value=0.0, cycle_size=5, cycle_mult=2.0
            ),
            module.ReduceLROnPlateauScheduler.simulate_values(
                6, [1.0, 0.9, 0.9, 0.9, 0.95, 0.8], 0.1, patience=1, factor=0.5, mode="min"
            ),
        )
        for module in (dps, ips)
    ]
    assert simulated[0] == simulated[1]
    histories = []
    for module, engines in ((dps, de), (ips, ie)):
        optimizer = _optimizer()
        scheduler = module.PiecewiseLinear(optimizer, "lr", [(0, 0.0), (4, 1.0)], save_history=True)
        engine = engines.Engine(lambda e, b: None)
        engine.add_event_handler(engines.Events.ITERATION_STARTED, scheduler)
        engine.run(range(6))
        histories.append(engine.state.param_history)
    assert histories[0] == histories[1]
