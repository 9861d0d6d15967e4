"""Telemetry's figures from a known clock, and hparams written through the HParams plugin only."""

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from distengine.engine import Engine, Events
from distengine.handlers import TensorboardLogger
from distengine.handlers.telemetry import Telemetry, batch_size


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("wait, step, epochs", [(0.25, 0.75, 1), (0.0, 0.5, 3), (0.9, 0.1, 2)])
def test_telemetry_reports_what_the_clock_says(monkeypatch, wait, step, epochs):
    clock = Clock()
    monkeypatch.setattr("distengine.handlers.telemetry.time.perf_counter", clock)

    def batches():
        for _ in range(10):
            clock.now += wait
            yield torch.zeros(8, 3)

    class Data:
        def __iter__(self):
            return batches()

    def train_step(engine, batch):
        clock.now += step

    engine = Engine(train_step)
    telemetry = Telemetry(every=5)
    telemetry.attach(engine)
    seen = []
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(every=5), lambda: seen.append(dict(telemetry.values))
    )
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda: setattr(clock, "now", clock.now + 99))
    engine.run(Data(), max_epochs=epochs)
    assert len(seen) == 2 * epochs
    for values in seen:  # validation time between epochs (99 s) is not counted
        assert values["step_time_ms"] == pytest.approx((wait + step) * 1000)
        assert values["samples_per_s"] == pytest.approx(8 / (wait + step))
        assert values["data_wait_fraction"] == pytest.approx(wait / (wait + step))
        assert "gpu_memory_gib" not in values  # on the CPU


def test_batch_size_of_common_batches():
    x = torch.zeros(6, 2)
    assert batch_size(x) == 6
    assert batch_size((x, torch.zeros(6))) == 6
    assert batch_size({"input": x, "label": torch.zeros(6)}) == 6
    assert batch_size([["text"], x]) == 6
    assert batch_size("nothing") == 0
    with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
        Telemetry(every=0)


def test_hparams_go_to_the_plugin_with_the_validation_tags_as_metrics(tmp_path):
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)

    @evaluator.on(Events.COMPLETED)
    def computed(engine):
        engine.state.metrics.update(accuracy=0.5, loss=torch.tensor(1.5))

    with TensorboardLogger(tmp_path) as tb:
        tb.attach_output_handler(evaluator, Events.COMPLETED, "validation", metric_names="all")
        hparams = {"lr": 0.1, "name": "mlp", "amp": False, "layers": [1, 2]}
        tb.attach_hparams(trainer, hparams, metrics_from=evaluator, tag="validation")
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run([0]))
        trainer.run([0, 1], max_epochs=3)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no sub-run
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["validation/accuracy", "validation/loss"]
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == [
        "validation/accuracy",
        "validation/loss",
    ]
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    shown = start.session_start_info.hparams
    assert shown["lr"].number_value == 0.1 and shown["name"].string_value == "mlp"
    assert shown["amp"].string_value == "False" and shown["layers"].string_value == "[1, 2]"


def test_a_run_without_data_is_said_to_give_no_figures():
    engine = Engine(lambda e, batch: None)
    telemetry = Telemetry(every=2)
    telemetry.attach(engine)
    with pytest.warns(RuntimeWarning, match="a run without data"):
        engine.run(max_epochs=1, epoch_length=4)
    assert telemetry.values == {}
