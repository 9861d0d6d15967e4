"""The recipe's global sample sequence: ordered by ``trainer.seed``, kept across resumes.

In this process (world size 1, the recipe's own loader function) and through
the launcher's checks before anything starts (a run folder's records).
"""

import json

import pytest
import torch

from distengine.engine import Engine, Events
from launch.config.compose import compose, job_config
from launch.config.errors import ConfigError


def train_loader(*overrides: str):
    from launch.recipe.train import _loaders

    return _loaders(compose(list(overrides)))[0]


def first_batch(*overrides: str) -> torch.Tensor:
    return next(iter(train_loader(*overrides)))[1]


def test_trainer_seed_orders_the_training_samples():
    default, again = first_batch(), first_batch("trainer.seed=0")
    seeded, seeded_again = first_batch("trainer.seed=3"), first_batch("trainer.seed=3")
    assert torch.equal(default, again) and torch.equal(seeded, seeded_again)
    assert not torch.equal(default, seeded)  # 64 labels of 10 classes: equal by chance, never


def batches_after(loader, state=None, iterations: int = 7) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    engine = Engine(lambda e, batch: seen.append(batch[1].clone()))
    if state is not None:
        engine.load_state_dict(state)
    engine.run(loader, max_epochs=1, epoch_length=iterations)
    return seen


def test_a_seeded_run_resumes_mid_epoch_on_the_same_samples():
    """A trainer saved at iteration 3 of seed 3 goes on with the uninterrupted run's batches."""
    uninterrupted = batches_after(train_loader("trainer.seed=3"))
    saved: dict = {}
    engine = Engine(lambda e, batch: None)
    engine.add_event_handler(
        Events.ITERATION_COMPLETED(once=3), lambda e: saved.update(e.state_dict())
    )
    engine.run(train_loader("trainer.seed=3"), max_epochs=1, epoch_length=7)
    resumed = batches_after(train_loader("trainer.seed=3"), saved)
    assert len(resumed) == 4
    assert all(torch.equal(a, b) for a, b in zip(resumed, uninterrupted[3:]))


@pytest.fixture
def finished_run(tmp_path):
    """The records of a default run on 2 ranks, with one checkpoint, as the launcher keeps them."""
    from launch.job.folder import RunFolder

    RunFolder(tmp_path).start_run(job_config(compose([])), world_size=2)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint_22.pt").write_bytes(b"a checkpoint")
    return tmp_path


def refusal(run_dir, *overrides: str) -> str:
    from launch.cli import Launch

    with pytest.raises(ConfigError) as refused:
        Launch([f"hydra.run.dir={run_dir}", "dist.backend=gloo", *overrides]).prepare()
    return str(refused.value)


def test_a_resume_with_another_seed_is_refused(finished_run):
    assert json.loads((finished_run / "run.json").read_text())["seed"] == 0
    said = refusal(finished_run, "dist.nproc_per_node=2", "trainer.seed=3")
    assert said == (
        f"cannot resume the run in {finished_run}: trainer.seed changed (0 in the run, 3 now: it "
        "orders the samples). Use another hydra.run.dir, or checkpoint.resume=never to start a "
        "new run in this folder"
    )


def test_a_resume_continues_the_same_global_batches_or_is_refused(finished_run):
    """On 1 or 4 ranks (they divide 64) it goes on; a run an older launcher shrank does not."""
    from launch.cli import Launch
    from launch.job.folder import RunFolder

    for ranks in (1, 4):
        launch = Launch([f"hydra.run.dir={finished_run}", f"dist.nproc_per_node={ranks}"])
        launch.prepare()  # accepted: the folder is taken, nothing started
        launch.folder.release()
    assert refusal(finished_run, "dist.nproc_per_node=3").startswith(
        "data.batch_size=64 (the global batch, dist.nproc_per_node=3) cannot be split evenly"
    )
    run = json.loads((finished_run / "run.json").read_text())
    (finished_run / "run.json").write_text(json.dumps({**run, "world_size": 3}))  # 63 a step
    said = refusal(finished_run, "dist.nproc_per_node=2")
    assert said.startswith(
        f"cannot resume the run in {finished_run}: 3 ranks when saved, 2 now, with global "
        "batches of 63 samples then (21 per rank) and of 64 now (32 per rank): the run would "
        "not continue the same samples; resume on 3 ranks"
    )
    assert RunFolder(finished_run).read_run()["world_size"] == 3  # nothing rewritten


def test_the_ranks_refuse_a_checkpoint_of_another_seed_or_a_shrunk_batch():
    """The same rules where the ranks load the checkpoint's run record."""
    from launch.recipe.run_info import RunInfo

    cfg = compose(["trainer.seed=3"])
    info = RunInfo(cfg)  # this process: world size 1
    info.load_state_dict(info.state_dict())
    with pytest.raises(ValueError, match=r"trainer.seed changed \(0 then, 3 now\)"):
        info.load_state_dict({**info.state_dict(), "seed": 0})
    with pytest.raises(ValueError, match="3 ranks when saved, 1 now, with global batches of 63"):
        info.load_state_dict({**info.state_dict(), "world_size": 3})
    info.load_state_dict({k: v for k, v in info.state_dict().items() if k != "seed"})  # older


def test_auto_ranks_that_cannot_share_the_global_batch_start_as_many_as_can(
    tmp_path, monkeypatch, capsys
):
    """12 cores and the default job's batch of 64: 8 ranks, said; given 12, refused."""
    import launch.job.agent
    from launch.cli import Launch

    monkeypatch.setattr(launch.job.agent, "nproc_per_node", lambda v: 12 if v == "auto" else int(v))
    started = Launch([f"hydra.run.dir={tmp_path / 'run'}", "dist.backend=gloo"])
    started.prepare()
    started.folder.release()
    assert started.argv[-1] == "dist.nproc_per_node=8"  # what Hydra's run composes
    assert capsys.readouterr().err == (
        "note: dist.nproc_per_node=auto gives 12 ranks per node, which cannot share "
        "data.batch_size=64 (the global batch) evenly: starting 8 (give "
        "dist.nproc_per_node=12 with a data.batch_size they divide to use all)\n"
    )
    assert refusal(tmp_path / "other", "dist.nproc_per_node=12").startswith(
        "data.batch_size=64 (the global batch, dist.nproc_per_node=12) cannot be split evenly "
        "among 12 ranks (5 each, 60 in all): use a multiple of 12 (60 or 72)"
    )
    script = Launch([f"hydra.run.dir={tmp_path / 's'}", "task.script=README.md"])
    script.prepare()  # a script reads no data.batch_size: torchrun's rule as it is
    script.folder.release()
    assert not any(a.startswith("dist.nproc_per_node") for a in script.argv)
