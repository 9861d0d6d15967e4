"""The default job's TensorBoard files, read back with TensorBoard's own reader."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.launcher.launching import launch

SPEED = ["samples_per_s", "step_time_ms", "data_wait_fraction"]


def read(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def hparams_of(events: EventAccumulator) -> tuple[dict, list[str]]:
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in start.session_start_info.hparams.items()
    }
    return values, [m.name.tag for m in experiment.experiment.metric_infos]


def test_tensorboard_opens_on_the_curves_with_hparams_in_their_tab(default_job):
    run_dir, _ = default_job
    runs = [p for p in (run_dir / "tb").iterdir()]
    assert [p.name for p in runs] == [run_dir.name]  # one run, named (not ".")
    events = read(runs[0])
    tags = events.Tags()["scalars"]
    assert not [t for t in tags if t.startswith("hparam")]
    assert {t.split("/")[0] for t in tags} == {
        "train",
        "validation",
    }  # both expanded when TensorBoard opens
    assert {"train/loss", "train/lr/group_0"} <= set(tags)
    assert {"validation/accuracy", "validation/loss", "validation/f1"} <= set(tags)
    assert {f"train/telemetry/{name}" for name in SPEED} <= set(tags)
    assert len(events.Scalars("validation/accuracy")) == 8
    # the recipe agrees the running loss every log_every (10) iterations and at each epoch's
    # end (22 iterations): each point is one agreed value, at the iteration it holds for
    # (logged at 10, 20 and 30, the newest are as of 1, 10 and 22)
    assert [s.step for s in events.Scalars("train/loss")][:3] == [1, 10, 22]
    speed = [s.value for s in events.Scalars("train/telemetry/samples_per_s")]
    assert len(speed) == 17 and min(speed) > 0
    assert all(0 <= s.value <= 1 for s in events.Scalars("train/telemetry/data_wait_fraction"))
    values, metrics = hparams_of(events)
    assert metrics == ["validation/accuracy", "validation/loss", "validation/f1"]
    assert values["optim.lr"] == 0.003 and values["optim"] == "torch.optim.Adam"
    assert values["world_size"] == 2 and values["data.batch_size"] == 64
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos
    first = ["optim.lr", "model", "data.batch_size", "trainer.max_epochs", "world_size"]
    assert sorted(i.name for i in infos if i.differs) == sorted(first)  # the tab's first columns
    print(f"\nsamples/s: {min(speed):.0f} to {max(speed):.0f}")


def test_sweep_runs_are_named_by_what_the_sweep_varies(tmp_path):
    launch(
        "-m",
        f"hydra.sweep.dir={tmp_path}",
        "optim.lr=0.1,0.01",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        check=True,
    )
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert runs == ["optim.lr=0.01", "optim.lr=0.1"]
    for run in runs:
        events = read(tmp_path / "tb" / run)
        values, _ = hparams_of(events)
        assert f"optim.lr={values['optim.lr']}" == run
        content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
        infos = plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos
        assert [i.name for i in infos if i.differs] == ["optim.lr"]  # listed first in the tab
